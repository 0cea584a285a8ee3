/*
 * tap.h: a small header-only TAP (Test Anything Protocol, version 12) producer for memo's tests.
 *
 * C11 and C++17. Include it FIRST in a C test (it asks for _GNU_SOURCE, which must come before any
 * system header); in C++ include the standard C++ headers first (the macro `ok` would otherwise
 * clash with names such as std::codecvt_base::ok).
 *
 *   plan(n)            print "1..n" now                   plan_no_plan()  plan printed by done_testing
 *   ok(cond, fmt, ...) one assertion                       is_int / is_u64 / is_size / is_str (got, expected, fmt, ...)
 *   cmp_u64(a, op, b, fmt, ...)  e.g. cmp_u64(ms, <, 250, "fast")   both values printed on failure
 *   diag(fmt, ...)     "# ..." on stderr                   skip(n, why)  prints "ok N # skip why" n times
 *   bail_out(fmt, ...) "Bail out! ..." and exit(255)       done_testing() returns the exit status
 *   is_code(got, expected, fmt, ...)  memo return codes, printed by name on failure: tests/helpers.h
 *
 * Every assertion is safe to call from several threads at once (one mutex orders the output).
 * Helpers for concurrency tests: tap_watchdog(seconds), tap_barrier_*, tap_start_threads,
 * tap_join_threads, tap_join_threads_timed, tap_now_ns, tap_sleep_ms, TAP_SANITIZED / TAP_TSAN /
 * TAP_ASAN.
 */
#ifndef MEMO_TESTS_TAP_H
#define MEMO_TESTS_TAP_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- which sanitizer, if any, this binary is built with ---- */
#if defined(__SANITIZE_THREAD__)
#define TAP_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TAP_ASAN 1
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(TAP_TSAN)
#define TAP_TSAN 1
#endif
#if __has_feature(address_sanitizer) && !defined(TAP_ASAN)
#define TAP_ASAN 1
#endif
#endif
#if defined(TAP_TSAN) || defined(TAP_ASAN)
#define TAP_SANITIZED 1
#endif

#if defined(__GNUC__)
#define TAP__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TAP__UNUSED __attribute__((unused))
#define TAP__NORETURN __attribute__((noreturn))
#else
#define TAP__PRINTF(f, a)
#define TAP__UNUSED
#define TAP__NORETURN
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tap__state {
    pthread_mutex_t lock;
    int             planned; /* -1: no plan yet */
    int             run;
    int             failed;
    int             plan_printed;
} tap__state_t;

/* One state per test binary: every test is a single translation unit plus tap.h. */
static tap__state_t tap__st = { PTHREAD_MUTEX_INITIALIZER, -1, 0, 0, 0 };

static TAP__UNUSED void plan(int n)
{
    pthread_mutex_lock(&tap__st.lock);
    tap__st.planned = n;
    tap__st.plan_printed = 1;
    printf("1..%d\n", n);
    fflush(stdout);
    pthread_mutex_unlock(&tap__st.lock);
}

static TAP__UNUSED void plan_no_plan(void)
{
    tap__st.planned = -1;
}

static TAP__UNUSED void tap__vdiag_locked(const char *fmt, va_list ap)
{
    char buf[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    fflush(stdout);
    /* One "# " per line, so a multi-line message stays a comment. */
    const char *p = buf;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t      len = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(stderr, "# %.*s\n", (int)len, p);
        p += len + (nl ? 1 : 0);
    }
    fflush(stderr);
}

static TAP__UNUSED TAP__PRINTF(1, 2) void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&tap__st.lock);
    tap__vdiag_locked(fmt, ap);
    pthread_mutex_unlock(&tap__st.lock);
    va_end(ap);
}

/* Prints the result line; on failure also where, and `detail` (both values) when given. */
static TAP__UNUSED int tap__result(int pass, const char *file, int line, const char *detail,
                                   const char *fmt, va_list ap)
{
    char name[1024];
    vsnprintf(name, sizeof name, fmt, ap);
    /* '#' in a test name would start a directive: replace it. */
    for (char *c = name; *c; c++)
        if (*c == '#' || *c == '\n')
            *c = ' ';
    pthread_mutex_lock(&tap__st.lock);
    int n = ++tap__st.run;
    if (!pass)
        tap__st.failed++;
    printf("%sok %d - %s\n", pass ? "" : "not ", n, name);
    fflush(stdout);
    if (!pass) {
        fprintf(stderr, "#   Failed test '%s'\n#   at %s line %d.\n", name, file, line);
        if (detail)
            fprintf(stderr, "#   %s\n", detail);
        fflush(stderr);
    }
    pthread_mutex_unlock(&tap__st.lock);
    return pass;
}

