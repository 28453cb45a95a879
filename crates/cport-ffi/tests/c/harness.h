/*
 * The harness the C test programs share (suite.c, semantics.c, win32.c):
 * one line per test ("ok name" / "FAIL name: why"), a per-test watchdog,
 * and the totals. Each program prints "N passed, M failed" at the end
 * (harness_report) and exits 0 only when nothing failed.
 *
 * CHECK(cond, fmt, ...) records the first failure of a test and leaves it:
 * by `goto done` (the test's clean-up label), or by `return` in a program
 * that defines CHECK_LEAVES_BY_RETURN before including this file.
 */
#ifndef CPORT_TEST_HARNESS_H
#define CPORT_TEST_HARNESS_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef WATCHDOG_S
#define WATCHDOG_S 60u /* per test */
#endif

static char g_why[1024];
static int g_bad, g_passed, g_failed;
static const char *g_current = "";
/* Run by the watchdog before it ends the process (async-signal-safe
 * calls only): e.g. removing a temporary directory. */
static void (*g_on_watchdog)(void);

#ifdef CHECK_LEAVES_BY_RETURN
#define CHECK_LEAVE_ return
#else
#define CHECK_LEAVE_ goto done
#endif

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            int n_ = snprintf(g_why, sizeof g_why, "line %d: ", __LINE__);     \
            snprintf(g_why + n_, sizeof g_why - (size_t)n_, __VA_ARGS__);      \
            g_bad = 1;                                                         \
            CHECK_LEAVE_;                                                      \
        }                                                                      \
    } while (0)

static void harness_put(const char *s)
{
    ssize_t r = write(1, s, strlen(s));
    (void)r;
}

static void harness_on_alarm(int sig)
{
    (void)sig;
    if (g_on_watchdog)
        g_on_watchdog();
    harness_put("FAIL ");
    harness_put(g_current);
    harness_put(": watchdog: the test did not finish in time\n");
    _exit(2);
}

/* Line-buffered output, SIGPIPE ignored, the watchdog installed. */
static void harness_start(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, harness_on_alarm);
}

static void run(const char *name, void (*fn)(void))
{
    g_current = name;
    g_bad = 0;
    g_why[0] = 0;
    alarm(WATCHDOG_S);
    fn();
    alarm(0);
    if (g_bad) {
        printf("FAIL %s: %s\n", name, g_why);
        g_failed++;
    } else {
        printf("ok %s\n", name);
        g_passed++;
    }
    fflush(stdout);
}
#define RUN(t) run(#t, t)

/* Prints the totals; the program's exit status. */
static int harness_report(void)
{
    printf("%d passed, %d failed\n", g_passed, g_failed);
    fflush(stdout);
    return g_failed == 0 ? 0 : 1;
}

#endif
