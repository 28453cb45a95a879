/*
 * fuzz.c: random call sequences against libcport's Win32-named C ABI, with
 * a model of what must come back; built with AddressSanitizer (see
 * tests/c_fuzz.rs). This file holds the rounds, the handles and main;
 * fuzz_model.c what an operation may do between its issue and its end;
 * fuzz_steps.c the random steps; fuzz.h what they share.
 *
 * Usage: fuzz SEED CALLS   (CPORT_BACKEND picks the backend)
 *
 * Rounds of random steps — ports created and closed; files, pipes, socket
 * pairs and listeners made, associated (and associated again), closed
 * while operations pend; ReadFile/WriteFile/WSARecv/WSASend/AcceptEx with
 * odd lengths (zero-length ones too), NULL buffers, reused and misaligned
 * OVERLAPPEDs, no-packet OVERLAPPEDs (hEvent low bit), events in hEvent,
 * skip-on-success; AcceptEx with a receive length and clients that send
 * nothing; posts; CancelIoEx/CancelIo; HasOverlappedIoCompleted and
 * GetOverlappedResult (bWait FALSE and TRUE) while operations run;
 * GetQueuedCompletionStatus(Ex) with odd counts and NULL outputs; a
 * receive whose data arrives while posts keep its queue busy; calls on
 * closed, stale and made-up handles — each round ending with every handle
 * closed and every port drained. The model (fuzz_model.c, which says how
 * it follows the completion state written when an operation ends) checks:
 * - every packet operation the library accepted (pending, or TRUE without
 *   skip mode) yields exactly one packet, on its port, with its key, and
 *   with the error and bytes its OVERLAPPED holds — and held whenever the
 *   model looked before; a no-packet operation yields none; every post
 *   comes back exactly as posted, in order; nothing else comes;
 * - an operation's state, event and GetOverlappedResult agree; closing a
 *   handle or a cancel ends what it names promptly, nobody dequeuing;
 * - calls that must fail (bad handles, bad arguments, the OVERLAPPED of an
 *   operation that has not ended, a cancel that names only ended
 *   operations) fail with an error and queue nothing;
 * - nothing writes an OVERLAPPED or a buffer after its operation ended:
 *   both are filled with a canary then, checked before reuse or free;
 * - no call hangs (SIGALRM watchdog: exit 3), no ASan report (ASan exits).
 * A failed check exits 1 with the seed, round, call number and last calls.
 *
 * CPORT_FUZZ_TRACE=1 prints every call as it is made.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NSTALE 16
#define STEP_ALARM 20

struct port ports[NPORT];
struct obj objs[NOBJ];
struct ov ovs[NOV];
int clients[NCLI];
unsigned long long g_calls, g_refused, g_packets, g_aborted, g_seen_early, g_busy_calls, g_twins;

static HANDLE stale[NSTALE];
static unsigned nstale;
static char g_dir[64];
static unsigned long long g_seed, g_round;
static uint64_t g_rng;
static int g_trace_all;
static char g_trace[48][200];
static unsigned g_ntrace;

uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

unsigned below(unsigned n) { return (unsigned)(rnd() % n); }

static void out(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void dump(void) {
    out("last calls:\n");
    unsigned n = g_ntrace < 48 ? g_ntrace : 48;
    for (unsigned i = g_ntrace - n; i < g_ntrace; i++) {
        out("  ");
        out(g_trace[i % 48]);
        out("\n");
    }
}

/* Records a call (and prints it with CPORT_FUZZ_TRACE=1). */
void T(const char *fmt, ...) {
    char *line = g_trace[g_ntrace++ % 48];
    int n = snprintf(line, 200, "#%llu ", g_calls);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, (size_t)(200 - n), fmt, ap);
    va_end(ap);
    if (g_trace_all) {
        out(line);
        out("\n");
    }
}

void FAIL(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *be = getenv("CPORT_BACKEND");
    fprintf(stderr, "FAIL seed %llu round %llu call %llu (%s): %s\n", g_seed, g_round, g_calls,
            be ? be : "auto", msg);
    dump();
    exit(1);
}

static void on_alarm(int sig) {
    (void)sig;
    char msg[160];
    snprintf(msg, sizeof msg, "HANG seed %llu round %llu call %llu: no return in %d s\n", g_seed,
             g_round, g_calls, STEP_ALARM);
    out(msg);
    dump();
    _exit(3);
}

/* ---- handles: live, stale, made up ------------------------------------ */

static void remember_stale(HANDLE h) { stale[nstale++ % NSTALE] = h; }

/* A handle that names nothing: stale, made up, NULL, INVALID_HANDLE_VALUE. */
HANDLE bad_handle(void) {
    switch (below(6)) {
    case 0:
        if (nstale) {
            HANDLE h = stale[below(nstale < NSTALE ? nstale : NSTALE)];
            intptr_t v = (intptr_t)h;
            /* A stale fd number may be open again: then it is not bad. */
            if (v > 0 && v <= 0x7fffffff && fcntl((int)v, F_GETFD) >= 0)
                return NULL;
            return h;
        }
        return NULL;
    case 1:
        return (HANDLE)(uintptr_t)(0x4350ULL << 48 | (rnd() & 0xffffffffffULL));
    case 2:
        return (HANDLE)(uintptr_t)(0x7ff00000 + below(0xffff));
    case 3:
        return (HANDLE)(uintptr_t)(0x100000000ULL + (rnd() & 0xffffffff));
    case 4:
        return INVALID_HANDLE_VALUE;
    default:
        return NULL;
    }
}

