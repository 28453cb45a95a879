/*
 * echo_server.cpp: a TCP echo server in the style of Windows I/O completion
 * port servers (the seed article's pattern), built on Linux with cport.
 *
 *   g++ -std=c++17 -pthread echo_server.cpp $(pkg-config --cflags --libs cport) -o echo_server
 *   ./echo_server [PORT] [WORKERS]        # PORT 0: any free port
 *
 * - Each connection is a heap object that derives from OVERLAPPED, so the
 *   OVERLAPPED* a packet carries leads back to the whole connection.
 * - An acceptor keeps several AcceptEx calls outstanding, each with its
 *   pre-created accept socket; their packets come on the listener's key.
 * - A pool of worker threads loops on GetQueuedCompletionStatus.
 * - Shutdown (end of standard input, or SIGTERM/SIGINT), as Microsoft's
 *   samples do it: the listener is closed, one quit packet is posted per
 *   worker and the workers are joined; then, with no thread left in
 *   GetQueuedCompletionStatus, each connection's socket is closed and the
 *   server spins on HasOverlappedIoCompleted until its pending operation
 *   has ended (closesocket cancels it; its OVERLAPPED is written when it
 *   ends, whether or not anyone dequeues its packet) before freeing it;
 *   last, the port is closed.
 *
 * Apart from the #include and the shutdown trigger, this is the code one
 * writes for Windows.
 */
#include <cport.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <poll.h>

namespace {

enum : ULONG_PTR { KEY_LISTEN = 1, KEY_CONN = 2, KEY_QUIT = 3 };
constexpr DWORD BUF_SIZE = 4096;
constexpr DWORD ADDR_LEN = sizeof(sockaddr_in6) + 16;
constexpr int ACCEPTS_OUTSTANDING = 16;

struct Connection : public OVERLAPPED {
    enum State { Accepting, Reading, Writing } state = Accepting;
    SOCKET sock = INVALID_SOCKET;
    char buf[BUF_SIZE + 2 * ADDR_LEN];
    DWORD filled = 0; // bytes received, to echo
    DWORD sent = 0;   // of those, bytes already sent

    Connection() { std::memset(static_cast<OVERLAPPED *>(this), 0, sizeof(OVERLAPPED)); }
    void reset() { std::memset(static_cast<OVERLAPPED *>(this), 0, sizeof(OVERLAPPED)); }
};

HANDLE g_port;
SOCKET g_listener;
std::mutex g_lock;
std::set<Connection *> g_conns; // every live connection, for shutdown
std::atomic<unsigned long long> g_accepted{0}, g_echoed{0};
std::atomic<bool> g_stopping{false};

void destroy(Connection *c)
{
    {
        std::lock_guard<std::mutex> g(g_lock);
        g_conns.erase(c);
    }
    if (c->sock != INVALID_SOCKET)
        closesocket(c->sock);
    delete c;
}

bool post_accept()
{
    Connection *c = new Connection;
    c->sock = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (c->sock == INVALID_SOCKET) {
        std::fprintf(stderr, "WSASocketW: %d\n", WSAGetLastError());
        delete c;
        return false;
    }
    {
        std::lock_guard<std::mutex> g(g_lock);
        g_conns.insert(c);
    }
    DWORD got = 0;
    if (!AcceptEx(g_listener, c->sock, c->buf, 0, ADDR_LEN, ADDR_LEN, &got, c) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
        if (!g_stopping)
            std::fprintf(stderr, "AcceptEx: %d\n", WSAGetLastError());
        destroy(c);
        return false;
    }
    return true;
}

void post_recv(Connection *c)
{
    c->reset();
    c->state = Connection::Reading;
    WSABUF wb = {BUF_SIZE, c->buf};
    DWORD flags = 0;
    if (WSARecv(c->sock, &wb, 1, nullptr, &flags, c, nullptr) == SOCKET_ERROR &&
        WSAGetLastError() != WSA_IO_PENDING)
        destroy(c);
}

void post_send(Connection *c)
{
    c->reset();
    c->state = Connection::Writing;
    WSABUF wb = {c->filled - c->sent, c->buf + c->sent};
    if (WSASend(c->sock, &wb, 1, nullptr, 0, c, nullptr) == SOCKET_ERROR &&
        WSAGetLastError() != WSA_IO_PENDING)
        destroy(c);
}

void worker()
{
    for (;;) {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = nullptr;
        BOOL ok = GetQueuedCompletionStatus(g_port, &bytes, &key, &ov, INFINITE);
        if (key == KEY_QUIT)
            return;
        if (ov == nullptr) {
            std::fprintf(stderr, "GetQueuedCompletionStatus: %u\n", GetLastError());
            return;
        }
        Connection *c = static_cast<Connection *>(ov);
        if (key == KEY_LISTEN) {
            if (!ok) { // listener closed (shutdown) or a failed accept
                destroy(c);
                continue;
            }
            g_accepted++;
            setsockopt(c->sock, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&g_listener,
                       sizeof g_listener); // as on Windows: gives it the listener's properties
            if (CreateIoCompletionPort((HANDLE)c->sock, g_port, KEY_CONN, 0) != g_port) {
                destroy(c);
            } else {
                post_recv(c);
            }
            if (!g_stopping)
                post_accept();
            continue;
        }
        if (!ok || bytes == 0) { // error, reset, or the client closed
            destroy(c);
            continue;
        }
        if (c->state == Connection::Reading) {
            c->filled = bytes;
            c->sent = 0;
            post_send(c);
        } else {
            c->sent += bytes;
            g_echoed += bytes;
            if (c->sent < c->filled)
                post_send(c);
            else
                post_recv(c);
        }
    }
}

volatile std::sig_atomic_t g_signalled = 0;
void on_signal(int) { g_signalled = 1; }

} // namespace

