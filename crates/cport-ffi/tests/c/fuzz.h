/* fuzz.h: what fuzz.c (rounds, handles, main), fuzz_model.c (what an
 * operation may do between its issue and its end) and fuzz_steps.c (the
 * random steps) share. See fuzz.c for what the fuzzer does. */
#ifndef FUZZ_H
#define FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <cport.h>

#include <stdint.h>

#define NPORT 2
#define NOBJ 10
#define NOV 24
#define NCLI 8
#define NPOST 256
#define MAXLEN 300
#define POST_KEY ((ULONG_PTR)0xB0057)
#define ADDR_LEN ((DWORD)(sizeof(struct sockaddr_in6) + 16))
/* Bound on how long an operation may take to end, nobody dequeuing, once
 * its handle was closed or a cancel named it (the port's monitor collects
 * its completion within milliseconds). */
#define END_MS 5000

enum kind { K_NONE, K_FILE, K_PIPE_R, K_PIPE_W, K_SOCK, K_LISTEN };
/* OV_PEND: a packet operation whose packet was not dequeued (it may have
 * ended: see `seen`); OV_NOPKT: a no-packet operation not seen ended;
 * OV_QUAR: free, filled with the canary until reused; OV_TWIN: reused the
 * instant its packet operation ended, both operations over, up to two
 * packets carrying it still to come (see `twins`). */
enum ovst { OV_FREE, OV_PEND, OV_NOPKT, OV_QUAR, OV_TWIN };

/* A file, pipe end, socket or listener of this round. */
struct obj {
    enum kind kind;
    HANDLE h;
    int port; /* index of its port; -1 not associated; -2 its port was closed */
    ULONG_PTR key;
    int skip; /* FILE_SKIP_COMPLETION_PORT_ON_SUCCESS set */
    int peer; /* the other end of a socket pair, or -1 */
    unsigned gen; /* which object this slot holds (slots are reused) */
};

/* A heap OVERLAPPED and what the model expects of it. */
struct ov {
    OVERLAPPED *p;
    HANDLE ev; /* its manual-reset event (used by some operations) */
    enum ovst st;
    int port;
    ULONG_PTR key;
    char *buf;
    DWORD len;
    int acc; /* AcceptEx's accept socket, or -1 */
    int obj; /* the object it was issued on ... */
    unsigned ogen; /* ... and that object's generation */
    enum kind okind;
    int write; /* a write or send: it succeeds only whole */
    int event; /* hEvent names `ev` */
    /* Freed by the end of a no-packet operation, seen a moment ago. */
    int nopkt_freed;
    /* OV_PEND: its end was seen in its OVERLAPPED before its packet came:
     * the outcome then, and the OVERLAPPED as it was (nothing may write it
     * any more; the buffer was retired with the canary at that moment). */
    int seen;
    BOOL seen_ok;
    DWORD seen_err, seen_n;
    OVERLAPPED snap;
    /* OV_TWIN: the packets still to come, by port and key. */
    int twins;
    int tport[2];
    ULONG_PTR tkey[2];
    char what[64];
};

struct post {
    DWORD bytes;
    OVERLAPPED *ov;
};

struct port {
    HANDLE h;
    struct post q[NPOST];
    unsigned head, tail;
};

extern struct port ports[NPORT];
extern struct obj objs[NOBJ];
extern struct ov ovs[NOV];
extern int clients[NCLI];
extern unsigned long long g_calls, g_refused, g_packets, g_aborted, g_seen_early, g_busy_calls,
    g_twins;

uint64_t rnd(void);
unsigned below(unsigned n);
void T(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void FAIL(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define CALL (g_calls++)

/* fuzz_model.c */
void finish(struct ov *o);
void twin_packet(struct ov *o, int pi, ULONG_PTR key);
void twin(int i, struct ov *v, struct ov *tmp, int ok);
struct ov *free_ov(void);
struct ov *reclaim(struct ov *o);
void check_quarantine(void);
void ended_unseen(struct ov *o);
int look(struct ov *o);
void seen_end(struct ov *o, BOOL ok, DWORD err, DWORD n, const char *how);
void wait_end(struct ov *o, const char *after);
int live_on(const struct ov *o, int obj);
void issued(int i, struct ov *v, int ok, DWORD err, DWORD n, int no_packet);
void dequeue(int port, DWORD ms);
void dequeue_with(int port, DWORD ms, int how);

/* fuzz.c */
HANDLE bad_handle(void);
int bad_error(DWORD e);
int live_port(void);
void new_port(int i);
void close_port(int i);
void new_objects(void);
void close_obj(int i);

/* fuzz_steps.c */
void step(void);

#endif
