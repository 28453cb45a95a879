/* fuzz_steps.c: the random steps of the fuzzer (see fuzz.c), each call
 * checked against what the model predicts. */
#include "fuzz.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A random live object (kind != K_NONE) whose port is `want` (-1: any), or -1. */
static int pick_obj(int want) {
    int start = (int)below(NOBJ);
    for (int k = 0; k < NOBJ; k++) {
        int i = (start + k) % NOBJ;
        if (objs[i].kind != K_NONE && (want == -1 || objs[i].port == want ||
                                       (want == -3 && objs[i].port >= 0)))
            return i;
    }
    return -1;
}

/* A random OVERLAPPED in state `st`, or NULL. */
static struct ov *ov_in(enum ovst st) {
    int start = (int)below(NOV);
    for (int k = 0; k < NOV; k++)
        if (ovs[(start + k) % NOV].st == st)
            return &ovs[(start + k) % NOV];
    return NULL;
}

static void post(void) {
    int pi = live_port();
    HANDLE h = pi >= 0 ? ports[pi].h : bad_handle();
    if (pi >= 0 && ports[pi].tail - ports[pi].head == NPOST)
        return;
    DWORD bytes = (DWORD)rnd();
    /* Any value: the library passes it through untouched. */
    OVERLAPPED *ov = below(3) ? (OVERLAPPED *)(uintptr_t)(rnd() & ~(uint64_t)0) : NULL;
    T("PostQueuedCompletionStatus(port %d, %u, %p)", pi, bytes, (void *)ov);
    CALL;
    BOOL ok = PostQueuedCompletionStatus(h, bytes, POST_KEY, ov);
    if (pi < 0) {
        if (ok || !bad_error(GetLastError()))
            FAIL("post to a bad port: ok=%d err=%u", ok, GetLastError());
        g_refused++;
        return;
    }
    if (!ok)
        FAIL("post: %u", GetLastError());
    ports[pi].q[ports[pi].tail++ % NPOST] = (struct post){bytes, ov};
}

/* CreateIoCompletionPort(handle, port): the first association of an
 * object succeeds, a second one is refused, bad handles and ports too. */
static void associate(void) {
    int i = pick_obj(-1), pi = live_port(), bad_file = below(8) == 0;
    if (i < 0 && !bad_file)
        return;
    HANDLE port = pi >= 0 ? ports[pi].h : bad_handle();
    HANDLE file = bad_file ? bad_handle() : objs[i].h;
    /* A NULL port creates one (Windows does too): not a bad call; nor is
     * INVALID_HANDLE_VALUE as the file (it asks for a new port). */
    if (file == INVALID_HANDLE_VALUE || file == NULL || port == NULL)
        return;
    ULONG_PTR key = (ULONG_PTR)(rnd() & 0xffffffff) | 0x100000000ULL;
    T("CreateIoCompletionPort(%p, port %d, key %#lx)", file, pi, (unsigned long)key);
    CALL;
    HANDLE r = CreateIoCompletionPort(file, port, key, 0);
    if (bad_file || pi < 0 || objs[i].port != -1) {
        if (r != NULL || !bad_error(GetLastError()))
            FAIL("association that must fail: got %p, error %u", r, GetLastError());
        g_refused++;
        return;
    }
    if (r != port)
        FAIL("associating obj %d (kind %d): %p, error %u", i, objs[i].kind, r, GetLastError());
    objs[i].port = pi, objs[i].key = key;
}