int main(int argc, char **argv)
{
    unsigned short port = argc > 1 ? (unsigned short)std::atoi(argv[1]) : 0;
    int workers = argc > 2 ? std::atoi(argv[2]) : 4;
    if (workers <= 0)
        workers = 4;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);

    WSADATA wsa;
    WSAStartup(MAKEWORD(2, 2), &wsa);
    g_port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 0);
    if (g_port == nullptr) {
        std::fprintf(stderr, "CreateIoCompletionPort: %u\n", GetLastError());
        return 1;
    }
    g_listener = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (bind(g_listener, (sockaddr *)&addr, sizeof addr) != 0 || listen(g_listener, 1024) != 0) {
        std::perror("bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(g_listener, (sockaddr *)&addr, &alen);
    if (CreateIoCompletionPort((HANDLE)g_listener, g_port, KEY_LISTEN, 0) != g_port) {
        std::fprintf(stderr, "associate listener: %u\n", GetLastError());
        return 1;
    }
    std::vector<std::thread> pool;
    for (int i = 0; i < workers; i++)
        pool.emplace_back(worker);
    for (int i = 0; i < ACCEPTS_OUTSTANDING; i++)
        post_accept();
    std::printf("listening on 127.0.0.1:%u\n", ntohs(addr.sin_port));
    std::fflush(stdout);

    // Run until standard input ends or a signal arrives.
    for (;;) {
        if (g_signalled)
            break;
        pollfd in = {0, POLLIN, 0};
        if (poll(&in, 1, 200) > 0) {
            char sink[256];
            if (read(0, sink, sizeof sink) <= 0)
                break;
        }
    }

    // Shutdown: no new connections, one quit packet per worker.
    g_stopping = true;
    closesocket(g_listener);
    for (int i = 0; i < workers; i++)
        PostQueuedCompletionStatus(g_port, 0, KEY_QUIT, nullptr);
    for (auto &t : pool)
        t.join();
    // Nobody dequeues any more: every live connection has one operation
    // pending (or ended with its packet still queued). Close its socket and
    // wait for the operation to end before freeing the OVERLAPPED.
    std::vector<Connection *> left;
    {
        std::lock_guard<std::mutex> g(g_lock);
        left.assign(g_conns.begin(), g_conns.end());
        g_conns.clear();
    }
    unsigned long pending = 0;
    for (Connection *c : left) {
        pending += !HasOverlappedIoCompleted(c);
        closesocket(c->sock);
        c->sock = INVALID_SOCKET;
    }
    for (Connection *c : left) {
        while (!HasOverlappedIoCompleted(c))
            Sleep(0);
        delete c;
    }
    CloseHandle(g_port); // discards the packets still queued
    WSACleanup();
    std::printf("closed %zu connections, %lu with I/O pending\n", left.size(), pending);
    std::printf("accepted %llu connections, echoed %llu bytes\n", g_accepted.load(),
                g_echoed.load());
    return 0;
}
