/* A plain single-thread liburing echo loop in C, to check the bench's raw io_uring peer against:
 * one ring, accept, then per connection recv -> send -> recv with its own
 * buffer; io_uring_submit_and_wait(1), every CQE drained in one pass.
 * usage: uring_echo PORT SIZE plain|coop|defer
 * build: gcc -O2 -o uring_echo uring_echo.c -luring   (apt-get install -y liburing-dev) */
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>

enum { ACCEPT = 0, RECV = 1, SEND = 2 };
struct conn { int fd; int len; int sent; char *buf; };
static struct conn conns[65536];
static int size;

static struct io_uring_sqe *sqe_get(struct io_uring *r) {
    struct io_uring_sqe *s = io_uring_get_sqe(r);
    if (!s) { io_uring_submit(r); s = io_uring_get_sqe(r); }
    return s;
}
static void add_accept(struct io_uring *r, int lfd) {
    struct io_uring_sqe *s = sqe_get(r);
    io_uring_prep_accept(s, lfd, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, ACCEPT);
}
static void add_recv(struct io_uring *r, int fd) {
    struct io_uring_sqe *s = sqe_get(r);
    io_uring_prep_recv(s, fd, conns[fd].buf, size, 0);
    io_uring_sqe_set_data64(s, ((unsigned long long)fd << 2) | RECV);
}
static void add_send(struct io_uring *r, int fd) {
    struct conn *c = &conns[fd];
    struct io_uring_sqe *s = sqe_get(r);
    io_uring_prep_send(s, fd, c->buf + c->sent, c->len - c->sent, 0);
    io_uring_sqe_set_data64(s, ((unsigned long long)fd << 2) | SEND);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: uring_echo PORT SIZE plain|coop|defer\n"); return 2; }
    size = atoi(argv[2]);
    unsigned flags = 0;
    if (!strcmp(argv[3], "coop")) flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    if (!strcmp(argv[3], "defer")) flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
    struct io_uring ring;
    int e = io_uring_queue_init(256, &ring, flags);
    if (e) { fprintf(stderr, "queue_init: %s\n", strerror(-e)); return 1; }
    printf("listening\n"); fflush(stdout);
    add_accept(&ring, lfd);
    for (;;) {
        e = io_uring_submit_and_wait(&ring, 1);
        if (e < 0 && e != -EINTR && e != -EBUSY) { fprintf(stderr, "enter: %s\n", strerror(-e)); return 1; }
        struct io_uring_cqe *cqe; unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            unsigned long long ud = io_uring_cqe_get_data64(cqe);
            int res = cqe->res, fd = ud >> 2;
            switch (ud & 3) {
            case ACCEPT:
                if (res >= 0) {
                    setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[res].fd = res;
                    if (!conns[res].buf) conns[res].buf = malloc(size);
                    add_recv(&ring, res);
                }
                add_accept(&ring, lfd);
                break;
            case RECV:
                if (res <= 0) { close(fd); break; }
                conns[fd].len = res; conns[fd].sent = 0;
                add_send(&ring, fd);
                break;
            case SEND:
                if (res < 0) { close(fd); break; }
                conns[fd].sent += res;
                if (conns[fd].sent < conns[fd].len) add_send(&ring, fd); else add_recv(&ring, fd);
                break;
            }
        }
        io_uring_cq_advance(&ring, n);
    }
}
