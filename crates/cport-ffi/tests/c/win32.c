/*
 * C tests of libcport's Win32 companion: threads, events, waits, locks,
 * Interlocked*, system information, memory, the OVERLAPPED.hEvent an
 * operation signals, and the console control handler (a real SIGINT sent
 * to a child process: this program run again with "--ctrl MODE").
 *
 * Prints "ok name" / "FAIL name: why" per test and "N passed, M failed";
 * exits 0 only when nothing failed. Run once per backend
 * (CPORT_BACKEND=io_uring, CPORT_BACKEND=epoll).
 *
 * Every wait is bounded (MUST_MS for what must happen, NONE_MS to check
 * that something does not, a per-test watchdog); no sleep synchronises
 * anything.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <cport.h>

#include <errno.h>

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#define MUST_MS 10000u
#define NONE_MS 100u

#define CHECK_LEAVES_BY_RETURN /* the tests here return at the first failure */
#include "harness.h"

/* ---- Events and waits -------------------------------------------------- */

static void events_manual_and_auto_reset(void)
{
    HANDLE m = CreateEvent(NULL, TRUE, FALSE, NULL);
    HANDLE a = CreateEvent(NULL, FALSE, TRUE, NULL);
    CHECK(m && a, "CreateEvent: %u", GetLastError());
    CHECK(WaitForSingleObject(m, 0) == WAIT_TIMEOUT, "manual event starts unsignalled");
    CHECK(SetEvent(m), "SetEvent");
    CHECK(WaitForSingleObject(m, 0) == WAIT_OBJECT_0, "manual: first wait");
    CHECK(WaitForSingleObject(m, 0) == WAIT_OBJECT_0, "manual: stays signalled");
    CHECK(ResetEvent(m) && WaitForSingleObject(m, 0) == WAIT_TIMEOUT, "ResetEvent");
    CHECK(WaitForSingleObject(a, 0) == WAIT_OBJECT_0, "auto: initially signalled");
    CHECK(WaitForSingleObject(a, NONE_MS) == WAIT_TIMEOUT, "auto: one waiter takes the signal");
    CHECK(CloseHandle(m) && CloseHandle(a), "CloseHandle");
    CHECK(!SetEvent(m) && GetLastError() == ERROR_INVALID_HANDLE, "SetEvent on a closed handle");
    CHECK(!CloseHandle(a) && GetLastError() == ERROR_INVALID_HANDLE, "double CloseHandle");
    CHECK(WaitForSingleObject(a, 0) == WAIT_FAILED && GetLastError() == ERROR_INVALID_HANDLE,
          "wait on a closed handle");
}

static DWORD WINAPI set_later(LPVOID ev)
{
    /* Signals once the main thread is waiting (or about to): no timing is
     * asserted, only that the wait ends with this event. */
    SetEvent((HANDLE)ev);
    return 0;
}

