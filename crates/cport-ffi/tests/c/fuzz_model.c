/*
 * fuzz_model.c: what the fuzzer expects of an operation between its issue
 * and its end (see fuzz.c for the whole fuzzer).
 *
 * As on Windows, an operation's completion state is written when it ends,
 * not when its packet is dequeued: the library's completion hook writes
 * OVERLAPPED.Internal/InternalHigh and signals hEvent as soon as the
 * completion is collected, whether or not a thread waits on the port. So
 * an operation is "maybe ended" from its issue on, and the model looks
 * before it predicts:
 * - a look (HasOverlappedIoCompleted, or the event: it is signalled only
 *   after the state is written) that says "ended" fixes the outcome:
 *   GetOverlappedResult (which only reads the OVERLAPPED), every later
 *   look and the packet must all say the same error and bytes, and from
 *   then on nothing may write the buffer (it gets the canary at once) or
 *   the OVERLAPPED (compared with a copy);
 * - where a call's outcome depends on whether the operation ended before
 *   it, the model looks first and accepts exactly the outcomes consistent
 *   with what it saw (GetOverlappedResult(FALSE) after a "not yet":
 *   ERROR_IO_INCOMPLETE or the final result; after an "ended": the result);
 * - an operation keeps its OVERLAPPED until it ends (reuse refused with
 *   ERROR_INVALID_PARAMETER, nothing written) and frees it the moment it
 *   ends (reuse then accepted, as on Windows; see reuse() for why the
 *   model reuses only a no-packet operation's); a packet operation yields
 *   exactly one packet, carrying the state its OVERLAPPED holds; a
 *   no-packet operation (hEvent's low bit) yields none;
 * - closing a handle, or a cancel, ends what it names promptly with
 *   nobody dequeuing: each such operation must be seen ended within END_MS
 *   (polling, its event, or GetOverlappedResult(TRUE));
 * - outcomes: a failure has an error; a success fits its buffer, a write
 *   or send is whole, a file or pipe read of n > 0 bytes never succeeds
 *   with 0 (end of file, a closed pipe are errors), an accepted AcceptEx's
 *   accept socket has its peer.
 */
#include "fuzz.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NQ 32
#define CANARY 0xCB

static char *quar[NQ];
static size_t quar_len[NQ];
static unsigned nquar;

/* ---- buffers and OVERLAPPEDs: a canary once their operation ended ----- */

static void check_canary(const void *p, size_t n, const char *what) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != CANARY)
            FAIL("%s written after its operation ended (byte %zu = %#x)", what, i, b[i]);
}

static void retire_buf(char *b, size_t n) {
    memset(b, CANARY, n);
    unsigned i = nquar++ % NQ;
    if (quar[i]) {
        check_canary(quar[i], quar_len[i], "a buffer");
        free(quar[i]);
    }
    quar[i] = b, quar_len[i] = n;
}

/* At the end of the run: every quarantined buffer and OVERLAPPED still
 * holds its canary. */
void check_quarantine(void) {
    for (unsigned i = 0; i < NQ; i++)
        if (quar[i]) {
            check_canary(quar[i], quar_len[i], "a buffer");
            free(quar[i]);
            quar[i] = NULL;
        }
    for (int k = 0; k < NOV; k++)
        if (ovs[k].st == OV_QUAR)
            check_canary(ovs[k].p, sizeof(OVERLAPPED), "an OVERLAPPED");
}

static void same_as_seen(const struct ov *o) {
    if (o->seen && memcmp(&o->snap, o->p, sizeof *o->p) != 0)
        FAIL("%s: its OVERLAPPED was written after its end was seen (Internal %#lx -> %#lx, "
             "InternalHigh %lu -> %lu)",
             o->what, (unsigned long)o->snap.Internal, (unsigned long)o->p->Internal,
             (unsigned long)o->snap.InternalHigh, (unsigned long)o->p->InternalHigh);
}

