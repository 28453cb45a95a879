/*
 * Part of win32.c (included there): OVERLAPPED.hEvent, waits as blocking
 * scopes of a port, and the console control handler in a child process.
 */

static const char *g_self;

/* ---- OVERLAPPED.hEvent ---------------------------------------------------- */

typedef struct {
    HANDLE port;
    DWORD bytes;
} Dequeue;

static DWORD WINAPI dequeue_one(LPVOID arg)
{
    Dequeue *d = arg;
    ULONG_PTR key;
    OVERLAPPED *ov;
    return GetQueuedCompletionStatus(d->port, &d->bytes, &key, &ov, MUST_MS) ? 1 : 0;
}

/* A port with one end of a socket pair associated (key 1). */
static HANDLE port_with_pair(int sv[2])
{
    HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    if (!port || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return NULL;
    if (CreateIoCompletionPort((HANDLE)(intptr_t)sv[0], port, 1, 0) != port)
        return NULL;
    return port;
}

static int start_recv(int fd, OVERLAPPED *ov, char *buf)
{
    WSABUF wb = {64, buf};
    DWORD flags = 0;
    return WSARecv((SOCKET)fd, &wb, 1, NULL, &flags, ov, NULL) == SOCKET_ERROR &&
           WSAGetLastError() == WSA_IO_PENDING;
}

static void overlapped_event_signalled_at_dequeue(void)
{
    int sv[2];
    HANDLE port = port_with_pair(sv);
    CHECK(port, "port and socket pair");
    HANDLE ev = CreateEvent(NULL, TRUE, TRUE, NULL);
    OVERLAPPED *ov = calloc(1, sizeof *ov);
    char *buf = malloc(64);
    ov->hEvent = ev;
    CHECK(start_recv(sv[0], ov, buf), "WSARecv pending: %d", WSAGetLastError());
    CHECK(WaitForSingleObject(ev, 0) == WAIT_TIMEOUT, "the event is reset when the I/O starts");
    Dequeue d = {port, 0};
    HANDLE worker = CreateThread(NULL, 0, dequeue_one, &d, 0, NULL);
    CHECK(write(sv[1], "hello", 5) == 5, "write");
    CHECK(WaitForSingleObject(ev, MUST_MS) == WAIT_OBJECT_0, "the event signals the end");
    DWORD n = 0;
    CHECK(GetOverlappedResult((HANDLE)(intptr_t)sv[0], ov, &n, FALSE) && n == 5, "result %u", n);
    CHECK(memcmp(buf, "hello", 5) == 0, "data");
    CHECK(WaitForSingleObject(worker, MUST_MS) == WAIT_OBJECT_0, "worker ended");
    DWORD got = 0;
    CHECK(GetExitCodeThread(worker, &got) && got == 1 && d.bytes == 5, "the packet still came");
    CloseHandle(worker);
    closesocket(sv[0]);
    close(sv[1]);
    CloseHandle(port);
    CloseHandle(ev);
    free(ov);
    free(buf);
}

static void overlapped_event_without_packet(void)
{
    int sv[2];
    HANDLE port = port_with_pair(sv);
    CHECK(port, "port and socket pair");
    HANDLE ev = CreateEvent(NULL, TRUE, TRUE, NULL);
    OVERLAPPED *ov = calloc(1, sizeof *ov);
    char *buf = malloc(64);
    ov->hEvent = (HANDLE)((uintptr_t)ev | 1); /* no packet for this one */
    CHECK(start_recv(sv[0], ov, buf), "WSARecv pending: %d", WSAGetLastError());
    CHECK(WaitForSingleObject(ev, 0) == WAIT_TIMEOUT, "reset at the start");
    CHECK(write(sv[1], "abc", 3) == 3, "write");
    DWORD n = 0;
    CHECK(GetOverlappedResult((HANDLE)(intptr_t)sv[0], ov, &n, TRUE) && n == 3, "result %u", n);
    CHECK(WaitForSingleObject(ev, 0) == WAIT_OBJECT_0, "signalled when it ended");
    ULONG_PTR key;
    OVERLAPPED *got;
    CHECK(!GetQueuedCompletionStatus(port, &n, &key, &got, NONE_MS) && got == NULL &&
              GetLastError() == WAIT_TIMEOUT, "no packet");
    closesocket(sv[0]);
    close(sv[1]);
    CloseHandle(port);
    CloseHandle(ev);
    free(ov);
    free(buf);
}

static void overlapped_event_synchronous_read(void)
{
    int p[2];
    CHECK(pipe(p) == 0 && write(p[1], "xyz", 3) == 3, "pipe");
    HANDLE ev = CreateEvent(NULL, FALSE, FALSE, NULL);
    OVERLAPPED *ov = calloc(1, sizeof *ov);
    ov->hEvent = ev;
    char buf[8];
    DWORD n = 0;
    /* Not associated with a port: done in the call, as documented. */
    CHECK(ReadFile((HANDLE)(intptr_t)p[0], buf, sizeof buf, &n, ov) && n == 3, "ReadFile");
    CHECK(ov->Internal == 0 && ov->InternalHigh == 3, "state written");
    CHECK(WaitForSingleObject(ev, 0) == WAIT_OBJECT_0, "event signalled");
    close(p[0]);
    close(p[1]);
    CloseHandle(ev);
    free(ov);
}

/* ---- Waits are blocking scopes -------------------------------------------- */

typedef struct {
    HANDLE port, dequeued, release;
} Scope;

static DWORD WINAPI dequeue_then_wait(LPVOID arg)
{
    Scope *s = arg;
    DWORD n;
    ULONG_PTR key;
    OVERLAPPED *ov;
    if (!GetQueuedCompletionStatus(s->port, &n, &key, &ov, MUST_MS))
        return 1;
    SetEvent(s->dequeued);
    /* Counted as running for the port until this wait starts. */
    return WaitForSingleObject(s->release, MUST_MS) == WAIT_OBJECT_0 ? 0 : 2;
}

static void wait_is_a_blocking_scope(void)
{
    Scope s = {CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1),
               CreateEvent(NULL, FALSE, FALSE, NULL), CreateEvent(NULL, FALSE, FALSE, NULL)};
    CHECK(s.port && s.dequeued && s.release, "setup");
    CHECK(PostQueuedCompletionStatus(s.port, 1, 1, NULL), "post 1");
    HANDLE t = CreateThread(NULL, 0, dequeue_then_wait, &s, 0, NULL);
    CHECK(WaitForSingleObject(s.dequeued, MUST_MS) == WAIT_OBJECT_0, "worker took packet 1");
    CHECK(PostQueuedCompletionStatus(s.port, 2, 2, NULL), "post 2");
    DWORD n = 0;
    ULONG_PTR key = 0;
    OVERLAPPED *ov;
    /* Concurrency 1, and the worker is waiting: this thread may run. */
    CHECK(GetQueuedCompletionStatus(s.port, &n, &key, &ov, MUST_MS) && key == 2,
          "packet 2 while the worker waits: %u", GetLastError());
    SetEvent(s.release);
    DWORD code = 9;
    CHECK(WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0 && GetExitCodeThread(t, &code) &&
              code == 0, "worker: %u", code);
    CloseHandle(t);
    CloseHandle(s.port);
    CloseHandle(s.dequeued);
    CloseHandle(s.release);
}