int bad_error(DWORD e) {
    return e == ERROR_INVALID_HANDLE || e == WSAENOTSOCK || e == ERROR_INVALID_PARAMETER ||
           e == WSAEBADF || e == WSAEINVAL || e == WSAEFAULT;
}

int live_port(void) {
    int i = (int)below(NPORT);
    return ports[i].h ? i : -1;
}

void new_port(int i) {
    T("CreateIoCompletionPort(new port %d)", i);
    CALL;
    ports[i].h = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1 + below(3));
    ports[i].head = ports[i].tail = 0;
    if (!ports[i].h)
        FAIL("cannot create a port: %u", GetLastError());
}

/* Closes port `i`: what pends on it is dropped, its packets discarded. */
void close_port(int i) {
    T("CloseHandle(port %d)", i);
    CALL;
    if (!CloseHandle(ports[i].h))
        FAIL("CloseHandle(port): %u", GetLastError());
    remember_stale(ports[i].h);
    for (int k = 0; k < NOV; k++)
        if ((ovs[k].st == OV_PEND || ovs[k].st == OV_NOPKT) && ovs[k].port == i)
            finish(&ovs[k]); /* CloseHandle returns once they were dropped */
        else if (ovs[k].st == OV_TWIN)
            for (int t = ovs[k].twins - 1; t >= 0; t--)
                if (ovs[k].tport[t] == i)
                    twin_packet(&ovs[k], i, ovs[k].tkey[t]);
    for (int k = 0; k < NOBJ; k++)
        if (objs[k].kind != K_NONE && objs[k].port == i)
            objs[k].port = -2;
    ports[i].h = NULL;
}

static int sock_pair(int sv[2]) { return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv); }

/* Moves a new fd of ours above every fd the library may open (those are
 * allocated lowest first), so that a stale number of ours is never reused
 * for one of the library's own fds while the fuzzer still uses it. */
static int high(int fd) {
    static int next;
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 4096 + next);
    next = (next + 1) % 2048;
    if (hi < 0)
        FAIL("F_DUPFD: %s (the fuzzer needs RLIMIT_NOFILE > 6144)", strerror(errno));
    close(fd);
    return hi;
}

static void init_obj(int i, enum kind k, int fd, HANDLE h) {
    static unsigned gen;
    memset(&objs[i], 0, sizeof objs[i]);
    objs[i].kind = k, objs[i].port = -1, objs[i].peer = -1, objs[i].gen = ++gen;
    objs[i].h = h ? h : (HANDLE)(intptr_t)high(fd);
}

/* Fills a free object slot (two for pairs): a file, a pipe, a socket pair
 * or a listener. */
void new_objects(void) {
    static int serial;
    int a = -1, b = -1;
    for (int i = 0; i < NOBJ; i++)
        if (objs[i].kind == K_NONE) {
            if (a < 0)
                a = i;
            else if (b < 0)
                b = i;
        }
    if (a < 0)
        return;
    int sv[2], what = (int)below(4);
    if (what == 0) {
        char path[96];
        snprintf(path, sizeof path, "%s/f%d", g_dir, ++serial);
        T("CreateFileA(%s)", path);
        CALL;
        HANDLE h = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                               FILE_FLAG_OVERLAPPED, NULL);
        if (h == INVALID_HANDLE_VALUE)
            FAIL("CreateFileA: %u", GetLastError());
        init_obj(a, K_FILE, -1, h);
    } else if (what < 3 && b >= 0) {
        int pipe = what == 1;
        if ((pipe ? pipe2(sv, O_CLOEXEC) : sock_pair(sv)) != 0)
            FAIL("pipe/socketpair: %s", strerror(errno));
        init_obj(a, pipe ? K_PIPE_R : K_SOCK, sv[0], NULL);
        init_obj(b, pipe ? K_PIPE_W : K_SOCK, sv[1], NULL);
        if (!pipe)
            objs[a].peer = b, objs[b].peer = a;
    } else if (what == 3) {
        T("WSASocketW + bind + listen");
        CALL;
        SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (s == INVALID_SOCKET || bind((int)s, (struct sockaddr *)&in, sizeof in) != 0 ||
            listen((int)s, 16) != 0)
            FAIL("listener: %s", strerror(errno));
        init_obj(a, K_LISTEN, (int)s, NULL);
    }
}

/* Closes object `i` (CloseHandle or closesocket): what pends on it ends
 * at once, aborted or done, nobody dequeuing; its packets still come. */
