/*
 * semantics.c, part 1: zero-length transfers without packets, made-up
 * handles, and AcceptEx (refusals, SO_UPDATE_ACCEPT_CONTEXT, options,
 * ending it by closing or cancelling, at either stage).
 * Included once, by semantics.c.
 */

/* ------------------------------------------------------------------ */
/* Zero-length ReadFile/WriteFile with a no-packet OVERLAPPED          */
/* ------------------------------------------------------------------ */

/* Issues a zero-length read and write on `h` (associated with `port`) with
 * hEvent's low bit set: nothing is queued, and GetOverlappedResult without
 * waiting returns (success, 0 bytes) instead of spinning. Returns NULL or
 * what went wrong. */
static const char *zero_length_on(HANDLE port, HANDLE rd, HANDLE wr) {
    static char why[160];
    char buf[4];
    for (int w = 0; w < 2; w++) {
        OVERLAPPED *ov = new_ov();
        DWORD n = 77;
        ov->hEvent = (HANDLE)(uintptr_t)1;
        BOOL r = w ? WriteFile(wr, buf, 0, &n, ov) : ReadFile(rd, buf, 0, &n, ov);
        if (!r && GetLastError() != ERROR_IO_PENDING) {
            snprintf(why, sizeof why, "%s: %u", w ? "WriteFile" : "ReadFile", GetLastError());
            return why;
        }
        call_t *c = call_new(do_result_nowait);
        if (!c)
            return "calloc";
        c->h = w ? wr : rd;
        c->ov = ov;
        if (!call_start(c) || !call_returned(c, MUST_MS))
            return "GetOverlappedResult(bWait = FALSE) did not return";
        bool failed = !c->ret && c->err != ERROR_IO_INCOMPLETE;
        snprintf(why, sizeof why, "GetOverlappedResult(FALSE): %u", c->err);
        call_free(c);
        if (failed)
            return why;
        if (!GetOverlappedResult(w ? wr : rd, ov, &n, TRUE) || n != 0) {
            snprintf(why, sizeof why, "GetOverlappedResult(TRUE): %u n=%u", GetLastError(), n);
            return why;
        }
        if (!nothing_queued(port))
            return "a packet was queued";
        free(ov);
    }
    return NULL;
}

static void zero_length_no_packet_file(void) {
    HANDLE port = new_port(), f = INVALID_HANDLE_VALUE;
    char path[128];
    snprintf(path, sizeof path, "%s/zero", g_dir);
    f = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                    FILE_FLAG_OVERLAPPED, NULL);
    CHECK(port && f != INVALID_HANDLE_VALUE, "setup: %u", GetLastError());
    CHECK(CreateIoCompletionPort(f, port, 1, 0) == port, "assoc: %u", GetLastError());
    const char *why = zero_length_on(port, f, f);
    CHECK(!why, "%s", why);
done:
    if (f != INVALID_HANDLE_VALUE)
        CloseHandle(f);
    unlink(path);
    CloseHandle(port);
}

static void zero_length_no_packet_pipe(void) {
    HANDLE port = new_port();
    int p[2] = {-1, -1};
    CHECK(port && pipe2(p, O_CLOEXEC) == 0, "setup");
    CHECK(CreateIoCompletionPort(H(p[0]), port, 1, 0) == port, "assoc read end");
    CHECK(CreateIoCompletionPort(H(p[1]), port, 2, 0) == port, "assoc write end");
    const char *why = zero_length_on(port, H(p[0]), H(p[1]));
    CHECK(!why, "%s", why);
done:
    if (p[0] >= 0)
        CloseHandle(H(p[0]));
    if (p[1] >= 0)
        CloseHandle(H(p[1]));
    CloseHandle(port);
}

/* ------------------------------------------------------------------ */
/* Made-up and closed handles                                          */
/* ------------------------------------------------------------------ */

static void made_up_handles(void) {
    int p[2] = {-1, -1};
    HANDLE made_up[] = {H(0x7ffffff0), H(0x12345), (HANDLE)(uintptr_t)0x4350001234567890ull};
    CHECK(pipe2(p, O_CLOEXEC) == 0, "pipe");
    for (size_t i = 0; i < sizeof made_up / sizeof made_up[0]; i++) {
        SetLastError(0);
        CHECK(!CancelIoEx(made_up[i], NULL) && GetLastError() == ERROR_INVALID_HANDLE,
              "CancelIoEx(%p): %u", made_up[i], GetLastError());
        SetLastError(0);
        CHECK(!CancelIo(made_up[i]) && GetLastError() == ERROR_INVALID_HANDLE, "CancelIo(%p): %u",
              made_up[i], GetLastError());
        SetLastError(0);
        CHECK(GetFileType(made_up[i]) == FILE_TYPE_UNKNOWN && GetLastError() == ERROR_INVALID_HANDLE,
              "GetFileType(%p): %u", made_up[i], GetLastError());
        CHECK(cport_fd(made_up[i]) == -1 && GetLastError() == ERROR_INVALID_HANDLE, "cport_fd(%p)",
              made_up[i]);
    }
    /* An open handle with nothing to cancel. */
    SetLastError(0);
    CHECK(!CancelIoEx(H(p[0]), NULL) && GetLastError() == ERROR_NOT_FOUND, "open fd: %u",
          GetLastError());
    /* A closed one. */
    CHECK(CloseHandle(H(p[0])), "CloseHandle");
    int closed = p[0];
    p[0] = -1;
    SetLastError(0);
    CHECK(!CancelIoEx(H(closed), NULL) && GetLastError() == ERROR_INVALID_HANDLE, "closed fd: %u",
          GetLastError());
done:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
}

