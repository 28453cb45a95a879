#!/usr/bin/env python3
"""Echo servers compared from outside, in interleaved rounds.

Each server runs as its own process pinned to CPU 0 and is driven by the
bench's load generator (`cport-bench --loadgen-child`, pinned to CPU 1):
50 connections x 512-byte messages in closed loops for MS milliseconds.
Prints requests/s and the server's CPU time per request (utime + stime
from /proc/PID/stat), per trial and as medians, with the median of the
per-round ratios against the last server named.

Servers: `c-plain`, `c-coop`, `c-defer` (uring_echo.c with that ring
setup), `c-epoll` (epoll_echo.c), or any name `cport-bench --serve`
takes (`raw-uring`, `raw-uring-coop`, `raw-uring-plain`, `raw-epoll`,
`tokio`, `compio`, `ours-io_uring`, `ours-epoll`).

A server written `LABEL=BINARY:SERVER` runs SERVER of another
cport-bench build (to compare builds: `base=/tmp/cb-base:ours-io_uring`);
`LABEL=cmd:PROGRAM ARGS…` runs any server that prints a line saying
"listening … HOST:PORT" and stops on SIGTERM (`cport echo`, the C
examples).

usage: compare.py CPORT_BENCH C_DIR ROUNDS MS SERVER,SERVER,...
(C_DIR holds the built uring_echo and epoll_echo; see their headers)
"""
import itertools
import os
import statistics
import subprocess
import sys
import time

BENCH, C_DIR = sys.argv[1], sys.argv[2]
ROUNDS, MS = int(sys.argv[3]), int(sys.argv[4])
SERVERS = sys.argv[5].split(',')
TICK = os.sysconf('SC_CLK_TCK')
ports = itertools.count(17000 + (os.getpid() % 1000) * 10)
LIMIT = 60  # seconds any one step may take


def cpu(pid):
    """(CPU seconds, of which kernel) of process `pid`."""
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK, int(f[12]) / TICK


def start(name):
    if name.startswith('c-'):
        port = next(ports)
        if name == 'c-epoll':
            argv = [f'{C_DIR}/epoll_echo', str(port), '512']
        else:
            argv = [f'{C_DIR}/uring_echo', str(port), '512', name[2:]]
        proc = subprocess.Popen(['taskset', '-c', '0'] + argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == 'listening', name
        return proc, f'127.0.0.1:{port}'
    if '=cmd:' in name:
        # Any server: started pinned to CPU 0, its address read from its
        # first line that says "listening ... HOST:PORT"; stopped by SIGTERM.
        argv = ['taskset', '-c', '0'] + name.split('=cmd:', 1)[1].split()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            if 'listening' in line:
                return proc, line.split()[-1]
        raise AssertionError(f'{name}: no "listening" line')
    bench = BENCH
    if '=' in name:
        bench, name = name.split('=', 1)[1].rsplit(':', 1)
    proc = subprocess.Popen([bench, '--serve', f'{name},127.0.0.1:0,0'],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line and line[0] == 'listening', (name, line)
    return proc, line[1]


res = {s: [] for s in SERVERS}
for r in range(ROUNDS):
    for s in (SERVERS if r % 2 == 0 else SERVERS[::-1]):
        proc, addr = start(s)
        lg = subprocess.Popen([BENCH, '--loadgen-child', f'{addr},50,512,{MS},1'],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert lg.stdout.readline().strip() == 'connected', s
        time.sleep(0.05)  # the server arms every connection
        c0, s0 = cpu(proc.pid)
        lg.stdin.write('go\n')
        lg.stdin.flush()
        n, ns = map(int, lg.stdout.readline().split())
        c1, s1 = cpu(proc.pid)
        lg.wait(timeout=LIMIT)
        if s.startswith('c-'):
            proc.kill()
        elif '=cmd:' in s:
            proc.terminate()
        else:
            proc.stdin.close()  # --serve stops at EOF
        proc.wait(timeout=LIMIT)
        rate, per, sys_per = n / (ns / 1e9), (c1 - c0) / n * 1e9, (s1 - s0) / n * 1e9
        res[s].append((rate, per, sys_per))
        print(f'round {r + 1} {s.split("=", 1)[0]:16} {rate / 1e3:7.1f} k/s  CPU/req {per:6.0f} ns '
              f'(kernel {sys_per:5.0f})', flush=True)
print()
base = SERVERS[-1]
for s in SERVERS:
    ratios = [a[0] / b[0] for a, b in zip(res[s], res[base])]
    print(f'{s.split("=", 1)[0]:16} median {statistics.median(x[0] for x in res[s]) / 1e3:7.1f} k/s, '
          f'CPU/req {statistics.median(x[1] for x in res[s]):6.0f} ns '
          f'(kernel {statistics.median(x[2] for x in res[s]):5.0f}); '
          f'rate vs {base}: median of rounds {statistics.median(ratios):.3f}')
