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

/* Issues a transfer of `len` bytes on object `i` with `v`'s buffer and
 * the OVERLAPPED `p`, naming it in `v->what`; returns the error (0 with
 * `*ok` set when the call returned TRUE, `*n` bytes). */
static DWORD issue(int i, struct ov *v, OVERLAPPED *p, DWORD len, int *ok, DWORD *n) {
    struct obj *o = &objs[i];
    DWORD flags = 0;
    char *b = v->buf;
    *n = 0;
    switch (o->kind) {
    case K_FILE:
    case K_PIPE_R:
    case K_PIPE_W: {
        int rd = o->kind == K_PIPE_R || (o->kind == K_FILE && below(2));
        v->write = !rd;
        snprintf(v->what, sizeof v->what, "%s of %u on obj %d", rd ? "ReadFile" : "WriteFile", len, i);
        T("%s(%p, ov %p, hEvent %p)", v->what, o->h, (void *)p, p->hEvent);
        CALL;
        *ok = rd ? ReadFile(o->h, b, len, n, p) : WriteFile(o->h, b, len, n, p);
        return *ok ? 0 : GetLastError();
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
        v->write = !rd;
        snprintf(v->what, sizeof v->what, "%s of %u in %u on obj %d", rd ? "WSARecv" : "WSASend", len,
                 count, i);
        T("%s(ov %p, hEvent %p)", v->what, (void *)p, p->hEvent);
        CALL;
        int r = rd ? WSARecv((SOCKET)(intptr_t)o->h, w, count, n, &flags, p, NULL)
                   : WSASend((SOCKET)(intptr_t)o->h, w, count, n, 0, p, NULL);
        *ok = r == 0;
        return r == 0 ? 0 : (DWORD)WSAGetLastError();
    }
    case K_LISTEN: {
        DWORD data = len - 2 * ADDR_LEN;
        CALL;
        v->acc = (int)WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
        v->write = 0;
        snprintf(v->what, sizeof v->what, "AcceptEx with %u data bytes on obj %d", data, i);
        T("%s(ov %p, hEvent %p)", v->what, (void *)p, p->hEvent);
        CALL;
        *ok = AcceptEx((SOCKET)(intptr_t)o->h, (SOCKET)v->acc, b, data, ADDR_LEN, ADDR_LEN, n, p);
        return *ok ? 0 : GetLastError();
    }
    default:
        FAIL("issue on a free object slot");
    }
}

/* A random transfer length for object `i` (AcceptEx: with a receive length
 * half the time). */
static DWORD pick_len(int i) {
    if (objs[i].kind == K_LISTEN)
        return (below(2) ? 1 + below(64) : 0) + 2 * ADDR_LEN;
    return below(10) ? 1 + below(MAXLEN) : 0;
}

/* A new operation on object `i` with the free OVERLAPPED `v`: sometimes
 * no packet (hEvent's low bit), sometimes with an event in hEvent,
 * sometimes a NULL buffer (which must be refused). */
static void fresh(int i, struct ov *v) {
    if (!v)
        return;
    DWORD len = pick_len(i), n;
    int no_packet = below(5) == 0;
    v->event = below(2);
    v->p->hEvent = (HANDLE)((v->event ? (uintptr_t)v->ev : 0) | (uintptr_t)no_packet);
    if (objs[i].kind == K_FILE)
        v->p->Offset = below(8192);
    v->len = len;
    v->buf = below(30) == 0 ? NULL : malloc(len ? len : 1);
    v->acc = -1;
    int ok;
    DWORD err = issue(i, v, v->p, len, &ok, &n);
    issued(i, v, ok, err, n, no_packet);
}

/* The OVERLAPPED of an operation in flight used again. An operation keeps
 * it until it ends: the model looks first; not ended, the call is refused
 * with ERROR_INVALID_PARAMETER, nothing written — or, if the operation
 * ended in between, accepted. Ended, a no-packet operation's OVERLAPPED is
 * reused for a new operation, which must be accepted as any other; a
 * packet operation's is not (Windows would accept it, and its pointer
 * would come back in two packets nobody could tell apart: OV_TWIN is that
 * case, when the end fell between the look and the call). */
