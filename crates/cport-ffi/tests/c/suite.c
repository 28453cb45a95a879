/*
 * C conformance suite for libcport: exercises the numbered points of
 * docs/windows-semantics.md through the Win32-named C ABI of include/cport.h.
 *
 * Prints one line per test ("ok name" / "FAIL name: why") and finally
 * "N passed, M failed"; exits 0 only when nothing failed. Run it once per
 * backend (CPORT_BACKEND=io_uring, CPORT_BACKEND=epoll).
 *
 * Rules the tests follow:
 * - every wait is bounded: GetQueuedCompletionStatus timeouts (5000 ms for
 *   "must arrive", 200 ms for "must not arrive"), SO_RCVTIMEO on plain
 *   sockets, bounded polling loops between threads, and a per-test
 *   watchdog (alarm) for the few calls that have no timeout of their own
 *   (GetOverlappedResult with bWait = TRUE);
 * - no test asserts timing; a short timeout only checks that nothing is
 *   queued;
 * - OVERLAPPEDs and buffers of operations live on the heap (windows-semantics §3.12),
 *   except in the test that checks the stack-OVERLAPPED warning;
 * - network tests use 127.0.0.1 port 0; files live in a mkdtemp directory
 *   removed at the end.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -pthread -Iinclude suite.c
 *        -L<target>/debug -Wl,-rpath,<target>/debug -lcport
 * (also compiles with -std=c11 -D_GNU_SOURCE).
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cport.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/* ------------------------------------------------------------------ */
/* Harness                                                             */
/* ------------------------------------------------------------------ */

#define MUST_MS 5000u   /* a packet that must arrive */
#define NONE_MS 200u    /* checking that no packet is queued */

#include "harness.h"

static void tmp_cleanup(void);

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

#define H(fd) ((HANDLE)(intptr_t)(fd))
#define S(fd) ((SOCKET)(fd))

typedef struct {
    BOOL ok;
    DWORD err;
    DWORD bytes;
    ULONG_PTR key;
    OVERLAPPED *ov;
} pkt_t;

/* GetQueuedCompletionStatus, capturing the last error. */
static pkt_t deq(HANDLE port, DWORD ms) {
    pkt_t p;
    p.bytes = 0xA5A5A5A5u;
    p.key = (ULONG_PTR)0xA5A5A5A5u;
    p.ov = (OVERLAPPED *)(uintptr_t)0x1;
    SetLastError(12345);
    p.ok = GetQueuedCompletionStatus(port, &p.bytes, &p.key, &p.ov, ms);
    p.err = p.ok ? 0 : GetLastError();
    return p;
}

/* A pending BOOL-style call: FALSE with ERROR_IO_PENDING. */
static bool pending_b(BOOL r) { return r == FALSE && GetLastError() == ERROR_IO_PENDING; }
/* A pending Winsock call: SOCKET_ERROR with WSA_IO_PENDING. */
static bool pending_w(int r) { return r == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING; }

static OVERLAPPED *new_ov(void) { return calloc(1, sizeof(OVERLAPPED)); }

static HANDLE new_port(DWORD n) { return CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, n); }

static void set_rcvtimeo(int fd) {
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/*
 * Blocking calls of the tests retry on EINTR: on the io_uring backend the
 * kernel's task-work notification for an operation this thread submitted
 * can interrupt a blocking socket call that has a timeout (SO_RCVTIMEO /
 * SO_SNDTIMEO), which then fails with EINTR instead of restarting.
 */
static ssize_t xrecv(int fd, void *buf, size_t n, int flags) {
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, flags);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return got ? (ssize_t)got : -1;
        got += (size_t)r;
        if (r == 0 || !(flags & MSG_WAITALL) || got == n)
            return (ssize_t)got;
    }
}

static int xaccept(int l) {
    int r;
    do
        r = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    while (r < 0 && errno == EINTR);
    return r;
}

static int unix_pair(int sv[2]) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    set_rcvtimeo(sv[0]);
    set_rcvtimeo(sv[1]);
    return 0;
}

/* A listening TCP socket on 127.0.0.1, port 0; its address in *addr. */
static int tcp_listener(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *addr;
    if (bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) != 0) {
        close(fd);
        return -1;
    }
    set_rcvtimeo(fd); /* bounds accept() too */
    return fd;
}

static int tcp_connect(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        /* Interrupted (see xrecv): the connection goes on; wait for it. */
        struct pollfd pfd = {fd, POLLOUT, 0};
        int err = 0, r;
        socklen_t len = sizeof err;
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
        do
            r = poll(&pfd, 1, (int)MUST_MS);
        while (r < 0 && errno == EINTR);
        if (r != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            close(fd);
            return -1;
        }
    }
    set_rcvtimeo(fd);
    return fd;
}

/* A connected TCP pair over loopback (plain sockets). */
static int tcp_pair(int *server, int *client) {
    struct sockaddr_in a;
    int l = tcp_listener(&a);
    if (l < 0)
        return -1;
    *client = tcp_connect(&a);
    *server = *client < 0 ? -1 : xaccept(l);
    close(l);
    if (*server < 0) {
        if (*client >= 0)
            close(*client);
        return -1;
    }
    set_rcvtimeo(*server);
    return 0;
}

static uint16_t local_port(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return 0;
    return ntohs(a.sin_port);
}

/* Closes an fd (socket or pipe) through the library: cancels and ends its
 * association if it has one. Ignores -1. */
static void xclose(int fd) {
    if (fd >= 0)
        closesocket(S(fd));
}

static void xclose_port(HANDLE port) {
    if (port)
        CloseHandle(port);
}

/* Bounded wait for an atomic flag to reach a value (thread hand-offs). */
static bool wait_flag(atomic_int *f, int value, int ms) {
    for (int i = 0; i < ms; i++) {
        if (atomic_load(f) >= value)
            return true;
        usleep(1000);
    }
    return atomic_load(f) >= value;
}

/* Temporary directory. */
static char g_tmpdir[64];
static char g_paths[32][128];
static int g_npaths;

static const char *tmp_path(const char *name) {
    if (g_npaths >= 32)
        abort();
    snprintf(g_paths[g_npaths], sizeof g_paths[0], "%s/%s", g_tmpdir, name);
    return g_paths[g_npaths++];
}

static void tmp_cleanup(void) {
    for (int i = 0; i < g_npaths; i++)
        unlink(g_paths[i]);
    if (g_tmpdir[0])
        rmdir(g_tmpdir);
}

static HANDLE open_file(const char *path, DWORD access, DWORD disposition) {
    return CreateFileA(path, access, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, disposition,
                       FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED, NULL);
}

static void ov_at(OVERLAPPED *ov, uint64_t off) {
    ov->Offset = (uint32_t)off;
    ov->OffsetHigh = (uint32_t)(off >> 32);
}

/* ------------------------------------------------------------------ */
/* Layout and numbers                                                  */
/* ------------------------------------------------------------------ */

static void layout(void) {
    CHECK(sizeof(OVERLAPPED) == 32, "sizeof(OVERLAPPED) = %zu", sizeof(OVERLAPPED));
    CHECK(offsetof(OVERLAPPED, Internal) == 0, "Internal at %zu", offsetof(OVERLAPPED, Internal));
    CHECK(offsetof(OVERLAPPED, InternalHigh) == 8, "InternalHigh at %zu",
          offsetof(OVERLAPPED, InternalHigh));
    CHECK(offsetof(OVERLAPPED, Offset) == 16, "Offset at %zu", offsetof(OVERLAPPED, Offset));
    CHECK(offsetof(OVERLAPPED, OffsetHigh) == 20, "OffsetHigh at %zu",
          offsetof(OVERLAPPED, OffsetHigh));
    CHECK(offsetof(OVERLAPPED, Pointer) == 16, "Pointer at %zu", offsetof(OVERLAPPED, Pointer));
    CHECK(offsetof(OVERLAPPED, hEvent) == 24, "hEvent at %zu", offsetof(OVERLAPPED, hEvent));
    CHECK(sizeof(OVERLAPPED_ENTRY) == 32, "sizeof(OVERLAPPED_ENTRY) = %zu", sizeof(OVERLAPPED_ENTRY));
    CHECK(offsetof(OVERLAPPED_ENTRY, lpCompletionKey) == 0 &&
              offsetof(OVERLAPPED_ENTRY, lpOverlapped) == 8 &&
              offsetof(OVERLAPPED_ENTRY, Internal) == 16 &&
              offsetof(OVERLAPPED_ENTRY, dwNumberOfBytesTransferred) == 24,
          "OVERLAPPED_ENTRY field offsets");
    CHECK(sizeof(WSABUF) == 16, "sizeof(WSABUF) = %zu", sizeof(WSABUF));
    CHECK(offsetof(WSABUF, buf) == 8, "WSABUF.buf at %zu", offsetof(WSABUF, buf));
    CHECK(sizeof(DWORD) == 4 && sizeof(ULONG_PTR) == sizeof(void *) && sizeof(BOOL) == 4,
          "basic type sizes");
done:;
}

static void error_numbers(void) {
    CHECK(ERROR_IO_PENDING == 997, "ERROR_IO_PENDING");
    CHECK(WAIT_TIMEOUT == 258, "WAIT_TIMEOUT");
    CHECK(ERROR_OPERATION_ABORTED == 995, "ERROR_OPERATION_ABORTED");
    CHECK(ERROR_ABANDONED_WAIT_0 == 735, "ERROR_ABANDONED_WAIT_0");
    CHECK(ERROR_NETNAME_DELETED == 64, "ERROR_NETNAME_DELETED");
    CHECK(ERROR_CONNECTION_ABORTED == 1236, "ERROR_CONNECTION_ABORTED");
    CHECK(ERROR_HANDLE_EOF == 38, "ERROR_HANDLE_EOF");
    CHECK(ERROR_NOT_FOUND == 1168, "ERROR_NOT_FOUND");
    CHECK(ERROR_INVALID_HANDLE == 6, "ERROR_INVALID_HANDLE");
    CHECK(ERROR_INVALID_PARAMETER == 87, "ERROR_INVALID_PARAMETER");
    CHECK(ERROR_IO_INCOMPLETE == 996, "ERROR_IO_INCOMPLETE");
    CHECK(WSA_IO_PENDING == 997 && WSAEINVAL == 10022 && WSAENOTCONN == 10057, "Winsock numbers");
    CHECK(STATUS_PENDING == 259 && STATUS_SUCCESS == 0, "status values");
    CHECK(INFINITE == 0xFFFFFFFFu, "INFINITE");
done:;
}

static void wsastartup(void) {
    WSADATA d;
    memset(&d, 0xff, sizeof d);
    CHECK(WSAStartup(MAKEWORD(2, 2), &d) == 0, "WSAStartup failed");
    CHECK(d.wVersion == 0x0202 && d.wHighVersion == 0x0202, "version %#x/%#x", d.wVersion,
          d.wHighVersion);
    CHECK(WSACleanup() == 0, "WSACleanup");
    SetLastError(4242);
    CHECK(GetLastError() == 4242 && WSAGetLastError() == 4242, "last error is per thread and shared");
    WSASetLastError(17);
    CHECK(GetLastError() == 17, "WSASetLastError");
done:;
}

/* ------------------------------------------------------------------ */
/* §1 The port                                                         */
/* ------------------------------------------------------------------ */

static void s1_create_port(void) {
    HANDLE p0 = NULL, p2 = NULL;
    p0 = new_port(0);
    CHECK(p0 != NULL && p0 != INVALID_HANDLE_VALUE, "N=0: %u", GetLastError());
    p2 = new_port(2);
    CHECK(p2 != NULL && p2 != INVALID_HANDLE_VALUE && p2 != p0, "N=2: %u", GetLastError());
    CHECK(PostQueuedCompletionStatus(p0, 1, 2, NULL), "post p0: %u", GetLastError());
    pkt_t p = deq(p0, MUST_MS);
    CHECK(p.ok && p.bytes == 1 && p.key == 2 && p.ov == NULL, "p0 packet ok=%d err=%u", p.ok, p.err);
    p = deq(p2, 0);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "p2 must be empty: ok=%d err=%u", p.ok, p.err);
    /* A port can't be created with an existing port argument. */
    SetLastError(0);
    CHECK(CreateIoCompletionPort(INVALID_HANDLE_VALUE, p0, 0, 0) == NULL &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "create with ExistingCompletionPort: %u", GetLastError());
    CHECK(CloseHandle(p0), "close p0: %u", GetLastError());
    p0 = NULL;
    CHECK(CloseHandle(p2), "close p2: %u", GetLastError());
    p2 = NULL;
done:
    xclose_port(p0);
    xclose_port(p2);
}

static void s1_fifo_order(void) {
    HANDLE port = new_port(1);
    CHECK(port, "create: %u", GetLastError());
    for (uintptr_t i = 0; i < 200; i++)
        CHECK(PostQueuedCompletionStatus(port, (DWORD)i, i * 3, (LPOVERLAPPED)(i * 8 + 8)),
              "post %zu: %u", (size_t)i, GetLastError());
    for (uintptr_t i = 0; i < 200; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok, "deq %zu: %u", (size_t)i, p.err);
        CHECK(p.bytes == i && p.key == i * 3 && p.ov == (LPOVERLAPPED)(i * 8 + 8),
              "packet %zu out of order: bytes=%u key=%zu", (size_t)i, p.bytes, (size_t)p.key);
    }
    pkt_t p = deq(port, 0);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT && p.ov == NULL, "queue not empty after 200");