/* The operation on `o` is over (packet dequeued, no-packet operation seen
 * ended, done in its call, its port closed): nothing may write its buffer
 * or OVERLAPPED any more. */
void finish(struct ov *o) {
    same_as_seen(o);
    if (o->buf)
        retire_buf(o->buf, o->len ? o->len : 1);
    if (o->acc >= 0)
        closesocket((SOCKET)o->acc);
    o->buf = NULL, o->acc = -1, o->seen = 0;
    memset(o->p, CANARY, sizeof *o->p);
    o->st = OV_QUAR;
}

/* One of the packets OV_TWIN `o` awaits came from port `pi` with `key`
 * (or was dropped with that port); after the last, it is over. */
void twin_packet(struct ov *o, int pi, ULONG_PTR key) {
    int t = 0;
    while (t < o->twins && !(o->tport[t] == pi && o->tkey[t] == key))
        t++;
    if (t == o->twins)
        FAIL("packet key %#lx on port %d with %s's OVERLAPPED, reused as it ended: no such packet "
             "to come",
             (unsigned long)key, pi, o->what);
    o->tport[t] = o->tport[o->twins - 1], o->tkey[t] = o->tkey[o->twins - 1];
    if (--o->twins == 0)
        finish(o);
}

/* The no-packet operation on `o` ended without being seen (a new one
 * overwrote its state): nothing may write its buffer any more. */
void ended_unseen(struct ov *o) {
    if (o->buf)
        retire_buf(o->buf, o->len ? o->len : 1);
    if (o->acc >= 0)
        closesocket((SOCKET)o->acc);
    o->buf = NULL, o->acc = -1, o->seen = 0;
    o->st = OV_FREE;
}

/* OVERLAPPED `o` ready for a new operation (canary checked, zeroed), or
 * NULL if an operation holds it. */
struct ov *reclaim(struct ov *o) {
    if (o->st == OV_QUAR) {
        check_canary(o->p, sizeof *o->p, "an OVERLAPPED");
        o->st = OV_FREE;
    }
    if (o->st != OV_FREE)
        return NULL;
    memset(o->p, 0, sizeof *o->p);
    return o;
}

/* A random OVERLAPPED if it is free, else NULL. */
struct ov *free_ov(void) { return reclaim(&ovs[below(NOV)]); }

static struct ov *find_ov(const OVERLAPPED *p) {
    for (int i = 0; i < NOV; i++)
        if (ovs[i].p == p)
            return &ovs[i];
    return NULL;
}

/* Whether `o` is an operation in flight on object `obj` as it is now. */
int live_on(const struct ov *o, int obj) {
    return (o->st == OV_PEND || o->st == OV_NOPKT) && o->obj == obj && o->ogen == objs[obj].gen;
}

/* ---- outcomes ----------------------------------------------------------- */

static ULONG_PTR status_of(const OVERLAPPED *p) {
    return __atomic_load_n(&p->Internal, __ATOMIC_ACQUIRE);
}

/* Checks an outcome of `o` (`how`: its state, its packet, its call)
 * against what such an operation may end with. */
static void plausible(struct ov *o, BOOL ok, DWORD err, DWORD n, const char *how) {
    if (!ok) {
        if (err == 0 || err == ERROR_IO_PENDING || err == ERROR_IO_INCOMPLETE)
            FAIL("%s: %s says it failed with error %u", o->what, how, err);
        return;
    }
    DWORD room = o->okind == K_LISTEN ? o->len - 2 * ADDR_LEN : o->len;
    if (n > room)
        FAIL("%s: %s says %u bytes, room for %u", o->what, how, n, room);
    if (o->write && n != o->len)
        FAIL("%s: %s says %u of %u bytes (writes and sends complete whole)", o->what, how, n,
             o->len);
    if (!o->write && n == 0 && o->len > 0 && (o->okind == K_FILE || o->okind == K_PIPE_R))
        FAIL("%s: %s says success with 0 bytes (end of file, a closed pipe are errors)", o->what,
             how);
    if (o->okind == K_LISTEN) {
        struct sockaddr_storage a;
        socklen_t l = sizeof a;
        if (getpeername(o->acc, (struct sockaddr *)&a, &l) != 0)
            FAIL("%s: %s says accepted, but its accept socket has no peer (%s)", o->what, how,
                 strerror(errno));
    }
}

