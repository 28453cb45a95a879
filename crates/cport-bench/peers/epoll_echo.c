/* A plain single-thread level-triggered epoll echo loop in C, to check the bench's raw epoll peer against:
 * epoll_wait(256 events), per ready socket one read and one write.
 * usage: epoll_echo PORT SIZE
 * build: gcc -O2 -D_GNU_SOURCE -o epoll_echo epoll_echo.c */
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: epoll_echo PORT SIZE\n"); return 2; }
    int size = atoi(argv[2]), one = 1;
    char *buf = malloc(size);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening\n"); fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    ev.events = EPOLLIN; ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            ssize_t k = read(fd, buf, size);
            if (k == 0 || (k < 0 && errno != EAGAIN)) { close(fd); continue; }
            if (k > 0) {
                ssize_t off = 0;
                while (off < k) { ssize_t w = write(fd, buf + off, k - off); if (w > 0) off += w; else if (errno != EAGAIN) break; }
            }
        }
    }
}