done:
    xclose_port(port);
}

static void s1_post_exact_values(void) {
    HANDLE port = new_port(0);
    CHECK(port, "create: %u", GetLastError());
    /* Extreme and arbitrary values, including an unaligned "OVERLAPPED". */
    CHECK(PostQueuedCompletionStatus(port, 0xFFFFFFFFu, UINTPTR_MAX, (LPOVERLAPPED)(uintptr_t)0x1235),
          "post 1: %u", GetLastError());
    CHECK(PostQueuedCompletionStatus(port, 0, 0, NULL), "post 2: %u", GetLastError());
    CHECK(PostQueuedCompletionStatus(port, 7, (ULONG_PTR)0x8000000000000001ull,
                                     (LPOVERLAPPED)(uintptr_t)0xFFFFFFFFFFFFFFF0ull),
          "post 3: %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 0xFFFFFFFFu && p.key == UINTPTR_MAX &&
              p.ov == (LPOVERLAPPED)(uintptr_t)0x1235,
          "packet 1: ok=%d bytes=%u key=%zx ov=%p", p.ok, p.bytes, (size_t)p.key, (void *)p.ov);
    CHECK(GetLastError() == ERROR_SUCCESS, "success sets last error 0: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 0 && p.key == 0 && p.ov == NULL, "packet 2 (all zero): ok=%d", p.ok);
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 7 && p.key == (ULONG_PTR)0x8000000000000001ull &&
              p.ov == (LPOVERLAPPED)(uintptr_t)0xFFFFFFFFFFFFFFF0ull,
          "packet 3");
    /* Through GetQueuedCompletionStatusEx too. */
    CHECK(PostQueuedCompletionStatus(port, 42, 43, (LPOVERLAPPED)(uintptr_t)44), "post 4");
    OVERLAPPED_ENTRY e[2];
    ULONG n = 99;
    CHECK(GetQueuedCompletionStatusEx(port, e, 2, &n, MUST_MS, FALSE), "GQCSEx: %u", GetLastError());
    CHECK(n == 1 && e[0].dwNumberOfBytesTransferred == 42 && e[0].lpCompletionKey == 43 &&
              e[0].lpOverlapped == (LPOVERLAPPED)(uintptr_t)44 && e[0].Internal == 0,
          "GQCSEx entry: n=%u", n);
done:
    xclose_port(port);
}

/* Workers: each takes exactly one packet and exits. */
typedef struct {
    HANDLE port;
    pkt_t got;
    atomic_int *ready;
} one_arg;

static void *one_packet_worker(void *a_) {
    one_arg *a = a_;
    atomic_fetch_add(a->ready, 1);
    a->got = deq(a->port, MUST_MS);
    return NULL;
}

static void s1_waiters_one_packet_each(void) {
    enum { W = 4 };
    HANDLE port = new_port(0);
    pthread_t t[W];
    one_arg args[W];
    atomic_int ready = 0;
    int started = 0;
    CHECK(port, "create: %u", GetLastError());
    for (int i = 0; i < W; i++) {
        args[i].port = port;
        args[i].ready = &ready;
        CHECK(pthread_create(&t[i], NULL, one_packet_worker, &args[i]) == 0, "pthread_create");
        started++;
    }
    wait_flag(&ready, W, MUST_MS);
    for (int i = 0; i < W; i++)
        CHECK(PostQueuedCompletionStatus(port, (DWORD)i, 100 + (ULONG_PTR)i, NULL), "post");
done:
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    if (!g_bad && started == W) {
        unsigned seen = 0;
        for (int i = 0; i < W; i++) {
            pkt_t *p = &args[i].got;
            if (!p->ok || p->key < 100 || p->key >= 100 + W || p->bytes != p->key - 100) {
                snprintf(g_why, sizeof g_why, "worker %d: ok=%d err=%u key=%zu", i, p->ok, p->err,
                         (size_t)p->key);
                g_bad = 1;
                break;
            }
            seen |= 1u << (p->key - 100);
        }
        if (!g_bad && seen != (1u << W) - 1) {
            snprintf(g_why, sizeof g_why, "packets not one per worker: mask %#x", seen);
            g_bad = 1;
        }
        pkt_t p = deq(port, 0);
        if (!g_bad && !(p.ok == FALSE && p.err == WAIT_TIMEOUT)) {
            snprintf(g_why, sizeof g_why, "a packet left over");
            g_bad = 1;
        }
    }
    xclose_port(port);
}

/* §19: hand work to a pool, then one exit packet per worker. */
typedef struct {
    HANDLE port;
    int handled;
    int exited;
    DWORD err;
} pool_arg;

static void *pool_worker(void *a_) {
    pool_arg *a = a_;
    for (;;) {
        pkt_t p = deq(a->port, MUST_MS);
        if (!p.ok) {
            a->err = p.err;
            return NULL;
        }
        if (p.key == 0) {
            a->exited = 1;
            return NULL;
        }
        a->handled++;
    }
}

static void s1_pool_exit_packets(void) {
    enum { W = 4, JOBS = 100 };
    HANDLE port = new_port(0);
    pthread_t t[W];
    pool_arg args[W];
    int started = 0;
    memset(args, 0, sizeof args);
    CHECK(port, "create: %u", GetLastError());
    for (int i = 0; i < W; i++) {
        args[i].port = port;
        CHECK(pthread_create(&t[i], NULL, pool_worker, &args[i]) == 0, "pthread_create");
        started++;
    }
    for (int i = 0; i < JOBS; i++)
        CHECK(PostQueuedCompletionStatus(port, 0, 1 + (ULONG_PTR)i, NULL), "post job");
    for (int i = 0; i < W; i++)
        CHECK(PostQueuedCompletionStatus(port, 0, 0, NULL), "post exit");
done:
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    if (!g_bad) {
        int total = 0;
        for (int i = 0; i < W; i++) {
            total += args[i].handled;
            if (!args[i].exited && !g_bad) {
                snprintf(g_why, sizeof g_why, "worker %d did not get its exit packet (err %u)", i,
                         args[i].err);
                g_bad = 1;
            }
        }
        if (!g_bad && total != JOBS) {
            snprintf(g_why, sizeof g_why, "handled %d jobs, posted %d", total, JOBS);
            g_bad = 1;
        }
    }
    xclose_port(port);
}

/* §4 / §5: concurrency accounting with concurrency 1. A holds its packet
 * while it keeps running (it spins: a thread that sleeps or blocks would be
 * counted out, correctly, by the library's blocked-thread detection). */
typedef struct {
    HANDLE port;
    atomic_int holding;   /* A took its first packet */
    atomic_int b_done;    /* B finished its wait */
    pkt_t a_first, a_second, b;
    /* How A waits for B while it holds its packet:
     * 0: it spins (keeps running: counts for the port),
     * 1: Sleep() (documented as a blocked thread),
     * 2: plain usleep() (a block the library must notice by itself). */
    int use_sleep;
} conc_arg;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *conc_a(void *a_) {
    conc_arg *a = a_;
    a->a_first = deq(a->port, MUST_MS);
    atomic_store(&a->holding, 1);
    /* Does not call GQCS again until B is done (bounded: 10 s). */
    double deadline = now_s() + 10.0;
    while (!atomic_load(&a->b_done) && now_s() < deadline) {
        if (a->use_sleep == 1)
            Sleep(20);
        else if (a->use_sleep == 2)
            usleep(20 * 1000);
    }
    a->a_second = deq(a->port, a->use_sleep ? NONE_MS : MUST_MS);
    return NULL;
}

static void *conc_b(void *a_) {
    conc_arg *a = a_;
    a->b = deq(a->port, a->use_sleep ? MUST_MS : NONE_MS * 2);
    atomic_store(&a->b_done, 1);
    return NULL;
}

static void s1_concurrency_accounting(void) {
    HANDLE port = new_port(1);
    pthread_t ta, tb;
    int sa = 0, sb = 0;
    conc_arg a;
    memset(&a, 0, sizeof a);
    CHECK(port, "create: %u", GetLastError());
    a.port = port;
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL), "post 1");
    CHECK(pthread_create(&ta, NULL, conc_a, &a) == 0, "pthread_create");
    sa = 1;
    CHECK(wait_flag(&a.holding, 1, MUST_MS), "A never got its packet");
    CHECK(a.a_first.ok && a.a_first.key == 1, "A's first packet: %u", a.a_first.err);
    /* A runs (concurrency 1 is used up): a queued packet must wait. */
    CHECK(PostQueuedCompletionStatus(port, 2, 2, NULL), "post 2");
    CHECK(pthread_create(&tb, NULL, conc_b, &a) == 0, "pthread_create");
    sb = 1;
    pthread_join(tb, NULL);
    sb = 0;
    CHECK(!a.b.ok && a.b.err == WAIT_TIMEOUT,
          "B dequeued while A was running with concurrency 1: ok=%d err=%u key=%zu", a.b.ok, a.b.err,
          (size_t)a.b.key);
    pthread_join(ta, NULL);
    sa = 0;
    /* §5: A asks again and gets the queued packet at once. */
    CHECK(a.a_second.ok && a.a_second.key == 2, "A's second packet: ok=%d err=%u", a.a_second.ok,
          a.a_second.err);
done:
    atomic_store(&a.b_done, 1);
    if (sb)
        pthread_join(tb, NULL);
    if (sa)
        pthread_join(ta, NULL);
    xclose_port(port);
}

/* §4: a running thread that blocks lets a waiter take a queued packet:
 * mode 1 blocks in Sleep() (documented as a blocked thread), mode 2 in a
 * plain usleep() (the library's blocked-thread detection must see it). */
static void blocked_releases_waiter(int mode) {
    HANDLE port = new_port(1);
    pthread_t ta, tb;
    int sa = 0, sb = 0;
    conc_arg a;
    memset(&a, 0, sizeof a);
    a.use_sleep = mode;
    CHECK(port, "create: %u", GetLastError());
    a.port = port;
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL), "post 1");
    CHECK(pthread_create(&ta, NULL, conc_a, &a) == 0, "pthread_create");
    sa = 1;
    CHECK(wait_flag(&a.holding, 1, MUST_MS), "A never got its packet");
    CHECK(PostQueuedCompletionStatus(port, 2, 2, NULL), "post 2");
    CHECK(pthread_create(&tb, NULL, conc_b, &a) == 0, "pthread_create");
    sb = 1;
    pthread_join(tb, NULL);
    sb = 0;
    CHECK(a.b.ok && a.b.key == 2, "B was not released while A was blocked in %s: ok=%d err=%u",
          mode == 1 ? "Sleep()" : "usleep()", a.b.ok, a.b.err);
    pthread_join(ta, NULL);
    sa = 0;
    CHECK(!a.a_second.ok && a.a_second.err == WAIT_TIMEOUT, "A's second GQCS: ok=%d err=%u",
          a.a_second.ok, a.a_second.err);
done:
    atomic_store(&a.b_done, 1);
    if (sb)
        pthread_join(tb, NULL);
    if (sa)
        pthread_join(ta, NULL);
    xclose_port(port);
}

static void s1_sleep_releases_waiter(void) { blocked_releases_waiter(1); }
static void s1_blocked_thread_releases_waiter(void) { blocked_releases_waiter(2); }

/* ------------------------------------------------------------------ */
/* §2 Association                                                      */
/* ------------------------------------------------------------------ */

static void s2_create_and_associate(void) {
    int sv[2] = {-1, -1};
    HANDLE port = NULL;
    OVERLAPPED *ov = new_ov();
    char *msg = strdup("ping");
    WSABUF b = {4, msg};
    char got[8] = {0};
    CHECK(unix_pair(sv) == 0, "socketpair");
    port = CreateIoCompletionPort(H(sv[0]), NULL, 0x77, 2);
    CHECK(port != NULL && port != INVALID_HANDLE_VALUE, "create+associate: %u", GetLastError());
    CHECK(pending_w(WSASend(S(sv[0]), &b, 1, NULL, 0, ov, NULL)), "WSASend: %d", WSAGetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0x77 && p.ov == ov && p.bytes == 4, "packet ok=%d err=%u key=%zx bytes=%u",
          p.ok, p.err, (size_t)p.key, p.bytes);
    CHECK(xrecv(sv[1], got, sizeof got, 0) == 4 && memcmp(got, "ping", 4) == 0, "peer got %s", got);
done:
    xclose(sv[0]);
    xclose(sv[1]);
    xclose_port(port);
    free(ov);
    free(msg);
}