/* ------------------------------------------------------------------ */
/* AcceptEx                                                            */
/* ------------------------------------------------------------------ */

/* A listener on a port (key 0x11), an accept socket, an output buffer with
 * `rl` bytes of receive area. */
typedef struct {
    HANDLE port;
    SOCKET lis, acc, cli;
    SOCKADDR_IN la;
    OVERLAPPED *ov;
    char *out;
    DWORD rl;
} acc_t;

static bool acc_setup(acc_t *a, DWORD rl, int backlog) {
    memset(a, 0, sizeof *a);
    a->lis = a->acc = a->cli = INVALID_SOCKET;
    a->rl = rl;
    a->port = new_port();
    a->ov = new_ov();
    a->out = calloc(1, rl + 2 * ADDR_LEN);
    a->lis = bound_tcp(&a->la, backlog);
    a->acc = new_tcp();
    return a->port && a->lis != INVALID_SOCKET && a->acc != INVALID_SOCKET &&
           CreateIoCompletionPort((HANDLE)a->lis, a->port, 0x11, 0) == a->port;
}

static BOOL acc_issue(acc_t *a) {
    DWORD n = 0;
    return AcceptEx(a->lis, a->acc, a->out, a->rl, ADDR_LEN, ADDR_LEN, &n, a->ov);
}

static void acc_free(acc_t *a) {
    xclose(&a->cli);
    xclose(&a->acc);
    xclose(&a->lis);
    if (a->port)
        CloseHandle(a->port);
    free(a->ov);
    free(a->out);
}

static void acceptex_refused_at_the_call(void) {
    acc_t a;
    OVERLAPPED *ov2 = new_ov();
    DWORD n = 0;
    CHECK(acc_setup(&a, 0, 0), "setup");
    /* Not listening: WSAEINVAL at the call, nothing queued. */
    SetLastError(0);
    CHECK(!acc_issue(&a) && GetLastError() == WSAEINVAL, "not listening: %u", GetLastError());
    CHECK(nothing_queued(a.port), "a packet was queued for a refused AcceptEx");
    CHECK(HasOverlappedIoCompleted(a.ov) || a.ov->Internal == 0, "OVERLAPPED left pending");
    CHECK(listen(a.lis, 4) == 0, "listen");
    /* No output buffer: WSAEFAULT. */
    SetLastError(0);
    CHECK(!AcceptEx(a.lis, a.acc, NULL, 0, ADDR_LEN, ADDR_LEN, &n, a.ov) &&
              GetLastError() == WSAEFAULT,
          "NULL buffer: %u", GetLastError());
    /* An accept socket already given to a pending AcceptEx: WSAEINVAL. */
    CHECK(!acc_issue(&a) && GetLastError() == ERROR_IO_PENDING, "AcceptEx: %u", GetLastError());
    SetLastError(0);
    CHECK(!AcceptEx(a.lis, a.acc, a.out, 0, ADDR_LEN, ADDR_LEN, &n, ov2) &&
              GetLastError() == WSAEINVAL,
          "accept socket in use: %u", GetLastError());
    CHECK(closesocket(a.lis) == 0, "closesocket");
    a.lis = INVALID_SOCKET;
    pkt_t p = deq(a.port, MUST_MS);
    CHECK(!p.ok && p.ov == a.ov && p.err == ERROR_OPERATION_ABORTED, "packet: ok=%d ov=%p err=%u",
          p.ok, (void *)p.ov, p.err);
    CHECK(nothing_queued(a.port), "second packet");
done:
    acc_free(&a);
    free(ov2);
}

/* Completes an AcceptEx with no receive area: a client connects. */
static bool acc_complete(acc_t *a) {
    if (acc_issue(a) || GetLastError() != ERROR_IO_PENDING)
        return false;
    a->cli = client_of(&a->la);
    pkt_t p = deq(a->port, MUST_MS);
    return a->cli != INVALID_SOCKET && p.ok && p.ov == a->ov;
}

