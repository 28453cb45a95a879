/*
 * cport/win32.h: the hand-written part of cport's Win32 companion, included
 * by cport.h (unless CPORT_NO_WIN32 is defined) before its generated
 * declarations: the scalar type names of <windows.h>, the structures with
 * anonymous union (SYSTEM_INFO), the Interlocked* family
 * (inline, full barriers, as on Windows), the memory macros and lstrlen.
 * Functions and their status: docs/porting.md, "The Win32 companion".
 *
 * Not meant to be included on its own: include <cport.h>.
 */
#ifndef CPORT_WIN32_H
#define CPORT_WIN32_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
/* <windows.h> brings these in, and Windows programs rely on it
 * (va_start in their printf wrappers, tolower in option parsing). */
#include <stdarg.h>
#include <ctype.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netdb.h>

/* ---- Scalar type names (64-bit Windows sizes: LONG is 32 bits) -------- */

#ifndef VOID
#define VOID void
#endif
typedef char CHAR;
typedef unsigned char UCHAR;
typedef uint8_t BYTE;
typedef uint8_t BOOLEAN;
typedef int16_t SHORT;
typedef uint16_t USHORT;
typedef int INT;
typedef unsigned int UINT;
typedef int64_t LONG64;
typedef uint64_t ULONG64;
typedef uint64_t DWORD64;
typedef uint64_t DWORDLONG;
typedef intptr_t INT_PTR;
typedef uintptr_t UINT_PTR;
typedef intptr_t LONG_PTR;
typedef size_t SIZE_T;
typedef ssize_t SSIZE_T;
typedef void *PVOID;
typedef char *LPSTR;
typedef char *PCHAR;
typedef BYTE *PBYTE;
typedef BYTE *LPBYTE;
typedef LONG *PLONG;
typedef LONG *LPLONG;
typedef uint32_t *PDWORD;
typedef int32_t HRESULT;

/* The Winsock structure names (SOCKADDR, LINGER, …), DWORD_PTR and
 * LARGE_INTEGER are declared by cport.h itself (they are needed without
 * the companion too); the ones only Win32 code uses are here. */
typedef struct in_addr *LPIN_ADDR;
typedef struct in6_addr IN6_ADDR, *PIN6_ADDR, *LPIN6_ADDR;

/* ---- SYSTEM_INFO (Windows' layout, anonymous union) ---- */

typedef struct _SYSTEM_INFO {
    union {
        uint32_t dwOemId;
        struct {
            uint16_t wProcessorArchitecture;
            uint16_t wReserved;
        };
    };
    uint32_t dwPageSize;
    void *lpMinimumApplicationAddress;
    void *lpMaximumApplicationAddress;
    uintptr_t dwActiveProcessorMask;
    uint32_t dwNumberOfProcessors;   /* CPUs in the affinity mask */
    uint32_t dwProcessorType;
    uint32_t dwAllocationGranularity; /* the page size here */
    uint16_t wProcessorLevel;
    uint16_t wProcessorRevision;
} SYSTEM_INFO, *LPSYSTEM_INFO;

/* ---- Initialisers and pseudo-values ------------------------------------ */

#define SRWLOCK_INIT {0}
#define CONDITION_VARIABLE_INIT {0}
#define WSA_INVALID_EVENT ((void *)0)

/* ---- Interlocked*: sequentially consistent, as Windows' full barriers --
 * They return what Windows' do: Increment/Decrement/Add the new value,
 * Exchange/ExchangeAdd/CompareExchange/And/Or/Xor the old one. */

#define CPORT_SC __ATOMIC_SEQ_CST
static inline LONG InterlockedIncrement(LONG volatile *p) { return __atomic_add_fetch(p, 1, CPORT_SC); }
static inline LONG InterlockedDecrement(LONG volatile *p) { return __atomic_sub_fetch(p, 1, CPORT_SC); }
static inline LONG InterlockedAdd(LONG volatile *p, LONG v) { return __atomic_add_fetch(p, v, CPORT_SC); }
static inline LONG InterlockedExchange(LONG volatile *p, LONG v) { return __atomic_exchange_n(p, v, CPORT_SC); }
static inline LONG InterlockedExchangeAdd(LONG volatile *p, LONG v) { return __atomic_fetch_add(p, v, CPORT_SC); }
static inline LONG InterlockedAnd(LONG volatile *p, LONG v) { return __atomic_fetch_and(p, v, CPORT_SC); }
static inline LONG InterlockedOr(LONG volatile *p, LONG v) { return __atomic_fetch_or(p, v, CPORT_SC); }
static inline LONG InterlockedXor(LONG volatile *p, LONG v) { return __atomic_fetch_xor(p, v, CPORT_SC); }
static inline LONG InterlockedCompareExchange(LONG volatile *p, LONG exchange, LONG comparand)
{
    __atomic_compare_exchange_n(p, &comparand, exchange, 0, CPORT_SC, CPORT_SC);
    return comparand; /* the value found */
}

