/* fuzz.h: what fuzz.c (the model, rounds, main) and fuzz_steps.c (the
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

enum kind { K_NONE, K_FILE, K_PIPE_R, K_PIPE_W, K_SOCK, K_LISTEN };
enum ovst { OV_FREE, OV_PEND, OV_NOPKT, OV_QUAR };

/* A file, pipe end, socket or listener of this round. */
struct obj {
    enum kind kind;
    HANDLE h;
    int port; /* index of its port; -1 not associated; -2 its port was closed */
    ULONG_PTR key;
    int skip; /* FILE_SKIP_COMPLETION_PORT_ON_SUCCESS set */
    int peer; /* the other end of a socket pair, or -1 */
};

/* A heap OVERLAPPED and what the model expects of it. */
struct ov {
    OVERLAPPED *p;
    enum ovst st;
    int port;
    ULONG_PTR key;
    char *buf;
    DWORD len;
    int acc; /* AcceptEx's accept socket, or -1 */
    int obj; /* the object it was issued on */
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
extern unsigned long long g_calls, g_refused;
extern int g_busy, g_acceptex_data, g_zero_nopacket, g_strict;

uint64_t rnd(void);
unsigned below(unsigned n);
void T(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void FAIL(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define CALL (g_calls++)

void finish(struct ov *o);
struct ov *free_ov(void);
struct ov *find_ov(const OVERLAPPED *p);
void dequeue(int port, DWORD ms);
HANDLE bad_handle(void);
int bad_error(DWORD e);
int live_port(void);
void new_port(int i);
void close_port(int i);
void new_objects(void);
void close_obj(int i);

void step(void);

#endif