static void reuse(int i) {
    struct ov *v = below(2) ? ov_in(OV_PEND) : ov_in(OV_NOPKT);
    if (!v)
        return;
    if (look(v)) {
        if (v->st == OV_QUAR)
            fresh(i, reclaim(v));
        return;
    }
    DWORD len = pick_len(i), n;
    char *b = malloc(len + 1), what[64];
    struct ov tmp = *v;
    tmp.buf = b, tmp.acc = -1, tmp.len = len;
    memcpy(what, v->what, sizeof what);
    int ok;
    DWORD err = issue(i, &tmp, v->p, len, &ok, &n);
    if (!ok && err == ERROR_INVALID_PARAMETER) {
        if (tmp.acc >= 0)
            closesocket((SOCKET)tmp.acc);
        free(b);
        g_refused++;
        return;
    }
    if (v->st == OV_PEND) {
        if (ok || err == ERROR_IO_PENDING) {
            twin(i, v, &tmp, ok);
        } else { /* refused for another reason: nothing issued */
            if (tmp.acc >= 0)
                closesocket((SOCKET)tmp.acc);
            free(b);
            g_refused++;
        }
        return;
    }
    T("(%s had ended: %s is a new operation)", what, tmp.what);
    ended_unseen(v);
    v->buf = b, v->acc = tmp.acc, v->len = len, v->write = tmp.write;
    memcpy(v->what, tmp.what, sizeof v->what);
    issued(i, v, ok, err, n, 1);
}

/* Half the time, a new operation on object `i` at once with OVERLAPPED
 * `v` if its no-packet operation was just seen ended (as a program that
 * waits for an operation and issues the next on the same OVERLAPPED). */
static void again(int i, struct ov *v) {
    if (v->st == OV_QUAR && v->nopkt_freed && objs[i].kind != K_NONE && below(2))
        fresh(i, reclaim(v));
}

/* A transfer with random arguments on a random associated object (or one
 * whose port was closed), with a free OVERLAPPED or one in use. */
static void io(void) {
    int i = pick_obj(below(10) ? -3 : -2);
    if (i < 0)
        return;
    if (below(16) == 0)
        reuse(i);
    else
        fresh(i, free_ov());
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
    /* Bad arguments on a live handle: refused, for whichever reason comes
     * first (a write-only pipe end refuses a read before looking further). */
    DWORD err = GetLastError();
    int refused = which == 8 ? err != 0 && err != ERROR_IO_PENDING : bad_error(err);
    if (!r || !refused)
        FAIL("odd call %d on %p must fail with a handle or parameter error: r=%d err=%u", which, h, r,
             GetLastError());
    g_refused++;
}

/* CancelIoEx on one OVERLAPPED (maybe of another handle) or all of a
 * handle's, or CancelIo. The model looks first at what it names: TRUE only
 * if one of them had not ended; ERROR_NOT_FOUND otherwise. Either way,
 * each one it names ends promptly, nobody dequeuing (cancelled, or it had
 * ended). */
static void cancel(void) {
    int i = pick_obj(-1);
    if (i < 0)
        return;
    int how = (int)below(3);
    struct ov *v = how < 2 && below(2) ? (below(2) ? ov_in(OV_PEND) : ov_in(OV_NOPKT)) : NULL;
    OVERLAPPED *p = v ? v->p : NULL;
    struct ov *named[NOV];
    int nn = 0, running = 0;
    for (int k = 0; k < NOV; k++)
        if (live_on(&ovs[k], i) && (!v || v == &ovs[k])) {
            named[nn++] = &ovs[k];
            running += !look(&ovs[k]);
        }
    T("%s(obj %d, %p): names %d operations, %d not ended", how == 2 ? "CancelIo" : "CancelIoEx", i,
      (void *)p, nn, running);
    CALL;
    BOOL ok = how == 2 ? CancelIo(objs[i].h) : CancelIoEx(objs[i].h, p);
    DWORD err = ok ? 0 : GetLastError();
    if (!ok && err != ERROR_NOT_FOUND)
        FAIL("cancel on obj %d: %u", i, err);
    if (ok && running == 0)
        FAIL("%s(obj %d, %s) found something to cancel, but the %d operations it names had ended",
             how == 2 ? "CancelIo" : "CancelIoEx", i, v ? v->what : "NULL", nn);
    for (int k = 0; k < nn; k++) {
        wait_end(named[k], "after a cancel named it");
        again(i, named[k]);
    }
}

