/*
 * Completion state written when the I/O ends (issue 14): HasOverlappedIoCompleted,
 * GetOverlappedResult(bWait = FALSE) and the OVERLAPPED's event see a finished,
 * a cancelled and an aborted operation with no thread in
 * GetQueuedCompletionStatus; the Microsoft samples' shutdown (spin on
 * HasOverlappedIoCompleted after closesocket) ends; a stream WSASend completes
 * whole. Included by semantics.c.
 */

/* Spins (bounded, yielding: no sleep as synchronisation) until `ov` completed. */
static bool completes_alone(OVERLAPPED *ov) {
    double end = now_ms() + MUST_MS;
    while (!HasOverlappedIoCompleted(ov)) {
        if (now_ms() > end)
            return false;
        sched_yield();
    }
    return true;
}

/* A connected TCP pair: *srv associated with `port` (key 1), *cli blocking. */
static bool tcp_pair_on(HANDLE port, SOCKET *srv, SOCKET *cli) {
    SOCKADDR_IN a;
    SOCKET l = bound_tcp(&a, 4);
    *srv = *cli = INVALID_SOCKET;
    if (l == INVALID_SOCKET)
        return false;
    *cli = client_of(&a);
    *srv = accept(l, NULL, NULL);
    closesocket(l);
    return *cli != INVALID_SOCKET && *srv != INVALID_SOCKET &&
           CreateIoCompletionPort(H(*srv), port, 1, 0) == port;
}

static int post_recv(SOCKET s, OVERLAPPED *ov, char *buf, ULONG len) {
    WSABUF b = {len, buf};
    DWORD flags = 0;
    return WSARecv(s, &b, 1, NULL, &flags, ov, NULL);
}

/* A receive whose data arrived: its state is written with nobody dequeuing;
 * then exactly one packet comes. */
static void state_of_a_finished_receive(void) {
    HANDLE port = new_port();
    SOCKET srv, cli;
    OVERLAPPED *ov = new_ov();
    char buf[64];
    DWORD n = 0;
    CHECK(port && tcp_pair_on(port, &srv, &cli), "setup");
    int r = post_recv(srv, ov, buf, sizeof buf);
    CHECK(r == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING, "WSARecv %d", r);
    CHECK(!HasOverlappedIoCompleted(ov), "completed before any data");
    CHECK(!GetOverlappedResult(H(srv), ov, &n, FALSE) && GetLastError() == ERROR_IO_INCOMPLETE,
          "GetOverlappedResult before the data: %lu", (unsigned long)GetLastError());
    CHECK(send(cli, "hello", 5, 0) == 5, "send");
    CHECK(completes_alone(ov), "Internal still STATUS_PENDING with the data there");
    CHECK(ov->Internal == 0 && ov->InternalHigh == 5, "Internal %#lx, InternalHigh %lu",
          (unsigned long)ov->Internal, (unsigned long)ov->InternalHigh);
    CHECK(GetOverlappedResult(H(srv), ov, &n, FALSE) && n == 5, "GetOverlappedResult %lu",
          (unsigned long)n);
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov && p.bytes == 5 && memcmp(buf, "hello", 5) == 0, "the packet");
    CHECK(nothing_queued(port), "a second packet");
done:
    xclose(&cli);
    xclose(&srv);
    if (port)
        CloseHandle(port);
    free(ov);
}

/* closesocket with receives pending, nobody dequeuing: each ends aborted,
 * its state written at once. */
static void state_of_receives_aborted_by_closesocket(void) {
    HANDLE port = new_port();
    SOCKET srv, cli;
    OVERLAPPED *ov[3] = {new_ov(), new_ov(), new_ov()};
    char buf[3][16];
    DWORD n;
    CHECK(port && tcp_pair_on(port, &srv, &cli), "setup");
    for (int i = 0; i < 3; i++)
        CHECK(post_recv(srv, ov[i], buf[i], sizeof buf[i]) == SOCKET_ERROR &&
                  WSAGetLastError() == WSA_IO_PENDING,
              "WSARecv %d", i);
    CHECK(closesocket(srv) == 0, "closesocket");
    srv = INVALID_SOCKET;
    for (int i = 0; i < 3; i++) {
        CHECK(completes_alone(ov[i]), "receive %d not ended by closesocket", i);
        CHECK(!GetOverlappedResult(H(cli), ov[i], &n, FALSE) &&
                  GetLastError() == ERROR_OPERATION_ABORTED,
              "receive %d: %lu", i, (unsigned long)GetLastError());
    }
    for (int i = 0; i < 3; i++) {
        pkt_t p = deq(port, MUST_MS);
        CHECK(!p.ok && p.err == ERROR_OPERATION_ABORTED && p.ov != NULL, "packet %d: %lu", i,
              (unsigned long)p.err);
    }
    CHECK(nothing_queued(port), "an extra packet");
done:
    xclose(&cli);
    xclose(&srv);
    if (port)
        CloseHandle(port);
    for (int i = 0; i < 3; i++)
        free(ov[i]);
}