static void s2_associate_kinds(void) {
    int sv[2] = {-1, -1}, pp[2] = {-1, -1};
    HANDLE port = NULL, f = INVALID_HANDLE_VALUE;
    OVERLAPPED *ov1 = new_ov(), *ov2 = new_ov(), *ov3 = new_ov();
    char *b1 = calloc(1, 64), *b2 = calloc(1, 64), *b3 = strdup("file data");
    WSABUF wb = {64, b1};
    DWORD flags = 0;
    CHECK(unix_pair(sv) == 0 && pipe2(pp, O_CLOEXEC) == 0, "socketpair/pipe");
    port = new_port(0);
    CHECK(port, "create: %u", GetLastError());
    f = open_file(tmp_path("kinds"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "socket: %u", GetLastError());
    CHECK(CreateIoCompletionPort(H(pp[0]), port, 2, 0) == port, "pipe: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 3, 99) == port, "file: %u", GetLastError());

    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &flags, ov1, NULL)), "WSARecv: %d",
          WSAGetLastError());
    CHECK(pending_b(ReadFile(H(pp[0]), b2, 64, NULL, ov2)), "ReadFile(pipe): %u", GetLastError());
    CHECK(pending_b(WriteFile(f, b3, 9, NULL, ov3)), "WriteFile(file): %u", GetLastError());
    CHECK(send(sv[1], "sock", 4, 0) == 4, "send");
    CHECK(write(pp[1], "pipe!", 5) == 5, "write");
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok, "packet %d failed: %u", i, p.err);
        if (p.ov == ov1)
            CHECK(p.key == 1 && p.bytes == 4 && memcmp(b1, "sock", 4) == 0, "socket packet");
        else if (p.ov == ov2)
            CHECK(p.key == 2 && p.bytes == 5 && memcmp(b2, "pipe!", 5) == 0, "pipe packet");
        else if (p.ov == ov3)
            CHECK(p.key == 3 && p.bytes == 9, "file packet key=%zu bytes=%u", (size_t)p.key, p.bytes);
        else
            CHECK(0, "unknown ov %p", (void *)p.ov);
        seen |= p.ov == ov1 ? 1 : p.ov == ov2 ? 2 : 4;
    }
    CHECK(seen == 7, "packets %#x", seen);
done:
    xclose(sv[0]);
    xclose(sv[1]);
    xclose(pp[0]);
    xclose(pp[1]);
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose_port(port);
    free(ov1), free(ov2), free(ov3), free(b1), free(b2), free(b3);
}

static void s2_second_association_fails(void) {
    int sv[2] = {-1, -1};
    HANDLE p1 = NULL, p2 = NULL, f = INVALID_HANDLE_VALUE;
    CHECK(unix_pair(sv) == 0, "socketpair");
    p1 = new_port(0);
    p2 = new_port(0);
    CHECK(p1 && p2, "create");
    CHECK(CreateIoCompletionPort(H(sv[0]), p1, 1, 0) == p1, "first: %u", GetLastError());
    SetLastError(0);
    CHECK(CreateIoCompletionPort(H(sv[0]), p1, 2, 0) == NULL, "second (same port) succeeded");
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "same port: %u", GetLastError());
    SetLastError(0);
    CHECK(CreateIoCompletionPort(H(sv[0]), p2, 2, 0) == NULL, "second (other port) succeeded");
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "other port: %u", GetLastError());
    SetLastError(0);
    CHECK(CreateIoCompletionPort(H(sv[0]), NULL, 2, 0) == NULL, "second (new port) succeeded");
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "new port: %u", GetLastError());
    f = open_file(tmp_path("assoc2"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, p1, 1, 0) == p1, "file first: %u", GetLastError());
    SetLastError(0);
    CHECK(CreateIoCompletionPort(f, p2, 1, 0) == NULL && GetLastError() == ERROR_INVALID_PARAMETER,
          "file second: %u", GetLastError());
    /* A port given as the file. */
    SetLastError(0);
    CHECK(CreateIoCompletionPort(p2, p1, 1, 0) == NULL, "port as file accepted");
    CHECK(GetLastError() == ERROR_INVALID_PARAMETER, "port as file: %u (header documents 87)",
          GetLastError());
done:
    xclose(sv[0]);
    xclose(sv[1]);
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose_port(p1);
    xclose_port(p2);
}

static void s2_invalid_handles(void) {
    HANDLE port = new_port(0), other = NULL;
    HANDLE made_up = (HANDLE)(uintptr_t)0x4350000000000001ull;
    int sv[2] = {-1, -1};
    CHECK(port, "create");
    CHECK(CloseHandle(port), "close: %u", GetLastError());
    pkt_t p = deq(port, 0);
    CHECK(!p.ok && p.err == ERROR_INVALID_HANDLE && p.ov == NULL, "GQCS on closed port: %u", p.err);
    SetLastError(0);
    CHECK(!CloseHandle(port) && GetLastError() == ERROR_INVALID_HANDLE, "CloseHandle twice: %u",
          GetLastError());
    SetLastError(0);
    CHECK(!PostQueuedCompletionStatus(port, 0, 0, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "post on stale port: %u", GetLastError());
    /* A new port must not answer to the stale value. */
    other = new_port(0);
    CHECK(other && other != port, "new port reuses the stale value");
    SetLastError(0);
    CHECK(!PostQueuedCompletionStatus(port, 0, 0, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "post on stale port after a new one: %u", GetLastError());
    port = NULL;
    /* Made-up values. */
    SetLastError(0);
    CHECK(!CloseHandle(made_up) && GetLastError() == ERROR_INVALID_HANDLE, "CloseHandle(made up): %u",
          GetLastError());
    p = deq(made_up, 0);
    CHECK(!p.ok && p.err == ERROR_INVALID_HANDLE, "GQCS(made up): %u", p.err);
    SetLastError(0);
    CHECK(!PostQueuedCompletionStatus(made_up, 0, 0, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "post(made up): %u", GetLastError());
    p = deq(NULL, 0);
    CHECK(!p.ok && p.err == ERROR_INVALID_HANDLE, "GQCS(NULL): %u", p.err);
    p = deq(INVALID_HANDLE_VALUE, 0);
    CHECK(!p.ok && p.err == ERROR_INVALID_HANDLE, "GQCS(INVALID_HANDLE_VALUE): %u", p.err);
    CHECK(unix_pair(sv) == 0, "socketpair");
    SetLastError(0);
    CHECK(CreateIoCompletionPort(H(sv[0]), made_up, 1, 0) == NULL &&
              GetLastError() == ERROR_INVALID_HANDLE,
          "associate with made-up port: %u", GetLastError());
    SetLastError(0);
    CHECK(CreateIoCompletionPort(made_up, other, 1, 0) == NULL &&
              GetLastError() == ERROR_INVALID_HANDLE,
          "associate made-up handle: %u", GetLastError());
    /* The socket was not associated by the failed call: it still can be. */
    CHECK(CreateIoCompletionPort(H(sv[0]), other, 1, 0) == other, "associate after failures: %u",
          GetLastError());
    /* A closed fd. */
    int closed = sv[1];
    sv[1] = -1;
    close(closed);
    SetLastError(0);
    CHECK(CreateIoCompletionPort(H(closed), other, 1, 0) == NULL &&
              GetLastError() == ERROR_INVALID_HANDLE,
          "associate closed fd: %u", GetLastError());
    SetLastError(0);
    CHECK(!ReadFile(made_up, g_why, 1, NULL, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "ReadFile(made up): %u", GetLastError());
    /* A port is not a file. */
    SetLastError(0);
    CHECK(!ReadFile(other, g_why, 1, NULL, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "ReadFile(port): %u", GetLastError());
done:
    xclose(sv[0]);
    xclose(sv[1]);
    xclose_port(port);
    xclose_port(other);
}

static void s2_shared_port_and_key(void) {
    int a[2] = {-1, -1}, b[2] = {-1, -1};
    HANDLE port = new_port(0);
    OVERLAPPED *ova = new_ov(), *ovb = new_ov();
    char *ba = calloc(1, 16), *bb = calloc(1, 16);
    WSABUF wa = {16, ba}, wb = {16, bb};
    DWORD fl = 0;
    CHECK(port && unix_pair(a) == 0 && unix_pair(b) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(a[0]), port, 5, 0) == port, "assoc a");
    CHECK(CreateIoCompletionPort(H(b[0]), port, 5, 0) == port, "assoc b (same key)");
    CHECK(pending_w(WSARecv(S(a[0]), &wa, 1, NULL, &fl, ova, NULL)), "recv a");
    CHECK(pending_w(WSARecv(S(b[0]), &wb, 1, NULL, &fl, ovb, NULL)), "recv b");
    CHECK(send(b[1], "bb", 2, 0) == 2 && send(a[1], "aaa", 3, 0) == 3, "send");
    int seen = 0;
    for (int i = 0; i < 2; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok && p.key == 5, "packet %d: ok=%d err=%u key=%zu", i, p.ok, p.err, (size_t)p.key);
        CHECK(p.ov == ova || p.ov == ovb, "unknown ov");
        if (p.ov == ova)
            CHECK(p.bytes == 3 && memcmp(ba, "aaa", 3) == 0, "a's data");
        else
            CHECK(p.bytes == 2 && memcmp(bb, "bb", 2) == 0, "b's data");
        seen |= p.ov == ova ? 1 : 2;
    }
    CHECK(seen == 3, "seen %#x", seen);
done:
    xclose(a[0]), xclose(a[1]), xclose(b[0]), xclose(b[1]);
    xclose_port(port);
    free(ova), free(ovb), free(ba), free(bb);
}

/* §10: closing a handle that has no pending I/O queues nothing. */
static void s2_close_idle_handle_queues_nothing(void) {
    int sv[2] = {-1, -1};
    HANDLE port = new_port(0), f = INVALID_HANDLE_VALUE;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    f = open_file(tmp_path("idle"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 2, 0) == port, "assoc file");
    CHECK(closesocket(S(sv[0])) == 0, "closesocket: %d", WSAGetLastError());
    sv[0] = -1;
    CHECK(CloseHandle(f), "CloseHandle(file): %u", GetLastError());
    f = INVALID_HANDLE_VALUE;
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "a packet was queued: ok=%d err=%u", p.ok, p.err);
done:
    xclose(sv[0]), xclose(sv[1]);
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose_port(port);
}

/* ------------------------------------------------------------------ */
/* §3 Overlapped operations                                            */
/* ------------------------------------------------------------------ */

static void s3_file_offsets(void) {
    HANDLE port = new_port(0), f = INVALID_HANDLE_VALUE;
    OVERLAPPED *ov = new_ov();
    char *w = malloc(100), *r = calloc(1, 200);
    for (int i = 0; i < 100; i++)
        w[i] = (char)('A' + i % 26);
    CHECK(port, "create");
    f = open_file(tmp_path("offsets"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 0xF11E, 0) == port, "assoc");
    ov_at(ov, 4096);
    CHECK(pending_b(WriteFile(f, w, 100, NULL, ov)), "WriteFile: %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0xF11E && p.ov == ov && p.bytes == 100, "write packet ok=%d err=%u bytes=%u",
          p.ok, p.err, p.bytes);
    CHECK(HasOverlappedIoCompleted(ov) && ov->Internal == 0 && ov->InternalHigh == 100,
          "OVERLAPPED after write: Internal=%zx InternalHigh=%zu", (size_t)ov->Internal,
          (size_t)ov->InternalHigh);
    CHECK(ov->Offset == 4096, "Offset changed");
    /* Read it back, starting a little before (a hole reads as zeros). */
    memset(ov, 0, sizeof *ov);
    ov_at(ov, 4096 - 50);
    CHECK(pending_b(ReadFile(f, r, 200, NULL, ov)), "ReadFile: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0xF11E && p.ov == ov && p.bytes == 150, "read packet ok=%d err=%u bytes=%u",
          p.ok, p.err, p.bytes);
    for (int i = 0; i < 50; i++)
        CHECK(r[i] == 0, "hole byte %d = %d", i, r[i]);
    CHECK(memcmp(r + 50, w, 100) == 0, "data read back differs");
    DWORD n = 0;
    CHECK(GetOverlappedResult(f, ov, &n, FALSE) && n == 150, "GetOverlappedResult: %u", GetLastError());
    /* No shared file pointer: an offset-0 read reads the hole. */
    memset(ov, 0, sizeof *ov);
    memset(r, 1, 10);
    CHECK(pending_b(ReadFile(f, r, 10, NULL, ov)), "ReadFile@0: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 10 && r[0] == 0 && r[9] == 0, "read at 0");
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose_port(port);
    free(ov), free(w), free(r);
}

/* §14: hEvent low bit: no packet; GetOverlappedResult gives the result. */
static void s3_no_packet_low_bit(void) {
    HANDLE port = new_port(0), f = INVALID_HANDLE_VALUE;
    OVERLAPPED *ov = new_ov(), *ov2 = new_ov();
    char *w = strdup("0123456789"), *r = calloc(1, 16), *rb = calloc(1, 16);
    int sv[2] = {-1, -1};
    DWORD n = 0, fl = 0;
    WSABUF wb = {16, rb};
    CHECK(port && unix_pair(sv) == 0, "setup");
    f = open_file(tmp_path("lowbit"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 1, 0) == port, "assoc");
    ov->hEvent = (void *)(uintptr_t)1;
    CHECK(pending_b(WriteFile(f, w, 10, NULL, ov)), "WriteFile: %u", GetLastError());
    CHECK(GetOverlappedResult(f, ov, &n, TRUE) && n == 10, "GetOverlappedResult(write): %u n=%u",
          GetLastError(), n);
    memset(ov, 0, sizeof *ov);
    ov->hEvent = (void *)(uintptr_t)1;
    ov_at(ov, 2);
    CHECK(pending_b(ReadFile(f, r, 16, NULL, ov)), "ReadFile: %u", GetLastError());
    n = 0;
    CHECK(GetOverlappedResult(f, ov, &n, TRUE) && n == 8 && memcmp(r, "23456789", 8) == 0,
          "GetOverlappedResult(read): %u n=%u", GetLastError(), n);
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT && p.ov == NULL, "a packet was queued (ok=%d ov=%p)", p.ok,
          (void *)p.ov);
    /* Same on a socket, whose receive is really pending for a while. */
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 2, 0) == port, "assoc socket");
    ov2->hEvent = (void *)(uintptr_t)1;
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, ov2, NULL)), "WSARecv: %d",
          WSAGetLastError());
    n = 77;
    CHECK(!WSAGetOverlappedResult(S(sv[0]), ov2, &n, FALSE, &fl) &&
              WSAGetLastError() == WSA_IO_INCOMPLETE,
          "in flight: expected WSA_IO_INCOMPLETE, got %d", WSAGetLastError());
    CHECK(!HasOverlappedIoCompleted(ov2), "HasOverlappedIoCompleted while pending");
    CHECK(send(sv[1], "xyz", 3, 0) == 3, "send");
    CHECK(WSAGetOverlappedResult(S(sv[0]), ov2, &n, TRUE, &fl) && n == 3 && memcmp(rb, "xyz", 3) == 0,
          "WSAGetOverlappedResult: %d n=%u", WSAGetLastError(), n);
    CHECK(HasOverlappedIoCompleted(ov2), "HasOverlappedIoCompleted after");
    p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "a packet was queued for the socket");
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(ov2), free(w), free(r), free(rb);
}

