/*
 * test_timed: memo_get_timed / memo_get_u64_timed.
 *
 * Catches: a timed wait that ignores its timeout (waits out the 300 ms computation, or hangs);
 * a timeout that cancels or poisons the computation it waited on (nothing stored afterwards);
 * a timeout applied to the caller's own fn; timeout 0 that sleeps anyway; a deadline computed
 * as now + timeout that overflows for huge timeouts (UINT64_MAX then times out at once);
 * timed waiters that run fn themselves after timing out (computations > 1). Time bounds are
 * generous: the contract gives an upper bound only.
 * Verified against a mutated copy of src/: deadlines ignored -> 8 failures.
 */
#include "tap.h"
#include "helpers.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

typedef struct slow {
    memo_t    *m;
    unsigned   ms;          /* how long the slow fn takes */
    atomic_int inside;      /* the slow fn is running */
    atomic_int slow_calls;
    atomic_int other_calls; /* fn of a call that should not have run its own */
    int        owner_rc;       /* the owner thread's result (u64 owner) */
    int        owner_rc_bytes; /* the byte-key owner's */
} slow_t;

static slow_t S;

static int slow_u64(void *ctx, uint64_t key, uint64_t *value)
{
    slow_t *s = (slow_t *)ctx;
    atomic_fetch_add(&s->slow_calls, 1);
    atomic_store(&s->inside, 1);
    tap_sleep_ms(s->ms);
    *value = key + 500;
    return 0;
}

static int slow_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    slow_t *s = (slow_t *)ctx;
    atomic_fetch_add(&s->slow_calls, 1);
    atomic_store(&s->inside, 1);
    tap_sleep_ms(s->ms);
    return memo_result_set(out, key, key_len);
}

static int other_u64(void *ctx, uint64_t key, uint64_t *value)
{
    atomic_fetch_add(&((slow_t *)ctx)->other_calls, 1);
    *value = key + 9000;
    return 0;
}

static int other_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((slow_t *)ctx)->other_calls, 1);
    return memo_result_set(out, "other", 5);
}

static void *owner_u64(void *arg)
{
    slow_t  *s = (slow_t *)arg;
    uint64_t v;
    s->owner_rc = memo_get_u64(s->m, 1, slow_u64, s, &v);
    return NULL;
}

static void *owner_bytes(void *arg)
{
    slow_t    *s = (slow_t *)arg;
    memo_ref_t r = MEMO_REF_INIT;
    s->owner_rc_bytes = memo_get(s->m, "slow", 4, slow_bytes, s, &r);
    memo_release(&r);
    return NULL;
}