static void acceptex_update_context(void) {
    acc_t a;
    SOCKADDR_IN lo, pe, cl;
    int ll = sizeof lo, pl = sizeof pe, cll = sizeof cl;
    SOCKET con = INVALID_SOCKET;
    CHECK(acc_setup(&a, 0, 4), "setup");
    CHECK(acc_complete(&a), "AcceptEx did not complete");
    CHECK(setsockopt(a.acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&a.lis, sizeof a.lis) == 0,
          "SO_UPDATE_ACCEPT_CONTEXT: %d", WSAGetLastError());
    CHECK(getsockname(a.acc, (SOCKADDR *)&lo, &ll) == 0 && lo.sin_port == a.la.sin_port,
          "getsockname: %d", WSAGetLastError());
    CHECK(getsockname(a.cli, (SOCKADDR *)&cl, &cll) == 0, "client getsockname");
    CHECK(getpeername(a.acc, (SOCKADDR *)&pe, &pl) == 0 && pe.sin_port == cl.sin_port,
          "getpeername: %d", WSAGetLastError());
    /* Bad option value: the listener's SOCKET is pointer-sized. */
    SetLastError(0);
    CHECK(setsockopt(a.acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&a.lis, 4) == SOCKET_ERROR &&
              WSAGetLastError() == WSAEFAULT,
          "short option: %d", WSAGetLastError());
    /* Not a socket. */
    SetLastError(0);
    SOCKET bogus = (SOCKET)0x7ffffff0;
    CHECK(setsockopt(a.acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&bogus, sizeof bogus) ==
                  SOCKET_ERROR &&
              WSAGetLastError() == WSAENOTSOCK,
          "bogus listener: %d", WSAGetLastError());
    /* SO_UPDATE_CONNECT_CONTEXT after a connect. */
    con = client_of(&a.la);
    CHECK(con != INVALID_SOCKET, "connect");
    CHECK(setsockopt(con, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) == 0,
          "SO_UPDATE_CONNECT_CONTEXT: %d", WSAGetLastError());
done:
    xclose(&con);
    acc_free(&a);
}

/* Options set on the accept socket before AcceptEx are those of the
 * accepted connection. */