/* §13: failed at once → the error at the call, and no packet. */
static void s3_immediate_failure_no_packet(void) {
    HANDLE port = new_port(0), wo = INVALID_HANDLE_VALUE;
    int s = -1, sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {16, buf};
    DWORD fl = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    /* Argument errors. */
    CHECK(WSARecv(S(sv[0]), NULL, 1, NULL, &fl, ov, NULL) == SOCKET_ERROR &&
              WSAGetLastError() == WSAEFAULT,
          "WSARecv(NULL buffers): %d", WSAGetLastError());
    CHECK(!ReadFile(H(sv[0]), NULL, 16, NULL, ov) && GetLastError() == ERROR_INVALID_PARAMETER,
          "ReadFile(NULL buffer): %u", GetLastError());
    CHECK(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, (OVERLAPPED *)((char *)ov + 4), NULL) == SOCKET_ERROR &&
              WSAGetLastError() == WSA_INVALID_PARAMETER,
          "misaligned OVERLAPPED: %d", WSAGetLastError());
    /* Not connected. */
    s = (int)WSASocketW(AF_INET, SOCK_STREAM, 0, NULL, 0, WSA_FLAG_OVERLAPPED);
    CHECK(s >= 0, "WSASocketW: %d", WSAGetLastError());
    CHECK(CreateIoCompletionPort(H(s), port, 2, 0) == port, "assoc tcp");
    int r = WSARecv(S(s), &wb, 1, NULL, &fl, ov, NULL);
    CHECK(r == SOCKET_ERROR && WSAGetLastError() != WSA_IO_PENDING,
          "WSARecv on a not-connected socket: r=%d err=%d (expected a failure at the call)", r,
          WSAGetLastError());
    CHECK(WSAGetLastError() == WSAENOTCONN, "not connected: %d", WSAGetLastError());
    memset(ov, 0, sizeof *ov);
    r = WSASend(S(s), &wb, 1, NULL, 0, ov, NULL);
    CHECK(r == SOCKET_ERROR && WSAGetLastError() == WSAENOTCONN,
          "WSASend on a not-connected socket: r=%d err=%d (expected WSAENOTCONN at the call)", r,
          WSAGetLastError());
    /* ReadFile on a write-only file. */
    wo = open_file(tmp_path("wronly"), GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(wo != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(wo, port, 3, 0) == port, "assoc file");
    memset(ov, 0, sizeof *ov);
    BOOL b = ReadFile(wo, buf, 16, NULL, ov);
    CHECK(!b && GetLastError() == ERROR_ACCESS_DENIED,
          "ReadFile on a write-only file: b=%d err=%u (expected ERROR_ACCESS_DENIED at the call)", b,
          GetLastError());
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "a packet was queued: ok=%d err=%u key=%zu", p.ok, p.err,
          (size_t)p.key);
    /* The OVERLAPPED is free again. */
    memset(ov, 0, sizeof *ov);
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, ov, NULL)), "reuse after failure: %d",
          WSAGetLastError());
    CHECK(send(sv[1], "k", 1, 0) == 1, "send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov && p.bytes == 1, "packet after reuse: %u", p.err);
done:
    if (wo != INVALID_HANDLE_VALUE)
        CloseHandle(wo);
    xclose(s), xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

static void s3_pending_ov_reuse(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *b1 = calloc(1, 16), *b2 = calloc(1, 16);
    WSABUF w1 = {16, b1}, w2 = {16, b2};
    DWORD fl = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 9, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(sv[0]), &w1, 1, NULL, &fl, ov, NULL)), "first: %d", WSAGetLastError());
    CHECK(WSARecv(S(sv[0]), &w2, 1, NULL, &fl, ov, NULL) == SOCKET_ERROR &&
              WSAGetLastError() == WSA_INVALID_PARAMETER,
          "reuse (WSARecv): %d", WSAGetLastError());
    CHECK(!ReadFile(H(sv[0]), b2, 16, NULL, ov) && GetLastError() == ERROR_INVALID_PARAMETER,
          "reuse (ReadFile): %u", GetLastError());
    CHECK(ov->Internal == STATUS_PENDING, "the refused call touched the OVERLAPPED: %zx",
          (size_t)ov->Internal);
    CHECK(send(sv[1], "once", 4, 0) == 4, "send");
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov && p.key == 9 && p.bytes == 4 && memcmp(b1, "once", 4) == 0,
          "first op's packet: ok=%d err=%u bytes=%u", p.ok, p.err, p.bytes);
    p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "a second packet: ok=%d ov=%p", p.ok, (void *)p.ov);
    char tmp[16];
    CHECK(xrecv(sv[0], tmp, sizeof tmp, MSG_DONTWAIT) < 0, "the refused receive consumed nothing");
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(b1), free(b2);
}

static void s3_exactly_once_many(void) {
    enum { N = 200, SZ = 512 };
    HANDLE port = new_port(0), f = INVALID_HANDLE_VALUE;
    OVERLAPPED *ovs = calloc(N, sizeof(OVERLAPPED));
    char *bufs = calloc(N, SZ);
    unsigned char *seen = calloc(N, 1);
    const char *path = tmp_path("many");
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(port && fd >= 0, "setup");
    for (int i = 0; i < N; i++) {
        char block[SZ];
        memset(block, (unsigned char)i, SZ);
        memcpy(block, &i, sizeof i);
        CHECK(write(fd, block, SZ) == SZ, "write block");
    }
    close(fd);
    fd = -1;
    f = open_file(path, GENERIC_READ, OPEN_EXISTING);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 0x5EE, 0) == port, "assoc");
    /* Issue in a scrambled order. */
    for (int k = 0; k < N; k++) {
        int i = (k * 7) % N;
        ov_at(&ovs[i], (uint64_t)i * SZ);
        CHECK(pending_b(ReadFile(f, bufs + (size_t)i * SZ, SZ, NULL, &ovs[i])), "ReadFile %d: %u", i,
              GetLastError());
    }
    int got = 0;
    while (got < N) {
        OVERLAPPED_ENTRY e[16];
        ULONG n = 0;
        if (got % 2) {
            pkt_t p = deq(port, MUST_MS);
            CHECK(p.ok, "packet %d failed: %u", got, p.err);
            e[0].lpOverlapped = p.ov;
            e[0].lpCompletionKey = p.key;
            e[0].dwNumberOfBytesTransferred = p.bytes;
            e[0].Internal = 0;
            n = 1;
        } else {
            CHECK(GetQueuedCompletionStatusEx(port, e, 16, &n, MUST_MS, FALSE), "GQCSEx after %d: %u",
                  got, GetLastError());
        }
        for (ULONG j = 0; j < n; j++) {
            OVERLAPPED *o = e[j].lpOverlapped;
            CHECK(o >= ovs && o < ovs + N, "foreign ov %p", (void *)o);
            int i = (int)(o - ovs);
            CHECK(!seen[i], "op %d completed twice", i);
            seen[i] = 1;
            CHECK(e[j].Internal == 0 && e[j].lpCompletionKey == 0x5EE &&
                      e[j].dwNumberOfBytesTransferred == SZ,
                  "op %d: Internal=%zx bytes=%u", i, (size_t)e[j].Internal,
                  e[j].dwNumberOfBytesTransferred);
            int tag;
            memcpy(&tag, bufs + (size_t)i * SZ, sizeof tag);
            CHECK(tag == i && (unsigned char)bufs[(size_t)i * SZ + SZ - 1] == (unsigned char)i,
                  "op %d read the wrong block (%d)", i, tag);
            got++;
        }
    }
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "an extra packet after %d", N);
done:
    if (fd >= 0)
        close(fd);
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose_port(port);
    free(ovs), free(bufs), free(seen);
}

/* §13 skip-on-success: exactly one of (inline result, packet). */
static void s3_skip_on_success(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 32);
    WSABUF wb = {32, buf};
    DWORD fl = 0, n = 0;
    int inline_n = 0, packets = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(!SetFileCompletionNotificationModes(H(sv[0]), 0x80) &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "unknown flag accepted: %u", GetLastError());
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 4, 0) == port, "assoc");
    CHECK(SetFileCompletionNotificationModes(H(sv[0]), FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                           FILE_SKIP_SET_EVENT_ON_HANDLE),
          "SetFileCompletionNotificationModes: %u", GetLastError());
    for (int round = 0; round < 20; round++) {
        char msg[8];
        snprintf(msg, sizeof msg, "m%02d", round);
        CHECK(send(sv[1], msg, 3, 0) == 3, "send");
        memset(ov, 0, sizeof *ov);
        memset(buf, 0, 32);
        n = 0;
        int r = WSARecv(S(sv[0]), &wb, 1, &n, &fl, ov, NULL);
        if (r == 0) {
            CHECK(n == 3 && memcmp(buf, msg, 3) == 0, "inline result: n=%u", n);
            CHECK(HasOverlappedIoCompleted(ov) && ov->InternalHigh == 3, "inline OVERLAPPED");
            pkt_t p = deq(port, NONE_MS);
            CHECK(!p.ok && p.err == WAIT_TIMEOUT, "completed inline AND queued a packet");
            inline_n++;
        } else {
            CHECK(WSAGetLastError() == WSA_IO_PENDING, "WSARecv: %d", WSAGetLastError());
            pkt_t p = deq(port, MUST_MS);
            CHECK(p.ok && p.ov == ov && p.bytes == 3 && memcmp(buf, msg, 3) == 0,
                  "pending receive's packet: ok=%d err=%u", p.ok, p.err);
            p = deq(port, 0);
            CHECK(!p.ok && p.err == WAIT_TIMEOUT, "two packets for one receive");
            packets++;
        }
    }
    /* An operation that does not complete in the call still queues. */
    memset(ov, 0, sizeof *ov);
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, &n, &fl, ov, NULL)), "WSARecv(no data): %d",
          WSAGetLastError());
    CHECK(send(sv[1], "late", 4, 0) == 4, "send");
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov && p.bytes == 4, "late packet: ok=%d err=%u", p.ok, p.err);
    fprintf(stderr, "  (skip_on_success: %d inline, %d via packet)\n", inline_n, packets);
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

/* §13 second outcome: completed during the call without skip mode still
 * queues its packet (the call may report it as done or as pending). */
static void s3_completed_at_once_still_queues(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 32);
    WSABUF wb = {32, buf};
    DWORD fl = 0, n = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 6, 0) == port, "assoc");
    for (int round = 0; round < 10; round++) {
        CHECK(send(sv[1], "now", 3, 0) == 3, "send");
        memset(ov, 0, sizeof *ov);
        int r = WSARecv(S(sv[0]), &wb, 1, &n, &fl, ov, NULL);
        CHECK(r == 0 || pending_w(r), "WSARecv: r=%d err=%d", r, WSAGetLastError());
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok && p.ov == ov && p.bytes == 3 && p.key == 6, "packet: ok=%d err=%u", p.ok, p.err);
        p = deq(port, 0);
        CHECK(!p.ok && p.err == WAIT_TIMEOUT, "two packets for one receive");
    }
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

/* §12: a stack OVERLAPPED only warns (CPORT_STRICT unset): the op works. */
static void s3_stack_overlapped_warns(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED ov;
    char buf[16];
    WSABUF wb = {sizeof buf, buf};
    DWORD fl = 0;
    memset(&ov, 0, sizeof ov);
    CHECK(getenv("CPORT_STRICT") == NULL || strcmp(getenv("CPORT_STRICT"), "1") != 0,
          "run without CPORT_STRICT=1");
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, &ov, NULL)), "WSARecv(stack ov): %d",
          WSAGetLastError());
    CHECK(send(sv[1], "stk", 3, 0) == 3, "send");
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == &ov && p.bytes == 3 && memcmp(buf, "stk", 3) == 0, "packet: %u", p.err);
done:
    /* The OVERLAPPED must outlive the operation: close before returning. */
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
}

