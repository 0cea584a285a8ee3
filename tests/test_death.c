/*
 * test_death: a computing thread that dies inside fn (pthread_exit, or pthread_cancel at a
 * cancellation point) must not strand its waiters: they wake, exactly one of them computes the
 * value afresh, and all get it. Also with no waiters (the next caller computes instead of
 * waiting forever), and with nested computations (a thread dies computing b inside a: both
 * keys are abandoned).
 *
 * Catches: no cleanup handler around fn (waiters sleep forever: the watchdog fires, or the next
 * caller hangs); an abandoned marker left in the table; waiters that all recompute at once
 * (more than one successful computation); waiters handed an empty value or an error; a dead
 * thread's per-thread state recycled while still referenced (crash or ASan report over many
 * rounds); cleanup that unwinds only the innermost of nested computations.
 *
 * Thread death by forced unwinding is not supported under ThreadSanitizer: skipped there.
 * Verified against a mutated copy of src/: a no-op cleanup handler -> the first round's waiters
 * are still waiting after 10 s (the test fails and bails out).
 */
#include "tap.h"
#include "helpers.h"
#include "keyspace.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { WAITERS = 8, ROUNDS = 30 };

typedef enum { DIE_EXIT, DIE_CANCEL } death_t;

typedef struct death_ctx {
    memo_t       *m;
    death_t       how;
    bool          bytes;
    bool          nested;        /* the dying thread computes key 1, inside it key 2, dies there */
    atomic_int    inside;        /* the dying fn is running */
    atomic_int    arrived;       /* waiters about to call */
    int           expect_waiters;
    atomic_int    good_calls[3]; /* successful computations per key (1, 2) */
    int           rc[WAITERS];
    uint64_t      value[WAITERS];
    uint64_t      key_of[WAITERS];
} death_ctx_t;

static death_ctx_t D;

static uint64_t good_value(uint64_t key)
{
    return key * 1000 + 42;
}

static void die_now(death_ctx_t *c)
{
    atomic_store(&c->inside, 1);
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    if (c->how == DIE_EXIT) {
        while (atomic_load(&c->arrived) < c->expect_waiters && tap_now_ns() < deadline)
            tap_sleep_ms(1);
        tap_sleep_ms(50); /* the waiters are asleep on the marker by now */
        pthread_exit((void *)0x1234);
    }
    for (;;)
        usleep(1000); /* a cancellation point: the main thread cancels us here */
}

static int good_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    death_ctx_t *c = (death_ctx_t *)ctx;
    atomic_fetch_add(&c->good_calls[key], 1);
    *value = good_value(key);
    return 0;
}

static int good_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    death_ctx_t *c = (death_ctx_t *)ctx;
    uint64_t     k;
    if (key_len != sizeof k)
        return 1;
    memcpy(&k, key, sizeof k);
    atomic_fetch_add(&c->good_calls[k], 1);
    uint64_t v = good_value(k);
    return memo_result_set(out, &v, sizeof v);
}

static int dying_fn_u64(void *ctx, uint64_t key, uint64_t *value);

static int dying_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    death_ctx_t *c = (death_ctx_t *)ctx;
    uint64_t     k;
    (void)out;
    memcpy(&k, key, sizeof k < key_len ? sizeof k : key_len);
    if (c->nested && k == 1) {
        uint64_t   inner = 2;
        memo_ref_t r = MEMO_REF_INIT;
        memo_get(c->m, &inner, sizeof inner, dying_fn_bytes, c, &r);
        return 77; /* not reached */
    }
    die_now(c);
    return 77;
}

static int dying_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    death_ctx_t *c = (death_ctx_t *)ctx;
    if (c->nested && key == 1) {
        memo_get_u64(c->m, 2, dying_fn_u64, c, value);
        return 77;
    }
    die_now(c);
    return 77;
}

static int get_value(death_ctx_t *c, uint64_t key, memo_fn *fn_b, memo_fn_u64 *fn_u, uint64_t *v)
{
    return keyspace_get(c->m, c->bytes, key, fn_b, fn_u, c, v);
}

static void *dying_thread(void *arg)
{
    death_ctx_t *c = (death_ctx_t *)arg;
    uint64_t     v;
    get_value(c, 1, dying_fn_bytes, dying_fn_u64, &v);
    return (void *)0x5678; /* not reached: fn never returns */
}

static void *waiter_thread(void *arg)
{
    unsigned     i = (unsigned)(uintptr_t)arg;
    death_ctx_t *c = &D;
    atomic_fetch_add(&c->arrived, 1);
    c->rc[i] = get_value(c, c->key_of[i], good_fn_bytes, good_fn_u64, &c->value[i]);
    return NULL;
}

