/*
 * Windows semantics of the C ABI beyond the conformance suite (suite.c): what
 * closing, cancelling and bad input do to AcceptEx and blocked calls, the
 * Winsock errors of the BSD calls, socket options across AcceptEx, the file
 * APIs, the Win32 names classic IOCP programs use, and the completion state
 * written when an operation ends (semantics_state.h).
 *
 * Same rules as suite.c: one line per test ("ok name" / "FAIL name: why"),
 * then "N passed, M failed"; every wait bounded (a watchdog per test, and
 * helper threads waited for with a deadline); no sleep used as
 * synchronisation; 127.0.0.1 port 0; run once per backend.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cport.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Harness                                                             */
/* ------------------------------------------------------------------ */

#define MUST_MS 5000u /* a packet or a thread that must come back */
#define NONE_MS 200u  /* checking that nothing is queued */

#include "harness.h"

static char g_dir[64];
#define H(fd) ((HANDLE)(intptr_t)(fd))
#define ADDR_LEN ((DWORD)(sizeof(SOCKADDR_STORAGE) + 16))

typedef struct {
    BOOL ok;
    DWORD err, bytes;
    ULONG_PTR key;
    OVERLAPPED *ov;
} pkt_t;

static pkt_t deq(HANDLE port, DWORD ms) {
    pkt_t p = {0, 0, 0, 0, NULL};
    p.ok = GetQueuedCompletionStatus(port, &p.bytes, &p.key, &p.ov, ms);
    p.err = p.ok ? 0 : GetLastError();
    return p;
}

static bool nothing_queued(HANDLE port) {
    pkt_t p = deq(port, NONE_MS);
    return !p.ok && p.err == WAIT_TIMEOUT && p.ov == NULL;
}

static OVERLAPPED *new_ov(void) { return calloc(1, sizeof(OVERLAPPED)); }
static HANDLE new_port(void) { return CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0); }
static SOCKET new_tcp(void) {
    return WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
}

/* A TCP socket bound to 127.0.0.1 port 0 (listening if `backlog` > 0),
 * its address in *a. */
static SOCKET bound_tcp(SOCKADDR_IN *a, int backlog) {
    SOCKET s = new_tcp();
    int len = sizeof *a;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s == INVALID_SOCKET || bind(s, (SOCKADDR *)a, sizeof *a) != 0 ||
        getsockname(s, (SOCKADDR *)a, &len) != 0 || (backlog > 0 && listen(s, backlog) != 0)) {
        closesocket(s);
        return INVALID_SOCKET;
    }
    return s;
}

/* A blocking client connected to `a`. */
static SOCKET client_of(const SOCKADDR_IN *a) {
    SOCKET c = new_tcp();
    if (c != INVALID_SOCKET && connect(c, (const SOCKADDR *)a, sizeof *a) != 0) {
        closesocket(c);
        return INVALID_SOCKET;
    }
    return c;
}