static void wait_any_lowest_index_and_wait_all_atomic(void)
{
    HANDLE e[3];
    for (int i = 0; i < 3; i++)
        e[i] = CreateEvent(NULL, FALSE, FALSE, NULL);
    CHECK(WaitForMultipleObjects(3, e, FALSE, 0) == WAIT_TIMEOUT, "nothing signalled");
    SetEvent(e[2]);
    SetEvent(e[1]);
    CHECK(WaitForMultipleObjects(3, e, FALSE, 0) == WAIT_OBJECT_0 + 1, "lowest index first");
    CHECK(WaitForMultipleObjects(3, e, FALSE, 0) == WAIT_OBJECT_0 + 2, "then the next");
    CHECK(WaitForMultipleObjects(3, e, FALSE, 0) == WAIT_TIMEOUT, "auto-reset: taken");

    SetEvent(e[0]);
    CHECK(WaitForMultipleObjects(2, e, TRUE, NONE_MS) == WAIT_TIMEOUT, "wait-all needs both");
    CHECK(WaitForSingleObject(e[0], 0) == WAIT_OBJECT_0, "a timed-out wait-all takes nothing");
    SetEvent(e[0]);
    HANDLE t = CreateThread(NULL, 0, set_later, e[1], 0, NULL);
    CHECK(WaitForMultipleObjects(2, e, TRUE, MUST_MS) == WAIT_OBJECT_0, "wait-all satisfied");
    CHECK(WaitForMultipleObjects(2, e, FALSE, 0) == WAIT_TIMEOUT, "wait-all took both signals");
    CHECK(WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0, "thread ended");

    HANDLE dup[2] = {e[0], e[0]};
    CHECK(WaitForMultipleObjects(2, dup, TRUE, 0) == WAIT_FAILED &&
              GetLastError() == ERROR_INVALID_PARAMETER, "duplicate handle in a wait-all");
    SetEvent(e[0]);
    CHECK(WaitForMultipleObjects(2, dup, FALSE, 0) == WAIT_OBJECT_0, "duplicates in a wait-any");
    CHECK(WaitForMultipleObjects(0, e, FALSE, 0) == WAIT_FAILED &&
              GetLastError() == ERROR_INVALID_PARAMETER, "no handles");
    HANDLE many[MAXIMUM_WAIT_OBJECTS + 1];
    for (int i = 0; i <= MAXIMUM_WAIT_OBJECTS; i++)
        many[i] = e[0];
    CHECK(WaitForMultipleObjects(MAXIMUM_WAIT_OBJECTS + 1, many, FALSE, 0) == WAIT_FAILED &&
              GetLastError() == ERROR_INVALID_PARAMETER, "more than MAXIMUM_WAIT_OBJECTS");
    HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    HANDLE mixed[2] = {e[0], port};
    CHECK(WaitForMultipleObjects(2, mixed, FALSE, 0) == WAIT_FAILED &&
              GetLastError() == ERROR_INVALID_HANDLE, "a port is not waitable here");
    CloseHandle(port);
    for (int i = 0; i < 3; i++)
        CloseHandle(e[i]);
    CloseHandle(t);
}

static void semaphores_and_named_events(void)
{
    HANDLE s = CreateSemaphore(NULL, 0, 2, NULL);
    LONG prev = -1;
    CHECK(s, "CreateSemaphore");
    CHECK(!ReleaseSemaphore(s, 3, &prev) && GetLastError() == ERROR_TOO_MANY_POSTS, "over max");
    CHECK(ReleaseSemaphore(s, 2, &prev) && prev == 0, "release 2 (prev %d)", (int)prev);
    CHECK(WaitForSingleObject(s, 0) == WAIT_OBJECT_0, "take 1");
    CHECK(WaitForSingleObject(s, 0) == WAIT_OBJECT_0, "take 2");
    CHECK(WaitForSingleObject(s, 0) == WAIT_TIMEOUT, "count exhausted");
    CHECK(!CreateSemaphore(NULL, 3, 2, NULL) && GetLastError() == ERROR_INVALID_PARAMETER,
          "initial above max");
    CloseHandle(s);

    HANDLE a = CreateEventA(NULL, TRUE, FALSE, "cport-test-event");
    CHECK(a && GetLastError() == ERROR_SUCCESS, "named event created");
    HANDLE b = CreateEventA(NULL, FALSE, TRUE, "cport-test-event");
    CHECK(b && b != a && GetLastError() == ERROR_ALREADY_EXISTS, "opened: %u", GetLastError());
    CHECK(WaitForSingleObject(b, 0) == WAIT_TIMEOUT, "the existing state, not the new one");
    SetEvent(a);
    CHECK(WaitForSingleObject(b, 0) == WAIT_OBJECT_0, "one object, two handles");
    CloseHandle(a);
    CloseHandle(b);
}

