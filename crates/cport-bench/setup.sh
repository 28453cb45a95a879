#!/bin/sh
# Installs the programs cport-bench compares with or drives (Debian,
# Ubuntu; run as root): wrk and nginx for `http`, fio for `file`. The
# bench finds them on PATH (nginx also in /usr/sbin), or where
# CPORT_BENCH_WRK, CPORT_BENCH_NGINX and CPORT_BENCH_FIO say.
set -eu
apt-get update
apt-get install -y wrk fio
# nginx-light where the distribution has it (no service modules needed);
# the bench runs nginx itself, with its own configuration, as a child.
apt-get install -y nginx-light || apt-get install -y nginx