/* Issues a transfer on object `i` with OVERLAPPED `v`; returns the raw outcome. */
static int issue(int i, struct ov *v, OVERLAPPED *p, DWORD len, int *ok) {
    struct obj *o = &objs[i];
    DWORD n = 0, flags = 0;
    char *b = v->buf;
    switch (o->kind) {
    case K_FILE:
    case K_PIPE_R:
    case K_PIPE_W: {
        int rd = o->kind == K_PIPE_R || (o->kind == K_FILE && below(2));
        snprintf(v->what, sizeof v->what, "%s of %u on obj %d", rd ? "ReadFile" : "WriteFile", len, i);
        T("%s(%p, ov %p, %u bytes)", v->what, o->h, (void *)p, len);
        CALL;
        *ok = rd ? ReadFile(o->h, b, len, &n, p) : WriteFile(o->h, b, len, &n, p);
        return *ok ? 0 : (int)GetLastError();
    }
    case K_SOCK: {
        WSABUF w[3];
        DWORD count = 1 + below(3), at = 0;
        for (DWORD k = 0; k < count; k++) {
            w[k].len = k + 1 == count ? len - at : below(len - at + 1);
            w[k].buf = b ? b + at : NULL;
            at += w[k].len;
        }
        int rd = below(2);
        snprintf(v->what, sizeof v->what, "%s of %u in %u on obj %d", rd ? "WSARecv" : "WSASend", len,
                 count, i);
        T("%s(ov %p)", v->what, (void *)p);
        CALL;
        int r = rd ? WSARecv((SOCKET)(intptr_t)o->h, w, count, &n, &flags, p, NULL)
                   : WSASend((SOCKET)(intptr_t)o->h, w, count, &n, 0, p, NULL);
        *ok = r == 0;
        return r == 0 ? 0 : WSAGetLastError();
    }
    case K_LISTEN: {
        DWORD data = len - 2 * ADDR_LEN;
        CALL;
        v->acc = (int)WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
        snprintf(v->what, sizeof v->what, "AcceptEx with %u data bytes on obj %d", data, i);
        T("%s(ov %p)", v->what, (void *)p);
        CALL;
        *ok = AcceptEx((SOCKET)(intptr_t)o->h, (SOCKET)v->acc, b, data, ADDR_LEN, ADDR_LEN, &n, p);
        return *ok ? 0 : (int)GetLastError();
    }
    default:
        FAIL("issue on a free object slot");
    }
}

/* A transfer with random arguments on a random associated object. */
static void io(void) {
    int i = pick_obj(below(10) ? -3 : -2);
    if (i < 0)
        return;
    struct obj *o = &objs[i];
    int reuse = below(16) == 0;
    struct ov *v = reuse ? (below(2) ? ov_in(OV_PEND) : ov_in(OV_NOPKT)) : free_ov();
    if (!v)
        return;
    DWORD len = below(10) ? 1 + below(MAXLEN) : 0;
    if (o->kind == K_LISTEN)
        len = (g_acceptex_data && below(2) ? 1 + below(64) : 0) + 2 * ADDR_LEN;
    if (reuse) {
        /* A pending OVERLAPPED used again: refused, its operation untouched. */
        char *b = malloc(len + 1), what[64];
        struct ov tmp = *v;
        tmp.buf = b, tmp.acc = -1;
        memcpy(what, v->what, sizeof what);
        int ok, err = issue(i, &tmp, v->p, len, &ok);
        if (tmp.acc >= 0)
            closesocket((SOCKET)tmp.acc);
        free(b);
        if (ok || err != ERROR_INVALID_PARAMETER)
            FAIL("%s with the OVERLAPPED of pending %s: ok=%d err=%d", tmp.what, what, ok, err);
        g_refused++;
        return;
    }
    int no_packet = below(5) == 0 && (len > 0 || g_zero_nopacket) && o->kind != K_LISTEN;
    if (no_packet)
        v->p->hEvent = (HANDLE)(uintptr_t)1;
    if (o->kind == K_FILE)
        v->p->Offset = below(8192);
    v->len = len;
    v->buf = below(30) == 0 ? NULL : malloc(len ? len : 1);
    v->acc = -1, v->obj = i;
    int ok, err = issue(i, v, v->p, len, &ok);
    if (ok && o->port >= 0 && o->skip && !no_packet) {
        finish(v); /* done in the call, skip mode: no packet */
    } else if (ok || err == ERROR_IO_PENDING) {
        if (o->port < 0)
            FAIL("%s accepted on a handle whose port is closed", v->what);
        if (v->buf == NULL && len > 0)
            FAIL("%s accepted with a NULL buffer", v->what);
        v->st = no_packet ? OV_NOPKT : OV_PEND;
        v->port = o->port, v->key = o->key;
    } else {
        if (err == 0)
            FAIL("%s failed without an error", v->what);
        g_refused++;
        if (v->buf)
            free(v->buf);
        v->buf = NULL;
        if (v->acc >= 0)
            closesocket((SOCKET)v->acc);
        v->acc = -1;
        memset(v->p, 0, sizeof *v->p);
    }
}

