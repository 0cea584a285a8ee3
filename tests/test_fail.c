/*
 * test_fail: a compute function that fails, under a herd of waiters.
 *
 * 16 threads call one key; the first to miss runs fn, which holds until every other thread has
 * announced itself (and then 50 ms more, so they are asleep on the in-flight marker) and then
 * fails with a code unique to that computation. Every thread must get the code of the
 * computation it ran or waited on; nothing may be stored; the counters must add up; the next
 * call must run fn again and can succeed.
 *
 * Catches: waiters that see FAILED and retry instead of taking the code (fn would run again:
 * more than one computation per round); waiters handed 0 and an empty value; a failed marker
 * left in the table (lookup finds it, or later calls wait forever / return the old code);
 * negative memo codes from fn mangled into other codes; errors/misses/waits miscounted.
 * Verified against a mutated copy of src/: waiters that retry on FAILED -> 16 computations per
 * round instead of 1. The codes start at 1 in one run each: memo's miss path once returned 1 to
 * itself for "another thread inserted first, look again", so fn's own code 1 made it run fn
 * again (found by stress_linear).
 */
#include "tap.h"
#include "helpers.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { THREADS = 16, ROUNDS = 20 };

typedef struct fail_ctx {
    memo_t           *m;
    pthread_barrier_t start;
    bool              bytes;
    int               base_code;    /* computation i returns base_code (+ i when positive) */
    bool              succeed;      /* the recovery run: fn stores a value and returns 0 */
    atomic_int        arrived;      /* threads about to call memo */
    atomic_int        computations;
    int               codes[THREADS * 4]; /* code returned by computation i */
    int               got[THREADS];
    uint64_t          round;
} fail_ctx_t;

static fail_ctx_t F;

static int fail_compute(fail_ctx_t *c)
{
    int i = atomic_fetch_add(&c->computations, 1);
    if (c->succeed)
        return 0;
    /* hold until the rest of the herd is (about to be) waiting on this computation */
    uint64_t deadline = tap_now_ns() + 5000000000ull;
    while (atomic_load(&c->arrived) < THREADS && tap_now_ns() < deadline)
        tap_sleep_ms(1);
#ifdef TAP_SANITIZED
    tap_sleep_ms(150);
#else
    tap_sleep_ms(50);
#endif
    int code = c->base_code > 0 ? c->base_code + i : c->base_code;
    if (i < (int)(sizeof c->codes / sizeof c->codes[0]))
        c->codes[i] = code;
    return code;
}

static int fail_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    fail_ctx_t *c = (fail_ctx_t *)ctx;
    *value = key + 1000; /* set but must not be stored when fn fails */
    return fail_compute(c);
}

static int fail_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    fail_ctx_t *c = (fail_ctx_t *)ctx;
    /* store a value first: a failing fn's value must be dropped */
    if (memo_result_set(out, key, key_len) != 0)
        return MEMO_ENOMEM;
    return fail_compute(c);
}

static void *fail_thread(void *arg)
{
    unsigned    index = (unsigned)(uintptr_t)arg;
    fail_ctx_t *c = &F;
    tap_barrier_wait(&c->start);
    atomic_fetch_add(&c->arrived, 1);
    uint64_t key = c->round;
    if (c->bytes) {
        memo_ref_t r = MEMO_REF_INIT;
        c->got[index] = memo_get(c->m, &key, sizeof key, fail_fn_bytes, c, &r);
        if (c->got[index] == 0)
            memo_release(&r);
        else if (r.data != NULL)
            c->got[index] = 12345; /* a failed call must leave the ref empty */
    } else {
        uint64_t v = 0;
        c->got[index] = memo_get_u64(c->m, key, fail_fn_u64, c, &v);
    }
    return NULL;
}