/* ---- The console control handler (child side) ----------------------------- */

static HANDLE g_done;
static DWORD g_calls[4], g_events[4], g_threads[4];
static volatile LONG g_ncalls;

static void record(int which, DWORD event)
{
    LONG i = InterlockedIncrement(&g_ncalls) - 1;
    if (i < 4) {
        g_calls[i] = (DWORD)which;
        g_events[i] = event;
        g_threads[i] = GetCurrentThreadId();
    }
    printf("handler %d event %u\n", which, event);
    fflush(stdout);
}

static BOOL WINAPI h_true(DWORD event)
{
    record(1, event);
    SetEvent(g_done);
    return TRUE;
}

static BOOL WINAPI h_false(DWORD event)
{
    record(2, event);
    return FALSE;
}

static int ctrl_child(const char *mode)
{
    g_done = CreateEvent(NULL, TRUE, FALSE, NULL);
    DWORD main_id = GetCurrentThreadId();
    if (strcmp(mode, "handled") == 0) {
        SetConsoleCtrlHandler(h_true, TRUE);
        SetConsoleCtrlHandler(h_false, TRUE); /* called first: newest first */
    } else if (strcmp(mode, "unhandled") == 0) {
        SetConsoleCtrlHandler(h_false, TRUE);
    } else {
        SetConsoleCtrlHandler(NULL, TRUE); /* ignore Ctrl-C */
        SetConsoleCtrlHandler(h_true, TRUE);
    }
    printf("ready\n");
    fflush(stdout);
    if (WaitForSingleObject(g_done, MUST_MS) != WAIT_OBJECT_0)
        return 4; /* no handler said it handled the signal */
    if (strcmp(mode, "handled") == 0) {
        if (g_ncalls != 2 || g_calls[0] != 2 || g_calls[1] != 1)
            return 5; /* order: h_false, then h_true */
        if (g_events[0] != CTRL_C_EVENT || g_threads[0] == main_id || g_threads[0] != g_threads[1])
            return 6; /* one handler thread, not the main thread */
        printf("handled on thread %u\n", g_threads[0]);
        return 0;
    }
    /* "ignore": the process must end by SIGTERM after its handler ran. */
    WaitForSingleObject(CreateEvent(NULL, TRUE, FALSE, NULL), MUST_MS);
    return 7;
}

