/*
 * test_deadlock: recursion, and cycles of computations that would hang without detection.
 *
 *  - self-recursion on the same key (u64, bytes, timed, and a -> b -> a inside one thread):
 *    MEMO_EDEADLK at once. Catches a memo that waits on its own in-flight marker (hangs: the
 *    watchdog fires) or that runs fn again for a key it is already computing.
 *  - recursion on different keys: fib(90) through memo_get_u64 recursion.
 *  - cycles of 2 and 3 threads in one memo, and of 2 threads across two memos, many rounds:
 *    every thread is inside its fn (a spinning barrier, then a small random delay) before it
 *    asks for the next one's key. Catches: no cycle detection (hang), a detection that misses
 *    the race where two threads check the chain at the same moment before either has published
 *    what it waits for (both sleep: a round hangs; the main thread fails it after 10 s),
 *    detection that only follows one memo's entries.
 *    Verified against mutated copies of src/: detection off -> hang at the first self-recursion
 *    (watchdog); "walk, then publish" instead of "publish, then walk" -> a 2-thread round hangs
 *    within the first few dozen rounds.
 *  - no false positives: chains of waiting threads without a cycle, and 8 threads recursing
 *    over a random DAG of 3000 keys, must never see MEMO_EDEADLK. Catches a walk that follows
 *    stale ownership (a finished computation's owner, a recycled flight slot).
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

/* ---- self-recursion ---- */

typedef struct self_ctx {
    memo_t    *m;
    atomic_int calls;
    int        inner_rc;
    bool       timed;
} self_ctx_t;

static int self_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    self_ctx_t *c = (self_ctx_t *)ctx;
    if (atomic_fetch_add(&c->calls, 1) > 0)
        return 9999; /* fn re-entered for the key it is computing */
    uint64_t v = 0;
    c->inner_rc = c->timed ? memo_get_u64_timed(c->m, key, self_fn_u64, c, 5000000000ull, &v)
                           : memo_get_u64(c->m, key, self_fn_u64, c, &v);
    *value = 1;
    return c->inner_rc;
}

static int self_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    self_ctx_t *c = (self_ctx_t *)ctx;
    if (atomic_fetch_add(&c->calls, 1) > 0)
        return 9999;
    memo_ref_t r = MEMO_REF_INIT;
    c->inner_rc = c->timed ? memo_get_timed(c->m, key, key_len, self_fn_bytes, c, 5000000000ull, &r)
                           : memo_get(c->m, key, key_len, self_fn_bytes, c, &r);
    memo_release(&r);
    memo_result_set(out, "x", 1);
    return c->inner_rc;
}

static int plain_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key + 5;
    return 0;
}

static int plain_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    return memo_result_set(out, key, key_len);
}

static void test_self(bool bytes, bool timed)
{
    const char *label = bytes ? (timed ? "self-recursion, memo_get_timed" : "self-recursion, memo_get")
                              : (timed ? "self-recursion, memo_get_u64_timed" : "self-recursion, memo_get_u64");
    self_ctx_t c = { NULL, 0, -100, timed };
    test_memo_create(&c.m, NULL);
    uint64_t   t0 = tap_now_ns(), v = 0;
    memo_ref_t r = MEMO_REF_INIT;
    int rc = bytes ? memo_get(c.m, "self", 4, self_fn_bytes, &c, &r)
                   : memo_get_u64(c.m, 77, self_fn_u64, &c, &v);
    uint64_t ms = (tap_now_ns() - t0) / 1000000;
    is_code(c.inner_rc, MEMO_EDEADLK, "%s: the inner call for the same key is MEMO_EDEADLK", label);
    is_code(rc, MEMO_EDEADLK, "%s: fn returned it, the outer call gets it too", label);
    is_int(atomic_load(&c.calls), 1, "%s: fn ran once", label);
    cmp_u64(ms, <, 1000, "%s: promptly (ms)", label);
    rc = bytes ? memo_lookup(c.m, "self", 4, &r) : memo_lookup_u64(c.m, 77, &v);
    is_code(rc, MEMO_ENOENT, "%s: nothing stored", label);
    rc = bytes ? memo_get(c.m, "self", 4, plain_bytes, NULL, &r) : memo_get_u64(c.m, 77, plain_u64, NULL, &v);
    is_code(rc, 0, "%s: the key computes normally afterwards", label);
    memo_release(&r);
    memo_destroy(c.m);
}

/* a -> b -> a in one thread */
typedef struct ab_ctx {
    memo_t *m;
    int     inner_a_rc;
    int     b_calls;
} ab_ctx_t;