static void run_herd_round(fail_ctx_t *c)
{
    pthread_t tids[THREADS];
    atomic_store(&c->arrived, 0);
    for (unsigned i = 0; i < THREADS; i++)
        if (pthread_create(&tids[i], NULL, fail_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    tap_join_threads(tids, THREADS);
}

static void run(bool bytes, int base_code)
{
    char label[64];
    snprintf(label, sizeof label, "%s keys, fn returns %s%s", bytes ? "byte" : "u64",
             base_code > 0 ? "positive code " : memo_err_name(base_code),
             base_code > 0 ? "100+i" : "");
    fail_ctx_t *c = &F;
    memset(c, 0, sizeof *c);
    c->bytes = bytes;
    c->base_code = base_code;
    if (test_memo_create(&c->m, NULL) != 0)
        bail_out("memo_create");
    tap_barrier_init(&c->start, THREADS);

    int      foreign_codes = 0, zero_rc = 0;
    uint64_t total_computations = 0, rounds_with_one = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        c->round = round;
        atomic_store(&c->computations, 0);
        run_herd_round(c);
        int n = atomic_load(&c->computations);
        total_computations += (uint64_t)n;
        rounds_with_one += n == 1;
        for (unsigned i = 0; i < THREADS; i++) {
            bool known = false;
            for (int j = 0; j < n && j < (int)(sizeof c->codes / sizeof c->codes[0]); j++)
                known |= c->got[i] == c->codes[j];
            if (c->got[i] == 0)
                zero_rc++;
            else if (!known && foreign_codes++ < 5)
                diag("%s: round %u thread %u got %d (%s), not a code that fn returned", label,
                     round, i, c->got[i], memo_strerror(c->got[i]));
        }
    }
    is_int(zero_rc, 0, "%s: no caller got 0 from a failed computation", label);
    is_int(foreign_codes, 0, "%s: every caller got the code of the computation it ran or waited on",
           label);
    is_u64(rounds_with_one, ROUNDS,
           "%s: one computation served all %d threads in each of %d rounds (%" PRIu64
           " computations)",
           label, THREADS, ROUNDS, total_computations);

    memo_stats_t s;
    memo_stats(c->m, &s);
    is_u64(s.errors, total_computations, "%s: stats.errors == computations", label);
    is_u64(s.misses, total_computations, "%s: stats.misses == computations", label);
    is_u64(s.waits + s.misses, (uint64_t)THREADS * ROUNDS,
           "%s: waits + misses == calls (a failure taken from another's run is a wait)", label);
    is_u64(s.hits, 0, "%s: no hits", label);
    is_u64(s.entries, 0, "%s: nothing stored (entries 0)", label);

    int found = 0;
    for (uint64_t k = 0; k < ROUNDS; k++) {
        memo_ref_t r = MEMO_REF_INIT;
        uint64_t   v;
        int        rc = bytes ? memo_lookup(c->m, &k, sizeof k, &r) : memo_lookup_u64(c->m, k, &v);
        if (rc != MEMO_ENOENT)
            found++;
        if (rc == 0)
            memo_release(&r);
    }
    is_int(found, 0, "%s: lookup of every failed key is ENOENT", label);

    /* recovery: the next call runs fn again and succeeds */
    c->succeed = true;
    atomic_store(&c->computations, 0);
    uint64_t   key = 0, v = 0;
    memo_ref_t r = MEMO_REF_INIT;
    int rc = bytes ? memo_get(c->m, &key, sizeof key, fail_fn_bytes, c, &r)
                   : memo_get_u64(c->m, key, fail_fn_u64, c, &v);
    is_code(rc, 0, "%s: the next call after the failures succeeds", label);
    is_int(atomic_load(&c->computations), 1, "%s: ... by running fn again", label);
    if (bytes)
        ok(r.len == sizeof key && memcmp(r.data, &key, sizeof key) == 0, "%s: ... value stored", label);
    else
        is_u64(v, 1000, "%s: ... value stored", label);
    memo_release(&r);
    rc = bytes ? memo_lookup(c->m, &key, sizeof key, &r) : memo_lookup_u64(c->m, key, &v);
    is_code(rc, 0, "%s: ... and lookup finds it", label);
    memo_release(&r);

    tap_barrier_destroy(&c->start);
    memo_destroy(c->m);
}

int main(void)
{
    tap_watchdog(100);
    run(false, 100);
    run(false, 1); /* 1 once meant "look again" inside memo and made fn run again */
    run(true, 1);
    run(false, MEMO_ENOMEM);
    run(false, MEMO_EDEADLK);
    run(true, 100);
    run(true, MEMO_ENOMEM);
    run(true, MEMO_ETIMEDOUT);
    return done_testing();
}
