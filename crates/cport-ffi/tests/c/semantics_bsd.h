/*
 * semantics.c, part 2: the BSD socket calls as Winsock has them —
 * closesocket waking blocked calls, WSAGetLastError after each call, and
 * the names classic IOCP programs use. Included once, by semantics.c.
 */

/* closesocket from another thread ends a blocking accept with WSAEINTR,
 * as Winsock does. */
static void closesocket_wakes_accept(void) {
    SOCKADDR_IN a;
    SOCKET lis = bound_tcp(&a, 4);
    call_t *c = call_new(do_accept);
    CHECK(c && lis != INVALID_SOCKET, "setup");
    c->s = lis;
    CHECK(call_start_blocked(c), "accept did not block");
    CHECK(closesocket(lis) == 0, "closesocket: %d", WSAGetLastError());
    lis = INVALID_SOCKET;
    CHECK(call_returned(c, MUST_MS), "accept still blocked after closesocket");
    CHECK((SOCKET)c->ret == INVALID_SOCKET && c->err == WSAEINTR, "accept: ret=%ld err=%u",
          (long)c->ret, c->err);
done:
    call_free(c);
    xclose(&lis);
}

/* A connected pair: `srv` accepted from a listener, `cli` connected. */
static bool tcp_pair(SOCKET *srv, SOCKET *cli) {
    SOCKADDR_IN a;
    SOCKET lis = bound_tcp(&a, 1);
    *cli = lis == INVALID_SOCKET ? INVALID_SOCKET : client_of(&a);
    *srv = *cli == INVALID_SOCKET ? INVALID_SOCKET : accept(lis, NULL, NULL);
    xclose(&lis);
    return *srv != INVALID_SOCKET;
}

static void closesocket_wakes_recv(void) {
    SOCKET srv = INVALID_SOCKET, cli = INVALID_SOCKET;
    static char buf[16];
    call_t *c = call_new(do_recv);
    CHECK(c && tcp_pair(&srv, &cli), "setup");
    c->s = srv, c->buf = buf, c->len = sizeof buf;
    CHECK(call_start_blocked(c), "recv did not block");
    CHECK(closesocket(srv) == 0, "closesocket: %d", WSAGetLastError());
    srv = INVALID_SOCKET;
    CHECK(call_returned(c, MUST_MS), "recv still blocked after closesocket");
    CHECK(c->ret == SOCKET_ERROR && c->err == WSAEINTR, "recv: ret=%ld err=%u", (long)c->ret, c->err);
    /* The peer sees the connection end. */
    char pb[4];
    CHECK(recv(cli, pb, sizeof pb, 0) == 0, "peer: %d", WSAGetLastError());
done:
    call_free(c);
    xclose(&srv);
    xclose(&cli);
}

static void closesocket_wakes_send(void) {
    SOCKET srv = INVALID_SOCKET, cli = INVALID_SOCKET;
    enum { BIG = 8 << 20 };
    static char buf[BIG];
    call_t *c = call_new(do_send);
    CHECK(c && tcp_pair(&srv, &cli), "setup");
    c->s = srv, c->buf = buf, c->len = BIG;
    /* Nobody reads `cli`: the send fills both buffers and blocks. */
    CHECK(call_start_blocked(c), "send did not block");
    CHECK(closesocket(srv) == 0, "closesocket: %d", WSAGetLastError());
    srv = INVALID_SOCKET;
    CHECK(call_returned(c, MUST_MS), "send still blocked after closesocket");
    CHECK(c->ret == SOCKET_ERROR && c->err == WSAEINTR, "send: ret=%ld err=%u", (long)c->ret, c->err);
done:
    call_free(c);
    xclose(&srv);
    xclose(&cli);
}