/* The CPORT_STRICT=1 child: a stack OVERLAPPED is refused, no packet. */
static int strict_child(void) {
    HANDLE port = new_port(0);
    int sv[2];
    OVERLAPPED ov;
    char buf[16];
    WSABUF wb = {sizeof buf, buf};
    DWORD fl = 0;
    memset(&ov, 0, sizeof ov);
    if (!port || unix_pair(sv) != 0 || CreateIoCompletionPort(H(sv[0]), port, 1, 0) != port) {
        fprintf(stderr, "strict child: setup\n");
        return 1;
    }
    int r = WSARecv(S(sv[0]), &wb, 1, NULL, &fl, &ov, NULL);
    if (r != SOCKET_ERROR || WSAGetLastError() != WSA_INVALID_PARAMETER) {
        fprintf(stderr, "strict child: stack OVERLAPPED: r=%d err=%d\n", r, WSAGetLastError());
        return 1;
    }
    if (ReadFile(H(sv[0]), buf, 16, NULL, &ov) || GetLastError() != ERROR_INVALID_PARAMETER) {
        fprintf(stderr, "strict child: ReadFile stack OVERLAPPED: %u\n", GetLastError());
        return 1;
    }
    if (send(sv[1], "s", 1, 0) != 1)
        return 1;
    pkt_t p = deq(port, NONE_MS);
    if (p.ok || p.err != WAIT_TIMEOUT) {
        fprintf(stderr, "strict child: a packet was queued\n");
        return 1;
    }
    OVERLAPPED *hov = new_ov();
    char *hb = calloc(1, 16);
    WSABUF hw = {16, hb};
    if (!pending_w(WSARecv(S(sv[0]), &hw, 1, NULL, &fl, hov, NULL))) {
        fprintf(stderr, "strict child: heap OVERLAPPED refused: %d\n", WSAGetLastError());
        return 1;
    }
    p = deq(port, MUST_MS);
    if (!p.ok || p.ov != hov || p.bytes != 1) {
        fprintf(stderr, "strict child: heap packet: ok=%d err=%u\n", p.ok, p.err);
        return 1;
    }
    closesocket(S(sv[0]));
    closesocket(S(sv[1]));
    CloseHandle(port);
    free(hov);
    free(hb);
    return 0;
}

extern char **environ;

static void s3_strict_mode_refuses_stack_ov(void) {
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CPORT_STRICT=", 13) != 0)
            env[k++] = environ[i];
    env[k++] = "CPORT_STRICT=1";
    env[k] = NULL;
    char *argv[] = {"suite", "--strict-child", NULL};
    pid_t pid = fork();
    if (pid == 0) {
        execve("/proc/self/exe", argv, env);
        _exit(127);
    }
    free(env);
    CHECK(pid > 0, "fork: %s", strerror(errno));
    int status = 0;
    pid_t w = 0;
    for (int i = 0; i < 200 && (w = waitpid(pid, &status, WNOHANG)) == 0; i++)
        usleep(100 * 1000);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(0, "strict child did not finish");
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "strict child failed (status %#x)", status);
done:;
}

/* ------------------------------------------------------------------ */
/* §4 Dequeue                                                          */
/* ------------------------------------------------------------------ */

static void s4_timeout_leaves_outputs(void) {
    HANDLE port = new_port(0);
    DWORD bytes = 0xDEADBEEF;
    ULONG_PTR key = 0xC0FFEE;
    OVERLAPPED *ov = (OVERLAPPED *)(uintptr_t)0x10;
    CHECK(port, "create");
    SetLastError(0);
    BOOL r = GetQueuedCompletionStatus(port, &bytes, &key, &ov, 50);
    CHECK(!r && GetLastError() == WAIT_TIMEOUT, "r=%d err=%u", r, GetLastError());
    CHECK(ov == NULL, "ov not NULL: %p", (void *)ov);
    CHECK(bytes == 0xDEADBEEF && key == 0xC0FFEE, "bytes/key touched: %x %zx", bytes, (size_t)key);
    /* NULL outputs are refused (Windows would fault). */
    CHECK(!GetQueuedCompletionStatus(port, NULL, &key, &ov, 0) &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "NULL bytes pointer: %u", GetLastError());
done:
    xclose_port(port);
}

static void s4_timeout_zero_polls(void) {
    HANDLE port = new_port(0);
    CHECK(port, "create");
    pkt_t p = deq(port, 0);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT && p.ov == NULL, "empty poll: ok=%d err=%u", p.ok, p.err);
    CHECK(PostQueuedCompletionStatus(port, 3, 4, (LPOVERLAPPED)(uintptr_t)8), "post");
    p = deq(port, 0);
    CHECK(p.ok && p.bytes == 3 && p.key == 4 && p.ov == (LPOVERLAPPED)(uintptr_t)8, "poll: %u", p.err);
    p = deq(port, 0);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "second poll");
done:
    xclose_port(port);
}

static void s4_failed_io_packet(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {16, buf};
    DWORD fl = 0, n = 99;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 0xABC, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv");
    CHECK(!GetOverlappedResult(H(sv[0]), ov, &n, FALSE) && GetLastError() == ERROR_IO_INCOMPLETE,
          "GetOverlappedResult in flight: %u", GetLastError());
    CHECK(CancelIoEx(H(sv[0]), ov), "CancelIoEx: %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ov && p.key == 0xABC && p.bytes == 0, "ok=%d ov=%p key=%zx bytes=%u", p.ok,
          (void *)p.ov, (size_t)p.key, p.bytes);
    CHECK(p.err == ERROR_OPERATION_ABORTED, "error %u", p.err);
    CHECK(HasOverlappedIoCompleted(ov) && ov->Internal != 0, "Internal = %zx", (size_t)ov->Internal);
    CHECK(!GetOverlappedResult(H(sv[0]), ov, &n, FALSE) && GetLastError() == ERROR_OPERATION_ABORTED,
          "GetOverlappedResult after: %u", GetLastError());
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

typedef struct {
    HANDLE port;
    atomic_int *ready;
    pkt_t got;
} waiter_arg;

static void *closing_waiter(void *a_) {
    waiter_arg *a = a_;
    atomic_fetch_add(a->ready, 1);
    a->got = deq(a->port, MUST_MS);
    return NULL;
}

static void s4_close_port_releases_waiters(void) {
    enum { W = 3 };
    pthread_t t[W];
    waiter_arg args[W];
    int attempts = 0;
    for (;;) {
        atomic_int ready = 0;
        int started = 0;
        HANDLE port = new_port(0);
        CHECK(port, "create");
        for (int i = 0; i < W; i++) {
            args[i].port = port;
            args[i].ready = &ready;
            if (pthread_create(&t[i], NULL, closing_waiter, &args[i]) == 0)
                started++;
        }
        wait_flag(&ready, started, MUST_MS);
        usleep(200 * 1000); /* let them enter the wait (not asserted) */
        BOOL closed = CloseHandle(port);
        for (int i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        CHECK(started == W && closed, "setup: started=%d closed=%d", started, closed);
        int abandoned = 0, late = 0;
        for (int i = 0; i < W; i++) {
            CHECK(!args[i].got.ok && args[i].got.ov == NULL, "waiter %d got a packet", i);
            if (args[i].got.err == ERROR_ABANDONED_WAIT_0)
                abandoned++;
            else if (args[i].got.err == ERROR_INVALID_HANDLE)
                late++; /* had not started waiting yet */
            else
                CHECK(0, "waiter %d: error %u", i, args[i].got.err);
        }
        if (abandoned == W)
            break;
        CHECK(++attempts < 5, "waiters never all inside the wait (%d abandoned, %d late)", abandoned,
              late);
    }
done:;
}

static void s4_gqcs_ex(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {16, buf};
    DWORD fl = 0;
    OVERLAPPED_ENTRY e[8];
    ULONG n = 0;
    CHECK(port, "create");
    for (int i = 0; i < 5; i++)
        CHECK(PostQueuedCompletionStatus(port, 10 + (DWORD)i, 20 + (ULONG_PTR)i,
                                         (LPOVERLAPPED)(uintptr_t)(32 + 8 * i)),
              "post");
    memset(e, 0xff, sizeof e);
    CHECK(GetQueuedCompletionStatusEx(port, e, 3, &n, MUST_MS, FALSE), "first: %u", GetLastError());
    CHECK(n == 3, "removed %u, expected 3", n);
    for (int i = 0; i < 3; i++)
        CHECK(e[i].dwNumberOfBytesTransferred == 10 + (DWORD)i && e[i].lpCompletionKey == 20 + (ULONG_PTR)i &&
                  e[i].lpOverlapped == (LPOVERLAPPED)(uintptr_t)(32 + 8 * i) && e[i].Internal == 0,
              "entry %d", i);
    CHECK(e[3].lpCompletionKey == (ULONG_PTR)-1, "wrote past the removed entries");
    n = 0;
    CHECK(GetQueuedCompletionStatusEx(port, e, 8, &n, MUST_MS, FALSE), "second: %u", GetLastError());
    CHECK(n == 2 && e[0].lpCompletionKey == 23 && e[1].lpCompletionKey == 24,
          "second batch: n=%u (does not wait for more than queued)", n);
    /* Time-out. */
    n = 77;
    SetLastError(0);
    CHECK(!GetQueuedCompletionStatusEx(port, e, 8, &n, 50, FALSE) && GetLastError() == WAIT_TIMEOUT,
          "timeout: %u", GetLastError());
    CHECK(n == 0, "removed %u on timeout", n);
    /* Refused arguments. */
    CHECK(!GetQueuedCompletionStatusEx(port, e, 8, &n, 0, TRUE) &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "alertable TRUE: %u", GetLastError());
    CHECK(!GetQueuedCompletionStatusEx(port, e, 0, &n, 0, FALSE) &&
              GetLastError() == ERROR_INVALID_PARAMETER,
          "count 0: %u", GetLastError());
    /* A failed operation's entry: Internal holds its NTSTATUS. */
    CHECK(unix_pair(sv) == 0, "socketpair");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 7, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv");
    CHECK(CancelIoEx(H(sv[0]), ov), "cancel: %u", GetLastError());
    CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL), "post");
    n = 0;
    CHECK(GetQueuedCompletionStatusEx(port, e, 8, &n, MUST_MS, FALSE), "failed entry: %u",
          GetLastError());
    ULONG i0 = 0;
    if (e[0].lpOverlapped != ov && n == 1) {
        /* The cancel packet came second: take it. */
        CHECK(GetQueuedCompletionStatusEx(port, e, 8, &n, MUST_MS, FALSE), "failed entry (2)");
    }
    for (; i0 < n && e[i0].lpOverlapped != ov; i0++)
        ;
    CHECK(i0 < n, "no entry for the cancelled op");
    CHECK(e[i0].lpCompletionKey == 7 && e[i0].Internal == 0xC0000120u,
          "cancelled entry: key=%zu Internal=%#zx (STATUS_CANCELLED expected)",
          (size_t)e[i0].lpCompletionKey, (size_t)e[i0].Internal);
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

/* ------------------------------------------------------------------ */
/* §5 Errors a packet carries                                          */
/* ------------------------------------------------------------------ */

static void s5_cancelled_aborted(void) {
    HANDLE port = new_port(0);
    int pp[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    CHECK(port && pipe2(pp, O_CLOEXEC) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(pp[0]), port, 3, 0) == port, "assoc");
    CHECK(pending_b(ReadFile(H(pp[0]), buf, 16, NULL, ov)), "ReadFile: %u", GetLastError());
    CHECK(CancelIoEx(H(pp[0]), ov), "CancelIoEx: %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.err == ERROR_OPERATION_ABORTED && p.ov == ov && p.key == 3,
          "ok=%d err=%u ov=%p", p.ok, p.err, (void *)p.ov);
    /* The pipe still works. */
    memset(ov, 0, sizeof *ov);
    CHECK(write(pp[1], "ok", 2) == 2, "write");
    CHECK(pending_b(ReadFile(H(pp[0]), buf, 16, NULL, ov)), "ReadFile 2: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 2, "read after cancel: %u", p.err);
done:
    xclose(pp[0]), xclose(pp[1]);
    xclose_port(port);
    free(ov), free(buf);
}

static void s5_peer_reset(void) {
    HANDLE port = new_port(0);
    int srv = -1, cli = -1;
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {16, buf};
    DWORD fl = 0;
    CHECK(port && tcp_pair(&srv, &cli) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(srv), port, 1, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(srv), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv: %d", WSAGetLastError());
    struct linger lg = {1, 0};
    CHECK(setsockopt(cli, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0, "SO_LINGER");
    close(cli);
    cli = -1;
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ov, "ok=%d ov=%p err=%u", p.ok, (void *)p.ov, p.err);
    CHECK(p.err == ERROR_NETNAME_DELETED, "error %u, expected ERROR_NETNAME_DELETED", p.err);
done:
    xclose(srv);
    if (cli >= 0)
        close(cli);
    xclose_port(port);
    free(ov), free(buf);
}

static void s5_closesocket_pending(void) {
    HANDLE port = new_port(0);
    int srv = -1, cli = -1, sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov(), *ov2 = new_ov();
    char *buf = calloc(1, 16), *buf2 = calloc(1, 16);
    WSABUF wb = {16, buf}, wb2 = {16, buf2};
    DWORD fl = 0;
    CHECK(port && tcp_pair(&srv, &cli) == 0 && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(srv), port, 1, 0) == port, "assoc");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 2, 0) == port, "assoc 2");
    CHECK(pending_w(WSARecv(S(srv), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv: %d", WSAGetLastError());
    CHECK(pending_w(WSARecv(S(sv[0]), &wb2, 1, NULL, &fl, ov2, NULL)), "WSARecv 2");
    CHECK(closesocket(S(srv)) == 0, "closesocket: %d", WSAGetLastError());
    srv = -1;
    CHECK(closesocket(S(sv[0])) == 0, "closesocket 2: %d", WSAGetLastError());
    sv[0] = -1;
    for (int i = 0; i < 2; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(!p.ok && (p.ov == ov || p.ov == ov2), "packet %d: ok=%d ov=%p err=%u", i, p.ok,
              (void *)p.ov, p.err);
        CHECK(p.err == ERROR_OPERATION_ABORTED || p.err == ERROR_CONNECTION_ABORTED, "error %u", p.err);
    }
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "extra packet");
done:
    xclose(srv), xclose(sv[0]), xclose(sv[1]);
    if (cli >= 0)
        close(cli);
    xclose_port(port);
    free(ov), free(ov2), free(buf), free(buf2);
}

static void s5_graceful_close(void) {
    HANDLE port = new_port(0);
    int srv = -1, cli = -1, sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov(), *ov2 = new_ov();
    char *buf = calloc(1, 16), *buf2 = calloc(1, 16);
    WSABUF wb = {16, buf}, wb2 = {16, buf2};
    DWORD fl = 0;
    CHECK(port && tcp_pair(&srv, &cli) == 0 && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(srv), port, 1, 0) == port, "assoc");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 2, 0) == port, "assoc 2");
    CHECK(pending_w(WSARecv(S(srv), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv");
    CHECK(pending_w(WSARecv(S(sv[0]), &wb2, 1, NULL, &fl, ov2, NULL)), "WSARecv 2");
    CHECK(shutdown(cli, SHUT_WR) == 0, "shutdown");
    close(sv[1]);
    sv[1] = -1;
    for (int i = 0; i < 2; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok && p.bytes == 0 && (p.ov == ov || p.ov == ov2),
              "packet %d: ok=%d err=%u bytes=%u (expected success, 0 bytes)", i, p.ok, p.err, p.bytes);
    }
done:
    xclose(srv), xclose(sv[0]), xclose(sv[1]);
    if (cli >= 0)
        close(cli);
    xclose_port(port);
    free(ov), free(ov2), free(buf), free(buf2);
}

static void s5_read_past_eof(void) {
    HANDLE port = new_port(0), f = INVALID_HANDLE_VALUE;
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 64), *w = strdup("0123456789");
    int pp[2] = {-1, -1};
    CHECK(port, "create");
    f = open_file(tmp_path("eof"), GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFileA: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 1, 0) == port, "assoc");
    CHECK(pending_b(WriteFile(f, w, 10, NULL, ov)), "WriteFile");
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 10, "write: %u", p.err);
    uint64_t offs[] = {10, 100, 1ull << 33};
    for (int i = 0; i < 3; i++) {
        memset(ov, 0, sizeof *ov);
        ov_at(ov, offs[i]);
        BOOL r = ReadFile(f, buf, 64, NULL, ov);
        if (r == FALSE && GetLastError() == ERROR_IO_PENDING) {
            p = deq(port, MUST_MS);
            CHECK(!p.ok && p.ov == ov && p.err == ERROR_HANDLE_EOF,
                  "offset %llu: packet ok=%d err=%u bytes=%u", (unsigned long long)offs[i], p.ok, p.err,
                  p.bytes);
        } else {
            CHECK(!r && GetLastError() == ERROR_HANDLE_EOF, "offset %llu: at the call r=%d err=%u",
                  (unsigned long long)offs[i], r, GetLastError());
            p = deq(port, NONE_MS);
            CHECK(!p.ok && p.err == WAIT_TIMEOUT, "failed at the call and queued a packet");
        }
    }
    /* A read that straddles the end: the part that exists. */
    memset(ov, 0, sizeof *ov);
    ov_at(ov, 6);
    CHECK(pending_b(ReadFile(f, buf, 64, NULL, ov)), "ReadFile@6: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 4 && memcmp(buf, "6789", 4) == 0, "short read: ok=%d bytes=%u", p.ok,
          p.bytes);
    /* A pipe whose writers closed: ERROR_BROKEN_PIPE (documented). */
    CHECK(pipe2(pp, O_CLOEXEC) == 0, "pipe");
    CHECK(CreateIoCompletionPort(H(pp[0]), port, 2, 0) == port, "assoc pipe");
    close(pp[1]);
    pp[1] = -1;
    memset(ov, 0, sizeof *ov);
    BOOL r = ReadFile(H(pp[0]), buf, 64, NULL, ov);
    if (r == FALSE && GetLastError() == ERROR_IO_PENDING) {
        p = deq(port, MUST_MS);
        CHECK(!p.ok && p.err == ERROR_BROKEN_PIPE, "pipe: ok=%d err=%u", p.ok, p.err);
    } else {
        CHECK(!r && GetLastError() == ERROR_BROKEN_PIPE, "pipe at call: %u", GetLastError());
    }
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    xclose(pp[0]), xclose(pp[1]);
    xclose_port(port);
    free(ov), free(buf), free(w);
}

