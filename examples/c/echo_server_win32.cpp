/*
 * echo_server_win32.cpp: the seed article's TCP echo server as it is
 * written for Windows — Connection objects derived from OVERLAPPED, an
 * AcceptEx acceptor, a pool of worker threads from CreateThread looping on
 * GetQueuedCompletionStatus, a CRITICAL_SECTION around the connection list,
 * Interlocked counters, a console control handler for Ctrl-C, and
 * WaitForMultipleObjects for the workers' end. Only the #include line
 * differs from the Windows source (there: <winsock2.h>, <ws2tcpip.h> and
 * <mswsock.h>).
 *
 *   g++ -std=c++17 -pthread echo_server_win32.cpp $(pkg-config --cflags --libs cport)
 *   ./echo_server_win32 [PORT] [WORKERS]   # PORT 0: any free port;
 *                                         # WORKERS 0: two per CPU
 * Ctrl-C (SIGINT) or Ctrl-Break (SIGQUIT) stops it cleanly, exit code 0.
 */
#include <cport.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

enum : ULONG_PTR { KEY_LISTEN = 1, KEY_CONN = 2, KEY_QUIT = 3 };
const DWORD BUF_SIZE = 4096;
const DWORD ADDR_LEN = sizeof(sockaddr_in6) + 16;
const int ACCEPTS_OUTSTANDING = 16;

struct Connection : public OVERLAPPED {
    enum State { Accepting, Reading, Writing } state;
    SOCKET sock;
    char buf[BUF_SIZE + 2 * ADDR_LEN];
    DWORD filled; // bytes received, to echo
    DWORD sent;   // of those, bytes already sent
    Connection *prev, *next; // the list of live connections

    void reset() { ZeroMemory(static_cast<OVERLAPPED *>(this), sizeof(OVERLAPPED)); }
};

HANDLE g_port;
HANDLE g_stop; // manual-reset event: set by the console handler
SOCKET g_listener;
CRITICAL_SECTION g_lock; // guards g_conns
Connection *g_conns;
volatile LONG64 g_accepted, g_echoed;
volatile LONG g_stopping;

Connection *new_connection()
{
    Connection *c = static_cast<Connection *>(HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY,
                                                        sizeof(Connection)));
    if (c == NULL)
        return NULL;
    c->sock = INVALID_SOCKET;
    EnterCriticalSection(&g_lock);
    c->next = g_conns;
    if (g_conns)
        g_conns->prev = c;
    g_conns = c;
    LeaveCriticalSection(&g_lock);
    return c;
}

void destroy(Connection *c)
{
    EnterCriticalSection(&g_lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        g_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    LeaveCriticalSection(&g_lock);
    if (c->sock != INVALID_SOCKET)
        closesocket(c->sock);
    HeapFree(GetProcessHeap(), 0, c);
}

BOOL post_accept()
{
    Connection *c = new_connection();
    if (c == NULL)
        return FALSE;
    c->sock = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    if (c->sock == INVALID_SOCKET) {
        std::fprintf(stderr, "WSASocketW: %u\n", WSAGetLastError());
        destroy(c);
        return FALSE;
    }
    DWORD got = 0;
    if (!AcceptEx(g_listener, c->sock, c->buf, 0, ADDR_LEN, ADDR_LEN, &got, c) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
        if (!g_stopping)
            std::fprintf(stderr, "AcceptEx: %u\n", WSAGetLastError());
        destroy(c);
        return FALSE;
    }
    return TRUE;
}

void post_recv(Connection *c)
{
    c->reset();
    c->state = Connection::Reading;
    WSABUF wb = {BUF_SIZE, c->buf};
    DWORD flags = 0;
    if (WSARecv(c->sock, &wb, 1, NULL, &flags, c, NULL) == SOCKET_ERROR &&
        WSAGetLastError() != WSA_IO_PENDING)
        destroy(c);
}

void post_send(Connection *c)
{
    c->reset();
    c->state = Connection::Writing;
    WSABUF wb = {c->filled - c->sent, c->buf + c->sent};
    if (WSASend(c->sock, &wb, 1, NULL, 0, c, NULL) == SOCKET_ERROR &&
        WSAGetLastError() != WSA_IO_PENDING)
        destroy(c);
}

DWORD WINAPI worker(LPVOID param)
{
    HANDLE port = (HANDLE)param;
    for (;;) {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        OVERLAPPED *ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(port, &bytes, &key, &ov, INFINITE);
        if (key == KEY_QUIT)
            return 0;
        if (ov == NULL) {
            std::fprintf(stderr, "GetQueuedCompletionStatus: %u\n", GetLastError());
            return 1;
        }
        Connection *c = static_cast<Connection *>(ov);
        if (key == KEY_LISTEN) {
            if (!ok) { // listener closed (shutdown) or a failed accept
                destroy(c);
                continue;
            }
            InterlockedIncrement64(&g_accepted);
            setsockopt(c->sock, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&g_listener,
                       sizeof g_listener);
            if (CreateIoCompletionPort((HANDLE)c->sock, port, KEY_CONN, 0) != port)
                destroy(c);
            else
                post_recv(c);
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
            InterlockedExchangeAdd64(&g_echoed, bytes);
            if (c->sent < c->filled)
                post_send(c);
            else
                post_recv(c);
        }
    }
}

BOOL WINAPI on_console(DWORD event)
{
    switch (event) {
    case CTRL_C_EVENT:
    case CTRL_BREAK_EVENT:
        SetEvent(g_stop);
        return TRUE;
    default:
        return FALSE; // the default action ends the process
    }
}

} // namespace