static void xclose(SOCKET *s) {
    if (*s != INVALID_SOCKET)
        closesocket(*s);
    *s = INVALID_SOCKET;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* The scheduler state letter of thread `tid` ('S': sleeping in the kernel). */
static char thread_state(pid_t tid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* ------------------------------------------------------------------ */
/* A helper thread running one call, waited for with a deadline        */
/* ------------------------------------------------------------------ */

typedef struct call {
    void (*fn)(struct call *);
    SOCKET s;
    HANDLE h;
    OVERLAPPED *ov;
    char *buf;
    int len;
    /* results */
    intptr_t ret;
    DWORD err, bytes;
    atomic_int state; /* 1: about to make the call, 2: returned */
    atomic_int tid;
} call_t;

/* A call record on the heap: a thread that never returns keeps using it
 * (released by call_free only once the call returned). */
static call_t *call_new(void (*fn)(call_t *)) {
    call_t *c = calloc(1, sizeof *c);
    if (c)
        c->fn = fn;
    return c;
}

static void call_free(call_t *c) {
    if (c && atomic_load(&c->state) == 2)
        free(c);
}

static void *call_main(void *arg) {
    call_t *c = arg;
    atomic_store(&c->tid, (int)syscall(SYS_gettid));
    c->fn(c);
    atomic_store(&c->state, 2);
    return NULL;
}

/* Starts `c` on a detached thread. */
static bool call_start(call_t *c) {
    pthread_t t;
    if (!c || pthread_create(&t, NULL, call_main, c) != 0)
        return false;
    pthread_detach(t);
    return true;
}

/* Starts `c` and waits (bounded) until it sleeps inside its blocking call. */
static bool call_start_blocked(call_t *c) {
    if (!call_start(c))
        return false;
    double end = now_ms() + MUST_MS;
    while (now_ms() < end) {
        if (atomic_load(&c->state) == 1 && thread_state(atomic_load(&c->tid)) == 'S')
            return true;
        if (atomic_load(&c->state) == 2)
            return false;
        sched_yield();
    }
    return false;
}

/* Waits (bounded) for the call to return. A call that never returns leaves
 * its thread behind; the test fails. */
static bool call_returned(call_t *c, unsigned ms) {
    double end = now_ms() + ms;
    while (now_ms() < end) {
        if (atomic_load(&c->state) == 2)
            return true;
        sched_yield();
    }
    return atomic_load(&c->state) == 2;
}

static void do_accept(call_t *c) {
    atomic_store(&c->state, 1);
    c->ret = (intptr_t)accept(c->s, NULL, NULL);
    c->err = WSAGetLastError();
}

static void do_recv(call_t *c) {
    atomic_store(&c->state, 1);
    c->ret = recv(c->s, c->buf, c->len, 0);
    c->err = WSAGetLastError();
}

static void do_send(call_t *c) {
    atomic_store(&c->state, 1);
    c->ret = send(c->s, c->buf, c->len, 0);
    c->err = WSAGetLastError();
}

static void do_result_nowait(call_t *c) {
    atomic_store(&c->state, 1);
    c->ret = GetOverlappedResult(c->h, c->ov, &c->bytes, FALSE);
    c->err = c->ret ? 0 : GetLastError();
}

#include "semantics_accept.h"
#include "semantics_bsd.h"
#include "semantics_file.h"
#include "semantics_state.h"

int main(void) {
    harness_start();
    snprintf(g_dir, sizeof g_dir, "/tmp/cport-semantics-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    const char *be = getenv("CPORT_BACKEND");
    printf("# cport C semantics, CPORT_BACKEND=%s\n", be ? be : "(unset)");

    RUN(zero_length_no_packet_file);
    RUN(zero_length_no_packet_pipe);
    RUN(made_up_handles);

    RUN(acceptex_refused_at_the_call);
    RUN(acceptex_update_context);
    RUN(acceptex_options_survive);
    RUN(acceptex_accept_socket_closed);
    RUN(acceptex_data_stage_listener_closed);
    RUN(acceptex_data_stage_listener_closehandle);
    RUN(acceptex_data_stage_accept_socket_closed);
    RUN(acceptex_data_stage_cancelioex);
    RUN(acceptex_data_stage_client_leaves);

    RUN(closesocket_wakes_accept);
    RUN(closesocket_wakes_recv);
    RUN(closesocket_wakes_send);
    RUN(winsock_errors_of_bsd_calls);
    RUN(getaddrinfo_errors);
    RUN(classic_names);

    RUN(file_size_and_pointer);
    RUN(file_type_flush_delete);
    RUN(file_template_and_fd);

    RUN(state_of_a_finished_receive);
    RUN(state_of_receives_aborted_by_closesocket);
    RUN(state_of_an_acceptex_aborted);
    RUN(microsoft_shutdown_pattern);
    RUN(wsasend_completes_whole);
    RUN(event_signalled_when_it_ends);

    rmdir(g_dir);
    return harness_report();
}