/* ------------------------------------------------------------------ */
/* §6 Cancel and close                                                 */
/* ------------------------------------------------------------------ */

static void s6_cancelioex_one(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov1 = new_ov(), *ov2 = new_ov();
    char *b1 = calloc(1, 16), *b2 = calloc(1, 16);
    WSABUF w1 = {16, b1}, w2 = {16, b2};
    DWORD fl = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(sv[0]), &w1, 1, NULL, &fl, ov1, NULL)), "recv 1");
    CHECK(pending_w(WSARecv(S(sv[0]), &w2, 1, NULL, &fl, ov2, NULL)), "recv 2");
    CHECK(CancelIoEx(H(sv[0]), ov1), "CancelIoEx(ov1): %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ov1 && p.err == ERROR_OPERATION_ABORTED, "ov1: ok=%d ov=%p err=%u", p.ok,
          (void *)p.ov, p.err);
    p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "ov2 completed too (ov=%p err=%u)", (void *)p.ov, p.err);
    /* Cancelling it again: nothing to cancel. */
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), ov1) && GetLastError() == ERROR_NOT_FOUND, "second cancel: %u",
          GetLastError());
    CHECK(send(sv[1], "two", 3, 0) == 3, "send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov2 && p.bytes == 3 && memcmp(b2, "two", 3) == 0, "ov2: ok=%d err=%u", p.ok,
          p.err);
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov1), free(ov2), free(b1), free(b2);
}

static void s6_cancelioex_all(void) {
    enum { K = 3 };
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1}, other[2] = {-1, -1};
    OVERLAPPED *ov[K] = {0}, *ovo = new_ov();
    char *b[K] = {0}, *bo = calloc(1, 8);
    WSABUF wbo = {8, bo};
    DWORD fl = 0;
    for (int i = 0; i < K; i++)
        ov[i] = new_ov(), b[i] = calloc(1, 8);
    CHECK(port && unix_pair(sv) == 0 && unix_pair(other) == 0, "setup");
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), NULL) && GetLastError() == ERROR_NOT_FOUND,
          "never associated: %u", GetLastError());
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    CHECK(CreateIoCompletionPort(H(other[0]), port, 2, 0) == port, "assoc other");
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), NULL) && GetLastError() == ERROR_NOT_FOUND, "nothing pending: %u",
          GetLastError());
    for (int i = 0; i < K; i++) {
        WSABUF w = {8, b[i]};
        CHECK(pending_w(WSARecv(S(sv[0]), &w, 1, NULL, &fl, ov[i], NULL)), "recv %d", i);
    }
    CHECK(pending_w(WSARecv(S(other[0]), &wbo, 1, NULL, &fl, ovo, NULL)), "recv other");
    CHECK(CancelIoEx(H(sv[0]), NULL), "CancelIoEx(NULL): %u", GetLastError());
    int seen = 0;
    for (int i = 0; i < K; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(!p.ok && p.err == ERROR_OPERATION_ABORTED && p.key == 1, "packet %d: ok=%d err=%u key=%zu",
              i, p.ok, p.err, (size_t)p.key);
        for (int j = 0; j < K; j++)
            if (p.ov == ov[j])
                seen |= 1 << j;
    }
    CHECK(seen == (1 << K) - 1, "seen %#x", seen);
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "other handle's op was cancelled too (ov=%p)", (void *)p.ov);
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), NULL) && GetLastError() == ERROR_NOT_FOUND, "after: %u", GetLastError());
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), ov[0]) && GetLastError() == ERROR_NOT_FOUND, "after (one): %u",
          GetLastError());
    /* The op of another handle can't be cancelled through this one. */
    SetLastError(0);
    CHECK(!CancelIoEx(H(sv[0]), ovo) && GetLastError() == ERROR_NOT_FOUND,
          "cancel through the wrong handle: %u", GetLastError());
    CHECK(send(other[1], "o", 1, 0) == 1, "send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ovo, "other op: %u", p.err);
done:
    xclose(sv[0]), xclose(sv[1]), xclose(other[0]), xclose(other[1]);
    xclose_port(port);
    for (int i = 0; i < K; i++)
        free(ov[i]), free(b[i]);
    free(ovo), free(bo);
}

typedef struct {
    int fd;
    OVERLAPPED *ov;
    char *buf;
    atomic_int issued;
    atomic_int go_cancel;
    int issue_ok;
    BOOL cancel_ok;
    DWORD cancel_err;
} cancelio_arg;

static void *cancelio_thread(void *a_) {
    cancelio_arg *a = a_;
    WSABUF w = {8, a->buf};
    DWORD fl = 0;
    a->issue_ok = pending_w(WSARecv(S(a->fd), &w, 1, NULL, &fl, a->ov, NULL));
    atomic_store(&a->issued, 1);
    wait_flag(&a->go_cancel, 1, MUST_MS);
    a->cancel_ok = CancelIo(H(a->fd));
    a->cancel_err = a->cancel_ok ? 0 : GetLastError();
    return NULL;
}

static void s6_cancelio_thread_only(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    pthread_t t;
    int started = 0;
    cancelio_arg a;
    OVERLAPPED *ovm = new_ov();
    char *bm = calloc(1, 8);
    WSABUF wm = {8, bm};
    DWORD fl = 0;
    memset(&a, 0, sizeof a);
    a.ov = new_ov();
    a.buf = calloc(1, 8);
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    a.fd = sv[0];
    SetLastError(0);
    CHECK(!CancelIo(H(sv[0])) && GetLastError() == ERROR_NOT_FOUND, "nothing pending: %u",
          GetLastError());
    CHECK(pthread_create(&t, NULL, cancelio_thread, &a) == 0, "pthread_create");
    started = 1;
    CHECK(wait_flag(&a.issued, 1, MUST_MS) && a.issue_ok, "thread's WSARecv");
    CHECK(pending_w(WSARecv(S(sv[0]), &wm, 1, NULL, &fl, ovm, NULL)), "main's WSARecv");
    CHECK(CancelIo(H(sv[0])), "CancelIo(main): %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ovm && p.err == ERROR_OPERATION_ABORTED,
          "main's op: ok=%d ov=%p err=%u (thread's ov=%p)", p.ok, (void *)p.ov, p.err, (void *)a.ov);
    p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "CancelIo cancelled another thread's op (ov=%p)",
          (void *)p.ov);
    SetLastError(0);
    CHECK(!CancelIo(H(sv[0])) && GetLastError() == ERROR_NOT_FOUND, "main again: %u", GetLastError());
    atomic_store(&a.go_cancel, 1);
    pthread_join(t, NULL);
    started = 0;
    CHECK(a.cancel_ok, "CancelIo(thread): %u", a.cancel_err);
    p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == a.ov && p.err == ERROR_OPERATION_ABORTED, "thread's op: ok=%d err=%u", p.ok,
          p.err);
done:
    atomic_store(&a.go_cancel, 1);
    if (started)
        pthread_join(t, NULL);
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(a.ov), free(a.buf), free(ovm), free(bm);
}