/* Calls on handles that name nothing, and arguments that must be refused. */
static void odd(void) {
    HANDLE h = bad_handle();
    int pi = live_port();
    char b[8];
    DWORD n = 0, flags = 0;
    OVERLAPPED *ov = NULL, *pov = ovs[below(NOV)].p;
    WSABUF w = {sizeof b, b};
    OVERLAPPED_ENTRY e[2];
    ULONG got = 7;
    int r, which = (int)below(9);
    T("odd call %d on %p (port %d)", which, h, pi);
    CALL;
    switch (which) {
    case 0: r = !ReadFile(h, b, sizeof b, &n, pov); break;
    case 1: r = WSASend((SOCKET)(uintptr_t)h, &w, 1, &n, 0, pov, NULL) == SOCKET_ERROR; break;
    case 2: r = !CancelIoEx(h, NULL); break;
    case 3: r = !CloseHandle(h); break;
    case 4: r = !GetQueuedCompletionStatus(pi >= 0 ? ports[pi].h : h, &n, NULL, &ov, 0); break;
    case 5: r = !GetQueuedCompletionStatusEx(pi >= 0 ? ports[pi].h : h, e, 0, &got, 0, FALSE); break;
    case 6: r = !GetQueuedCompletionStatusEx(pi >= 0 ? ports[pi].h : h, e, 2, &got, 0, TRUE); break;
    case 7: r = !GetQueuedCompletionStatusEx(pi >= 0 ? ports[pi].h : h, NULL, 2, &got, 0, FALSE); break;
    default: {
        int i = pick_obj(-3);
        if (i < 0 || objs[i].kind == K_LISTEN)
            return;
        /* Misaligned OVERLAPPED, or zero WSABUFs. */
        OVERLAPPED *mis = (OVERLAPPED *)((char *)ovs[below(NOV)].p + 4);
        r = objs[i].kind == K_SOCK
                ? WSARecv((SOCKET)(intptr_t)objs[i].h, &w, 0, &n, &flags, ovs[0].p, NULL) == SOCKET_ERROR
                : !ReadFile(objs[i].h, b, sizeof b, &n, mis);
        h = objs[i].h;
    }
    }
    /* Known deviation (reported): CancelIoEx on an fd number nothing has
     * open says ERROR_NOT_FOUND, not ERROR_INVALID_HANDLE. */
    int plain = (uintptr_t)h - 1 < 0x7fffffff;
    if (r && which == 2 && plain && GetLastError() == ERROR_NOT_FOUND && !g_strict)
        return;
    /* Bad arguments on a live handle: refused, for whichever reason comes
     * first (a write-only pipe end refuses a read before looking further). */
    DWORD err = GetLastError();
    int refused = which == 8 ? err != 0 && err != ERROR_IO_PENDING : bad_error(err);
    if (!r || !refused)
        FAIL("odd call %d on %p must fail with a handle or parameter error: r=%d err=%u", which, h, r,
             GetLastError());
    g_refused++;
}

/* CancelIoEx on one pending OVERLAPPED or all of a handle's, or CancelIo:
 * TRUE, or ERROR_NOT_FOUND when nothing was left to cancel. */
static void cancel(void) {
    int i = pick_obj(-1);
    if (i < 0)
        return;
    struct ov *v = below(2) ? ov_in(OV_PEND) : NULL;
    int how = (int)below(3);
    T("%s(obj %d, %p)", how == 2 ? "CancelIo" : "CancelIoEx", i, v ? (void *)v->p : NULL);
    CALL;
    BOOL ok = how == 2 ? CancelIo(objs[i].h) : CancelIoEx(objs[i].h, v ? v->p : NULL);
    if (!ok && GetLastError() != ERROR_NOT_FOUND)
        FAIL("cancel on obj %d: %u", i, GetLastError());
}

/* GetOverlappedResult(bWait = FALSE): a no-packet operation ends there; a
 * packet's operation is incomplete until its packet is dequeued. */