static void wsa_events(void)
{
    WSAEVENT ev = WSACreateEvent();
    CHECK(ev != WSA_INVALID_EVENT, "WSACreateEvent");
    CHECK(WSAWaitForMultipleEvents(1, &ev, TRUE, 0, FALSE) == WSA_WAIT_TIMEOUT, "unsignalled");
    CHECK(WSASetEvent(ev), "WSASetEvent");
    CHECK(WSAWaitForMultipleEvents(1, &ev, TRUE, WSA_INFINITE, FALSE) == WSA_WAIT_EVENT_0, "set");
    CHECK(WSAWaitForMultipleEvents(1, &ev, FALSE, 0, FALSE) == WSA_WAIT_EVENT_0, "manual reset");
    CHECK(WSAResetEvent(ev), "WSAResetEvent");
    CHECK(WSAWaitForMultipleEvents(1, &ev, FALSE, 0, FALSE) == WSA_WAIT_TIMEOUT, "reset");
    CHECK(WSACloseEvent(ev), "WSACloseEvent");
    CHECK(!WSACloseEvent(ev) && WSAGetLastError() == WSA_INVALID_HANDLE, "closed twice");
}

/* ---- Threads ------------------------------------------------------------ */

static volatile LONG g_started;
static DWORD g_seen_id;

static void exit_deep(DWORD code) { ExitThread(code); }

static DWORD WINAPI worker_code(LPVOID arg)
{
    g_seen_id = GetCurrentThreadId();
    InterlockedIncrement(&g_started);
    if ((intptr_t)arg == 7)
        exit_deep(7); /* ends the thread from a nested call */
    return (DWORD)(intptr_t)arg;
}

static void threads_exit_codes_and_suspension(void)
{
    DWORD id = 0, code = 0;
    HANDLE t = CreateThread(NULL, 0, worker_code, (LPVOID)42, CREATE_SUSPENDED, &id);
    CHECK(t && id != 0, "CreateThread: %u", GetLastError());
    CHECK(GetThreadId(t) == id && id != GetCurrentThreadId(), "thread ids");
    CHECK(GetExitCodeThread(t, &code) && code == STILL_ACTIVE, "STILL_ACTIVE while suspended");
    CHECK(WaitForSingleObject(t, NONE_MS) == WAIT_TIMEOUT && g_started == 0, "suspended");
    CHECK(ResumeThread(t) == 1, "ResumeThread returns the previous count");
    CHECK(WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0, "thread handle signalled at exit");
    CHECK(WaitForSingleObject(t, 0) == WAIT_OBJECT_0, "and stays signalled");
    CHECK(GetExitCodeThread(t, &code) && code == 42, "exit code %u", code);
    CHECK(g_seen_id == id, "GetCurrentThreadId in the thread: %u, CreateThread said %u",
          g_seen_id, id);
    CHECK(ResumeThread(t) == 0, "resuming a running/ended thread");
    CloseHandle(t);

    t = CreateThread(NULL, 64 * 1024, worker_code, (LPVOID)7, 0, NULL);
    CHECK(WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0, "ExitThread ends the thread");
    CHECK(GetExitCodeThread(t, &code) && code == 7, "ExitThread code %u", code);
    CloseHandle(t);
    CHECK(!GetExitCodeThread(t, &code) && GetLastError() == ERROR_INVALID_HANDLE, "closed");
    CHECK(GetExitCodeThread(GetCurrentThread(), &code) && code == STILL_ACTIVE, "pseudo-handle");
    CHECK(!CreateThread(NULL, 0, NULL, NULL, 0, NULL) && GetLastError() == ERROR_INVALID_PARAMETER,
          "no start function");

    /* The pool pattern: many workers, one wait-all for their end. */
    HANDLE pool[16];
    for (int i = 0; i < 16; i++)
        pool[i] = CreateThread(NULL, 0, worker_code, (LPVOID)(intptr_t)(100 + i), 0, NULL);
    CHECK(WaitForMultipleObjects(16, pool, TRUE, MUST_MS) == WAIT_OBJECT_0, "all workers ended");
    for (int i = 0; i < 16; i++) {
        CHECK(GetExitCodeThread(pool[i], &code) && code == (DWORD)(100 + i), "pool code");
        CloseHandle(pool[i]);
    }
}