static TAP__UNUSED TAP__PRINTF(4, 5) int tap__ok(int pass, const char *file, int line,
                                                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = tap__result(pass, file, line, NULL, fmt, ap);
    va_end(ap);
    return r;
}

static TAP__UNUSED TAP__PRINTF(5, 6) int tap__is_i64(long long got, long long expected,
                                                     const char *file, int line, const char *fmt,
                                                     ...)
{
    char    detail[128];
    va_list ap;
    snprintf(detail, sizeof detail, "got: %lld expected: %lld", got, expected);
    va_start(ap, fmt);
    int r = tap__result(got == expected, file, line, detail, fmt, ap);
    va_end(ap);
    return r;
}

static TAP__UNUSED TAP__PRINTF(5, 6) int tap__is_u64(uint64_t got, uint64_t expected,
                                                     const char *file, int line, const char *fmt,
                                                     ...)
{
    char    detail[128];
    va_list ap;
    snprintf(detail, sizeof detail, "got: %" PRIu64 " expected: %" PRIu64, got, expected);
    va_start(ap, fmt);
    int r = tap__result(got == expected, file, line, detail, fmt, ap);
    va_end(ap);
    return r;
}

static TAP__UNUSED TAP__PRINTF(5, 6) int tap__is_str(const char *got, const char *expected,
                                                     const char *file, int line, const char *fmt,
                                                     ...)
{
    char    detail[600];
    va_list ap;
    int     pass = (got == NULL && expected == NULL) ||
               (got != NULL && expected != NULL && strcmp(got, expected) == 0);
    snprintf(detail, sizeof detail, "got: '%.250s' expected: '%.250s'", got ? got : "(null)",
             expected ? expected : "(null)");
    va_start(ap, fmt);
    int r = tap__result(pass, file, line, detail, fmt, ap);
    va_end(ap);
    return r;
}

static TAP__UNUSED TAP__PRINTF(7, 8) int tap__cmp_u64(int pass, uint64_t a, const char *op,
                                                      uint64_t b, const char *file, int line,
                                                      const char *fmt, ...)
{
    char    detail[160];
    va_list ap;
    snprintf(detail, sizeof detail, "%" PRIu64 " %s %" PRIu64 " is false", a, op, b);
    va_start(ap, fmt);
    int r = tap__result(pass, file, line, detail, fmt, ap);
    va_end(ap);
    return r;
}

#define ok(cond, ...) tap__ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, expected, ...) \
    tap__is_i64((long long)(got), (long long)(expected), __FILE__, __LINE__, __VA_ARGS__)
#define is_u64(got, expected, ...) \
    tap__is_u64((uint64_t)(got), (uint64_t)(expected), __FILE__, __LINE__, __VA_ARGS__)
#define is_size(got, expected, ...) \
    tap__is_u64((uint64_t)(size_t)(got), (uint64_t)(size_t)(expected), __FILE__, __LINE__, __VA_ARGS__)
#define is_str(got, expected, ...) tap__is_str((got), (expected), __FILE__, __LINE__, __VA_ARGS__)
#define cmp_u64(a, op, b, ...)                                                              \
    tap__cmp_u64(((uint64_t)(a))op((uint64_t)(b)), (uint64_t)(a), #op, (uint64_t)(b), __FILE__, \
                 __LINE__, __VA_ARGS__)

/* n assertions that were not run: "ok N # skip why" (prove counts them as passed and skipped). */
static TAP__UNUSED void skip(int n, const char *why)
{
    pthread_mutex_lock(&tap__st.lock);
    for (int i = 0; i < n; i++)
        printf("ok %d # skip %s\n", ++tap__st.run, why);
    fflush(stdout);
    pthread_mutex_unlock(&tap__st.lock);
}

static TAP__UNUSED TAP__NORETURN TAP__PRINTF(1, 2) void bail_out(const char *fmt, ...)
{
    char    buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&tap__st.lock);
    fflush(stderr);
    printf("Bail out! %s\n", buf);
    fflush(stdout);
    exit(255);
}