static void s6_close_handle_pending(void) {
    HANDLE port = new_port(0), fifo = INVALID_HANDLE_VALUE;
    int pp[2] = {-1, -1};
    OVERLAPPED *ov = new_ov(), *ov2 = new_ov();
    char *buf = calloc(1, 16), *buf2 = calloc(1, 16);
    const char *path = tmp_path("fifo");
    CHECK(port && pipe2(pp, O_CLOEXEC) == 0, "setup");
    /* A pipe fd given to CloseHandle. */
    CHECK(CreateIoCompletionPort(H(pp[0]), port, 1, 0) == port, "assoc");
    CHECK(pending_b(ReadFile(H(pp[0]), buf, 16, NULL, ov)), "ReadFile: %u", GetLastError());
    CHECK(CloseHandle(H(pp[0])), "CloseHandle(pipe): %u", GetLastError());
    pp[0] = -1;
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ov && p.err == ERROR_OPERATION_ABORTED && p.key == 1,
          "pipe: ok=%d err=%u ov=%p", p.ok, p.err, (void *)p.ov);
    /* A FIFO opened with CreateFileA (a file handle with a pending read). */
    CHECK(mkfifo(path, 0600) == 0, "mkfifo: %s", strerror(errno));
    fifo = open_file(path, GENERIC_READ | GENERIC_WRITE, OPEN_EXISTING);
    CHECK(fifo != INVALID_HANDLE_VALUE, "CreateFileA(fifo): %u", GetLastError());
    CHECK(CreateIoCompletionPort(fifo, port, 2, 0) == port, "assoc fifo");
    CHECK(pending_b(ReadFile(fifo, buf2, 16, NULL, ov2)), "ReadFile(fifo): %u", GetLastError());
    CHECK(CloseHandle(fifo), "CloseHandle(fifo): %u", GetLastError());
    HANDLE stale = fifo;
    fifo = INVALID_HANDLE_VALUE;
    p = deq(port, MUST_MS);
    CHECK(!p.ok && p.ov == ov2 && p.err == ERROR_OPERATION_ABORTED && p.key == 2,
          "fifo: ok=%d err=%u ov=%p", p.ok, p.err, (void *)p.ov);
    p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "extra packet");
    SetLastError(0);
    CHECK(!ReadFile(stale, buf2, 16, NULL, ov2) && GetLastError() == ERROR_INVALID_HANDLE,
          "stale file handle: %u", GetLastError());
done:
    if (fifo != INVALID_HANDLE_VALUE)
        CloseHandle(fifo);
    xclose(pp[0]), xclose(pp[1]);
    xclose_port(port);
    free(ov), free(ov2), free(buf), free(buf2);
}

static void s6_close_port(void) {
    HANDLE port = new_port(0);
    int sv[2] = {-1, -1};
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {16, buf};
    DWORD fl = 0, n = 0;
    CHECK(port && unix_pair(sv) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(sv[0]), port, 1, 0) == port, "assoc");
    for (int i = 0; i < 3; i++)
        CHECK(PostQueuedCompletionStatus(port, 1, 1, NULL), "post");
    CHECK(pending_w(WSARecv(S(sv[0]), &wb, 1, NULL, &fl, ov, NULL)), "WSARecv");
    CHECK(CloseHandle(port), "CloseHandle(port): %u", GetLastError());
    HANDLE stale = port;
    port = NULL;
    pkt_t p = deq(stale, 0);
    CHECK(!p.ok && p.err == ERROR_INVALID_HANDLE && p.ov == NULL, "GQCS after close: ok=%d err=%u",
          p.ok, p.err);
    SetLastError(0);
    CHECK(!PostQueuedCompletionStatus(stale, 0, 0, NULL) && GetLastError() == ERROR_INVALID_HANDLE,
          "post after close: %u", GetLastError());
    /* §27: the handle stays open and usable for synchronous I/O. */
    CHECK(send(sv[1], "sync", 4, 0) == 4, "send");
    memset(buf, 0, 16);
    n = 0;
    CHECK(WSARecv(S(sv[0]), &wb, 1, &n, &fl, NULL, NULL) == 0 && n == 4 && memcmp(buf, "sync", 4) == 0,
          "synchronous WSARecv after the port closed: %d n=%u", WSAGetLastError(), n);
    CHECK(WriteFile(H(sv[0]), "back", 4, &n, NULL) && n == 4, "synchronous WriteFile: %u",
          GetLastError());
    char got[8] = {0};
    CHECK(xrecv(sv[1], got, sizeof got, 0) == 4 && memcmp(got, "back", 4) == 0, "peer got %s", got);
done:
    xclose(sv[0]), xclose(sv[1]);
    xclose_port(port);
    free(ov), free(buf);
}

/* ------------------------------------------------------------------ */
/* §7 Sockets                                                          */
/* ------------------------------------------------------------------ */

#define ADDR_LEN ((DWORD)(sizeof(struct sockaddr_in6) + 16))

static SOCKET new_tcp(void) {
    return WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
}

static int bind_loopback(SOCKET s, struct sockaddr_in *a) {
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof *a;
    if (bind((int)s, (struct sockaddr *)a, sizeof *a) != 0)
        return -1;
    return getsockname((int)s, (struct sockaddr *)a, &len);
}

static void s7_acceptex(void) {
    HANDLE port = new_port(0);
    SOCKET lis = INVALID_SOCKET, acc = INVALID_SOCKET;
    int cli = -1;
    struct sockaddr_in la;
    OVERLAPPED *ov = new_ov();
    char *out = calloc(1, 2 * ADDR_LEN);
    char *rb = calloc(1, 16), *sb = strdup("world");
    DWORD n = 0, fl = 0;
    CHECK(port, "create");
    lis = new_tcp();
    acc = new_tcp();
    CHECK(lis != INVALID_SOCKET && acc != INVALID_SOCKET, "WSASocketW: %d", WSAGetLastError());
    CHECK(bind_loopback(lis, &la) == 0 && listen((int)lis, 8) == 0, "bind/listen");
    CHECK(CreateIoCompletionPort(H(lis), port, 0x11, 0) == port, "assoc listener");
    BOOL r = AcceptEx(lis, acc, out, 0, ADDR_LEN, ADDR_LEN, &n, ov);
    CHECK(!r && GetLastError() == ERROR_IO_PENDING, "AcceptEx: r=%d err=%u", r, GetLastError());
    cli = tcp_connect(&la);
    CHECK(cli >= 0, "connect: %s", strerror(errno));
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0x11 && p.ov == ov && p.bytes == 0, "accept packet: ok=%d err=%u key=%zx",
          p.ok, p.err, (size_t)p.key);
    struct sockaddr *ls = NULL, *rs = NULL;
    int ll = 0, rl = 0;
    GetAcceptExSockaddrs(out, 0, ADDR_LEN, ADDR_LEN, &ls, &ll, &rs, &rl);
    CHECK(ls && rs && ll == (int)sizeof(struct sockaddr_in) && rl == (int)sizeof(struct sockaddr_in),
          "sockaddrs: ll=%d rl=%d", ll, rl);
    struct sockaddr_in lsa, rsa;
    memcpy(&lsa, ls, sizeof lsa);
    memcpy(&rsa, rs, sizeof rsa);
    CHECK(rsa.sin_family == AF_INET && ntohs(rsa.sin_port) == local_port(cli),
          "remote port %u, client's %u", ntohs(rsa.sin_port), local_port(cli));
    CHECK(rsa.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "remote address");
    CHECK(lsa.sin_family == AF_INET && ntohs(lsa.sin_port) == ntohs(la.sin_port), "local port %u vs %u",
          ntohs(lsa.sin_port), ntohs(la.sin_port));
    /* Harmless on Linux. */
    setsockopt((int)acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, &lis, sizeof lis);
    /* The accepted socket works once associated. */
    CHECK(CreateIoCompletionPort(H(acc), port, 0x22, 0) == port, "assoc accepted: %u", GetLastError());
    WSABUF wr = {16, rb}, ws = {5, sb};
    memset(ov, 0, sizeof *ov);
    CHECK(pending_w(WSARecv(acc, &wr, 1, NULL, &fl, ov, NULL)), "WSARecv: %d", WSAGetLastError());
    CHECK(send(cli, "hello", 5, 0) == 5, "client send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0x22 && p.bytes == 5 && memcmp(rb, "hello", 5) == 0, "recv packet: %u", p.err);
    memset(ov, 0, sizeof *ov);
    CHECK(pending_w(WSASend(acc, &ws, 1, NULL, 0, ov, NULL)), "WSASend: %d", WSAGetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0x22 && p.bytes == 5, "send packet: %u", p.err);
    char got[8] = {0};
    CHECK(xrecv(cli, got, sizeof got, 0) == 5 && memcmp(got, "world", 5) == 0, "client got %s", got);
done:
    if (cli >= 0)
        close(cli);
    if (acc != INVALID_SOCKET)
        closesocket(acc);
    if (lis != INVALID_SOCKET)
        closesocket(lis);
    xclose_port(port);
    free(ov), free(out), free(rb), free(sb);
}

static void s7_acceptex_with_data(void) {
    enum { RL = 64 };
    HANDLE port = new_port(0);
    SOCKET lis = INVALID_SOCKET, acc = INVALID_SOCKET;
    int cli = -1;
    struct sockaddr_in la;
    OVERLAPPED *ov = new_ov();
    char *out = calloc(1, RL + 2 * ADDR_LEN);
    DWORD n = 0;
    CHECK(port, "create");
    lis = new_tcp();
    acc = new_tcp();
    CHECK(lis != INVALID_SOCKET && acc != INVALID_SOCKET, "WSASocketW");
    CHECK(bind_loopback(lis, &la) == 0 && listen((int)lis, 8) == 0, "bind/listen");
    CHECK(CreateIoCompletionPort(H(lis), port, 0x33, 0) == port, "assoc");
    SetLastError(0);
    CHECK(!AcceptEx(lis, acc, out, RL, 8, 8, &n, ov) && GetLastError() == WSAEINVAL,
          "short address lengths: %u", GetLastError());
    CHECK(pending_b(AcceptEx(lis, acc, out, RL, ADDR_LEN, ADDR_LEN, &n, ov)), "AcceptEx: %u",
          GetLastError());
    cli = tcp_connect(&la);
    CHECK(cli >= 0, "connect: %s", strerror(errno));
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "completed before any data: ok=%d err=%u", p.ok, p.err);
    CHECK(send(cli, "first data", 10, 0) == 10, "send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0x33 && p.ov == ov && p.bytes == 10 && memcmp(out, "first data", 10) == 0,
          "packet: ok=%d err=%u bytes=%u", p.ok, p.err, p.bytes);
    struct sockaddr *ls = NULL, *rs = NULL;
    int ll = 0, rl = 0;
    GetAcceptExSockaddrs(out, RL, ADDR_LEN, ADDR_LEN, &ls, &ll, &rs, &rl);
    struct sockaddr_in rsa;
    CHECK(rs && rl == (int)sizeof rsa, "remote sockaddr");
    memcpy(&rsa, rs, sizeof rsa);
    CHECK(ntohs(rsa.sin_port) == local_port(cli), "remote port %u vs %u", ntohs(rsa.sin_port),
          local_port(cli));
    /* The accepted socket is a plain connected socket. */
    CHECK(send((int)acc, "back", 4, MSG_NOSIGNAL) == 4, "send on accepted");
    char got[8] = {0};
    CHECK(xrecv(cli, got, sizeof got, 0) == 4 && memcmp(got, "back", 4) == 0, "client got %s", got);
done:
    if (cli >= 0)
        close(cli);
    if (acc != INVALID_SOCKET)
        closesocket(acc);
    if (lis != INVALID_SOCKET)
        closesocket(lis);
    xclose_port(port);
    free(ov), free(out);
}

/* WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER): the Windows way of getting
 * AcceptEx, ConnectEx and GetAcceptExSockaddrs; the pointers work. */