/* ---- Locks, condition variables, Interlocked ---------------------------- */

static CRITICAL_SECTION g_cs; /* all-zero: usable before initialisation too */
static long g_counter;

static DWORD WINAPI try_enter(LPVOID arg)
{
    (void)arg;
    if (!TryEnterCriticalSection(&g_cs))
        return 0;
    LeaveCriticalSection(&g_cs);
    return 1;
}

static DWORD WINAPI count_up(LPVOID arg)
{
    for (int i = 0; i < 20000; i++) {
        EnterCriticalSection(&g_cs);
        EnterCriticalSection(&g_cs); /* recursive */
        g_counter++;
        LeaveCriticalSection(&g_cs);
        LeaveCriticalSection(&g_cs);
        InterlockedIncrement((LONG volatile *)arg);
    }
    return 0;
}

static DWORD exit_code_of(LPTHREAD_START_ROUTINE fn, LPVOID arg)
{
    HANDLE t = CreateThread(NULL, 0, fn, arg, 0, NULL);
    DWORD code = 99;
    if (WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0)
        GetExitCodeThread(t, &code);
    CloseHandle(t);
    return code;
}

static void critical_section_is_recursive(void)
{
    EnterCriticalSection(&g_cs); /* zero-initialised static */
    LeaveCriticalSection(&g_cs);
    CHECK(InitializeCriticalSectionAndSpinCount(&g_cs, 4000), "init");
    CHECK(sizeof(CRITICAL_SECTION) == 40, "layout: %zu bytes", sizeof(CRITICAL_SECTION));
    EnterCriticalSection(&g_cs);
    CHECK(TryEnterCriticalSection(&g_cs), "the owner enters again");
    CHECK(g_cs.RecursionCount == 2 && (DWORD)(uintptr_t)g_cs.OwningThread == GetCurrentThreadId(),
          "RecursionCount %d", (int)g_cs.RecursionCount);
    CHECK(exit_code_of(try_enter, NULL) == 0, "another thread cannot enter");
    LeaveCriticalSection(&g_cs);
    CHECK(exit_code_of(try_enter, NULL) == 0, "still held once");
    LeaveCriticalSection(&g_cs);
    CHECK(exit_code_of(try_enter, NULL) == 1, "free after the last leave");

    volatile LONG interlocked = 0;
    HANDLE t[4];
    for (int i = 0; i < 4; i++)
        t[i] = CreateThread(NULL, 0, count_up, (LPVOID)&interlocked, 0, NULL);
    CHECK(WaitForMultipleObjects(4, t, TRUE, MUST_MS) == WAIT_OBJECT_0, "counters ended");
    CHECK(g_counter == 80000 && interlocked == 80000, "counts %ld %d", g_counter, (int)interlocked);
    for (int i = 0; i < 4; i++)
        CloseHandle(t[i]);
    DeleteCriticalSection(&g_cs);
}

static SRWLOCK g_srw = SRWLOCK_INIT;
static CONDITION_VARIABLE g_cv = CONDITION_VARIABLE_INIT;
static int g_queue, g_taken;

static DWORD WINAPI consume_cs(LPVOID arg)
{
    (void)arg;
    for (int n = 0; n < 1000; n++) {
        EnterCriticalSection(&g_cs);
        while (g_queue == 0)
            if (!SleepConditionVariableCS(&g_cv, &g_cs, MUST_MS)) {
                LeaveCriticalSection(&g_cs);
                return 1;
            }
        g_queue--;
        g_taken++;
        LeaveCriticalSection(&g_cs);
    }
    return 0;
}