/* Prints the plan if none was printed; returns the exit status for main: 0 only if every
 * assertion passed and the count matches the plan. */
static TAP__UNUSED int done_testing(void)
{
    pthread_mutex_lock(&tap__st.lock);
    int status = tap__st.failed ? 1 : 0;
    if (!tap__st.plan_printed) {
        printf("1..%d\n", tap__st.run);
        tap__st.plan_printed = 1;
    } else if (tap__st.planned != tap__st.run) {
        fflush(stdout);
        fprintf(stderr, "# planned %d tests but ran %d\n", tap__st.planned, tap__st.run);
        status = 1;
    }
    if (tap__st.failed) {
        fflush(stdout);
        fprintf(stderr, "# failed %d of %d tests\n", tap__st.failed, tap__st.run);
    }
    fflush(stdout);
    fflush(stderr);
    pthread_mutex_unlock(&tap__st.lock);
    return status;
}

/* ---- helpers for concurrency tests ---- */

static TAP__UNUSED uint64_t tap_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static TAP__UNUSED void tap_sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static TAP__UNUSED void tap_sleep_ms(unsigned ms)
{
    tap_sleep_ns((uint64_t)ms * 1000000u);
}

static TAP__UNUSED void tap_barrier_init(pthread_barrier_t *b, unsigned count)
{
    if (pthread_barrier_init(b, NULL, count) != 0)
        bail_out("pthread_barrier_init(%u) failed", count);
}

static TAP__UNUSED void tap_barrier_wait(pthread_barrier_t *b)
{
    int rc = pthread_barrier_wait(b);
    if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
        bail_out("pthread_barrier_wait failed: %d", rc);
}

static TAP__UNUSED void tap_barrier_destroy(pthread_barrier_t *b)
{
    pthread_barrier_destroy(b);
}

/* Starts n threads running fn(args + i * arg_size), or fn(NULL) when args is NULL. */
static TAP__UNUSED void tap_start_threads(pthread_t *tids, unsigned n, void *(*fn)(void *),
                                          void *args, size_t arg_size)
{
    for (unsigned i = 0; i < n; i++) {
        void *arg = args ? (void *)((char *)args + i * arg_size) : NULL;
        int   rc = pthread_create(&tids[i], NULL, fn, arg);
        if (rc != 0)
            bail_out("pthread_create failed: %s", strerror(rc));
    }
}

static TAP__UNUSED void tap_join_threads(pthread_t *tids, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        pthread_join(tids[i], NULL);
}

/* Joins n threads, giving them `seconds` in all; returns how many did not finish in time (they
 * are left running: the caller should fail and bail out). */
static TAP__UNUSED unsigned tap_join_threads_timed(pthread_t *tids, unsigned n, unsigned seconds)
{
    struct timespec limit;
    unsigned        stuck = 0;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += seconds;
    for (unsigned i = 0; i < n; i++)
        if (pthread_timedjoin_np(tids[i], NULL, &limit) != 0)
            stuck++;
    return stuck;
}

static TAP__UNUSED unsigned tap__watchdog_seconds;

static TAP__UNUSED void *tap__watchdog_main(void *arg)
{
    (void)arg;
    tap_sleep_ns((uint64_t)tap__watchdog_seconds * 1000000000u);
    /* Do not take the TAP lock: a hung thread may hold it. write() is safe here. */
    char msg[200];
    int  len = snprintf(msg, sizeof msg,
                        "not ok %d - watchdog: test hung for %u s\nBail out! watchdog: test hung for %u s\n",
                        tap__st.run + 1, tap__watchdog_seconds, tap__watchdog_seconds);
    if (len > 0 && write(STDOUT_FILENO, msg, (size_t)len) < 0)
        _exit(2);
    _exit(1);
    return NULL;
}

/* If the test has not finished within `seconds`, prints a failing line and "Bail out!" and
 * _exit(1)s. Call it first in every test that could hang. Keep it below CTest's TIMEOUT so a
 * deadlock names itself instead of being killed silently. */
static TAP__UNUSED void tap_watchdog(unsigned seconds)
{
    pthread_t      tid;
    pthread_attr_t attr;
    tap__watchdog_seconds = seconds;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, tap__watchdog_main, NULL) != 0)
        bail_out("cannot start the watchdog thread");
    pthread_attr_destroy(&attr);
}

#ifdef __cplusplus
}
#endif

#endif /* MEMO_TESTS_TAP_H */