/* ---- The console control handler (parent side) ---------------------------- */

/* Runs this program with "--ctrl mode", sends `sigs` once it is ready, and
 * returns its wait status; its output goes to `out`. */
static int ctrl_run(const char *mode, const int *sigs, int nsigs, char *out, size_t cap)
{
    int p[2];
    if (pipe(p) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    char *args[] = {(char *)g_self, "--ctrl", (char *)mode, NULL};
    extern char **environ;
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0)
        return -1;
    size_t len = 0;
    int sent = 0;
    for (;;) {
        struct pollfd pf = {p[0], POLLIN, 0};
        if (poll(&pf, 1, (int)MUST_MS) <= 0)
            break; /* the watchdog or the status check reports it */
        ssize_t r = read(p[0], out + len, cap - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        out[len] = 0;
        if (!sent && strstr(out, "ready\n")) {
            for (int i = 0; i < nsigs; i++)
                kill(pid, sigs[i]);
            sent = 1;
        }
    }
    close(p[0]);
    int status = 0;
    if (!sent)
        kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

static void console_handler_runs_on_its_own_thread(void)
{
    char out[400] = "";
    int sig = SIGINT;
    int st = ctrl_run("handled", &sig, 1, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x, output:\n%s", st, out);
    CHECK(strstr(out, "handler 2 event 0\nhandler 1 event 0\nhandled on thread"), "output:\n%s",
          out);
}

static void console_handler_false_falls_through(void)
{
    char out[400] = "";
    int sig = SIGINT;
    int st = ctrl_run("unhandled", &sig, 1, out, sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "the default action: status %#x\n%s", st,
          out);
    CHECK(strstr(out, "handler 2 event 0\n"), "the handler ran first:\n%s", out);
}

static void console_ignore_ctrl_c_and_close_event(void)
{
    char out[400] = "";
    int sigs[2] = {SIGINT, SIGTERM};
    int st = ctrl_run("ignore", sigs, 2, out, sizeof out);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "ended by SIGTERM: status %#x\n%s", st, out);
    CHECK(strstr(out, "handler 1 event 2\n") && !strstr(out, "event 0"),
          "CTRL_CLOSE_EVENT only:\n%s", out);
}