/* The OVERLAPPED of `o` says its operation ended, and GetOverlappedResult
 * (`how`; it only reads the OVERLAPPED) gave `ok`/`err`/`n`: both agree,
 * its event is signalled; the first time, the outcome is checked and kept
 * (a packet operation) or the operation is over (no packet). */
void seen_end(struct ov *o, BOOL ok, DWORD err, DWORD n, const char *how) {
    ULONG_PTR st = status_of(o->p), hi = o->p->InternalHigh;
    if ((uint32_t)st == STATUS_PENDING || (st == 0) != (ok != 0) || hi != n)
        FAIL("%s: %s gave ok=%d err=%u %u bytes; its OVERLAPPED says Internal %#lx, InternalHigh "
             "%lu",
             o->what, how, ok, err, n, (unsigned long)st, (unsigned long)hi);
    if (o->event) {
        T("WaitForSingleObject(event of %s, %d ms)", o->what, END_MS);
        CALL;
        if (WaitForSingleObject(o->ev, END_MS) != WAIT_OBJECT_0)
            FAIL("%s ended (%s), but its event is not signalled", o->what, how);
    }
    if (o->seen) {
        same_as_seen(o);
        if (ok != o->seen_ok || err != o->seen_err || n != o->seen_n)
            FAIL("%s: %s says ok=%d err=%u %u bytes; earlier ok=%d err=%u %u bytes", o->what, how,
                 ok, err, n, o->seen_ok, o->seen_err, o->seen_n);
        return;
    }
    plausible(o, ok, err, n, how);
    if (o->st == OV_NOPKT) {
        finish(o); /* no packet: its OVERLAPPED is free now */
        o->nopkt_freed = 1;
        return;
    }
    o->seen = 1, o->seen_ok = ok, o->seen_err = err, o->seen_n = n;
    o->snap = *o->p;
    g_seen_early++;
    if (o->buf) /* nothing may write it any more */
        retire_buf(o->buf, o->len ? o->len : 1);
    o->buf = NULL;
}

/* Looks at operation `o`: 1 if it ended (then recorded: see seen_end), 0
 * if its OVERLAPPED still says STATUS_PENDING. */