static void acceptex_options_survive(void) {
    acc_t a;
    struct opt {
        int level, name;
        const char *what;
    } opts[] = {
        {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"}, {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
        {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},     {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
        {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"},
    };
    int want[5], set[5] = {1, 96 * 1024, 48 * 1024, 1, 1};
    LINGER lg = {1, 7}, lg_got;
    CHECK(acc_setup(&a, 0, 4), "setup");
    for (int i = 0; i < 5; i++) {
        int len = sizeof want[i];
        CHECK(setsockopt(a.acc, opts[i].level, opts[i].name, (char *)&set[i], sizeof set[i]) == 0,
              "set %s", opts[i].what);
        CHECK(getsockopt(a.acc, opts[i].level, opts[i].name, (char *)&want[i], &len) == 0, "get %s",
              opts[i].what);
    }
    CHECK(setsockopt(a.acc, SOL_SOCKET, SO_LINGER, (char *)&lg, sizeof lg) == 0, "set SO_LINGER");
    CHECK(acc_complete(&a), "AcceptEx did not complete");
    CHECK(setsockopt(a.acc, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&a.lis, sizeof a.lis) == 0,
          "SO_UPDATE_ACCEPT_CONTEXT: %d", WSAGetLastError());
    for (int i = 0; i < 5; i++) {
        int got = -1, len = sizeof got;
        CHECK(getsockopt(a.acc, opts[i].level, opts[i].name, (char *)&got, &len) == 0, "get %s",
              opts[i].what);
        CHECK(got == want[i], "%s: %d on the accepted socket, %d set", opts[i].what, got, want[i]);
    }
    int len = sizeof lg_got;
    CHECK(getsockopt(a.acc, SOL_SOCKET, SO_LINGER, (char *)&lg_got, &len) == 0 && lg_got.l_onoff &&
              lg_got.l_linger == 7,
          "SO_LINGER: {%d, %d}", lg_got.l_onoff, lg_got.l_linger);
done:
    acc_free(&a);
}

/* Windows ends a pending AcceptEx whose accept socket is closed. */
static void acceptex_accept_socket_closed(void) {
    acc_t a;
    CHECK(acc_setup(&a, 0, 4), "setup");
    CHECK(!acc_issue(&a) && GetLastError() == ERROR_IO_PENDING, "AcceptEx: %u", GetLastError());
    CHECK(closesocket(a.acc) == 0, "closesocket");
    a.acc = INVALID_SOCKET;
    pkt_t p = deq(a.port, MUST_MS);
    CHECK(!p.ok && p.ov == a.ov && p.err == ERROR_OPERATION_ABORTED, "packet: ok=%d ov=%p err=%u",
          p.ok, (void *)p.ov, p.err);
    CHECK(HasOverlappedIoCompleted(a.ov), "Internal still pending");
    /* A client coming later is not given to anyone. */
    a.cli = client_of(&a.la);
    CHECK(nothing_queued(a.port), "a packet after the abort");
done:
    acc_free(&a);
}

enum how { LISTENER_CLOSESOCKET, LISTENER_CLOSEHANDLE, ACCEPT_CLOSESOCKET, CANCELIOEX };

/* An AcceptEx with a receive area, accepted and waiting for the client's
 * first bytes, is ended by `how` with ERROR_OPERATION_ABORTED and its
 * packet queued: once after the accept was seen by a dequeue (`reaped`),
 * once right after the client connected. */
static const char *data_stage_ended(enum how how, bool reaped) {
    static char why[200];
    acc_t a;
    const char *r = NULL;
    if (!acc_setup(&a, 64, 4)) {
        r = "setup";
        goto out;
    }
    if (acc_issue(&a) || GetLastError() != ERROR_IO_PENDING) {
        r = "AcceptEx not pending";
        goto out;
    }
    a.cli = client_of(&a.la);
    if (a.cli == INVALID_SOCKET) {
        r = "connect";
        goto out;
    }
    if (reaped && !nothing_queued(a.port)) {
        r = "completed before any data";
        goto out;
    }
    BOOL ok = TRUE;
    switch (how) {
    case LISTENER_CLOSESOCKET:
        ok = closesocket(a.lis) == 0;
        a.lis = INVALID_SOCKET;
        break;
    case LISTENER_CLOSEHANDLE:
        ok = CloseHandle((HANDLE)a.lis);
        a.lis = INVALID_SOCKET;
        break;
    case ACCEPT_CLOSESOCKET:
        ok = closesocket(a.acc) == 0;
        a.acc = INVALID_SOCKET;
        break;
    case CANCELIOEX:
        ok = CancelIoEx((HANDLE)a.lis, NULL);
        break;
    }
    if (!ok) {
        snprintf(why, sizeof why, "close/cancel failed: %u", GetLastError());
        r = why;
        goto out;
    }
    pkt_t p = deq(a.port, MUST_MS);
    if (p.ok || p.ov != a.ov || p.err != ERROR_OPERATION_ABORTED) {
        snprintf(why, sizeof why, "packet: ok=%d ov=%p err=%u bytes=%u (reaped=%d)", p.ok,
                 (void *)p.ov, p.err, p.bytes, reaped);
        r = why;
    } else if (!HasOverlappedIoCompleted(a.ov)) {
        r = "Internal still pending";
    } else if (!nothing_queued(a.port)) {
        r = "a second packet";
    }
out:
    acc_free(&a);
    return r;
}

/* One test per way of ending the data stage, each run reaped and not. */
#define DATA_STAGE_TEST(name, how)                                             \
    static void name(void) {                                                   \
        const char *why = data_stage_ended(how, true);                         \
        CHECK(!why, "%s", why);                                                \
        why = data_stage_ended(how, false);                                    \
        CHECK(!why, "%s", why);                                                \
    done:;                                                                     \
    }
DATA_STAGE_TEST(acceptex_data_stage_listener_closed, LISTENER_CLOSESOCKET)
DATA_STAGE_TEST(acceptex_data_stage_listener_closehandle, LISTENER_CLOSEHANDLE)
DATA_STAGE_TEST(acceptex_data_stage_accept_socket_closed, ACCEPT_CLOSESOCKET)
DATA_STAGE_TEST(acceptex_data_stage_cancelioex, CANCELIOEX)

/* A client that connects and closes without sending: Windows completes
 * the AcceptEx with success and 0 bytes (as a receive sees a graceful
 * close); the accepted socket is connected (and at end of stream). */
static void acceptex_data_stage_client_leaves(void) {
    acc_t a;
    CHECK(acc_setup(&a, 64, 4), "setup");
    CHECK(!acc_issue(&a) && GetLastError() == ERROR_IO_PENDING, "AcceptEx");
    a.cli = client_of(&a.la);
    CHECK(a.cli != INVALID_SOCKET, "connect");
    CHECK(nothing_queued(a.port), "completed before the client left");
    xclose(&a.cli);
    pkt_t p = deq(a.port, MUST_MS);
    CHECK(p.ok && p.ov == a.ov && p.bytes == 0, "packet: ok=%d err=%u bytes=%u", p.ok, p.err,
          p.bytes);
    char c;
    CHECK(recv(a.acc, &c, 1, 0) == 0, "accepted socket not at end of stream");
done:
    acc_free(&a);
}