static int ab_fn(void *ctx, uint64_t key, uint64_t *value)
{
    ab_ctx_t *c = (ab_ctx_t *)ctx;
    uint64_t  v = 0;
    if (key == 1) { /* a asks b */
        int rc = memo_get_u64(c->m, 2, ab_fn, c, &v);
        *value = v + 1;
        return rc;
    }
    c->b_calls++; /* b asks a */
    c->inner_a_rc = memo_get_u64(c->m, 1, ab_fn, c, &v);
    *value = 100;
    return c->inner_a_rc == MEMO_EDEADLK ? 0 : c->inner_a_rc; /* b falls back to 100 */
}

static void test_indirect_self(void)
{
    ab_ctx_t c = { NULL, -100, 0 };
    test_memo_create(&c.m, NULL);
    uint64_t v = 0;
    int      rc = memo_get_u64(c.m, 1, ab_fn, &c, &v);
    is_code(c.inner_a_rc, MEMO_EDEADLK, "a -> b -> a in one thread: the inner call for a is MEMO_EDEADLK");
    is_code(rc, 0, "... b fell back to a value, so a succeeds");
    is_u64(v, 101, "... a == b + 1");
    is_code(memo_lookup_u64(c.m, 2, &v), 0, "... b is stored");
    is_u64(v, 100, "... b == 100");
    is_int(c.b_calls, 1, "... b computed once");
    memo_destroy(c.m);
}

/* ---- fib(90) through recursion on different keys ---- */

static int fib_fn(void *ctx, uint64_t n, uint64_t *value)
{
    memo_t  *m = (memo_t *)ctx;
    uint64_t a = 0, b = 0;
    if (n < 2) {
        *value = n;
        return 0;
    }
    int rc = memo_get_u64(m, n - 1, fib_fn, m, &a);
    if (rc == 0)
        rc = memo_get_u64(m, n - 2, fib_fn, m, &b);
    *value = a + b;
    return rc;
}

static void test_fib(void)
{
    memo_t *m = NULL;
    test_memo_create(&m, NULL);
    uint64_t v = 0;
    is_code(memo_get_u64(m, 90, fib_fn, m, &v), 0, "fib(90) by memo_get_u64 recursion: 0");
    is_u64(v, 2880067194370816120ull, "fib(90) == 2880067194370816120");
    memo_stats_t s;
    memo_stats(m, &s);
    is_u64(s.misses, 91, "fib(90): 91 computations (0..90)");
    is_u64(s.entries, 91, "fib(90): 91 entries");
    memo_destroy(m);
}

/* ---- cycles of threads ---- */

enum { MAX_CYCLE = 3 };

typedef struct cycle {
    unsigned          n;          /* threads in the cycle */
    memo_t           *memo[MAX_CYCLE]; /* thread i computes key[i] in memo[i] */
    uint64_t          key[MAX_CYCLE];
    bool              fallback;   /* fn turns EDEADLK into a fallback value instead of failing */
    pthread_barrier_t round_start;
    pthread_mutex_t   done_lock;
    pthread_cond_t    done_cond;
    unsigned          done_count;    /* outer calls finished, all rounds; under done_lock */
    atomic_uint       inside_count;  /* spin barrier "every thread is inside its fn" */
    unsigned          round;
    volatile bool     stop;
    int               inner_rc[MAX_CYCLE];
    int               outer_rc[MAX_CYCLE];
    uint64_t          value[MAX_CYCLE];
    atomic_int        leaf_calls;
} cycle_t;

static cycle_t CY;

static int leaf_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    atomic_fetch_add(&CY.leaf_calls, 1);
    *value = key;
    return 0;
}

static uint64_t fallback_value(uint64_t key)
{
    return key * 100 + 7;
}

/*
 * Every thread of the cycle is computing its key when this returns. A spinning barrier, not a
 * sleeping one: it releases the threads within a few hundred nanoseconds of each other, so that
 * they ask for each other's keys at the same moment (the race in which both could check the
 * chain before either has published what it waits for). Then each waits a little, a different
 * amount each round, to sweep the threads' relative timing.
 */