/* Starts the owner thread computing key 1 / "slow" for ms milliseconds; returns once inside. */
static pthread_t start_owner(bool bytes, unsigned ms)
{
    memset(&S, 0, sizeof S);
    S.ms = ms;
    S.owner_rc = S.owner_rc_bytes = -100;
    if (test_memo_create(&S.m, NULL) != 0)
        bail_out("memo_create");
    pthread_t t;
    pthread_create(&t, NULL, bytes ? owner_bytes : owner_u64, &S);
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (!atomic_load(&S.inside) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    return t;
}

/* A timed call on the slow key; *value gets the value on success. */
static int timed_call(bool bytes, uint64_t timeout_ns, uint64_t *value, uint64_t *elapsed_ms)
{
    uint64_t t0 = tap_now_ns();
    int      rc;
    if (bytes) {
        memo_ref_t r = MEMO_REF_INIT;
        rc = memo_get_timed(S.m, "slow", 4, other_bytes, &S, timeout_ns, &r);
        if (rc == 0) {
            *value = r.len == 4 && memcmp(r.data, "slow", 4) == 0 ? 501 : 0;
            memo_release(&r);
        } else if (r.data != NULL) {
            rc = 4444; /* a failed call must leave the ref empty */
        }
    } else {
        rc = memo_get_u64_timed(S.m, 1, other_u64, &S, timeout_ns, value);
    }
    *elapsed_ms = (tap_now_ns() - t0) / 1000000;
    return rc;
}

static bool stored(bool bytes)
{
    uint64_t v = 0;
    if (!bytes)
        return memo_lookup_u64(S.m, 1, &v) == 0 && v == 501;
    memo_ref_t r = MEMO_REF_INIT;
    bool       found = memo_lookup(S.m, "slow", 4, &r) == 0 && r.len == 4 && memcmp(r.data, "slow", 4) == 0;
    memo_release(&r);
    return found;
}

static void test_timeout(bool bytes)
{
    const char *label = bytes ? "memo_get_timed" : "memo_get_u64_timed";
    pthread_t   owner = start_owner(bytes, 300);
    uint64_t    v = 0, ms = 0;
    int         rc = timed_call(bytes, 20000000, &v, &ms);
    is_code(rc, MEMO_ETIMEDOUT, "%s: 20 ms timeout on a 300 ms computation: MEMO_ETIMEDOUT", label);
    cmp_u64(ms, <, 250, "%s: ... returned within 250 ms (ms)", label);
    cmp_u64(ms, >=, 15, "%s: ... after waiting about the timeout (ms)", label);
    is_int(atomic_load(&S.other_calls), 0, "%s: ... and did not run its own fn", label);

    rc = timed_call(bytes, 0, &v, &ms);
    is_code(rc, MEMO_ETIMEDOUT, "%s: timeout 0 with a computation in flight: MEMO_ETIMEDOUT", label);
    cmp_u64(ms, <, 100, "%s: ... at once (ms)", label);

    pthread_join(owner, NULL);
    is_code(bytes ? S.owner_rc_bytes : S.owner_rc, 0,
            "%s: the computation that was waited on went on and returned 0", label);
    ok(stored(bytes), "%s: ... and stored its value (lookup finds it)", label);
    is_int(atomic_load(&S.slow_calls), 1, "%s: ... computed once", label);

    rc = timed_call(bytes, 0, &v, &ms);
    is_code(rc, 0, "%s: timeout 0 on a stored value: 0", label);
    is_u64(v, 501, "%s: ... the stored value", label);
    is_int(atomic_load(&S.other_calls), 0, "%s: no timed call ran fn", label);
    memo_destroy(S.m);
}

static void test_waits_within_timeout(bool bytes, uint64_t timeout_ns, const char *what)
{
    const char *label = bytes ? "memo_get_timed" : "memo_get_u64_timed";
    pthread_t   owner = start_owner(bytes, 100);
    uint64_t    v = 0, ms = 0;
    int         rc = timed_call(bytes, timeout_ns, &v, &ms);
    is_code(rc, 0, "%s: timeout %s on a 100 ms computation: waits and gets 0", label, what);
    is_u64(v, 501, "%s: ... with the computed value", label);
    cmp_u64(ms, <, 5000, "%s: ... (ms)", label);
    is_int(atomic_load(&S.other_calls), 0, "%s: ... without running its own fn", label);
    pthread_join(owner, NULL);
    memo_destroy(S.m);
}

static void test_own_fn_unbounded(bool bytes)
{
    const char *label = bytes ? "memo_get_timed" : "memo_get_u64_timed";
    memset(&S, 0, sizeof S);
    S.ms = 100;
    test_memo_create(&S.m, NULL);
    uint64_t t0 = tap_now_ns(), v = 0;
    int      rc;
    if (bytes) {
        memo_ref_t r = MEMO_REF_INIT;
        rc = memo_get_timed(S.m, "slow", 4, slow_bytes, &S, 1000000, &r);
        memo_release(&r);
    } else {
        rc = memo_get_u64_timed(S.m, 1, slow_u64, &S, 1000000, &v);
    }
    uint64_t ms = (tap_now_ns() - t0) / 1000000;
    is_code(rc, 0, "%s: timeout 1 ms, the call runs a 100 ms fn itself: 0", label);
    cmp_u64(ms, >=, 99, "%s: ... it ran fn to the end (ms)", label);
    ok(stored(bytes), "%s: ... value stored", label);

    /* timeout 0 with nothing in flight: the call computes */
    uint64_t k = 77;
    v = 0;
    rc = memo_get_u64_timed(S.m, k, other_u64, &S, 0, &v);
    is_code(rc, 0, "timeout 0 on an absent key: the call computes it: 0");
    is_u64(v, k + 9000, "... value");
    memo_destroy(S.m);
}

/* Several timed waiters at once: all time out, each within the bound. */
enum { TIMED_WAITERS = 8 };
static pthread_barrier_t waiters_start;
static int               waiter_rc[TIMED_WAITERS];
static uint64_t          waiter_ms[TIMED_WAITERS];

static void *timed_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    uint64_t v = 0;
    tap_barrier_wait(&waiters_start);
    waiter_rc[i] = timed_call(i % 2, 20000000, &v, &waiter_ms[i]);
    return NULL;
}

static void test_many_timed_waiters(void)
{
    /* u64 and byte keys both in flight; odd waiters use bytes */
    memset(&S, 0, sizeof S);
    S.ms = 400;
    test_memo_create(&S.m, NULL);
    pthread_t o1, o2;
    pthread_create(&o1, NULL, owner_u64, &S);
    pthread_create(&o2, NULL, owner_bytes, &S);
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (atomic_load(&S.slow_calls) < 2 && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    tap_barrier_init(&waiters_start, TIMED_WAITERS);
    pthread_t tids[TIMED_WAITERS];
    for (unsigned i = 0; i < TIMED_WAITERS; i++)
        pthread_create(&tids[i], NULL, timed_waiter, (void *)(uintptr_t)i);
    tap_join_threads(tids, TIMED_WAITERS);
    int      timed_out = 0;
    uint64_t worst = 0;
    for (unsigned i = 0; i < TIMED_WAITERS; i++) {
        timed_out += waiter_rc[i] == MEMO_ETIMEDOUT;
        worst = waiter_ms[i] > worst ? waiter_ms[i] : worst;
    }
    is_int(timed_out, TIMED_WAITERS, "8 timed waiters (20 ms) on two 400 ms computations: all MEMO_ETIMEDOUT");
    cmp_u64(worst, <, 300, "... the slowest returned within 300 ms (ms)");
    pthread_join(o1, NULL);
    pthread_join(o2, NULL);
    ok(stored(false) && stored(true), "... both computations stored their values");
    is_int(atomic_load(&S.other_calls), 0, "... no waiter ran fn");
    is_int(atomic_load(&S.slow_calls), 2, "... two computations in all");
    tap_barrier_destroy(&waiters_start);
    memo_destroy(S.m);
}

int main(void)
{
    tap_watchdog(100);
    test_timeout(false);
    test_timeout(true);
    test_waits_within_timeout(false, 10000000000ull, "10 s");
    test_waits_within_timeout(true, 10000000000ull, "10 s");
    test_waits_within_timeout(false, UINT64_MAX, "UINT64_MAX");
    test_waits_within_timeout(true, UINT64_MAX, "UINT64_MAX");
    test_own_fn_unbounded(false);
    test_own_fn_unbounded(true);
    test_many_timed_waiters();
    return done_testing();
}