static inline LONG64 InterlockedIncrement64(LONG64 volatile *p) { return __atomic_add_fetch(p, 1, CPORT_SC); }
static inline LONG64 InterlockedDecrement64(LONG64 volatile *p) { return __atomic_sub_fetch(p, 1, CPORT_SC); }
static inline LONG64 InterlockedAdd64(LONG64 volatile *p, LONG64 v) { return __atomic_add_fetch(p, v, CPORT_SC); }
static inline LONG64 InterlockedExchange64(LONG64 volatile *p, LONG64 v) { return __atomic_exchange_n(p, v, CPORT_SC); }
static inline LONG64 InterlockedExchangeAdd64(LONG64 volatile *p, LONG64 v) { return __atomic_fetch_add(p, v, CPORT_SC); }
static inline LONG64 InterlockedAnd64(LONG64 volatile *p, LONG64 v) { return __atomic_fetch_and(p, v, CPORT_SC); }
static inline LONG64 InterlockedOr64(LONG64 volatile *p, LONG64 v) { return __atomic_fetch_or(p, v, CPORT_SC); }
static inline LONG64 InterlockedXor64(LONG64 volatile *p, LONG64 v) { return __atomic_fetch_xor(p, v, CPORT_SC); }
static inline LONG64 InterlockedCompareExchange64(LONG64 volatile *p, LONG64 exchange, LONG64 comparand)
{
    __atomic_compare_exchange_n(p, &comparand, exchange, 0, CPORT_SC, CPORT_SC);
    return comparand;
}

static inline PVOID InterlockedExchangePointer(PVOID volatile *p, PVOID v)
{
    return __atomic_exchange_n(p, v, CPORT_SC);
}
static inline PVOID InterlockedCompareExchangePointer(PVOID volatile *p, PVOID exchange, PVOID comparand)
{
    __atomic_compare_exchange_n(p, &comparand, exchange, 0, CPORT_SC, CPORT_SC);
    return comparand;
}
#undef CPORT_SC

/* A full memory barrier; a spin-wait hint. */
#define MemoryBarrier() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#if defined(__x86_64__) || defined(__i386__)
#define YieldProcessor() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define YieldProcessor() __asm__ __volatile__("yield")
#else
#define YieldProcessor() ((void)0)
#endif

/* ---- Memory macros ----------------------------------------------------- */

#define ZeroMemory(Destination, Length) memset((Destination), 0, (Length))
#define SecureZeroMemory(Destination, Length) explicit_bzero((Destination), (Length))
#define FillMemory(Destination, Length, Fill) memset((Destination), (Fill), (Length))
#define CopyMemory(Destination, Source, Length) memcpy((Destination), (Source), (Length))
#define MoveMemory(Destination, Source, Length) memmove((Destination), (Source), (Length))

/* ---- Character-width names: the narrow (UTF-8) functions ---------------
 * Programs built with UNICODE get the UTF-16 forms, as on Windows; their
 * strings must then be UTF-16 (char16_t / u"..."), not Linux's 32-bit
 * wchar_t. */

/* ---- lstrlen: strlen that takes NULL (length 0), as Windows' does ------ */

static inline int lstrlenA(const char *s) { return s ? (int)strlen(s) : 0; }

#ifdef UNICODE
#define CreateEvent CreateEventW
#define CreateSemaphore CreateSemaphoreW
#else
#define CreateEvent CreateEventA
#define CreateSemaphore CreateSemaphoreA
#define FormatMessage FormatMessageA
#define lstrlen lstrlenA
#endif
#define MAKELANGID(primary, sub) ((((uint32_t)(sub)) << 10) | (uint32_t)(primary))

/* ---- min/max, as <windows.h> defines them for C (C++ has std::min) ----- */

#if !defined(__cplusplus) && !defined(NOMINMAX)
#ifndef min
#define min(a, b) (((a) < (b)) ? (a) : (b))
#endif
#ifndef max
#define max(a, b) (((a) > (b)) ? (a) : (b))
#endif
#endif

#endif /* CPORT_WIN32_H */