static void overlapped_result(void) {
    struct ov *v = below(3) ? ov_in(OV_NOPKT) : ov_in(OV_PEND);
    if (!v)
        return;
    DWORD n = 0;
    T("GetOverlappedResult(%s, FALSE)", v->what);
    CALL;
    BOOL ok = GetOverlappedResult(NULL, v->p, &n, FALSE);
    DWORD err = ok ? 0 : GetLastError();
    if (v->st == OV_PEND) {
        if (ok || err != ERROR_IO_INCOMPLETE)
            FAIL("GetOverlappedResult on %s (packet not dequeued): ok=%d err=%u", v->what, ok, err);
    } else if (ok || err != ERROR_IO_INCOMPLETE) {
        if (ok && n > v->len)
            FAIL("%s: %u bytes of %u", v->what, n, v->len);
        finish(v);
    }
}

/* A client connects to a listener, and sends a little, or nothing. */
static void client(void) {
    int i = pick_obj(-1), c = (int)below(NCLI);
    if (i < 0 || objs[i].kind != K_LISTEN || clients[c] >= 0)
        return;
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || getsockname((int)(intptr_t)objs[i].h, (struct sockaddr *)&a, &l) != 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        FAIL("client connect: %s", strerror(errno));
    if (!g_acceptex_data || below(2))
        (void)!send(fd, "hello", 5, MSG_NOSIGNAL);
    clients[c] = fd;
}

/* Issue 17.2: data reaches a socket whose WSARecv pends, while posts keep
 * the port's queue from ever being empty: the receive must still come. */
static void busy(void) {
    struct ov *v = NULL;
    for (int k = 0; k < NOV && !v; k++)
        if (ovs[k].st == OV_PEND && strncmp(ovs[k].what, "WSARecv", 7) == 0 && ovs[k].len > 0)
            v = &ovs[k];
    int peer = v && objs[v->obj].kind == K_SOCK ? objs[v->obj].peer : -1;
    if (peer < 0 || objs[peer].kind != K_SOCK || objs[peer].peer != v->obj ||
        send((int)(intptr_t)objs[peer].h, "x", 1, MSG_NOSIGNAL) != 1)
        return;
    int pi = v->port;
    T("busy: data sent to the peer of %s; posts keep port %d busy", v->what, pi);
    for (int n = 0; v->st == OV_PEND && n < 20000; n++) {
        if (ports[pi].tail - ports[pi].head < NPOST) {
            CALL;
            PostQueuedCompletionStatus(ports[pi].h, 0, POST_KEY, NULL);
            ports[pi].q[ports[pi].tail++ % NPOST] = (struct post){0, NULL};
        }
        dequeue(pi, 1000);
    }
    if (v->st == OV_PEND)
        FAIL("%s: its data arrived, but no packet in 20000 of a queue kept busy (issue 17.2)",
             v->what);
}

void step(void) {
    unsigned r = below(100);
    if (r < 4) {
        int i = (int)below(NPORT);
        if (ports[i].h)
            close_port(i);
        else
            new_port(i);
    } else if (r < 10) {
        associate();
    } else if (r < 16) {
        post();
    } else if (r < 38) {
        io();
    } else if (r < 44) {
        odd();
    } else if (r < 50) {
        cancel();
    } else if (r < 54) {
        int i = pick_obj(-1);
        if (i >= 0)
            close_obj(i);
    } else if (r < 58) {
        new_objects();
    } else if (r < 61) {
        client();
    } else if (r < 65) {
        overlapped_result();
    } else if (r < 67) {
        int i = pick_obj(-1);
        if (i < 0)
            return;
        unsigned char flags = below(4) ? FILE_SKIP_COMPLETION_PORT_ON_SUCCESS : 0x80;
        T("SetFileCompletionNotificationModes(obj %d, %#x)", i, flags);
        CALL;
        BOOL ok = SetFileCompletionNotificationModes(objs[i].h, flags);
        if (ok != (flags != 0x80) || (!ok && GetLastError() != ERROR_INVALID_PARAMETER))
            FAIL("SetFileCompletionNotificationModes(%#x): ok=%d err=%u", flags, ok, GetLastError());
        objs[i].skip |= ok;
    } else if (r < 69 && g_busy) {
        busy();
    } else {
        int pi = live_port();
        if (pi >= 0)
            dequeue(pi, below(4) ? 0 : 1);
    }
}