/* An AcceptEx ended by closing its listener: state written, nobody dequeuing. */
static void state_of_an_acceptex_aborted(void) {
    HANDLE port = new_port();
    SOCKADDR_IN a;
    SOCKET l = bound_tcp(&a, 4), as = new_tcp();
    OVERLAPPED *ov = new_ov();
    char out[2 * ADDR_LEN];
    DWORD got = 0;
    CHECK(port && l != INVALID_SOCKET && as != INVALID_SOCKET, "setup");
    CHECK(CreateIoCompletionPort(H(l), port, 1, 0) == port, "associate");
    CHECK(!AcceptEx(l, as, out, 0, ADDR_LEN, ADDR_LEN, &got, ov) &&
              WSAGetLastError() == WSA_IO_PENDING,
          "AcceptEx");
    CHECK(closesocket(l) == 0, "closesocket");
    l = INVALID_SOCKET;
    CHECK(completes_alone(ov), "AcceptEx not ended by closing its listener");
    CHECK(!GetOverlappedResult(H(as), ov, &got, FALSE) && GetLastError() == ERROR_OPERATION_ABORTED,
          "%lu", (unsigned long)GetLastError());
    pkt_t p = deq(port, MUST_MS);
    CHECK(!p.ok && p.err == ERROR_OPERATION_ABORTED && p.ov == ov, "the packet");
done:
    xclose(&l);
    xclose(&as);
    if (port)
        CloseHandle(port);
    free(ov);
}

/* The Microsoft IOCP samples' shutdown: the workers are gone (no thread in
 * GetQueuedCompletionStatus), every socket is closed, and the main thread
 * spins on HasOverlappedIoCompleted with Sleep(0) until each operation is
 * over. It must end. */
static void microsoft_shutdown_pattern(void) {
    enum { N = 8 };
    HANDLE port = new_port();
    SOCKET srv[N], cli[N];
    OVERLAPPED *ov[N];
    char buf[N][32];
    for (int i = 0; i < N; i++) {
        srv[i] = cli[i] = INVALID_SOCKET;
        ov[i] = new_ov();
    }
    CHECK(port, "port");
    for (int i = 0; i < N; i++) {
        CHECK(tcp_pair_on(port, &srv[i], &cli[i]), "pair %d", i);
        CHECK(post_recv(srv[i], ov[i], buf[i], sizeof buf[i]) == SOCKET_ERROR &&
                  WSAGetLastError() == WSA_IO_PENDING,
              "WSARecv %d", i);
    }
    /* Half of them get data first, as a live server's would. */
    for (int i = 0; i < N; i += 2)
        CHECK(send(cli[i], "x", 1, 0) == 1, "send %d", i);
    for (int i = 0; i < N; i++) {
        closesocket(srv[i]);
        srv[i] = INVALID_SOCKET;
    }
    double end = now_ms() + MUST_MS;
    for (int i = 0; i < N; i++) {
        while (!HasOverlappedIoCompleted(ov[i])) {
            CHECK(now_ms() < end, "operation %d never completed", i);
            Sleep(0);
        }
    }
done:
    for (int i = 0; i < N; i++) {
        xclose(&srv[i]);
        xclose(&cli[i]);
    }
    if (port)
        CloseHandle(port);
    for (int i = 0; i < N; i++)
        free(ov[i]);
}

/* A reader that takes `len` bytes slowly (small reads), checking the pattern. */
typedef struct {
    SOCKET s;
    size_t len, got;
    bool ok;
} slow_reader_t;