int main(int argc, char **argv)
{
    unsigned short port = argc > 1 ? (unsigned short)std::atoi(argv[1]) : 0;
    DWORD workers = argc > 2 ? (DWORD)std::atoi(argv[2]) : 0;
    if (workers == 0) {
        SYSTEM_INFO si;
        GetSystemInfo(&si);
        workers = si.dwNumberOfProcessors * 2;
    }
    if (workers > MAXIMUM_WAIT_OBJECTS)
        workers = MAXIMUM_WAIT_OBJECTS;

    InitializeCriticalSection(&g_lock);
    g_stop = CreateEvent(NULL, TRUE, FALSE, NULL);
    if (g_stop == NULL || !SetConsoleCtrlHandler(on_console, TRUE)) {
        std::fprintf(stderr, "console handler: %u\n", GetLastError());
        return 1;
    }
    WSADATA wsa;
    WSAStartup(MAKEWORD(2, 2), &wsa);
    g_port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    if (g_port == NULL) {
        std::fprintf(stderr, "CreateIoCompletionPort: %u\n", GetLastError());
        return 1;
    }
    g_listener = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    sockaddr_in addr;
    ZeroMemory(&addr, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (bind(g_listener, (sockaddr *)&addr, sizeof addr) == SOCKET_ERROR ||
        listen(g_listener, SOMAXCONN) == SOCKET_ERROR) {
        std::fprintf(stderr, "bind/listen: %u\n", WSAGetLastError());
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(g_listener, (sockaddr *)&addr, &alen);
    if (CreateIoCompletionPort((HANDLE)g_listener, g_port, KEY_LISTEN, 0) != g_port) {
        std::fprintf(stderr, "associate listener: %u\n", GetLastError());
        return 1;
    }
    HANDLE pool[MAXIMUM_WAIT_OBJECTS];
    for (DWORD i = 0; i < workers; i++) {
        pool[i] = CreateThread(NULL, 0, worker, g_port, 0, NULL);
        if (pool[i] == NULL) {
            std::fprintf(stderr, "CreateThread: %u\n", GetLastError());
            return 1;
        }
    }
    for (int i = 0; i < ACCEPTS_OUTSTANDING; i++)
        post_accept();
    std::printf("%u workers, listening on 127.0.0.1:%u\n", workers, ntohs(addr.sin_port));
    std::fflush(stdout);

    WaitForSingleObject(g_stop, INFINITE);

    // Shutdown: no new connections, one quit packet per worker.
    InterlockedExchange(&g_stopping, 1);
    closesocket(g_listener);
    for (DWORD i = 0; i < workers; i++)
        PostQueuedCompletionStatus(g_port, 0, KEY_QUIT, NULL);
    if (WaitForMultipleObjects(workers, pool, TRUE, INFINITE) != WAIT_OBJECT_0) {
        std::fprintf(stderr, "WaitForMultipleObjects: %u\n", GetLastError());
        return 1;
    }
    int status = 0;
    for (DWORD i = 0; i < workers; i++) {
        DWORD code = 1;
        GetExitCodeThread(pool[i], &code);
        status |= (int)code;
        CloseHandle(pool[i]);
    }
    CloseHandle(g_port); // discards what is still queued
    while (g_conns != NULL)
        destroy(g_conns);
    DeleteCriticalSection(&g_lock);
    CloseHandle(g_stop);
    WSACleanup();
    std::printf("accepted %lld connections, echoed %lld bytes\n", (long long)g_accepted,
                (long long)g_echoed);
    return status;
}