static DWORD WINAPI try_shared(LPVOID arg)
{
    (void)arg;
    if (!TryAcquireSRWLockShared(&g_srw))
        return 0;
    ReleaseSRWLockShared(&g_srw);
    return 1;
}

static void condition_variables_and_srw_locks(void)
{
    InitializeCriticalSection(&g_cs);
    EnterCriticalSection(&g_cs);
    CHECK(!SleepConditionVariableCS(&g_cv, &g_cs, 10) && GetLastError() == ERROR_TIMEOUT,
          "time-out: %u", GetLastError());
    CHECK(g_cs.RecursionCount == 1, "re-entered after the time-out");
    LeaveCriticalSection(&g_cs);
    CHECK(!SleepConditionVariableCS(&g_cv, &g_cs, 10) && GetLastError() == ERROR_NOT_OWNER,
          "sleeping without owning the section");

    HANDLE t = CreateThread(NULL, 0, consume_cs, NULL, 0, NULL);
    for (int n = 0; n < 1000; n++) {
        EnterCriticalSection(&g_cs);
        g_queue++;
        WakeConditionVariable(&g_cv);
        LeaveCriticalSection(&g_cs);
    }
    CHECK(WaitForSingleObject(t, MUST_MS) == WAIT_OBJECT_0, "consumer ended");
    DWORD code = 9;
    GetExitCodeThread(t, &code);
    CHECK(code == 0 && g_taken == 1000 && g_queue == 0, "consumer %u took %d", code, g_taken);
    CloseHandle(t);
    DeleteCriticalSection(&g_cs);

    AcquireSRWLockExclusive(&g_srw);
    CHECK(exit_code_of(try_shared, NULL) == 0, "shared refused while held exclusively");
    CHECK(!SleepConditionVariableSRW(&g_cv, &g_srw, 10, 0) && GetLastError() == ERROR_TIMEOUT,
          "SRW time-out");
    ReleaseSRWLockExclusive(&g_srw);
    AcquireSRWLockShared(&g_srw);
    CHECK(exit_code_of(try_shared, NULL) == 1, "shared with shared");
    CHECK(!TryAcquireSRWLockExclusive(&g_srw), "exclusive refused while shared");
    CHECK(!SleepConditionVariableSRW(&g_cv, &g_srw, 10, CONDITION_VARIABLE_LOCKMODE_SHARED),
          "shared SRW time-out");
    ReleaseSRWLockShared(&g_srw);
    CHECK(TryAcquireSRWLockExclusive(&g_srw), "free again");
    ReleaseSRWLockExclusive(&g_srw);
}

static void interlocked_return_values(void)
{
    volatile LONG v = 5;
    CHECK(InterlockedIncrement(&v) == 6 && InterlockedDecrement(&v) == 5, "inc/dec: new value");
    CHECK(InterlockedExchange(&v, 9) == 5 && v == 9, "exchange: old value");
    CHECK(InterlockedExchangeAdd(&v, 3) == 9 && v == 12, "exchange-add: old value");
    CHECK(InterlockedCompareExchange(&v, 1, 0) == 12 && v == 12, "compare fails: old value");
    CHECK(InterlockedCompareExchange(&v, 1, 12) == 12 && v == 1, "compare succeeds");
    CHECK(InterlockedOr(&v, 6) == 1 && InterlockedAnd(&v, 3) == 7 && v == 3, "or/and");
    volatile LONG64 w = (LONG64)1 << 40;
    CHECK(InterlockedIncrement64(&w) == ((LONG64)1 << 40) + 1, "64-bit increment");
    CHECK(InterlockedCompareExchange64(&w, 0, w) == ((LONG64)1 << 40) + 1 && w == 0, "64 cas");
    int x, y;
    PVOID volatile p = &x;
    CHECK(InterlockedCompareExchangePointer(&p, &y, &x) == &x && p == &y, "pointer cas");
    CHECK(InterlockedExchangePointer(&p, NULL) == &y && p == NULL, "pointer exchange");
    LONG wrap = 0x7fffffff;
    CHECK(InterlockedIncrement(&wrap) == (LONG)0x80000000, "32-bit wrap (LONG is 32 bits)");
    MemoryBarrier();
}