int look(struct ov *o) {
    if (o->st != OV_PEND && o->st != OV_NOPKT)
        return 1;
    if (o->seen) {
        same_as_seen(o);
        return 1;
    }
    if (o->event && below(2)) {
        T("WaitForSingleObject(event of %s, 0)", o->what);
        CALL;
        DWORD w = WaitForSingleObject(o->ev, 0);
        if (w != WAIT_OBJECT_0 && w != WAIT_TIMEOUT)
            FAIL("WaitForSingleObject(event of %s): %u, error %u", o->what, w, GetLastError());
        if (w == WAIT_OBJECT_0 && !HasOverlappedIoCompleted(o->p))
            FAIL("%s: its event is signalled, but its OVERLAPPED says STATUS_PENDING", o->what);
    }
    T("HasOverlappedIoCompleted(%s)", o->what);
    if (!HasOverlappedIoCompleted(o->p))
        return 0;
    DWORD n = 0;
    T("GetOverlappedResult(%s, FALSE) after HasOverlappedIoCompleted", o->what);
    CALL;
    BOOL ok = GetOverlappedResult(NULL, o->p, &n, FALSE);
    DWORD err = ok ? 0 : GetLastError();
    if (!ok && err == ERROR_IO_INCOMPLETE)
        FAIL("%s: HasOverlappedIoCompleted is true, GetOverlappedResult says ERROR_IO_INCOMPLETE",
             o->what);
    seen_end(o, ok, err, n, "GetOverlappedResult(FALSE)");
    return 1;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Operation `o` must end within END_MS with nobody dequeuing (`after`:
 * what ends it): seen by polling its OVERLAPPED, by waiting on its event,
 * or in GetOverlappedResult(bWait = TRUE) (bounded by the watchdog). */
void wait_end(struct ov *o, const char *after) {
    if (look(o))
        return;
    unsigned how = below(3);
    if (how == 0 && o->event) {
        T("WaitForSingleObject(event of %s, %d ms) %s", o->what, END_MS, after);
        CALL;
        if (WaitForSingleObject(o->ev, END_MS) != WAIT_OBJECT_0)
            FAIL("%s did not end in %d ms %s (its event), nobody dequeuing", o->what, END_MS,
                 after);
        if (!look(o))
            FAIL("%s: its event is signalled, but its OVERLAPPED says STATUS_PENDING", o->what);
        return;
    }
    if (how == 1) {
        DWORD n = 0;
        T("GetOverlappedResult(%s, TRUE) %s", o->what, after);
        CALL;
        BOOL ok = GetOverlappedResult(NULL, o->p, &n, TRUE);
        DWORD err = ok ? 0 : GetLastError();
        if (!ok && err == ERROR_IO_INCOMPLETE)
            FAIL("%s: GetOverlappedResult(TRUE) says ERROR_IO_INCOMPLETE", o->what);
        seen_end(o, ok, err, n, "GetOverlappedResult(TRUE)");
        return;
    }
    T("polling HasOverlappedIoCompleted(%s) %s", o->what, after);
    long long end = now_ms() + END_MS;
    while (!HasOverlappedIoCompleted(o->p)) {
        if (now_ms() > end)
            FAIL("%s did not end in %d ms %s, nobody dequeuing", o->what, END_MS, after);
        usleep(100);
    }
    if (!look(o))
        FAIL("%s: its OVERLAPPED went back to STATUS_PENDING", o->what);
}

/* Packet operation `v` ended in the instant between a look that said "not
 * yet" and a call that reused its OVERLAPPED for `tmp` on object `i`, which
 * was accepted (`ok`: TRUE, else pending), as Windows accepts it. Its
 * packet is still to come, and the new operation's if it queues one; the
 * new operation is cancelled and must end within END_MS, and then both
 * buffers are done. */
void twin(int i, struct ov *v, struct ov *tmp, int ok) {
    struct obj *o = &objs[i];
    g_twins++;
    T("(%s had ended: %s reuses its OVERLAPPED)", v->what, tmp->what);
    if (v->buf)
        retire_buf(v->buf, v->len ? v->len : 1);
    if (v->acc >= 0)
        closesocket((SOCKET)v->acc);
    v->twins = 0;
    v->tport[v->twins] = v->port, v->tkey[v->twins++] = v->key;
    if (o->port >= 0 && !(ok && o->skip))
        v->tport[v->twins] = o->port, v->tkey[v->twins++] = o->key;
    T("CancelIoEx(obj %d, %s)", i, tmp->what);
    CALL;
    CancelIoEx(o->h, v->p);
    long long end = now_ms() + END_MS;
    while (!HasOverlappedIoCompleted(v->p)) {
        if (now_ms() > end)
            FAIL("%s did not end in %d ms after a cancel named it, nobody dequeuing", tmp->what,
                 END_MS);
        usleep(100);
    }
    if (tmp->buf)
        retire_buf(tmp->buf, tmp->len ? tmp->len : 1);
    if (tmp->acc >= 0)
        closesocket((SOCKET)tmp->acc);
    v->buf = NULL, v->acc = -1, v->seen = 0;
    memcpy(v->what, tmp->what, sizeof v->what);
    v->st = OV_TWIN;
}

/* The outcome of issuing `v` as a new operation on object `i` (its
 * buffer, length, `what` and `write` set by the issuer): TRUE from the
 * call (`ok`, `n` bytes), else error `err`. */
void issued(int i, struct ov *v, int ok, DWORD err, DWORD n, int no_packet) {
    struct obj *o = &objs[i];
    int flat = o->kind == K_FILE || o->kind == K_PIPE_R || o->kind == K_PIPE_W;
    /* A zero-length ReadFile/WriteFile that may queue no packet ends in
     * its call, without the port (whose being closed is then no reason to
     * refuse it). */
    int zero_inline = v->len == 0 && flat && (no_packet || o->skip);
    v->obj = i, v->ogen = o->gen, v->okind = o->kind, v->seen = 0;
    int freed = v->nopkt_freed;
    v->nopkt_freed = 0;
    if (ok || err == ERROR_IO_PENDING) {
        if (o->port < 0 && !zero_inline)
            FAIL("%s accepted on a handle whose port is closed", v->what);
        if (v->buf == NULL && v->len > 0)
            FAIL("%s accepted with a NULL buffer", v->what);
    }
    if (ok && (no_packet || o->skip)) {
        /* Done in the call, no packet: its state written, its event
         * signalled, the OVERLAPPED free again. */
        ULONG_PTR st = status_of(v->p);
        if (st != 0 || v->p->InternalHigh != n)
            FAIL("%s returned TRUE with %u bytes, but its OVERLAPPED says Internal %#lx, "
                 "InternalHigh %lu",
                 v->what, n, (unsigned long)st, (unsigned long)v->p->InternalHigh);
        if (v->event) {
            CALL;
            if (WaitForSingleObject(v->ev, 0) != WAIT_OBJECT_0)
                FAIL("%s returned TRUE, but its event is not signalled", v->what);
        }
        plausible(v, TRUE, 0, n, "its call");
        finish(v);
    } else if (ok || err == ERROR_IO_PENDING) {
        v->st = no_packet ? OV_NOPKT : OV_PEND;
        v->port = o->port, v->key = o->key;
    } else {
        if (err == 0)
            FAIL("%s failed without an error", v->what);
        /* Nothing but a NULL buffer makes such a call's arguments invalid:
         * the OVERLAPPED was free. */
        if (err == ERROR_INVALID_PARAMETER && (v->buf || v->len == 0))
            FAIL("%s refused with ERROR_INVALID_PARAMETER; its OVERLAPPED was free%s", v->what,
                 freed ? " (its no-packet operation was seen ended)" : "");
        g_refused++;
        v->nopkt_freed = freed; /* still free */
        free(v->buf);
        v->buf = NULL;
        if (v->acc >= 0)
            closesocket((SOCKET)v->acc);
        v->acc = -1;
        memset(v->p, 0, sizeof *v->p);
        v->st = OV_FREE;
    }
}

/* ---- packets ------------------------------------------------------------ */

/* One packet dequeued from port `pi`; `ex`: by GetQueuedCompletionStatusEx,
 * whose entry's Internal is `status`. */
static void got(int pi, BOOL ok, DWORD bytes, ULONG_PTR key, OVERLAPPED *ov, DWORD err, int ex,
                ULONG_PTR status) {
    g_packets++;
    struct port *P = &ports[pi];
    if (key == POST_KEY) {
        if (P->head == P->tail)
            FAIL("a posted packet (ov %p, %u bytes) nobody posted", (void *)ov, bytes);
        struct post *q = &P->q[P->head++ % NPOST];
        if (!ok || q->bytes != bytes || q->ov != ov)
            FAIL("post came back as ok=%d bytes %u ov %p; posted %u %p", ok, bytes, (void *)ov,
                 q->bytes, (void *)q->ov);
        return;
    }
    struct ov *o = find_ov(ov);
    if (o && o->st == OV_TWIN) {
        if (!ok && err == 0 && !ex)
            FAIL("%s: a packet failed without an error", o->what);
        twin_packet(o, pi, key);
        return;
    }
    if (!o || o->st != OV_PEND || o->port != pi || o->key != key)
        FAIL("packet key %#lx ov %p on port %d: no such packet operation pending there (%s, "
             "state %d)",
             (unsigned long)key, (void *)ov, pi, o ? o->what : "unknown OVERLAPPED",
             o ? (int)o->st : -1);
    /* Its state was written when it ended, before its packet was queued. */
    ULONG_PTR st = status_of(o->p);
    if ((uint32_t)st == STATUS_PENDING || (st == 0) != (ok != 0) || o->p->InternalHigh != bytes ||
        (ex && status != st))
        FAIL("%s: its packet says ok=%d %u bytes (entry status %#lx); its OVERLAPPED Internal "
             "%#lx, InternalHigh %lu",
             o->what, ok, bytes, ex ? (unsigned long)status : 0UL, (unsigned long)st,
             (unsigned long)o->p->InternalHigh);
    DWORD n = 0;
    T("GetOverlappedResult(%s, FALSE) after its packet", o->what);
    CALL;
    BOOL gok = GetOverlappedResult(NULL, o->p, &n, FALSE);
    DWORD gerr = gok ? 0 : GetLastError();
    if (gok != ok || n != bytes || (!ex && gerr != err))
        FAIL("%s: its packet says ok=%d err=%u %u bytes; GetOverlappedResult then ok=%d err=%u %u "
             "bytes",
             o->what, ok, ex ? 0 : err, bytes, gok, gerr, n);
    if (o->event) {
        CALL;
        if (WaitForSingleObject(o->ev, 0) != WAIT_OBJECT_0)
            FAIL("%s: its packet came, its event is not signalled", o->what);
    }
    if (o->seen) {
        if (ok != o->seen_ok || gerr != o->seen_err || bytes != o->seen_n)
            FAIL("%s: its packet says ok=%d err=%u %u bytes; its OVERLAPPED said ok=%d err=%u %u "
                 "bytes before",
                 o->what, ok, gerr, bytes, o->seen_ok, o->seen_err, o->seen_n);
    } else {
        plausible(o, ok, gerr, bytes, "its packet");
    }
    g_aborted += !ok && gerr == ERROR_OPERATION_ABORTED;
    finish(o);
}

/* Dequeues from port `pi` with GetQueuedCompletionStatus (`how` 0),
 * GetQueuedCompletionStatusEx with 1-8 entries (1), or either (-1). */
void dequeue_with(int pi, DWORD ms, int how) {
    HANDLE h = ports[pi].h;
    if (how < 0)
        how = (int)below(2);
    if (how == 0) {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = NULL;
        T("GetQueuedCompletionStatus(port %d, %u ms)", pi, ms);
        CALL;
        BOOL ok = GetQueuedCompletionStatus(h, &bytes, &key, &ov, ms);
        DWORD err = ok ? 0 : GetLastError();
        if (ok || ov)
            got(pi, ok, bytes, key, ov, err, 0, 0);
        else if (err != WAIT_TIMEOUT)
            FAIL("GetQueuedCompletionStatus: no packet, error %u", err);
        return;
    }
    ULONG count = 1 + below(8), n = 99;
    /* Exactly `count` entries: ASan reports a write past them. */
    OVERLAPPED_ENTRY *e = malloc(count * sizeof *e);
    T("GetQueuedCompletionStatusEx(port %d, %u entries, %u ms)", pi, count, ms);
    CALL;
    BOOL ok = GetQueuedCompletionStatusEx(h, e, count, &n, ms, FALSE);
    if (!ok && (GetLastError() != WAIT_TIMEOUT || n != 0))
        FAIL("GetQueuedCompletionStatusEx: error %u, %u entries", GetLastError(), n);
    if (ok && (n == 0 || n > count))
        FAIL("GetQueuedCompletionStatusEx: %u entries of %u", n, count);
    for (ULONG i = 0; ok && i < n; i++)
        got(pi, e[i].Internal == 0, e[i].dwNumberOfBytesTransferred, e[i].lpCompletionKey,
            e[i].lpOverlapped, 0, 1, e[i].Internal);
    free(e);
}

void dequeue(int pi, DWORD ms) { dequeue_with(pi, ms, -1); }
