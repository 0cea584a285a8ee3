/*
 * test_fork: a child of fork() finds usable memos (DESIGN.md: atfork handlers; entries owned by
 * threads that do not exist in the child are abandoned). The header does not promise this yet;
 * this test holds the library to the design.
 *
 *  - values stored before the fork are found in the child; the child computes new keys, forgets,
 *    clears, makes and destroys memos, starts threads that use the inherited memo.
 *  - fork while another thread is computing a key (blocked in fn) and others wait on it: in the
 *    child that computation's owner does not exist; a call for the key must compute it afresh
 *    instead of waiting forever. Catches a marker left COMPUTING in the child (hang: the child's
 *    alarm kills it) and locks held by other threads at fork time (shard, registry) left locked
 *    in the child (hang).
 */
#include "tap.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>

#include <memo.h>

#ifdef TAP_TSAN
/* jemalloc (linked by libmemo even when memo uses malloc) locks every arena in its prefork
 * handler: more locks at once than TSan's deadlock detector can track (64), which aborts with
 * a CHECK failure in fork(). That detector is not what this test is about. */
__attribute__((visibility("default"))) const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "detect_deadlocks=0";
}
#endif

static int sq(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * key;
    return 0;
}

static int echo(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    return memo_result_set(out, key, key_len);
}

enum { IN_FLIGHT_KEY = 777 }; /* not among the keys computed before */

static memo_t    *M;
static atomic_int gate_open, inside;

static int blocking(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    atomic_store(&inside, 1);
    while (!atomic_load(&gate_open))
        tap_sleep_ms(1);
    *value = key + 1;
    return 0;
}

static void *blocked_owner(void *arg)
{
    (void)arg;
    uint64_t v;
    memo_get_u64(M, IN_FLIGHT_KEY, blocking, NULL, &v);
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    uint64_t v;
    memo_get_u64(M, IN_FLIGHT_KEY, sq, NULL, &v);
    return NULL;
}

static TAP__UNUSED void *child_worker(void *arg)
{
    (void)arg;
    int bad = 0;
    for (uint64_t k = 0; k < 500; k++) {
        uint64_t v = 0;
        if (memo_get_u64(M, k, sq, NULL, &v) != 0 || v != k * k)
            bad++;
    }
    return (void *)(intptr_t)bad;
}

/* Runs in the child: returns a bit mask of failed checks (0: all good). */
static int child_checks(bool in_flight)
{
    int      fails = 0;
    uint64_t v = 0;
    alarm(20); /* a hang in the child kills it: the parent sees a signal, not a hang */
    if (memo_lookup_u64(M, 3, &v) != 0 || v != 9)
        fails |= 1;
    memo_ref_t r = MEMO_REF_INIT;
    if (memo_lookup(M, "before", 6, &r) != 0 || r.len != 6 || memcmp(r.data, "before", 6) != 0)
        fails |= 2;
    memo_release(&r);
    if (memo_get_u64(M, 1000, sq, NULL, &v) != 0 || v != 1000000)
        fails |= 4;
    if (in_flight) {
        /* the key whose owner was another thread of the parent */
        if (memo_get_u64(M, IN_FLIGHT_KEY, sq, NULL, &v) != 0 || v != IN_FLIGHT_KEY * IN_FLIGHT_KEY)
            fails |= 8;
    }
#ifndef TAP_TSAN /* TSan does not support new threads in the child of a multithreaded fork */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, child_worker, NULL);
    for (int i = 0; i < 4; i++) {
        void *bad = NULL;
        pthread_join(t[i], &bad);
        if (bad != NULL)
            fails |= 16;
    }
#endif
    if (memo_forget_u64(M, 3) != 0)
        fails |= 32;
    memo_clear(M);
    if (memo_lookup_u64(M, 4, &v) != MEMO_ENOENT)
        fails |= 64;
    memo_t *fresh = NULL;
    if (memo_create(&fresh, NULL) != 0 || memo_get(fresh, "x", 1, echo, NULL, &r) != 0)
        fails |= 128;
    memo_release(&r);
    memo_destroy(fresh);
    return fails;
}

static void run(bool in_flight)
{
    const char *label = in_flight ? "fork while another thread computes a key" : "fork";
    memo_create(&M, NULL);
    uint64_t   v;
    memo_ref_t r = MEMO_REF_INIT;
    for (uint64_t k = 0; k < 100; k++)
        memo_get_u64(M, k, sq, NULL, &v);
    memo_get(M, "before", 6, echo, NULL, &r);
    memo_release(&r);

    pthread_t owner, waiters[3];
    atomic_store(&gate_open, 0);
    atomic_store(&inside, 0);
    if (in_flight) {
        pthread_create(&owner, NULL, blocked_owner, NULL);
        uint64_t deadline = tap_now_ns() + 10000000000ull;
        while (!atomic_load(&inside))
            if (tap_now_ns() > deadline)
                bail_out("the computing thread never started its fn");
            else
                tap_sleep_ms(1);
        for (int i = 0; i < 3; i++)
            pthread_create(&waiters[i], NULL, waiter, NULL);
        tap_sleep_ms(30);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_checks(in_flight));
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        diag("%s: the child died of signal %d%s", label, WTERMSIG(status),
             WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
    else if (WEXITSTATUS(status) != 0)
        diag("%s: failed checks in the child: mask %#x", label, WEXITSTATUS(status));
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "%s: the child reads old values, computes, forgets, clears, uses threads and new memos", label);

    if (in_flight) {
        atomic_store(&gate_open, 1);
        pthread_join(owner, NULL);
        tap_join_threads(waiters, 3);
        ok(memo_lookup_u64(M, IN_FLIGHT_KEY, &v) == 0 && v == IN_FLIGHT_KEY + 1, "%s: in the parent the computation finishes", label);
    }
    memo_destroy(M);
}

int main(void)
{
    tap_watchdog(100);
    run(false);
    run(true);
    return done_testing();
}