/* ---- System, time, memory ----------------------------------------------- */

static void system_info_and_time(void)
{
    SYSTEM_INFO si;
    memset(&si, 0xAB, sizeof si);
    GetSystemInfo(&si);
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity");
    CHECK(si.dwNumberOfProcessors == (DWORD)CPU_COUNT(&set), "CPUs %u, affinity %d",
          si.dwNumberOfProcessors, CPU_COUNT(&set));
    CHECK(si.dwPageSize == (DWORD)sysconf(_SC_PAGESIZE), "page size");
    CHECK(si.dwActiveProcessorMask != 0 && si.wReserved == 0, "mask");
    CHECK(sizeof(SYSTEM_INFO) == 48 && offsetof(SYSTEM_INFO, dwNumberOfProcessors) == 32,
          "SYSTEM_INFO layout");
    LARGE_INTEGER f, a, b;
    CHECK(QueryPerformanceFrequency(&f) && f.QuadPart == 10000000, "frequency");
    CHECK(QueryPerformanceCounter(&a) && QueryPerformanceCounter(&b) && b.QuadPart >= a.QuadPart,
          "counter is monotonic");
    CHECK(a.LowPart == (DWORD)a.QuadPart && a.u.HighPart == (LONG)(a.QuadPart >> 32), "union");
    ULONGLONG t0 = GetTickCount64();
    CHECK(t0 > 0 && GetTickCount64() >= t0 && (DWORD)t0 - GetTickCount() < 1000, "tick counts");
    CHECK(SwitchToThread(), "SwitchToThread");
    CHECK(GetCurrentProcessId() == (DWORD)getpid(), "process id");
}