static TAP__UNUSED void run(death_t how, bool bytes, bool nested, int waiters)
{
    char label[128];
    snprintf(label, sizeof label, "%s in fn, %s keys%s, %d waiters",
             how == DIE_EXIT ? "pthread_exit" : "pthread_cancel", bytes ? "byte" : "u64",
             nested ? ", nested a -> b" : "", waiters);
    int bad_rc = 0, bad_value = 0, bad_calls = 0, bad_retval = 0, bad_lookup = 0;
    for (int round = 0; round < ROUNDS; round++) {
        death_ctx_t *c = &D;
        memset(c, 0, sizeof *c);
        c->how = how;
        c->bytes = bytes;
        c->nested = nested;
        c->expect_waiters = waiters;
        if (test_memo_create(&c->m, NULL) != 0)
            bail_out("memo_create");
        pthread_t dying, tids[WAITERS];
        pthread_create(&dying, NULL, dying_thread, c);
        uint64_t deadline = tap_now_ns() + 10000000000ull;
        while (!atomic_load(&c->inside) && tap_now_ns() < deadline)
            tap_sleep_ms(1);
        for (int i = 0; i < waiters; i++) {
            c->key_of[i] = nested ? (uint64_t)(1 + i % 2) : 1; /* nested: half wait on a, half on b */
            pthread_create(&tids[i], NULL, waiter_thread, (void *)(uintptr_t)i);
        }
        if (how == DIE_CANCEL) {
            while (atomic_load(&c->arrived) < waiters && tap_now_ns() < deadline)
                tap_sleep_ms(1);
            tap_sleep_ms(50);
            pthread_cancel(dying);
        }
        void *retval = NULL;
        pthread_join(dying, &retval);
        if (retval != (how == DIE_EXIT ? (void *)0x1234 : PTHREAD_CANCELED))
            bad_retval++;
        if (tap_join_threads_timed(tids, (unsigned)waiters, 10) != 0) {
            ok(0, "%s: round %d: waiters still waiting 10 s after the computing thread died", label,
               round);
            bail_out("%s: waiters stranded by a dead computing thread", label);
        }
        if (waiters == 0) {
            /* nobody waited: the next caller must compute, not wait on the dead thread */
            uint64_t v = 0;
            int      rc = get_value(c, 1, good_fn_bytes, good_fn_u64, &v);
            bad_rc += rc != 0;
            bad_value += v != good_value(1);
        }
        for (int i = 0; i < waiters; i++) {
            if (c->rc[i] != 0) {
                if (bad_rc++ < 5)
                    diag("%s: round %d waiter %d got %s", label, round, i, memo_err_name(c->rc[i]));
            } else if (c->value[i] != good_value(c->key_of[i])) {
                bad_value++;
            }
        }
        int keys = nested ? 2 : 1;
        for (int k = 1; k <= keys; k++) {
            int want = (waiters > 0 || k == 1) ? 1 : 0;
            if (atomic_load(&c->good_calls[k]) != want) {
                if (bad_calls++ < 5)
                    diag("%s: round %d key %d computed %d times after the death", label, round, k,
                         atomic_load(&c->good_calls[k]));
            }
            uint64_t v = 0;
            int      rc;
            if (bytes) {
                uint64_t   key = (uint64_t)k;
                memo_ref_t r = MEMO_REF_INIT;
                rc = memo_lookup(c->m, &key, sizeof key, &r);
                if (rc == 0 && r.len == sizeof v)
                    memcpy(&v, r.data, sizeof v);
                memo_release(&r);
            } else {
                rc = memo_lookup_u64(c->m, (uint64_t)k, &v);
            }
            if (want ? (rc != 0 || v != good_value((uint64_t)k)) : rc != MEMO_ENOENT)
                bad_lookup++;
        }
        memo_destroy(c->m);
    }
    is_int(bad_retval, 0, "%s: the computing thread died (%d rounds)", label, ROUNDS);
    is_int(bad_rc, 0, "%s: every waiter woke and got 0", label);
    is_int(bad_value, 0, "%s: every waiter got the right value", label);
    is_int(bad_calls, 0, "%s: exactly one successful computation afresh per key", label);
    is_int(bad_lookup, 0, "%s: the fresh value is stored (lookup)", label);
}

int main(void)
{
    tap_watchdog(100);
#ifdef TAP_TSAN
    skip(5 * 8, "ThreadSanitizer does not support threads that die by forced unwinding inside fn");
#else
    run(DIE_EXIT, false, false, WAITERS);
    run(DIE_EXIT, true, false, WAITERS);
    run(DIE_CANCEL, false, false, WAITERS);
    run(DIE_CANCEL, true, false, WAITERS);
    run(DIE_EXIT, false, false, 0);
    run(DIE_CANCEL, true, false, 0);
    run(DIE_EXIT, false, true, WAITERS);
    run(DIE_CANCEL, true, true, WAITERS);
#endif
    return done_testing();
}