/* Looks at an operation in flight: HasOverlappedIoCompleted (or its
 * event); GetOverlappedResult(FALSE) after such a look (ERROR_IO_INCOMPLETE
 * only if the look said not ended); or, for a file operation, which ends
 * by itself, a wait for its end. */
static void overlapped_result(void) {
    struct ov *v = below(2) ? ov_in(OV_NOPKT) : ov_in(OV_PEND);
    if (!v)
        return;
    unsigned how = below(4);
    if (how == 0) {
        look(v);
        return;
    }
    if (how == 1 && v->okind == K_FILE) {
        int i = v->obj;
        wait_end(v, "(a file operation)");
        again(i, v);
        return;
    }
    int before = HasOverlappedIoCompleted(v->p);
    DWORD n = 0;
    T("GetOverlappedResult(%s, FALSE), ended before: %d", v->what, before);
    CALL;
    BOOL ok = GetOverlappedResult(NULL, v->p, &n, FALSE);
    DWORD err = ok ? 0 : GetLastError();
    if (!ok && err == ERROR_IO_INCOMPLETE) {
        if (before || v->seen)
            FAIL("GetOverlappedResult on %s: ERROR_IO_INCOMPLETE after its state said it ended",
                 v->what);
        return;
    }
    seen_end(v, ok, err, n, "GetOverlappedResult(FALSE)");
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
    if (below(2))
        (void)!send(fd, "hello", 5, MSG_NOSIGNAL);
    clients[c] = fd;
}

/* Issue 17.2: data reaches a socket whose WSARecv pends, while posts keep
 * the port's queue from ever being empty: the receive must still come.
 * Enough bytes for every receive pending on that socket (the first ones
 * issued take the first bytes). */
static void busy(void) {
    struct ov *v = NULL;
    for (int k = 0; k < NOV && !v; k++)
        if (ovs[k].st == OV_PEND && !ovs[k].seen && strncmp(ovs[k].what, "WSARecv", 7) == 0 &&
            ovs[k].len > 0 && live_on(&ovs[k], ovs[k].obj))
            v = &ovs[k];
    int peer = v && objs[v->obj].kind == K_SOCK ? objs[v->obj].peer : -1;
    if (peer < 0 || objs[peer].kind != K_SOCK || objs[peer].peer != v->obj)
        return;
    static char bytes[NOV * MAXLEN];
    size_t want = 0;
    for (int k = 0; k < NOV; k++)
        if (live_on(&ovs[k], v->obj) && strncmp(ovs[k].what, "WSARecv", 7) == 0)
            want += ovs[k].len;
    if (send((int)(intptr_t)objs[peer].h, bytes, want, MSG_NOSIGNAL) != (ssize_t)want)
        return;
    int pi = v->port;
    unsigned long long before = g_calls;
    T("busy: %zu bytes sent to the peer of %s; posts keep port %d busy", want, v->what, pi);
    int n = 0;
    for (; v->st == OV_PEND && n < 20000; n++) {
        if (ports[pi].tail - ports[pi].head < NPOST) {
            CALL;
            PostQueuedCompletionStatus(ports[pi].h, 0, POST_KEY, NULL);
            ports[pi].q[ports[pi].tail++ % NPOST] = (struct post){0, NULL};
        }
        dequeue_with(pi, 1000, -1);
    }
    if (v->st == OV_PEND)
        FAIL("%s: its data arrived, but no packet in 20000 of a queue kept busy (issue 17.2)",
             v->what);
    T("busy: its packet after %d dequeues", n);
    /* Counted apart: they would swamp the calls of a run. */
    g_busy_calls += g_calls - before;
    g_calls = before + 1;
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
    } else if (r < 68) {
        busy();
    } else {
        int pi = live_port();
        if (pi >= 0)
            dequeue(pi, below(4) ? 0 : 1);
    }
}
