/*
 * test_publish: a value is published only once it is written. While one thread computes a u64 key
 * (and another sleeps waiting on it, so that publishing costs a wake-up system call), a third
 * thread spins on memo_lookup_u64 and memo_get_u64 for that key; every value it, or the waiter,
 * is handed must be the computed one (3k+1), never the marker's initial 0.
 *
 * Catches: READY stored before the value (mutant M5): the spinning hitter reads 0 in the window
 * between the state change (and its futex wake) and the value's store. Also a hit that reads the
 * value without an acquire load of the state, on weakly ordered hardware. The owner and the
 * spinner are pinned to different CPUs (when there are two): sharing one, the spinner would
 * rarely run inside the owner's window.
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { ROUNDS = 500 };

static uint64_t value_of(uint64_t key)
{
    return key * 3 + 1;
}

static struct {
    memo_t           *m;
    pthread_barrier_t start, end;
    atomic_uint_fast64_t key;
    atomic_int        inside;      /* the owner is in fn for the round's key */
    atomic_int        waiting;     /* the waiter is about to call */
    atomic_int        bad_values;  /* values other than 3k+1 handed out */
    atomic_int        extra_calls; /* fn ran for a key already computed */
    atomic_int        bad_codes;
    atomic_long       hits_seen;   /* spinner calls answered while racing the publication */
} P;

/* Pins the calling thread to the nth CPU this process may use, if there is one. */
static void pin_to_cpu(unsigned nth)
{
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return;
    for (unsigned cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && seen++ == nth) {
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            (void)pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            return;
        }
    }
}

static int owner_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    atomic_store(&P.inside, 1);
    /* Long enough for the waiter to pass its spin and sleep on the futex word. */
    uint64_t until = tap_now_ns() + 200000;
    while (!atomic_load(&P.waiting) || tap_now_ns() < until)
        ;
    *value = value_of(key);
    return 0;
}

static int never_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    (void)key;
    (void)value;
    atomic_fetch_add(&P.extra_calls, 1);
    return 0;
}

static void check(int rc, uint64_t key, uint64_t v)
{
    if (rc != 0)
        atomic_fetch_add(&P.bad_codes, 1);
    else if (v != value_of(key) && atomic_fetch_add(&P.bad_values, 1) < 3)
        diag("key %llu: got %llu, not %llu", (unsigned long long)key, (unsigned long long)v,
             (unsigned long long)value_of(key));
}

static void *owner_thread(void *arg)
{
    (void)arg;
    pin_to_cpu(0);
    for (unsigned r = 0; r < ROUNDS; r++) {
        tap_barrier_wait(&P.start);
        uint64_t key = atomic_load(&P.key), v = 0;
        int rc = memo_get_u64(P.m, key, owner_fn, NULL, &v);
        check(rc, key, v);
        tap_barrier_wait(&P.end);
    }
    return NULL;
}

static void *waiter_thread(void *arg)
{
    (void)arg;
    for (unsigned r = 0; r < ROUNDS; r++) {
        tap_barrier_wait(&P.start);
        uint64_t key = atomic_load(&P.key), v = 0;
        while (!atomic_load(&P.inside))
            ;
        atomic_store(&P.waiting, 1);
        int rc = memo_get_u64(P.m, key, never_fn, NULL, &v);
        check(rc, key, v);
        tap_barrier_wait(&P.end);
    }
    return NULL;
}

/* Spins until the key is stored, alternating lookups and gets (the two hit paths). */
static void *spinner_thread(void *arg)
{
    (void)arg;
    pin_to_cpu(1);
    for (unsigned r = 0; r < ROUNDS; r++) {
        tap_barrier_wait(&P.start);
        uint64_t key = atomic_load(&P.key), v = 0;
        while (!atomic_load(&P.inside))
            ;
        uint64_t deadline = tap_now_ns() + 5000000000ull;
        for (unsigned i = 0;; i++) {
            int rc = (i & 1) ? memo_lookup_u64(P.m, key, &v)
                             : memo_get_u64_timed(P.m, key, never_fn, NULL, 0, &v);
            if (rc == 0) {
                check(rc, key, v);
                atomic_fetch_add(&P.hits_seen, 1);
                break;
            }
            if ((rc != MEMO_ENOENT && rc != MEMO_ETIMEDOUT) || tap_now_ns() > deadline) {
                atomic_fetch_add(&P.bad_codes, 1);
                break;
            }
        }
        tap_barrier_wait(&P.end);
    }
    return NULL;
}

int main(void)
{
    tap_watchdog(100);
    plan(4);
    memset(&P, 0, sizeof P);
    if (test_memo_create(&P.m, NULL) != 0)
        bail_out("memo_create");
    tap_barrier_init(&P.start, 4);
    tap_barrier_init(&P.end, 4);
    pthread_t tids[3];
    pthread_create(&tids[0], NULL, owner_thread, NULL);
    pthread_create(&tids[1], NULL, waiter_thread, NULL);
    pthread_create(&tids[2], NULL, spinner_thread, NULL);
    for (unsigned r = 0; r < ROUNDS; r++) {
        atomic_store(&P.key, 1000 + r);
        atomic_store(&P.inside, 0);
        atomic_store(&P.waiting, 0);
        tap_barrier_wait(&P.start);
        tap_barrier_wait(&P.end);
    }
    tap_join_threads(tids, 3);
    is_int(atomic_load(&P.bad_values), 0,
           "%d rounds of compute / wait / spin on one key: every value handed out is 3k+1", ROUNDS);
    is_int(atomic_load(&P.bad_codes), 0, "... every call returned 0 (or ENOENT / ETIMEDOUT while spinning)");
    is_int(atomic_load(&P.extra_calls), 0, "... and fn ran once per key");
    memo_stats_t st;
    memo_stats(P.m, &st);
    is_u64(st.misses, ROUNDS, "... misses == rounds");
    diag("spinner hits: %ld", atomic_load(&P.hits_seen));
    tap_barrier_destroy(&P.start);
    tap_barrier_destroy(&P.end);
    memo_destroy(P.m);
    return done_testing();
}