static void s7_wsaioctl_extension_pointers(void) {
    HANDLE port = new_port(0);
    SOCKET lis = INVALID_SOCKET, acc = INVALID_SOCKET, con = INVALID_SOCKET;
    struct sockaddr_in la, ca;
    OVERLAPPED *ov = new_ov(), *ov2 = new_ov();
    char *out = calloc(1, 2 * ADDR_LEN);
    int pp[2] = {-1, -1};
    DWORD n = 0;
    LPFN_ACCEPTEX pAcceptEx = NULL;
    LPFN_CONNECTEX pConnectEx = NULL;
    LPFN_GETACCEPTEXSOCKADDRS pGetSockaddrs = NULL;
    GUID ga = WSAID_ACCEPTEX, gc = WSAID_CONNECTEX, gs = WSAID_GETACCEPTEXSOCKADDRS;
    GUID bogus = {1, 2, 3, {4, 5, 6, 7, 8, 9, 10, 11}};
    CHECK(port, "create");
    lis = new_tcp();
    acc = new_tcp();
    con = new_tcp();
    CHECK(lis != INVALID_SOCKET && acc != INVALID_SOCKET && con != INVALID_SOCKET, "WSASocketW");
    CHECK(WSAIoctl(lis, SIO_GET_EXTENSION_FUNCTION_POINTER, &ga, sizeof ga, &pAcceptEx,
                   sizeof pAcceptEx, &n, NULL, NULL) == 0 &&
              pAcceptEx && n == sizeof(void *),
          "AcceptEx pointer: %d", WSAGetLastError());
    CHECK(WSAIoctl(lis, SIO_GET_EXTENSION_FUNCTION_POINTER, &gc, sizeof gc, &pConnectEx,
                   sizeof pConnectEx, &n, NULL, NULL) == 0 && pConnectEx,
          "ConnectEx pointer: %d", WSAGetLastError());
    CHECK(WSAIoctl(lis, SIO_GET_EXTENSION_FUNCTION_POINTER, &gs, sizeof gs, &pGetSockaddrs,
                   sizeof pGetSockaddrs, &n, NULL, NULL) == 0 && pGetSockaddrs,
          "GetAcceptExSockaddrs pointer: %d", WSAGetLastError());
    /* Refusals. */
    void *fp = NULL;
    CHECK(WSAIoctl(lis, SIO_GET_EXTENSION_FUNCTION_POINTER, &bogus, sizeof bogus, &fp, sizeof fp, &n,
                   NULL, NULL) == SOCKET_ERROR && WSAGetLastError() == WSAEINVAL,
          "unknown GUID: %d", WSAGetLastError());
    CHECK(WSAIoctl(lis, 0x4004667F /* FIONREAD */, NULL, 0, &fp, sizeof fp, &n, NULL, NULL) ==
                  SOCKET_ERROR && WSAGetLastError() == WSAEOPNOTSUPP,
          "other code: %d", WSAGetLastError());
    CHECK(WSAIoctl(lis, SIO_GET_EXTENSION_FUNCTION_POINTER, &ga, sizeof ga, &fp, 4, &n, NULL, NULL) ==
                  SOCKET_ERROR && WSAGetLastError() == WSAEFAULT,
          "short output: %d", WSAGetLastError());
    CHECK(pipe2(pp, O_CLOEXEC) == 0, "pipe");
    CHECK(WSAIoctl(S(pp[0]), SIO_GET_EXTENSION_FUNCTION_POINTER, &ga, sizeof ga, &fp, sizeof fp, &n,
                   NULL, NULL) == SOCKET_ERROR && WSAGetLastError() == WSAENOTSOCK,
          "not a socket: %d", WSAGetLastError());
    /* The pointers do the work: accept through pAcceptEx, connect through
     * pConnectEx, addresses through pGetSockaddrs. */
    CHECK(bind_loopback(lis, &la) == 0 && listen((int)lis, 8) == 0, "bind/listen");
    CHECK(bind_loopback(con, &ca) == 0, "bind connector");
    CHECK(CreateIoCompletionPort(H(lis), port, 0x51, 0) == port, "assoc listener");
    CHECK(CreateIoCompletionPort(H(con), port, 0x52, 0) == port, "assoc connector");
    CHECK(pending_b(pAcceptEx(lis, acc, out, 0, ADDR_LEN, ADDR_LEN, &n, ov)), "pAcceptEx: %u",
          GetLastError());
    CHECK(pending_b(pConnectEx(con, (struct sockaddr *)&la, sizeof la, NULL, 0, &n, ov2)),
          "pConnectEx: %u", GetLastError());
    int got_accept = 0, got_connect = 0;
    for (int i = 0; i < 2; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(p.ok, "packet %d: err=%u", i, p.err);
        got_accept += p.key == 0x51 && p.ov == ov;
        got_connect += p.key == 0x52 && p.ov == ov2;
    }
    CHECK(got_accept == 1 && got_connect == 1, "accept %d, connect %d", got_accept, got_connect);
    struct sockaddr *ls = NULL, *rs = NULL;
    int ll = 0, rl = 0;
    pGetSockaddrs(out, 0, ADDR_LEN, ADDR_LEN, &ls, &ll, &rs, &rl);
    struct sockaddr_in rsa;
    CHECK(rs && rl == (int)sizeof rsa, "remote sockaddr");
    memcpy(&rsa, rs, sizeof rsa);
    CHECK(ntohs(rsa.sin_port) == ntohs(ca.sin_port), "remote port %u, connector's %u",
          ntohs(rsa.sin_port), ntohs(ca.sin_port));
done:
    if (pp[0] >= 0)
        close(pp[0]), close(pp[1]);
    if (acc != INVALID_SOCKET)
        closesocket(acc);
    if (con != INVALID_SOCKET)
        closesocket(con);
    if (lis != INVALID_SOCKET)
        closesocket(lis);
    xclose_port(port);
    free(ov), free(ov2), free(out);
}

static void s7_connectex(void) {
    HANDLE port = new_port(0);
    int lis = -1, a1 = -1, a2 = -1;
    SOCKET c1 = INVALID_SOCKET, c2 = INVALID_SOCKET;
    struct sockaddr_in la, b1, b2;
    OVERLAPPED *ov1 = new_ov(), *ov2 = new_ov();
    char *payload = strdup("payload");
    DWORD n = 0;
    CHECK(port, "create");
    lis = tcp_listener(&la);
    CHECK(lis >= 0, "listener");
    c1 = new_tcp();
    c2 = new_tcp();
    CHECK(c1 != INVALID_SOCKET && c2 != INVALID_SOCKET, "WSASocketW");
    CHECK(bind_loopback(c1, &b1) == 0 && bind_loopback(c2, &b2) == 0, "bind");
    CHECK(CreateIoCompletionPort(H(c1), port, 0xC1, 0) == port, "assoc c1");
    CHECK(CreateIoCompletionPort(H(c2), port, 0xC2, 0) == port, "assoc c2");
    CHECK(pending_b(ConnectEx(c1, (struct sockaddr *)&la, sizeof la, NULL, 0, &n, ov1)),
          "ConnectEx: %u", GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0xC1 && p.ov == ov1 && p.bytes == 0, "c1 packet: ok=%d err=%u", p.ok, p.err);
    setsockopt((int)c1, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0);
    a1 = xaccept(lis);
    CHECK(a1 >= 0, "accept");
    CHECK(pending_b(ConnectEx(c2, (struct sockaddr *)&la, sizeof la, payload, 7, &n, ov2)),
          "ConnectEx with data: %u", GetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.key == 0xC2 && p.ov == ov2 && p.bytes == 7, "c2 packet: ok=%d err=%u bytes=%u", p.ok,
          p.err, p.bytes);
    a2 = xaccept(lis);
    CHECK(a2 >= 0, "accept 2");
    set_rcvtimeo(a2);
    char got[16] = {0};
    CHECK(xrecv(a2, got, 7, MSG_WAITALL) == 7 && memcmp(got, "payload", 7) == 0, "server got %s", got);
    CHECK(ntohs(b2.sin_port) == local_port((int)c2), "bound port kept");
done:
    if (lis >= 0)
        close(lis);
    if (a1 >= 0)
        close(a1);
    if (a2 >= 0)
        close(a2);
    if (c1 != INVALID_SOCKET)
        closesocket(c1);
    if (c2 != INVALID_SOCKET)
        closesocket(c2);
    xclose_port(port);
    free(ov1), free(ov2), free(payload);
}

static void s7_connectex_unbound(void) {
    HANDLE port = new_port(0);
    int lis = -1;
    SOCKET c = INVALID_SOCKET, u = INVALID_SOCKET;
    struct sockaddr_in la, b;
    OVERLAPPED *ov = new_ov();
    DWORD n = 0;
    CHECK(port, "create");
    lis = tcp_listener(&la);
    c = new_tcp();
    u = new_tcp();
    CHECK(lis >= 0 && c != INVALID_SOCKET && u != INVALID_SOCKET, "setup");
    CHECK(CreateIoCompletionPort(H(c), port, 1, 0) == port, "assoc");
    SetLastError(0);
    CHECK(!ConnectEx(c, (struct sockaddr *)&la, sizeof la, NULL, 0, &n, ov) &&
              GetLastError() == WSAEINVAL,
          "unbound: %u", GetLastError());
    /* Bound but not associated. */
    CHECK(bind_loopback(u, &b) == 0, "bind");
    SetLastError(0);
    CHECK(!ConnectEx(u, (struct sockaddr *)&la, sizeof la, NULL, 0, &n, ov) &&
              GetLastError() == WSAEINVAL,
          "unassociated: %u", GetLastError());
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "a packet was queued");
done:
    if (lis >= 0)
        close(lis);
    if (c != INVALID_SOCKET)
        closesocket(c);
    if (u != INVALID_SOCKET)
        closesocket(u);
    xclose_port(port);
    free(ov);
}

static void s7_zero_byte_recv(void) {
    HANDLE port = new_port(0);
    int srv = -1, cli = -1;
    OVERLAPPED *ov = new_ov();
    char *buf = calloc(1, 16);
    WSABUF wb = {0, buf};
    DWORD fl = 0;
    CHECK(port && tcp_pair(&srv, &cli) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(srv), port, 8, 0) == port, "assoc");
    CHECK(pending_w(WSARecv(S(srv), &wb, 1, NULL, &fl, ov, NULL)), "zero-byte WSARecv: %d",
          WSAGetLastError());
    pkt_t p = deq(port, NONE_MS);
    CHECK(!p.ok && p.err == WAIT_TIMEOUT, "completed without data: ok=%d err=%u", p.ok, p.err);
    CHECK(send(cli, "abc", 3, 0) == 3, "send");
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov && p.bytes == 0 && p.key == 8, "packet: ok=%d err=%u bytes=%u", p.ok, p.err,
          p.bytes);
    char got[8] = {0};
    CHECK(xrecv(srv, got, sizeof got, MSG_DONTWAIT) == 3 && memcmp(got, "abc", 3) == 0,
          "data consumed by the zero-byte receive (got '%s')", got);
done:
    xclose(srv);
    if (cli >= 0)
        close(cli);
    xclose_port(port);
    free(ov), free(buf);
}

static void s7_scatter_gather(void) {
    HANDLE port = new_port(0);
    int srv = -1, cli = -1;
    OVERLAPPED *ov = new_ov();
    char *s1 = strdup("ab"), *s2 = strdup("cde"), *s3 = strdup("fghi");
    char *r1 = calloc(1, 2), *r2 = calloc(1, 3), *r3 = calloc(1, 8);
    DWORD fl = 0;
    CHECK(port && tcp_pair(&srv, &cli) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(srv), port, 9, 0) == port, "assoc");
    WSABUF out[3] = {{2, s1}, {3, s2}, {4, s3}};
    CHECK(pending_w(WSASend(S(srv), out, 3, NULL, 0, ov, NULL)), "WSASend: %d", WSAGetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 9 && p.ov == ov, "send packet: ok=%d err=%u bytes=%u", p.ok, p.err, p.bytes);
    char got[16] = {0};
    CHECK(xrecv(cli, got, 9, MSG_WAITALL) == 9 && memcmp(got, "abcdefghi", 9) == 0, "peer got '%s'",
          got);
    CHECK(send(cli, "ABCDEFGHI", 9, 0) == 9, "send");
    /* Wait until all 9 bytes are readable so one receive gets them all. */
    for (int i = 0; i < 5000; i++) {
        char tmp[16];
        if (xrecv(srv, tmp, sizeof tmp, MSG_PEEK | MSG_DONTWAIT) == 9)
            break;
        usleep(1000);
    }
    WSABUF in[3] = {{2, r1}, {3, r2}, {8, r3}};
    memset(ov, 0, sizeof *ov);
    CHECK(pending_w(WSARecv(S(srv), in, 3, NULL, &fl, ov, NULL)), "WSARecv: %d", WSAGetLastError());
    p = deq(port, MUST_MS);
    CHECK(p.ok && p.bytes == 9, "recv packet: ok=%d err=%u bytes=%u", p.ok, p.err, p.bytes);
    CHECK(memcmp(r1, "AB", 2) == 0 && memcmp(r2, "CDE", 3) == 0 && memcmp(r3, "FGHI", 4) == 0,
          "scattered wrongly");
done:
    xclose(srv);
    if (cli >= 0)
        close(cli);
    xclose_port(port);
    free(ov), free(s1), free(s2), free(s3), free(r1), free(r2), free(r3);
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--strict-child") == 0)
        return strict_child();
    harness_start();
    g_on_watchdog = tmp_cleanup; /* unlink and rmdir only */
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/cport-suite-XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    const char *be = getenv("CPORT_BACKEND");
    printf("# cport C suite, CPORT_BACKEND=%s\n", be ? be : "(unset)");

    /* First: the child inherits nothing the strict check depends on. */
    RUN(s3_strict_mode_refuses_stack_ov);

    RUN(layout);
    RUN(error_numbers);
    RUN(wsastartup);

    RUN(s1_create_port);
    RUN(s1_fifo_order);
    RUN(s1_post_exact_values);
    RUN(s1_waiters_one_packet_each);
    RUN(s1_pool_exit_packets);
    RUN(s1_concurrency_accounting);
    RUN(s1_sleep_releases_waiter);
    RUN(s1_blocked_thread_releases_waiter);

    RUN(s2_create_and_associate);
    RUN(s2_associate_kinds);
    RUN(s2_second_association_fails);
    RUN(s2_invalid_handles);
    RUN(s2_shared_port_and_key);
    RUN(s2_close_idle_handle_queues_nothing);

    RUN(s3_file_offsets);
    RUN(s3_no_packet_low_bit);
    RUN(s3_immediate_failure_no_packet);
    RUN(s3_pending_ov_reuse);
    RUN(s3_exactly_once_many);
    RUN(s3_completed_at_once_still_queues);
    RUN(s3_skip_on_success);
    RUN(s3_stack_overlapped_warns);

    RUN(s4_timeout_leaves_outputs);
    RUN(s4_timeout_zero_polls);
    RUN(s4_failed_io_packet);
    RUN(s4_close_port_releases_waiters);
    RUN(s4_gqcs_ex);

    RUN(s5_cancelled_aborted);
    RUN(s5_peer_reset);
    RUN(s5_closesocket_pending);
    RUN(s5_graceful_close);
    RUN(s5_read_past_eof);

    RUN(s6_cancelioex_one);
    RUN(s6_cancelioex_all);
    RUN(s6_cancelio_thread_only);
    RUN(s6_close_handle_pending);
    RUN(s6_close_port);

    RUN(s7_acceptex);
    RUN(s7_acceptex_with_data);
    RUN(s7_connectex);
    RUN(s7_wsaioctl_extension_pointers);
    RUN(s7_connectex_unbound);
    RUN(s7_zero_byte_recv);
    RUN(s7_scatter_gather);

    tmp_cleanup();
    return harness_report();
}