/* WSAGetLastError() after each BSD call that failed holds Winsock's code. */
static void winsock_errors_of_bsd_calls(void) {
    SOCKADDR_IN a, b;
    SOCKET lis = bound_tcp(&a, 4), s = new_tcp(), u = INVALID_SOCKET;
    SOCKET bogus = (SOCKET)0x7ffffff0;
    char buf[8];
    int v = 0, len = sizeof v;
    CHECK(lis != INVALID_SOCKET && s != INVALID_SOCKET, "setup");
#define WSA_FAILS(call, code)                                                                 \
    do {                                                                                      \
        WSASetLastError(0);                                                                   \
        long r_ = (long)(call);                                                               \
        CHECK(r_ == SOCKET_ERROR && WSAGetLastError() == (code), "%s: ret %ld, error %d, want %d", \
              #call, r_, WSAGetLastError(), (code));                                          \
    } while (0)
    WSA_FAILS(bind(s, (SOCKADDR *)&a, sizeof a), WSAEADDRINUSE);
    WSA_FAILS(listen(bogus, 1), WSAENOTSOCK);
    WSA_FAILS(accept(s, NULL, NULL), WSAEINVAL); /* not listening */
    WSA_FAILS(recv(s, buf, sizeof buf, 0), WSAENOTCONN);
    WSA_FAILS(send(bogus, buf, 1, 0), WSAENOTSOCK);
    WSA_FAILS(recvfrom(bogus, buf, sizeof buf, 0, NULL, NULL), WSAENOTSOCK);
    WSA_FAILS(sendto(s, buf, 1, 0, (SOCKADDR *)&a, sizeof a), WSAENOTCONN);
    WSA_FAILS(getsockopt(s, SOL_SOCKET, 0x7777, (char *)&v, &len), WSAENOPROTOOPT);
    WSA_FAILS(setsockopt(bogus, SOL_SOCKET, SO_KEEPALIVE, (char *)&v, sizeof v), WSAENOTSOCK);
    WSA_FAILS(shutdown(s, SD_BOTH), WSAENOTCONN);
    /* A port with no listener (the listener closed). */
    b = a;
    closesocket(lis);
    lis = INVALID_SOCKET;
    WSA_FAILS(connect(s, (SOCKADDR *)&b, sizeof b), WSAECONNREFUSED);
    u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(u != INVALID_SOCKET, "udp socket");
    WSA_FAILS(listen(u, 1), WSAEOPNOTSUPP);
    /* INVALID_SOCKET and the error from socket(). */
    WSASetLastError(0);
    CHECK(socket(12345, SOCK_STREAM, 0) == INVALID_SOCKET && WSAGetLastError() == WSAEAFNOSUPPORT,
          "socket: %d", WSAGetLastError());
#undef WSA_FAILS
done:
    xclose(&lis);
    xclose(&s);
    xclose(&u);
}

static void getaddrinfo_errors(void) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_flags = AI_NUMERICHOST;
    WSASetLastError(0);
    int r = getaddrinfo("not-a-number", NULL, &hints, &res);
    CHECK(r == EAI_NONAME && WSAGetLastError() == WSAHOST_NOT_FOUND, "getaddrinfo: %d, error %d", r,
          WSAGetLastError());
    hints.ai_family = 12345;
    WSASetLastError(0);
    r = getaddrinfo("127.0.0.1", NULL, &hints, &res);
    CHECK(r != 0 && WSAGetLastError() == WSAEAFNOSUPPORT, "bad family: %d, error %d", r,
          WSAGetLastError());
    hints.ai_family = AF_INET;
    r = getaddrinfo("127.0.0.1", "80", &hints, &res);
    CHECK(r == 0 && res, "good address: %d", r);
    freeaddrinfo(res);
done:;
}

/* What a grep of classic IOCP servers and file copiers turns up. */
static void classic_names(void) {
    SOCKADDR_IN a;
    SOCKADDR_STORAGE ss;
    PSOCKADDR ps = (PSOCKADDR)&ss;
    LPSOCKADDR lps = ps;
    SOCKADDR_IN6 a6;
    LINGER lg = {1, 0};
    DWORD_PTR key = 0;
    PDWORD_PTR pkey = &key;
    ULONG_PTR *as_ulong = pkey; /* the (PDWORD_PTR)&ctx cast in GQCS calls */
    LARGE_INTEGER li;
    ULARGE_INTEGER uli;
    u_long nb = 1;
    SOCKET lis = bound_tcp(&a, 4), s = INVALID_SOCKET;
    (void)lps, (void)a6, (void)lg, (void)as_ulong;
    CHECK(lis != INVALID_SOCKET, "listener");
    li.QuadPart = 0x100000002ll;
    CHECK(li.LowPart == 2 && li.HighPart == 1 && li.u.LowPart == 2, "LARGE_INTEGER layout");
    uli.QuadPart = 0xFFFFFFFF00000001ull;
    CHECK(uli.LowPart == 1 && uli.HighPart == 0xFFFFFFFFu, "ULARGE_INTEGER layout");
    CHECK(sizeof(DWORD_PTR) == sizeof(void *), "DWORD_PTR size");
    s = client_of(&a);
    CHECK(s != INVALID_SOCKET, "connect");
    /* WSAAccept with no condition function is accept. */
    SOCKADDR_IN from;
    int fl = sizeof from;
    SOCKET acc = WSAAccept(lis, (SOCKADDR *)&from, &fl, NULL, 0);
    CHECK(acc != INVALID_SOCKET && fl == (int)sizeof from && from.sin_family == AF_INET,
          "WSAAccept: %d", WSAGetLastError());
    CHECK(ioctlsocket(acc, FIONBIO, &nb) == 0, "ioctlsocket(FIONBIO): %d", WSAGetLastError());
    char c;
    WSASetLastError(0);
    CHECK(recv(acc, &c, 1, 0) == SOCKET_ERROR && WSAGetLastError() == WSAEWOULDBLOCK,
          "non-blocking recv: %d", WSAGetLastError());
    closesocket(acc);
    WSASetLastError(0);
    CHECK(WSAAccept(lis, NULL, NULL, (LPCONDITIONPROC)(uintptr_t)1, 0) == INVALID_SOCKET &&
              WSAGetLastError() == WSAEOPNOTSUPP,
          "WSAAccept with a condition: %d", WSAGetLastError());
    HANDLE f = CreateFile("/dev/null", GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    CHECK(f != INVALID_HANDLE_VALUE, "CreateFile: %u", GetLastError());
    CloseHandle(f);
done:
    xclose(&lis);
    xclose(&s);
}