static void cycle_spin_barrier(unsigned i)
{
    unsigned target = CY.n * (CY.round + 1);
    atomic_fetch_add(&CY.inside_count, 1);
    for (unsigned spins = 0; atomic_load(&CY.inside_count) < target; spins++)
        if (spins > 100000)
            sched_yield(); /* oversubscribed: let the others run */
    /* a different small delay per thread and round: sweeps the threads' relative timing */
    uint64_t x = (CY.round + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31, x *= 0x94D049BB133111EBull, x ^= x >> 29;
    for (volatile unsigned d = 0; d < (unsigned)(x % 512); d++) {
    }
}

static int cycle_fn(void *ctx, uint64_t key, uint64_t *value)
{
    unsigned i = (unsigned)(uintptr_t)ctx;
    unsigned next = (i + 1) % CY.n;
    uint64_t v = 0;
    cycle_spin_barrier(i);
    int rc = memo_get_u64(CY.memo[next], CY.key[next], leaf_fn, NULL, &v);
    CY.inner_rc[i] = rc;
    if (rc == MEMO_EDEADLK && CY.fallback) {
        *value = fallback_value(key);
        return 0;
    }
    *value = v + 1;
    return rc;
}

static void *cycle_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    for (;;) {
        tap_barrier_wait(&CY.round_start);
        if (CY.stop)
            break;
        uint64_t v = 0;
        CY.outer_rc[i] = memo_get_u64(CY.memo[i], CY.key[i], cycle_fn, (void *)(uintptr_t)i, &v);
        CY.value[i] = v;
        pthread_mutex_lock(&CY.done_lock);
        CY.done_count++;
        pthread_cond_signal(&CY.done_cond);
        pthread_mutex_unlock(&CY.done_lock);
    }
    return NULL;
}

static void run_cycle(unsigned n, bool two_memos, bool fallback, unsigned rounds)
{
    char label[96];
    snprintf(label, sizeof label, "%u-thread cycle%s, %s", n, two_memos ? " across two memos" : "",
             fallback ? "fn falls back on EDEADLK" : "fn returns EDEADLK");
    memset(&CY, 0, sizeof CY);
    CY.n = n;
    CY.fallback = fallback;
    pthread_mutex_init(&CY.done_lock, NULL);
    pthread_cond_init(&CY.done_cond, NULL);
    memo_t *m1 = NULL, *m2 = NULL;
    test_memo_create(&m1, NULL);
    test_memo_create(&m2, NULL);
    for (unsigned i = 0; i < n; i++)
        CY.memo[i] = two_memos && (i % 2) ? m2 : m1;
    tap_barrier_init(&CY.round_start, n + 1);
    pthread_t tids[MAX_CYCLE];
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&tids[i], NULL, cycle_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");

    unsigned no_detection = 0, bad_outer = 0, bad_values = 0, several_detected = 0;
    uint64_t worst_ns = 0;
    for (unsigned round = 0; round < rounds; round++) {
        CY.round = round;
        for (unsigned i = 0; i < n; i++) {
            CY.key[i] = (uint64_t)round * 10 + i;
            CY.inner_rc[i] = CY.outer_rc[i] = -100;
        }
        uint64_t t0 = tap_now_ns();
        tap_barrier_wait(&CY.round_start);
        /* a hung round fails here, naming itself, long before the watchdog; the main thread
         * sleeps meanwhile, so as not to disturb the cycle's threads on 2 cores */
        struct timespec limit;
        clock_gettime(CLOCK_REALTIME, &limit);
        limit.tv_sec += 10;
        pthread_mutex_lock(&CY.done_lock);
        while (CY.done_count < n * (round + 1)) {
            if (pthread_cond_timedwait(&CY.done_cond, &CY.done_lock, &limit) == ETIMEDOUT) {
                ok(0, "%s: round %u hung for 10 s: the cycle was not detected", label, round);
                bail_out("%s: threads stuck in a cycle of computations", label);
            }
        }
        pthread_mutex_unlock(&CY.done_lock);
        uint64_t dt = tap_now_ns() - t0;
        worst_ns = dt > worst_ns ? dt : worst_ns;

        unsigned detected = 0;
        for (unsigned i = 0; i < n; i++) {
            detected += CY.inner_rc[i] == MEMO_EDEADLK;
            if (CY.inner_rc[i] != MEMO_EDEADLK && CY.inner_rc[i] != 0 && bad_outer < 5)
                diag("%s: round %u thread %u inner call returned %s", label, round, i,
                     memo_err_name(CY.inner_rc[i]));
        }
        if (detected == 0)
            no_detection++;
        if (detected > 1 && fallback)
            several_detected++;
        for (unsigned i = 0; i < n; i++) {
            int want = fallback ? 0 : MEMO_EDEADLK;
            if (CY.outer_rc[i] != want) {
                if (bad_outer++ < 5)
                    diag("%s: round %u thread %u got %s", label, round, i,
                         memo_err_name(CY.outer_rc[i]));
            }
        }
        if (fallback) {
            /* each value is its own fallback (it saw EDEADLK) or the next key's value + 1 */
            for (unsigned i = 0; i < n; i++) {
                unsigned next = (i + 1) % n;
                uint64_t want = CY.inner_rc[i] == MEMO_EDEADLK ? fallback_value(CY.key[i])
                                                                : CY.value[next] + 1;
                uint64_t stored = 0;
                if (CY.value[i] != want || memo_lookup_u64(CY.memo[i], CY.key[i], &stored) != 0 ||
                    stored != want)
                    bad_values++;
            }
        } else {
            for (unsigned i = 0; i < n; i++) {
                uint64_t stored;
                if (memo_lookup_u64(CY.memo[i], CY.key[i], &stored) != MEMO_ENOENT)
                    bad_values++;
            }
        }
    }
    CY.stop = true;
    tap_barrier_wait(&CY.round_start);
    tap_join_threads(tids, n);

    /* Rounds in which more than one thread saw the cycle: they checked at the same moment, the
     * race that a detection without Dekker-style ordering loses (shows the test reaches it). */
    if (fallback)
        diag("%s: %u of %u rounds had more than one thread detect the cycle", label,
             several_detected, rounds);
    is_int(no_detection, 0, "%s: %u rounds, at least one thread saw MEMO_EDEADLK in each", label,
           rounds);
    is_int(bad_outer, 0, "%s: every outer call returned %s", label,
           fallback ? "0" : "MEMO_EDEADLK (the failure travels to the waiters)");
    is_int(bad_values, 0, "%s: %s", label,
           fallback ? "values consistent and stored" : "nothing stored for a failed key");
    is_int(atomic_load(&CY.leaf_calls), 0, "%s: no inner call ran its own fn", label);
    cmp_u64(worst_ns / 1000000, <, 2000, "%s: slowest round in ms (no hang)", label);
    tap_barrier_destroy(&CY.round_start);
    pthread_mutex_destroy(&CY.done_lock);
    pthread_cond_destroy(&CY.done_cond);
    memo_destroy(m1);
    memo_destroy(m2);
}