static void heap_and_virtual_memory(void)
{
    HANDLE heap = GetProcessHeap();
    unsigned char *p = HeapAlloc(heap, HEAP_ZERO_MEMORY, 100);
    CHECK(p && ((uintptr_t)p & 15) == 0, "HeapAlloc: aligned");
    for (int i = 0; i < 100; i++)
        CHECK(p[i] == 0, "zeroed");
    CHECK(HeapSize(heap, 0, p) == 100, "HeapSize");
    FillMemory(p, 100, 0x5A);
    p = HeapReAlloc(heap, HEAP_ZERO_MEMORY, p, 5000);
    CHECK(p && HeapSize(heap, 0, p) == 5000 && p[99] == 0x5A && p[100] == 0 && p[4999] == 0,
          "HeapReAlloc keeps the data and zeroes the growth");
    CHECK(!HeapReAlloc(heap, HEAP_REALLOC_IN_PLACE_ONLY, p, 1 << 20), "in place only");
    CHECK(HeapFree(heap, 0, p) && HeapFree(heap, 0, NULL), "HeapFree");
    CHECK(!HeapAlloc((HANDLE)&heap, 0, 8) && GetLastError() == ERROR_INVALID_HANDLE, "bad heap");
    char *g = (char *)GlobalAlloc(GPTR, 64);
    CHECK(g && g[63] == 0 && GlobalFree(g) == NULL, "GlobalAlloc(GPTR)");
    CHECK(!LocalAlloc(0x2 /* LMEM_MOVEABLE */, 8) && GetLastError() == ERROR_INVALID_PARAMETER,
          "movable memory is not provided");

    DWORD page = (DWORD)sysconf(_SC_PAGESIZE);
    char *v = VirtualAlloc(NULL, 3 * page + 1, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    CHECK(v && ((uintptr_t)v % page) == 0 && v[4 * page - 1] == 0, "VirtualAlloc: aligned, zero");
    v[0] = 1;
    CHECK(!VirtualFree(v, page, MEM_RELEASE) && GetLastError() == ERROR_INVALID_PARAMETER,
          "MEM_RELEASE with a size");
    CHECK(VirtualFree(v, 0, MEM_RELEASE), "release");
    CHECK(!VirtualFree(v, 0, MEM_RELEASE) && GetLastError() == ERROR_INVALID_ADDRESS, "twice");
    char *r = VirtualAlloc(NULL, 16 * page, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(r, "reserve");
    char *c = VirtualAlloc(r + 4 * page, page, MEM_COMMIT, PAGE_READWRITE);
    CHECK(c == r + 4 * page, "commit inside the reservation");
    c[10] = 7;
    CHECK(VirtualFree(c, page, MEM_DECOMMIT), "decommit");
    CHECK(VirtualAlloc(c, page, MEM_COMMIT, PAGE_READWRITE) == c && c[10] == 0, "recommit: zero");
    CHECK(!VirtualAlloc(&page, page, MEM_COMMIT, PAGE_READWRITE) &&
              GetLastError() == ERROR_INVALID_ADDRESS, "commit outside any reservation");
    CHECK(VirtualFree(r, 0, MEM_RELEASE), "release the reservation");
    CHECK(!VirtualAlloc(NULL, 0, MEM_COMMIT, PAGE_READWRITE) &&
              GetLastError() == ERROR_INVALID_PARAMETER, "size 0");
}

static void format_message_system_texts(void)
{
    char buf[256];
    DWORD flags = FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS;
    DWORD lang = MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT);
    DWORD n = FormatMessage(flags, NULL, ERROR_INVALID_HANDLE, lang, buf, sizeof buf, NULL);
    CHECK(n == strlen(buf) && strcmp(buf, "The handle is invalid.\r\n") == 0, "text: %s", buf);
    char *alloc = NULL;
    n = FormatMessageA(flags | FORMAT_MESSAGE_ALLOCATE_BUFFER, NULL, WSAECONNRESET, 0,
                       (LPSTR)&alloc, 0, NULL);
    CHECK(n > 0 && alloc && strstr(alloc, "forcibly closed") && LocalFree(alloc) == NULL,
          "allocated text");
    n = FormatMessageA(flags, NULL, APPLICATION_ERROR_BIT | ELOOP, 0, buf, sizeof buf, NULL);
    CHECK(n > 0 && strstr(buf, strerror(ELOOP)), "an errno's text: %s", buf);
    CHECK(!FormatMessageA(flags, NULL, 123456, 0, buf, sizeof buf, NULL) &&
              GetLastError() == ERROR_MR_MID_NOT_FOUND, "unknown number");
    CHECK(!FormatMessageA(flags, NULL, ERROR_INVALID_HANDLE, 0, buf, 8, NULL) &&
              GetLastError() == ERROR_INSUFFICIENT_BUFFER, "buffer too small");
}

#include "win32_io.c"

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--ctrl") == 0)
        return ctrl_child(argv[2]);
    harness_start();
    g_self = argv[0];
    RUN(events_manual_and_auto_reset);
    RUN(wait_any_lowest_index_and_wait_all_atomic);
    RUN(semaphores_and_named_events);
    RUN(wsa_events);
    RUN(threads_exit_codes_and_suspension);
    RUN(critical_section_is_recursive);
    RUN(condition_variables_and_srw_locks);
    RUN(interlocked_return_values);
    RUN(system_info_and_time);
    RUN(heap_and_virtual_memory);
    RUN(format_message_system_texts);
    RUN(overlapped_event_signalled_at_dequeue);
    RUN(overlapped_event_without_packet);
    RUN(overlapped_event_synchronous_read);
    RUN(wait_is_a_blocking_scope);
    RUN(console_handler_runs_on_its_own_thread);
    RUN(console_handler_false_falls_through);
    RUN(console_ignore_ctrl_c_and_close_event);
    return harness_report();
}