static void *slow_read(void *arg) {
    slow_reader_t *r = arg;
    char chunk[4096];
    r->ok = true;
    while (r->got < r->len) {
        int n = recv(r->s, chunk, sizeof chunk, 0);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++)
            if ((unsigned char)chunk[i] != (unsigned char)((r->got + (size_t)i) % 251))
                r->ok = false;
        r->got += (size_t)n;
    }
    return NULL;
}

/* A 16 MiB stream WSASend to a slow reader completes with 16 MiB (Windows
 * completes a stream send whole), every byte in order. */
static void wsasend_completes_whole(void) {
    const size_t len = 16u << 20;
    HANDLE port = new_port();
    SOCKET srv, cli;
    OVERLAPPED *ov = new_ov();
    char *data = malloc(len);
    pthread_t t;
    slow_reader_t r = {INVALID_SOCKET, len, 0, false};
    bool started = false;
    CHECK(port && data && tcp_pair_on(port, &srv, &cli), "setup");
    for (size_t i = 0; i < len; i++)
        data[i] = (char)(i % 251);
    WSABUF b = {(ULONG)len, data};
    int rc = WSASend(srv, &b, 1, NULL, 0, ov, NULL);
    CHECK(rc == 0 || WSAGetLastError() == WSA_IO_PENDING, "WSASend: %d", WSAGetLastError());
    r.s = cli;
    CHECK(pthread_create(&t, NULL, slow_read, &r) == 0, "reader");
    started = true;
    pkt_t p = deq(port, 4 * MUST_MS);
    CHECK(p.ok && p.ov == ov, "the send's packet: %lu", (unsigned long)p.err);
    CHECK(p.bytes == len, "completed with %lu of %lu bytes", (unsigned long)p.bytes,
          (unsigned long)len);
done:
    if (started) {
        pthread_join(t, NULL);
        if (!g_bad && (r.got != len || !r.ok)) {
            snprintf(g_why, sizeof g_why, "reader got %zu bytes, in order: %d", r.got, r.ok);
            g_bad = 1;
        }
    }
    xclose(&cli);
    xclose(&srv);
    if (port)
        CloseHandle(port);
    free(ov);
    free(data);
}

/* The OVERLAPPED's event is signalled when the operation ends, with nobody
 * in GetQueuedCompletionStatus or GetOverlappedResult: with a packet, and
 * with none (hEvent's low bit). */
static void event_signalled_when_it_ends(void) {
    HANDLE port = new_port();
    SOCKET srv, cli;
    OVERLAPPED *ov[2] = {new_ov(), new_ov()};
    HANDLE ev[2] = {CreateEventA(NULL, TRUE, FALSE, NULL), CreateEventA(NULL, TRUE, FALSE, NULL)};
    char buf[2][8];
    DWORD n = 0;
    CHECK(port && ev[0] && ev[1] && tcp_pair_on(port, &srv, &cli), "setup");
    ov[0]->hEvent = ev[0];
    ov[1]->hEvent = (HANDLE)((uintptr_t)ev[1] | 1);
    CHECK(post_recv(srv, ov[0], buf[0], 4) == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING,
          "WSARecv 0");
    CHECK(send(cli, "abcd", 4, 0) == 4, "send");
    CHECK(WaitForSingleObject(ev[0], MUST_MS) == WAIT_OBJECT_0, "event 0 not signalled");
    CHECK(post_recv(srv, ov[1], buf[1], 4) == SOCKET_ERROR && WSAGetLastError() == WSA_IO_PENDING,
          "WSARecv 1");
    CHECK(send(cli, "efgh", 4, 0) == 4, "send");
    CHECK(WaitForSingleObject(ev[1], MUST_MS) == WAIT_OBJECT_0, "event 1 (no packet) not signalled");
    CHECK(GetOverlappedResult(H(srv), ov[1], &n, FALSE) && n == 4, "result 1");
    pkt_t p = deq(port, MUST_MS);
    CHECK(p.ok && p.ov == ov[0] && p.bytes == 4, "the packet of receive 0");
    CHECK(nothing_queued(port), "a packet for the packet-less receive");
done:
    xclose(&cli);
    xclose(&srv);
    if (port)
        CloseHandle(port);
    for (int i = 0; i < 2; i++) {
        if (ev[i])
            CloseHandle(ev[i]);
        free(ov[i]);
    }
}