/* ---- chains without a cycle: no MEMO_EDEADLK ---- */

typedef struct chain {
    memo_t    *m;
    atomic_int c_inside, a_inside;
    atomic_int calls[4];
} chain_t;

static chain_t CH;

enum { KEY_A = 1, KEY_B = 2, KEY_C = 3, KEY_D = 4 };

static int chain_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    uint64_t v = 0;
    int      rc = 0;
    atomic_fetch_add(&CH.calls[key - 1], 1);
    switch (key) {
    case KEY_C: /* slow, no nesting */
        atomic_store(&CH.c_inside, 1);
        tap_sleep_ms(60);
        v = 1000;
        break;
    case KEY_A: /* waits on C */
        atomic_store(&CH.a_inside, 1);
        rc = memo_get_u64(CH.m, KEY_C, chain_fn, NULL, &v);
        v += 1;
        break;
    case KEY_D: /* waits on A, which waits on C */
        rc = memo_get_u64(CH.m, KEY_A, chain_fn, NULL, &v);
        v += 10;
        break;
    default:
        v = 5;
    }
    *value = v;
    return rc;
}

typedef struct chain_job {
    uint64_t key;
    int      rc;
    uint64_t value;
} chain_job_t;

static void *chain_thread(void *arg)
{
    chain_job_t *j = (chain_job_t *)arg;
    j->rc = memo_get_u64(CH.m, j->key, chain_fn, NULL, &j->value);
    return NULL;
}