void close_obj(int i) {
    struct obj *o = &objs[i];
    int sock = (o->kind == K_SOCK || o->kind == K_LISTEN) && below(2);
    T("%s(obj %d, kind %d)", sock ? "closesocket" : "CloseHandle", i, o->kind);
    CALL;
    int ok = sock ? closesocket((SOCKET)(intptr_t)o->h) == 0 : CloseHandle(o->h) != 0;
    if (!ok)
        FAIL("closing obj %d (kind %d): %u", i, o->kind, GetLastError());
    remember_stale(o->h);
    o->kind = K_NONE;
    for (int k = 0; k < NOV; k++)
        if (live_on(&ovs[k], i))
            wait_end(&ovs[k], "after its handle was closed");
}

/* ---- the end of a round ----------------------------------------------- */

static int pending_on(int pi) {
    int n = ports[pi].head != ports[pi].tail;
    for (int k = 0; k < NOV; k++) {
        n += ovs[k].st == OV_PEND && ovs[k].port == pi;
        for (int t = 0; ovs[k].st == OV_TWIN && t < ovs[k].twins; t++)
            n += ovs[k].tport[t] == pi;
    }
    return n;
}

/* Closes everything; every operation the library accepted must end. */
static void teardown(void) {
    for (int i = 0; i < NOBJ; i++)
        if (objs[i].kind != K_NONE)
            close_obj(i);
    /* Each close ended what pended on it: only packets are left. */
    for (int k = 0; k < NOV; k++)
        if (ovs[k].st == OV_NOPKT ||
            (ovs[k].st == OV_PEND && !ovs[k].seen))
            FAIL("%s still pending after every handle was closed", ovs[k].what);
    for (int pi = 0; pi < NPORT; pi++) {
        if (!ports[pi].h)
            continue;
        int left = pending_on(pi);
        time_t since = time(NULL);
        while (left > 0) {
            dequeue(pi, 50);
            int now = pending_on(pi);
            if (now < left)
                left = now, since = time(NULL);
            else if (time(NULL) - since > 5) {
                char what[400] = "";
                for (int k = 0; k < NOV; k++)
                    if (ovs[k].st == OV_PEND && ovs[k].port == pi)
                        snprintf(what + strlen(what), sizeof what - strlen(what), " [%s]", ovs[k].what);
                FAIL("lost: %d operations never yielded a packet after every handle was closed:%s",
                     left, what);
            }
        }
        HANDLE old = ports[pi].h;
        close_port(pi);
        DWORD b;
        ULONG_PTR key;
        OVERLAPPED *ov;
        T("GetQueuedCompletionStatus(closed port %d)", pi);
        CALL;
        if (GetQueuedCompletionStatus(old, &b, &key, &ov, 0) || GetLastError() != ERROR_INVALID_HANDLE)
            FAIL("a closed port still answers: %u", GetLastError());
    }
    for (int c = 0; c < NCLI; c++)
        if (clients[c] >= 0)
            close(clients[c]), clients[c] = -1;
    DIR *d = opendir(g_dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    if (d)
        closedir(d);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz SEED CALLS\n");
        return 2;
    }
    g_seed = strtoull(argv[1], NULL, 0);
    unsigned long long target = strtoull(argv[2], NULL, 0);
    g_rng = g_seed * 0x9E3779B97F4A7C15ULL | 1;
    g_trace_all = getenv("CPORT_FUZZ_TRACE") && atoi(getenv("CPORT_FUZZ_TRACE"));
    signal(SIGPIPE, SIG_IGN);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    signal(SIGALRM, on_alarm);
    snprintf(g_dir, sizeof g_dir, "/tmp/cport-fuzz-XXXXXX");
    if (!mkdtemp(g_dir))
        FAIL("mkdtemp: %s", strerror(errno));
    WSADATA wsa;
    CALL;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        FAIL("WSAStartup");
    for (int k = 0; k < NOV; k++) {
        ovs[k].p = calloc(1, sizeof(OVERLAPPED));
        ovs[k].acc = -1;
        CALL;
        ovs[k].ev = CreateEventA(NULL, TRUE, FALSE, NULL);
        if (!ovs[k].ev)
            FAIL("CreateEventA: %u", GetLastError());
    }
    for (int c = 0; c < NCLI; c++)
        clients[c] = -1;
    while (g_calls < target) {
        g_round++;
        alarm(STEP_ALARM);
        for (int i = 0; i < NPORT; i++)
            new_port(i);
        for (int i = 0; i < 4; i++)
            new_objects();
        unsigned steps = 50 + below(400);
        for (unsigned s = 0; s < steps && g_calls < target; s++) {
            alarm(STEP_ALARM);
            step();
        }
        alarm(STEP_ALARM);
        teardown();
    }
    alarm(0);
    check_quarantine();
    for (int k = 0; k < NOV; k++) {
        CloseHandle(ovs[k].ev);
        free(ovs[k].p);
    }
    WSACleanup();
    rmdir(g_dir);
    printf("fuzz seed %llu: %llu calls (and %llu in busy-queue loops), %llu rounds, %llu packets "
           "(%llu aborted, %llu seen ended before dequeued), %llu refused as predicted, %llu OVERLAPPEDs "
           "reused as their operation ended, 0 failures\n",
           g_seed, g_calls, g_busy_calls, g_round, g_packets, g_aborted, g_seen_early, g_refused,
           g_twins);
    return 0;
}