static void wait_flag(atomic_int *flag)
{
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (!atomic_load(flag) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
}

static void test_chains(void)
{
    int bad = 0;
    for (int round = 0; round < 20; round++) {
        memset(&CH, 0, sizeof CH);
        test_memo_create(&CH.m, NULL);
        /* C computes; A waits on C; B and D wait on A (D inside its own computation) */
        chain_job_t jobs[4] = { { KEY_C, -100, 0 }, { KEY_A, -100, 0 }, { KEY_A, -100, 0 },
                                { KEY_D, -100, 0 } };
        pthread_t   tids[4];
        pthread_create(&tids[0], NULL, chain_thread, &jobs[0]);
        wait_flag(&CH.c_inside);
        pthread_create(&tids[1], NULL, chain_thread, &jobs[1]);
        wait_flag(&CH.a_inside);
        pthread_create(&tids[2], NULL, chain_thread, &jobs[2]);
        pthread_create(&tids[3], NULL, chain_thread, &jobs[3]);
        tap_join_threads(tids, 4);
        const uint64_t want[4] = { 1000, 1001, 1001, 1011 };
        for (int i = 0; i < 4; i++)
            if (jobs[i].rc != 0 || jobs[i].value != want[i]) {
                if (bad++ < 5)
                    diag("chain round %d job %d: rc %s value %" PRIu64 " (want %" PRIu64 ")",
                         round, i, memo_err_name(jobs[i].rc), jobs[i].value, want[i]);
            }
        for (int k = 0; k < 4; k++)
            if (k != KEY_B - 1 && atomic_load(&CH.calls[k]) != 1)
                bad++;
        memo_destroy(CH.m);
    }
    is_int(bad, 0, "chains of waiting threads without a cycle (D -> A -> C, B -> A): no EDEADLK, right values, each once");
}

/* ---- a random DAG of keys under 8 threads: never EDEADLK ---- */

enum { DAG_KEYS = 3000, DAG_THREADS = 8 };

typedef struct dag {
    memo_t           *m;
    pthread_barrier_t start;
    uint64_t          expected[DAG_KEYS];
    atomic_int        deadlocks, wrong, other_rc;
} dag_t;

static dag_t DAG;

static uint64_t dag_combine(uint64_t k, uint64_t a, uint64_t b, uint64_t c)
{
    return a + 3 * b + 7 * c + k;
}

static int dag_fn(void *ctx, uint64_t k, uint64_t *value)
{
    (void)ctx;
    if (k < 7) {
        *value = k + 1;
        return 0;
    }
    uint64_t a = 0, b = 0, c = 0;
    int      rc;
    if (k % 5 == 0)
        sched_yield();
    /* edges only to smaller keys: no cycle exists */
    if ((rc = memo_get_u64(DAG.m, k / 2, dag_fn, NULL, &a)) != 0 ||
        (rc = memo_get_u64(DAG.m, k - 7, dag_fn, NULL, &c)) != 0 ||
        (rc = memo_get_u64(DAG.m, k / 3, dag_fn, NULL, &b)) != 0)
        return rc;
    *value = dag_combine(k, a, b, c);
    return 0;
}

static void *dag_thread(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (idx + 3);
    tap_barrier_wait(&DAG.start);
    for (int i = 0; i < 4 * DAG_KEYS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t k = i < 64 ? DAG_KEYS - 1 - (uint64_t)(idx * 64 + i) % DAG_KEYS : x % DAG_KEYS;
        uint64_t v = 0;
        int      rc = memo_get_u64(DAG.m, k, dag_fn, NULL, &v);
        if (rc == MEMO_EDEADLK)
            atomic_fetch_add(&DAG.deadlocks, 1);
        else if (rc != 0)
            atomic_fetch_add(&DAG.other_rc, 1);
        else if (v != DAG.expected[k])
            atomic_fetch_add(&DAG.wrong, 1);
    }
    return NULL;
}

static void test_dag(void)
{
    memset(&DAG, 0, sizeof DAG);
    for (uint64_t k = 0; k < DAG_KEYS; k++)
        DAG.expected[k] = k < 7 ? k + 1
                                : dag_combine(k, DAG.expected[k / 2], DAG.expected[k / 3],
                                              DAG.expected[k - 7]);
    test_memo_create(&DAG.m, NULL);
    tap_barrier_init(&DAG.start, DAG_THREADS);
    pthread_t tids[DAG_THREADS];
    for (unsigned i = 0; i < DAG_THREADS; i++)
        pthread_create(&tids[i], NULL, dag_thread, (void *)(uintptr_t)i);
    tap_join_threads(tids, DAG_THREADS);
    is_int(atomic_load(&DAG.deadlocks), 0, "DAG of %d keys, %d threads recursing: no false MEMO_EDEADLK",
           DAG_KEYS, DAG_THREADS);
    is_int(atomic_load(&DAG.other_rc), 0, "DAG: no other error");
    is_int(atomic_load(&DAG.wrong), 0, "DAG: every value right");
    memo_stats_t s;
    memo_stats(DAG.m, &s);
    is_u64(s.misses, DAG_KEYS, "DAG: each key computed once (misses == %d)", DAG_KEYS);
    tap_barrier_destroy(&DAG.start);
    memo_destroy(DAG.m);
}

int main(void)
{
    tap_watchdog(100);
    test_self(false, false);
    test_self(true, false);
    test_self(false, true);
    test_self(true, true);
    test_indirect_self();
    test_fib();
    run_cycle(2, false, false, 300);
    run_cycle(2, false, true, 300);
    run_cycle(3, false, false, 200);
    run_cycle(3, false, true, 200);
    run_cycle(2, true, false, 200);
    run_cycle(2, true, true, 200);
    test_chains();
    test_dag();
    return done_testing();
}
