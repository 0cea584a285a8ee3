/*
 * stress_torture: long, randomized versions of test_once, test_fail, test_deadlock, test_death
 * and test_timed. Every compute function has random delays injected (a per-thread PRNG picks
 * nothing, sched_yield, or a 0-200 us sleep), so that the windows between "found a marker",
 * "fn runs", "fn returned" and "outcome published" are swept in every order; every part runs
 * over both key spaces (u64 keys and byte keys of varying length), more threads than the 2
 * cores, started on a barrier, and a hang fails the part that hung (timed joins and round
 * deadlines; tap_watchdog behind them).
 *
 * (a) exactly once. A herd of 16 threads on one fresh key per round; then rounds of 12 threads
 *     churning over 2 x 2048 keys, each round in a fresh memo whose 2 shards grow while they
 *     insert. A per-key "computing now" counter must never exceed 1, each key is computed
 *     exactly once, every caller of a round gets the same value, and hits + waits + misses ==
 *     calls. Catches: a miss that
 *     inserts its marker without re-checking under the shard lock (two computations of a key,
 *     two values in one round), markers lost in a concurrent grow, split keys, lost wake-ups
 *     (a hang), miscounted statistics.
 * (b) failures. 12 threads on a moving window of keys; fn fails (positive code naming the key
 *     and the attempt) on random attempts, the 6th always succeeds. Every code a caller gets
 *     must belong to a failed run of its own key that was in flight when it called (it began
 *     before the next run's fn started: no stale codes); the runner gets its own code; no run
 *     follows a success; a key whose last run failed is recomputed by the next call; lookups
 *     find exactly the successful keys; stats.errors/misses/waits match the runs and callers.
 *     Catches: sleepers not woken on failure (hang), waiters that retry instead of taking the
 *     code (more runs), failed markers left in the table, codes mangled or handed to the wrong
 *     caller, a stored failure.
 * (c) cycles. 10 threads per round split at random into cycles of 1 to 5 keys (1 is
 *     self-recursion) across two memos and both key spaces, plus outsiders that call a key of a
 *     cycle; each key's fn asks for the next key of its cycle, after a spinning barrier (all of
 *     the cycle inside fn: a cycle of threads) or not (nested cycles inside one thread). In
 *     "propagate" cycles fn returns the inner code: every call must end with MEMO_EDEADLK and
 *     nothing be stored; in "fallback" cycles fn stores a fallback value on MEMO_EDEADLK: every
 *     call returns 0, each key is computed once, values are consistent around the cycle and at
 *     least one key holds its fallback. Meanwhile 4 threads recurse over random DAGs of keys in
 *     the same memos and must never see MEMO_EDEADLK. Catches: no cycle check (a round hangs),
 *     a check that loses the race of two threads closing a cycle at once (hang), detection that
 *     follows stale owners (a false MEMO_EDEADLK in the DAG), codes not travelling to waiters.
 * (d) thread death (not under TSan). Per round 1-3 victim threads compute a key and die inside
 *     fn: pthread_exit after a random number of delays, or pthread_cancel at a random time while
 *     in fn, in a nested computation, or asleep waiting for a key that a helper computes; some
 *     store a value first. 10 waiters with random start delays call the keys with a good fn:
 *     each must get 0 and the right value, exactly one good computation per key, the value
 *     stored, and a key nobody waited for is computed by the next call. Catches: no cleanup
 *     handler (waiters stranded: a hang), abandoned markers left behind, several waiters
 *     recomputing, a dead owner's value stored, nested cleanups that unwind only one level,
 *     waiter cleanup on cancellation that corrupts the flight or epoch state (later rounds).
 * (e) timeouts. As (b), with a slower fn (up to 2 ms more) and callers that use memo_get_timed /
 *     memo_get_u64_timed with random timeouts (0 to 10 ms; 1 in 8 untimed): only 0, MEMO_ETIMEDOUT
 *     or a code of that key's runs; a caller that ran fn never times out; a timeout never
 *     returns before its time (except timeout 0); no computation is duplicated (overlapping, or
 *     one after a success); every successful run is stored; hits + waits + misses + timeouts ==
 *     calls. Catches: a timed-out waiter that takes the marker out (a second computation starts
 *     while the first runs, and the first's value is lost), timeouts applied to the caller's own
 *     fn, ignored deadlines.
 *
 * Sizes scale with MEMO_STRESS_SCALE (default 1, about 10-30 s here); under sanitizers the
 * iterations are divided by 2. MEMO_STRESS_SEED replays a run's random choices (the seed is
 * printed; thread scheduling still differs from run to run); MEMO_STRESS_PARTS=be runs only
 * parts (b) and (e).
 *
 * (b) also has a herd on a key whose first run fails with code 1, the smallest positive code:
 * the caller that ran it and its waiters must get 1, at most one more run follows. Catches a
 * miss path whose "another thread inserted first, look again" return value is 1 (fn's own code
 * 1 made the caller run fn again; fixed in ba95231, which this part failed before).
 *
 * Verified against the planted bugs of src/mutants.h (RelWithDebInfo, scale 1, one run each):
 *  - M1 double-compute: two computations of a key at once and more runs than keys in (a), (b),
 *    (c), (d) and (e) (with the marker inserted by ck_hs_set; with the older ck_hs_put_unique
 *    version, the second thread's insert fails: MEMO_ENOMEM, split values, counts off in all).
 *  - M2 free-now: calls return errors, then the binary dies of SIGSEGV in (a).
 *  - M3 no-wake-on-fail: (b) hangs: 11 of 12 threads still asleep after the 60 s part limit;
 *    (e) alone (MEMO_STRESS_PARTS=e) hangs the same way through its untimed calls.
 *  - M4 no-death-cleanup: (d) hangs: 8 of 10 waiters still stranded after 60 s.
 *  - M5 ready-before-value: wrong values in (a), (b), (c), (d) and (e).
 *  - M7 no-cycle-check: (c) round 0 hangs and fails after 15 s (the round limit).
 *  - M8 timeout-removes: (e) fails 8 ways: two computations of a key at once, runs after a
 *    success, codes of unplanned runs, value not stored (lookups and stats.entries wrong).
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

#include "stress.h"

/* ---- scale, seed, randomness -------------------------------------------------------------- */

static unsigned g_scale = 1;
static uint64_t g_seed;
static unsigned g_part_limit_s; /* a part (or a round) still running after this is hung */

#ifdef TAP_SANITIZED
enum { SANITIZER_DIVISOR = 2 };
#else
enum { SANITIZER_DIVISOR = 1 };
#endif

static unsigned sized(unsigned base)
{
    uint64_t n = (uint64_t)base * g_scale / SANITIZER_DIVISOR;
    return n < 1 ? 1 : (unsigned)n;
}

static prng_t prng_make(unsigned part, uint64_t stream)
{
    prng_t p = { mix64(g_seed ^ ((uint64_t)part << 56) ^ mix64(stream + 1)) };
    return p;
}

/* The calling thread's generator: fn runs in its caller's thread, so it draws from here. */
static _Thread_local prng_t tl_rng;
static _Thread_local int    tl_index; /* the worker's index within its part */

static void thread_init(unsigned part, uint64_t index)
{
    tl_rng = prng_make(part, index);
    tl_index = (int)index;
}

/* Nothing, a yield, or a sleep of 0-200 us (nanosleep: also a cancellation point). */
static void jitter(void)
{
    uint64_t r = prng_next(&tl_rng);
    switch (r % 4) {
    case 0:
        break;
    case 1:
        sched_yield();
        break;
    default:
        tap_sleep_ns((r >> 8) % 200001);
        break;
    }
}

/* Joins n threads within the part's limit, or fails naming the part and bails out. */
static void join_or_bail(pthread_t *tids, unsigned n, const char *label)
{
    unsigned stuck = tap_join_threads_timed(tids, n, g_part_limit_s);
    if (stuck != 0) {
        ok(0, "%s: %u of %u threads still running after %u s: hung", label, stuck, n,
           g_part_limit_s);
        bail_out("%s hung", label);
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        bail_out("out of memory (%zu x %zu)", n, size);
    return p;
}

static memo_t *new_memo(unsigned shards)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = shards;
    memo_t *m = NULL;
    int     rc = test_memo_create(&m, &cfg);
    if (rc != 0)
        bail_out("memo_create: %s", memo_strerror(rc));
    return m;
}

static void update_max(atomic_int *max, int now)
{
    int seen = atomic_load(max);
    while (now > seen && !atomic_compare_exchange_weak(max, &seen, now)) {
    }
}

/* ---- both key spaces -------------------------------------------------------------------------
 * Space 0: u64 key k, u64 value. Space 1: byte key = k's 8 bytes + (k % 9) tag bytes; byte value
 * = the u64 value's 8 bytes + the key echoed (so a value handed to the wrong key shows).
 */

#define BAD_SHAPE (-1000)    /* a byte value that is not 8 bytes + the key */
#define REF_NOT_EMPTY (-1001) /* a failed call that left data in its ref */

typedef struct bkey {
    unsigned char b[24];
    size_t        len;
} bkey_t;

static bkey_t bkey_make(uint64_t k)
{
    bkey_t key;
    memcpy(key.b, &k, 8);
    key.len = 8 + (size_t)(k % 9);
    for (size_t i = 8; i < key.len; i++)
        key.b[i] = (unsigned char)('a' + i + k % 5);
    return key;
}

static bool bkey_parse(const void *key, size_t len, uint64_t *k)
{
    if (len < 8 || len > 16)
        return false;
    memcpy(k, key, 8);
    bkey_t want = bkey_make(*k);
    return want.len == len && memcmp(want.b, key, len) == 0;
}

static int put_value(memo_result_t *out, const void *key, size_t key_len, uint64_t v)
{
    unsigned char *p = (unsigned char *)memo_result_alloc(out, 8 + key_len);
    if (p == NULL)
        return MEMO_ENOMEM;
    memcpy(p, &v, 8);
    memcpy(p + 8, key, key_len);
    return 0;
}

static bool ref_value(const memo_ref_t *r, const bkey_t *key, uint64_t *v)
{
    if (r->data == NULL || r->len != 8 + key->len ||
        memcmp((const char *)r->data + 8, key->b, key->len) != 0)
        return false;
    memcpy(v, r->data, 8);
    return true;
}

/* get (timed or not) in either space; the value copied out. */
static int kget(memo_t *m, int space, uint64_t k, memo_fn *fb, memo_fn_u64 *fu, void *ctx,
                bool timed, uint64_t timeout_ns, uint64_t *value)
{
    if (space == 0)
        return timed ? memo_get_u64_timed(m, k, fu, ctx, timeout_ns, value)
                     : memo_get_u64(m, k, fu, ctx, value);
    bkey_t     key = bkey_make(k);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = timed ? memo_get_timed(m, key.b, key.len, fb, ctx, timeout_ns, &r)
                          : memo_get(m, key.b, key.len, fb, ctx, &r);
    if (rc == 0) {
        if (!ref_value(&r, &key, value))
            rc = BAD_SHAPE;
        memo_release(&r);
    } else if (r.data != NULL) {
        rc = REF_NOT_EMPTY;
    }
    return rc;
}

static int klookup(memo_t *m, int space, uint64_t k, uint64_t *value)
{
    if (space == 0)
        return memo_lookup_u64(m, k, value);
    bkey_t     key = bkey_make(k);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_lookup(m, key.b, key.len, &r);
    if (rc == 0) {
        if (!ref_value(&r, &key, value))
            rc = BAD_SHAPE;
        memo_release(&r);
    }
    return rc;
}

static const char *space_name(int space)
{
    return space ? "bytes" : "u64";
}

/* ============================================================================================
 * (a) exactly once: herd and churn
 */

enum { HERD_THREADS = 16, CHURN_THREADS = 12, CHURN_KEYS = 2048 };

typedef struct herd {
    memo_t              *m;
    unsigned             rounds;
    pthread_barrier_t    start;
    atomic_int          *calls;     /* [round] fn calls */
    atomic_int          *computing; /* [round] fn running now */
    atomic_int           max_computing;
    atomic_uint_fast64_t seq;
    uint64_t            *got; /* [thread][round] */
    int                 *rc;  /* [thread][round] */
} herd_t;

static herd_t H;

static uint64_t herd_compute(uint64_t round)
{
    if (round >= H.rounds)
        return 0; /* a key nobody asked for: the round checks show it */
    atomic_fetch_add(&H.calls[round], 1);
    update_max(&H.max_computing, atomic_fetch_add(&H.computing[round], 1) + 1);
    jitter();
    jitter();
    uint64_t v = atomic_fetch_add(&H.seq, 1) + 1000;
    atomic_fetch_sub(&H.computing[round], 1);
    return v;
}

static int herd_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = herd_compute(key);
    return 0;
}

static int herd_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k))
        return 9999;
    return put_value(out, key, key_len, herd_compute(k));
}

static void *herd_thread(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    thread_init(1, index);
    for (unsigned round = 0; round < H.rounds; round++) {
        tap_barrier_wait(&H.start);
        if (prng_next(&tl_rng) % 2)
            jitter(); /* some arrive late: hit, or wait on a computation half done */
        uint64_t v = 0;
        int      rc = kget(H.m, (int)(round % 2), round, herd_fn_bytes, herd_fn_u64, NULL, false,
                           0, &v);
        H.got[(size_t)index * H.rounds + round] = v;
        H.rc[(size_t)index * H.rounds + round] = rc;
    }
    return NULL;
}

static void run_herd(void)
{
    const char *label = "(a) herd";
    memset(&H, 0, sizeof H);
    H.rounds = sized(4000);
    H.m = new_memo(0);
    H.calls = xcalloc(H.rounds, sizeof *H.calls);
    H.computing = xcalloc(H.rounds, sizeof *H.computing);
    H.got = xcalloc((size_t)HERD_THREADS * H.rounds, sizeof *H.got);
    H.rc = xcalloc((size_t)HERD_THREADS * H.rounds, sizeof *H.rc);
    tap_barrier_init(&H.start, HERD_THREADS);
    diag("%s: %u threads x %u rounds, one fresh key per round, u64 and byte keys alternating",
         label, HERD_THREADS, H.rounds);
    pthread_t tids[HERD_THREADS];
    uint64_t  t0 = tap_now_ns();
    for (unsigned i = 0; i < HERD_THREADS; i++)
        if (pthread_create(&tids[i], NULL, herd_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    join_or_bail(tids, HERD_THREADS, label);

    unsigned not_once = 0, split = 0, bad_rc = 0;
    for (unsigned round = 0; round < H.rounds; round++) {
        if (atomic_load(&H.calls[round]) != 1 && not_once++ < 5)
            diag("%s: round %u (%s key) computed %d times", label, round,
                 space_name((int)(round % 2)), atomic_load(&H.calls[round]));
        for (unsigned i = 0; i < HERD_THREADS; i++) {
            if (H.rc[(size_t)i * H.rounds + round] != 0 && bad_rc++ < 5)
                diag("%s: round %u thread %u got %s", label, round, i,
                     memo_err_name(H.rc[(size_t)i * H.rounds + round]));
        }
        for (unsigned i = 1; i < HERD_THREADS; i++)
            if (H.got[(size_t)i * H.rounds + round] != H.got[round]) {
                split++;
                break;
            }
    }
    is_int(atomic_load(&H.max_computing), 1, "%s: never two computations of a key at once", label);
    is_int(not_once, 0, "%s: exactly one computation in each of %u rounds", label, H.rounds);
    is_int(split, 0, "%s: in every round all %d threads got the same value", label, HERD_THREADS);
    is_int(bad_rc, 0, "%s: every call returned 0", label);
    memo_stats_t s;
    memo_stats(H.m, &s);
    is_u64(s.misses, H.rounds, "%s: stats.misses == rounds", label);
    is_u64(s.hits + s.waits + s.misses, (uint64_t)HERD_THREADS * H.rounds,
           "%s: hits + waits + misses == calls (hits %" PRIu64 ", waits %" PRIu64 ")", label,
           s.hits, s.waits);
    is_u64(s.entries, H.rounds, "%s: stats.entries == rounds", label);
    ok(s.waits > 0, "%s: callers did wait on computations (waits %" PRIu64 ")", label, s.waits);
    diag("%s: %.1f s", label, (double)(tap_now_ns() - t0) / 1e9);
    tap_barrier_destroy(&H.start);
    memo_destroy(H.m);
    free(H.calls);
    free(H.computing);
    free(H.got);
    free(H.rc);
}

typedef struct churn {
    memo_t              *m;
    unsigned             calls_per_thread, rounds, round;
    pthread_barrier_t    start;
    atomic_int           computing[2][CHURN_KEYS];
    atomic_int           computed[2][CHURN_KEYS];
    atomic_int           max_computing, wrong, bad_rc, bad_key;
} churn_t;

static churn_t CH;

static uint64_t churn_value(int space, uint64_t k)
{
    return mix64(k * 2 + (uint64_t)space + 77);
}

static int churn_compute(int space, uint64_t k, uint64_t *v)
{
    if (k >= CHURN_KEYS) {
        atomic_fetch_add(&CH.bad_key, 1);
        return 9999;
    }
    update_max(&CH.max_computing, atomic_fetch_add(&CH.computing[space][k], 1) + 1);
    atomic_fetch_add(&CH.computed[space][k], 1);
    jitter();
    *v = churn_value(space, k);
    atomic_fetch_sub(&CH.computing[space][k], 1);
    return 0;
}

static int churn_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return churn_compute(0, key, value);
}

static int churn_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k)) {
        atomic_fetch_add(&CH.bad_key, 1);
        return 9999;
    }
    int rc = churn_compute(1, k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static void *churn_thread(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    thread_init(2, (uint64_t)CH.round * 64 + index);
    tap_barrier_wait(&CH.start);
    uint64_t sweep = prng_next(&tl_rng);
    for (unsigned i = 0; i < CH.calls_per_thread; i++) {
        uint64_t r = prng_next(&tl_rng);
        /* first a sweep over every key from a random start, so that all keys are asked for
         * and threads collide on fresh ones; then random keys */
        uint64_t k = i < 2 * CHURN_KEYS ? (sweep + i / 2) % CHURN_KEYS : (r >> 1) % CHURN_KEYS;
        int      space = i < 2 * CHURN_KEYS ? (int)(i % 2) : (int)(r & 1);
        uint64_t v = 0;
        int      rc = kget(CH.m, space, k, churn_fn_bytes, churn_fn_u64, NULL, false, 0, &v);
        if (rc != 0)
            atomic_fetch_add(&CH.bad_rc, 1);
        else if (v != churn_value(space, k))
            atomic_fetch_add(&CH.wrong, 1);
    }
    return NULL;
}

static void run_churn(void)
{
    const char *label = "(a) churn";
    memset(&CH, 0, sizeof CH);
    CH.rounds = sized(16);
    CH.calls_per_thread = 20000;
    diag("%s: %u rounds of %u threads x %u calls over %u keys in each space, a fresh memo each "
         "round with 2 shards and no size hint (the tables grow while the threads insert)",
         label, CH.rounds, CHURN_THREADS, CH.calls_per_thread, CHURN_KEYS);
    const uint64_t calls = (uint64_t)CHURN_THREADS * CH.calls_per_thread;
    unsigned       not_once = 0, bad_stats = 0;
    uint64_t       waits = 0, t0 = tap_now_ns();
    for (unsigned round = 0; round < CH.rounds; round++) {
        CH.round = round;
        CH.m = new_memo(2);
        for (int space = 0; space < 2; space++)
            for (unsigned k = 0; k < CHURN_KEYS; k++)
                atomic_store(&CH.computed[space][k], 0);
        tap_barrier_init(&CH.start, CHURN_THREADS);
        pthread_t tids[CHURN_THREADS];
        for (unsigned i = 0; i < CHURN_THREADS; i++)
            if (pthread_create(&tids[i], NULL, churn_thread, (void *)(uintptr_t)i) != 0)
                bail_out("pthread_create");
        join_or_bail(tids, CHURN_THREADS, label);
        tap_barrier_destroy(&CH.start);
        for (int space = 0; space < 2; space++)
            for (unsigned k = 0; k < CHURN_KEYS; k++)
                if (atomic_load(&CH.computed[space][k]) != 1 && not_once++ < 5)
                    diag("%s: round %u: %s key %u computed %d times", label, round,
                         space_name(space), k, atomic_load(&CH.computed[space][k]));
        memo_stats_t s;
        memo_stats(CH.m, &s);
        waits += s.waits;
        if ((s.misses != 2 * CHURN_KEYS || s.hits + s.waits + s.misses != calls ||
             s.entries != 2 * CHURN_KEYS) && bad_stats++ < 5)
            diag("%s: round %u: misses %" PRIu64 ", hits + waits + misses %" PRIu64
                 ", entries %" PRIu64 " (want %d, %" PRIu64 ", %d)", label, round, s.misses,
                 s.hits + s.waits + s.misses, s.entries, 2 * CHURN_KEYS, calls, 2 * CHURN_KEYS);
        memo_destroy(CH.m);
    }
    is_int(atomic_load(&CH.max_computing), 1, "%s: never two computations of a key at once",
           label);
    is_int(not_once, 0, "%s: each of 2 x %d keys computed exactly once in every round", label,
           CHURN_KEYS);
    is_int(atomic_load(&CH.bad_rc), 0, "%s: every call returned 0", label);
    is_int(atomic_load(&CH.wrong), 0, "%s: every value is the key's", label);
    is_int(atomic_load(&CH.bad_key), 0, "%s: fn always got a well-formed key", label);
    is_int(bad_stats, 0, "%s: in every round misses == entries == keys and hits + waits + "
           "misses == %" PRIu64 " calls (waits %" PRIu64 " in all)", label, calls, waits);
    diag("%s: %.1f s", label, (double)(tap_now_ns() - t0) / 1e9);
}

/* ============================================================================================
 * (b) failures and (e) timeouts: "flaky" keys, computed until a run succeeds
 */

enum { FLAKY_THREADS = 12, FLAKY_MAX_RUNS = 6, FLAKY_WINDOW = 4 };

#define TOO_MANY_RUNS (1 << 30) /* fn's code when a key is computed more often than planned */

typedef struct flaky_run {
    atomic_uint_fast64_t entry_ns; /* when its fn began */
    atomic_int           runner;   /* the worker that ran it */
    atomic_int           outcome;  /* 0 running (or never), 1 succeeded, 2 failed */
} flaky_run_t;

typedef struct flaky_key {
    atomic_int runs;
    atomic_int computing;
} flaky_key_t;

typedef struct flaky_call {
    uint64_t start_ns, end_ns;
    uint64_t timeout_ns;
    uint32_t key;
    int8_t   space;
    int8_t   timed;
    int8_t   ran; /* the run this call ran itself, or -1 */
    int      rc;
} flaky_call_t;

typedef struct flaky {
    const char          *label;
    unsigned             part;
    bool                 timed;
    unsigned             slow_us; /* fn sleeps up to this much more */
    unsigned             threads, calls_per_thread, keys;
    memo_t              *m;
    pthread_barrier_t    start;
    atomic_uint          cursor;
    flaky_key_t         *key[2];  /* [space][k] */
    flaky_run_t         *run[2];  /* [space][k * FLAKY_MAX_RUNS + a] */
    flaky_call_t        *calls;   /* [thread][i] */
    atomic_int           max_computing, too_many, bad_key, wrong;
} flaky_t;

static flaky_t FK;

static _Thread_local int tl_ran; /* the run that the last call of this thread ran, or -1 */

/* Codes from 2 up: code 1 has a sub-part of its own (run_code_one). */
static int flaky_code(int space, uint64_t k, int a)
{
    return 2 + (int)(((uint64_t)space * FK.keys + k) * FLAKY_MAX_RUNS + (uint64_t)a);
}

static bool flaky_decode(int code, int *space, uint64_t *k, int *a)
{
    if (code < 2 || code > flaky_code(1, FK.keys - 1, FLAKY_MAX_RUNS - 1))
        return false;
    uint64_t c = (uint64_t)code - 2;
    *a = (int)(c % FLAKY_MAX_RUNS);
    c /= FLAKY_MAX_RUNS;
    *k = c % FK.keys;
    *space = (int)(c / FK.keys);
    return true;
}

static flaky_run_t *flaky_run_at(int space, uint64_t k, int a)
{
    return &FK.run[space][k * FLAKY_MAX_RUNS + (uint64_t)a];
}

static bool flaky_fails(int space, uint64_t k, int a)
{
    /* two in three runs fail, the last planned one never does */
    return a < FLAKY_MAX_RUNS - 1 &&
           mix64(g_seed ^ (k << 8) ^ ((uint64_t)space << 4) ^ (uint64_t)a) % 3 != 0;
}

static uint64_t flaky_value(int space, uint64_t k)
{
    return mix64(k * 3 + (uint64_t)space + 0xF1A);
}

static int flaky_compute(int space, uint64_t k, uint64_t *value)
{
    if (k >= FK.keys) {
        atomic_fetch_add(&FK.bad_key, 1);
        return TOO_MANY_RUNS;
    }
    int a = atomic_fetch_add(&FK.key[space][k].runs, 1);
    tl_ran = a;
    if (a >= FLAKY_MAX_RUNS) {
        atomic_fetch_add(&FK.too_many, 1);
        return TOO_MANY_RUNS;
    }
    flaky_run_t *run = &FK.run[space][k * FLAKY_MAX_RUNS + (uint64_t)a];
    atomic_store(&run->entry_ns, tap_now_ns());
    atomic_store(&run->runner, tl_index);
    update_max(&FK.max_computing, atomic_fetch_add(&FK.key[space][k].computing, 1) + 1);
    jitter();
    if (FK.slow_us)
        tap_sleep_ns(prng_next(&tl_rng) % (FK.slow_us * 1000ull));
    jitter();
    bool fail = flaky_fails(space, k, a);
    atomic_fetch_sub(&FK.key[space][k].computing, 1);
    atomic_store(&run->outcome, fail ? 2 : 1);
    if (fail)
        return flaky_code(space, k, a);
    *value = flaky_value(space, k);
    return 0;
}

static int flaky_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return flaky_compute(0, key, value);
}

static int flaky_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k)) {
        atomic_fetch_add(&FK.bad_key, 1);
        return TOO_MANY_RUNS;
    }
    int rc = flaky_compute(1, k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static const uint64_t flaky_timeouts[] = { 0, 1000, 20000, 100000, 500000, 2000000, 10000000 };

static void *flaky_thread(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    thread_init(FK.part, index);
    flaky_call_t *rec = &FK.calls[(size_t)index * FK.calls_per_thread];
    tap_barrier_wait(&FK.start);
    for (unsigned i = 0; i < FK.calls_per_thread; i++) {
        /* a window of keys that moves on as the threads call: several threads meet on each
         * key while it fails and is recomputed, and then it is hit a while */
        uint64_t pos = atomic_fetch_add(&FK.cursor, 1) / (FK.threads * 2);
        uint64_t r = prng_next(&tl_rng);
        uint64_t k = pos + r % FLAKY_WINDOW;
        int      space = (int)((r >> 8) & 1);
        bool     timed = FK.timed && (r >> 9) % 8 != 0;
        uint64_t timeout =
            flaky_timeouts[(r >> 12) % (sizeof flaky_timeouts / sizeof flaky_timeouts[0])];
        uint64_t v = 0;
        tl_ran = -1;
        uint64_t t0 = tap_now_ns();
        int      rc = kget(FK.m, space, k, flaky_fn_bytes, flaky_fn_u64, NULL, timed, timeout, &v);
        uint64_t t1 = tap_now_ns();
        if (rc == 0 && v != flaky_value(space, k))
            atomic_fetch_add(&FK.wrong, 1);
        rec[i] = (flaky_call_t){ t0, t1, timeout, (uint32_t)k, (int8_t)space, (int8_t)timed,
                                 (int8_t)tl_ran, rc };
    }
    return NULL;
}

static void run_flaky(const char *label, unsigned part, bool timed, unsigned slow_us,
                      unsigned calls_per_thread)
{
    memset(&FK, 0, sizeof FK);
    FK.label = label;
    FK.part = part;
    FK.timed = timed;
    FK.slow_us = slow_us;
    FK.threads = FLAKY_THREADS;
    FK.calls_per_thread = calls_per_thread;
    FK.keys = FK.calls_per_thread / 2 + FLAKY_WINDOW + 1; /* the cursor's reach */
    FK.m = new_memo(0);
    for (int s = 0; s < 2; s++) {
        FK.key[s] = xcalloc(FK.keys, sizeof *FK.key[s]);
        FK.run[s] = xcalloc((size_t)FK.keys * FLAKY_MAX_RUNS, sizeof *FK.run[s]);
    }
    FK.calls = xcalloc((size_t)FK.threads * FK.calls_per_thread, sizeof *FK.calls);
    tap_barrier_init(&FK.start, FK.threads);
    diag("%s: %u threads x %u calls, a moving window of %u keys (of %u per space), up to %d runs "
         "per key%s",
         label, FK.threads, FK.calls_per_thread, FLAKY_WINDOW, FK.keys, FLAKY_MAX_RUNS,
         timed ? ", random timeouts 0-10 ms (1 in 8 calls untimed)" : "");
    pthread_t *tids = xcalloc(FK.threads, sizeof *tids);
    uint64_t   t0 = tap_now_ns();
    for (unsigned i = 0; i < FK.threads; i++)
        if (pthread_create(&tids[i], NULL, flaky_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    join_or_bail(tids, FK.threads, label);
    uint64_t t1 = tap_now_ns();

    memo_stats_t s;
    memo_stats(FK.m, &s); /* quiescent: exact; taken before the checks' own calls */

    /* runs: every one but the last of a key failed; the last may have succeeded */
    uint64_t total_runs = 0, failed_runs = 0, good_runs = 0;
    unsigned run_after_success = 0, not_settled = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t k = 0; k < FK.keys; k++) {
            int n = atomic_load(&FK.key[sp][k].runs);
            n = n > FLAKY_MAX_RUNS ? FLAKY_MAX_RUNS : n;
            total_runs += (uint64_t)n;
            for (int a = 0; a < n; a++) {
                int o = atomic_load(&FK.run[sp][k * FLAKY_MAX_RUNS + (uint64_t)a].outcome);
                failed_runs += o == 2;
                good_runs += o == 1;
                if (o == 0)
                    not_settled++;
                if (o == 1 && a != n - 1 && run_after_success++ < 5)
                    diag("%s: %s key %" PRIu64 " ran again after run %d succeeded", label,
                         space_name(sp), k, a);
            }
        }

    /* calls: which codes each got, against the runs */
    unsigned *runner_calls[2];
    for (int sp = 0; sp < 2; sp++)
        runner_calls[sp] = xcalloc((size_t)FK.keys * FLAKY_MAX_RUNS, sizeof(unsigned));
    uint64_t calls = (uint64_t)FK.threads * FK.calls_per_thread;
    uint64_t fail_waiters = 0, timeouts = 0, max_overshoot = 0;
    unsigned bad_rc = 0, foreign = 0, stale = 0, own_run_wrong = 0, timed_out_own = 0,
             early_timeout = 0, untimed_timeout = 0, zero_without_success = 0;
    for (unsigned t = 0; t < FK.threads; t++)
        for (unsigned i = 0; i < FK.calls_per_thread; i++) {
            const flaky_call_t *c = &FK.calls[(size_t)t * FK.calls_per_thread + i];
            int                 sp = c->space;
            uint64_t            k = c->key;
            if (c->ran >= 0 && c->ran < FLAKY_MAX_RUNS) {
                runner_calls[sp][k * FLAKY_MAX_RUNS + (uint64_t)c->ran]++;
                const flaky_run_t *run = &FK.run[sp][k * FLAKY_MAX_RUNS + (uint64_t)c->ran];
                int want = atomic_load(&run->outcome) == 2 ? flaky_code(sp, k, c->ran) : 0;
                if (c->rc != want || atomic_load(&run->runner) != (int)t) {
                    if (own_run_wrong++ < 5)
                        diag("%s: thread %u ran %s key %" PRIu64 " run %d but got %d (%s)",
                             label, t, space_name(sp), k, c->ran, c->rc, memo_err_name(c->rc));
                }
            }
            if (c->rc == 0) {
                bool any_good = false;
                for (int a = 0; a < FLAKY_MAX_RUNS; a++)
                    any_good |= atomic_load(&flaky_run_at(sp, k, a)->outcome) == 1;
                if (!any_good)
                    zero_without_success++;
            } else if (c->rc == MEMO_ETIMEDOUT) {
                timeouts++;
                if (!c->timed)
                    untimed_timeout++;
                if (c->ran >= 0)
                    timed_out_own++;
                uint64_t took = c->end_ns - c->start_ns;
                /* start_ns is read before the call and memo's deadline after it, on the same
                 * clock (CLOCK_MONOTONIC): no slack is needed, even for 1 us timeouts. */
                if (c->timeout_ns > 0 && took < c->timeout_ns && early_timeout++ < 5)
                    diag("%s: MEMO_ETIMEDOUT after %" PRIu64 " ns, timeout %" PRIu64 " ns", label,
                         took, c->timeout_ns);
                if (took > c->timeout_ns && took - c->timeout_ns > max_overshoot)
                    max_overshoot = took - c->timeout_ns;
            } else if (c->rc > 0) {
                int      csp, a;
                uint64_t ck;
                if (!flaky_decode(c->rc, &csp, &ck, &a) || csp != sp || ck != k ||
                    atomic_load(&FK.run[sp][k * FLAKY_MAX_RUNS + (uint64_t)a].outcome) != 2) {
                    if (foreign++ < 5)
                        diag("%s: a call for %s key %" PRIu64 " got code %d, not one of its "
                             "failed runs", label, space_name(sp), k, c->rc);
                    continue;
                }
                if (c->ran >= 0)
                    continue; /* its own run: checked above */
                fail_waiters++;
                /* a waiter found run a's marker, so it began before run a + 1's marker was
                 * inserted, which is before that run's fn began */
                if (a + 1 < FLAKY_MAX_RUNS && a + 1 < atomic_load(&FK.key[sp][k].runs)) {
                    uint64_t next = atomic_load(&flaky_run_at(sp, k, a + 1)->entry_ns);
                    if (c->start_ns >= next && stale++ < 5)
                        diag("%s: a call for %s key %" PRIu64 " got run %d's code, though it "
                             "began %" PRIu64 " ns after run %d had started", label,
                             space_name(sp), k, a, c->start_ns - next, a + 1);
                }
            } else {
                if (bad_rc++ < 5)
                    diag("%s: a call for %s key %" PRIu64 " got %d (%s)", label, space_name(sp),
                         k, c->rc, memo_err_name(c->rc));
            }
        }
    unsigned runner_mismatch = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t k = 0; k < FK.keys; k++)
            for (int a = 0; a < FLAKY_MAX_RUNS && a < atomic_load(&FK.key[sp][k].runs); a++)
                if (runner_calls[sp][k * FLAKY_MAX_RUNS + (uint64_t)a] != 1 &&
                    runner_mismatch++ < 5)
                    diag("%s: %s key %" PRIu64 " run %d: %u calls say they ran it", label,
                         space_name(sp), k, a, runner_calls[sp][k * FLAKY_MAX_RUNS + (uint64_t)a]);
    for (int sp = 0; sp < 2; sp++)
        free(runner_calls[sp]);

    is_int(atomic_load(&FK.max_computing), 1, "%s: never two computations of a key at once",
           label);
    is_int(atomic_load(&FK.too_many) + atomic_load(&FK.bad_key), 0,
           "%s: no key computed more often than planned, no malformed key", label);
    is_int(run_after_success, 0, "%s: no key computed again after a successful run", label);
    is_int(not_settled, 0, "%s: every run finished", label);
    is_int(bad_rc, 0, "%s: every call got 0, %sa positive code", label,
           FK.timed ? "MEMO_ETIMEDOUT or " : "");
    is_int(foreign, 0, "%s: every code is that of a failed run of the caller's own key", label);
    is_int(stale, 0, "%s: no caller got the code of a run that was over before it called",
           label);
    is_int(own_run_wrong + runner_mismatch, 0,
           "%s: each run was run by exactly one call, which got that run's outcome", label);
    is_int(zero_without_success, 0, "%s: 0 only for keys that have a successful run", label);
    is_int(atomic_load(&FK.wrong), 0, "%s: every value is the key's", label);
    if (FK.timed) {
        is_int(timed_out_own, 0, "%s: a call that ran fn itself never timed out", label);
        is_int(untimed_timeout, 0, "%s: untimed calls never got MEMO_ETIMEDOUT", label);
        is_int(early_timeout, 0, "%s: no MEMO_ETIMEDOUT before its timeout", label);
        /* fn runs for at most a few ms here, so an overshoot bound would not tell a timed wait
         * from one that waits for the computation: test_misbehave_waiters (f) checks that bound. */
        diag("%s: worst overshoot of a timed-out call: %.3f ms", label, (double)max_overshoot / 1e6);
        ok(timeouts > 0, "%s: calls did time out (%" PRIu64 " of %" PRIu64 ")", label, timeouts,
           calls);
    }
    ok(fail_waiters > 0, "%s: waiters took failure codes from others' runs (%" PRIu64 ")", label,
       fail_waiters);

    is_u64(s.misses, total_runs, "%s: stats.misses == runs", label);
    is_u64(s.errors, failed_runs, "%s: stats.errors == failed runs", label);
    is_u64(s.hits + s.waits + s.misses + timeouts, calls,
           "%s: hits + waits + misses%s == calls (hits %" PRIu64 ", waits %" PRIu64 ")", label,
           FK.timed ? " + timeouts" : "", s.hits, s.waits);
    cmp_u64(s.waits, >=, fail_waiters, "%s: stats.waits counts the failure codes taken", label);
    is_u64(s.entries, good_runs, "%s: stats.entries == successful runs", label);

    /* every successful run is stored; a key whose last run failed is computed by the next call */
    unsigned bad_stored = 0, not_recomputed = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t k = 0; k < FK.keys; k++) {
            int n = atomic_load(&FK.key[sp][k].runs);
            if (n == 0 || n > FLAKY_MAX_RUNS)
                continue;
            int      last = atomic_load(&FK.run[sp][k * FLAKY_MAX_RUNS + (uint64_t)n - 1].outcome);
            uint64_t v = 0;
            int      rc = klookup(FK.m, sp, k, &v);
            if (last == 1 ? (rc != 0 || v != flaky_value(sp, k)) : rc != MEMO_ENOENT) {
                if (bad_stored++ < 5)
                    diag("%s: %s key %" PRIu64 ": last run %s, lookup %s", label, space_name(sp),
                         k, last == 1 ? "succeeded" : "failed", memo_err_name(rc));
                continue;
            }
            if (last == 2) {
                tl_ran = -1;
                rc = kget(FK.m, sp, k, flaky_fn_bytes, flaky_fn_u64, NULL, false, 0, &v);
                int want = flaky_fails(sp, k, n) ? flaky_code(sp, k, n) : 0;
                if ((tl_ran != n || rc != want) && not_recomputed++ < 5)
                    diag("%s: %s key %" PRIu64 " after %d runs: the next call ran run %d, got %d",
                         label, space_name(sp), k, n, tl_ran, rc);
            }
        }
    is_int(bad_stored, 0, "%s: lookup finds every key whose last run succeeded, and no other",
           label);
    is_int(not_recomputed, 0, "%s: a key whose last run failed is computed by the next call",
           label);
    diag("%s: %" PRIu64 " calls, %" PRIu64 " runs (%" PRIu64 " failed), %" PRIu64
         " failure codes taken by waiters, %" PRIu64 " timeouts, %.1f s",
         label, calls, total_runs, failed_runs, fail_waiters, timeouts, (double)(t1 - t0) / 1e9);
    tap_barrier_destroy(&FK.start);
    memo_destroy(FK.m);
    for (int sp = 0; sp < 2; sp++) {
        free(FK.key[sp]);
        free(FK.run[sp]);
    }
    free(FK.calls);
    free(tids);
}

/* (b), code 1: the smallest positive code, under a herd. The first run of each round's key
 * fails with 1, any later one succeeds. The caller that ran the failing run and its waiters get
 * 1; callers that come after it run fn again (once: that run is stored) or hit. */

enum { ONE_THREADS = 12 };

typedef struct code_one {
    memo_t           *m;
    unsigned          rounds;
    pthread_barrier_t start;
    atomic_int       *runs;  /* [round] */
    int              *rc;    /* [thread][round] */
    int              *ran;   /* [thread][round]: the run that call ran, or -1 */
    uint64_t         *value; /* [thread][round] */
} code_one_t;

static code_one_t C1;

static uint64_t one_value(uint64_t round)
{
    return round + 100;
}

static int one_compute(uint64_t round, uint64_t *value)
{
    if (round >= C1.rounds)
        return 9999;
    int a = atomic_fetch_add(&C1.runs[round], 1);
    tl_ran = a;
    jitter();
    *value = one_value(round);
    return a == 0 ? 1 : 0;
}

static int one_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return one_compute(key, value);
}

static int one_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k))
        return 9999;
    int rc = one_compute(k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static void *one_thread(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    thread_init(9, index);
    for (unsigned round = 0; round < C1.rounds; round++) {
        size_t i = (size_t)index * C1.rounds + round;
        tap_barrier_wait(&C1.start);
        if (prng_next(&tl_rng) % 4 == 0)
            jitter(); /* a few come late: after the failure, or to the stored value */
        tl_ran = -1;
        C1.rc[i] = kget(C1.m, (int)(round % 2), round, one_fn_bytes, one_fn_u64, NULL, false, 0,
                        &C1.value[i]);
        C1.ran[i] = tl_ran;
    }
    return NULL;
}

static void run_code_one(void)
{
    const char *label = "(b) code 1";
    memset(&C1, 0, sizeof C1);
    C1.rounds = sized(300);
    C1.m = new_memo(0);
    C1.runs = xcalloc(C1.rounds, sizeof *C1.runs);
    C1.rc = xcalloc((size_t)ONE_THREADS * C1.rounds, sizeof *C1.rc);
    C1.ran = xcalloc((size_t)ONE_THREADS * C1.rounds, sizeof *C1.ran);
    C1.value = xcalloc((size_t)ONE_THREADS * C1.rounds, sizeof *C1.value);
    tap_barrier_init(&C1.start, ONE_THREADS);
    diag("%s: %u rounds of %d threads on a fresh key whose first run fails with code 1", label,
         C1.rounds, ONE_THREADS);
    pthread_t tids[ONE_THREADS];
    for (unsigned i = 0; i < ONE_THREADS; i++)
        if (pthread_create(&tids[i], NULL, one_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    join_or_bail(tids, ONE_THREADS, label);
    unsigned bad_runner = 0, bad_result = 0, too_many = 0, bad_next = 0;
    uint64_t one_waiters = 0;
    for (unsigned round = 0; round < C1.rounds; round++) {
        int      runs = atomic_load(&C1.runs[round]);
        unsigned ran_failing = 0;
        if (runs > 2 && too_many++ < 5)
            diag("%s: round %u (%s key): fn ran %d times", label, round,
                 space_name((int)(round % 2)), runs);
        for (unsigned t = 0; t < ONE_THREADS; t++) {
            size_t i = (size_t)t * C1.rounds + round;
            int    rc = C1.rc[i];
            if (C1.ran[i] == 0) {
                ran_failing++;
                if (rc != 1 && bad_runner++ < 5)
                    diag("%s: round %u (%s key): the caller that ran the failing run got %d "
                         "(%s)", label, round, space_name((int)(round % 2)), rc,
                         memo_err_name(rc));
            } else if (rc == 1) {
                one_waiters++;
            }
            if (!(rc == 1 || (rc == 0 && C1.value[i] == one_value(round))) && bad_result++ < 5)
                diag("%s: round %u (%s key): a caller got %d (%s)", label, round,
                     space_name((int)(round % 2)), rc, memo_err_name(rc));
        }
        if (ran_failing != 1 && bad_runner++ < 5)
            diag("%s: round %u: %u calls say they ran the failing run", label, round,
                 ran_failing);
        /* after the round: the failing run is not stored; the run after it is */
        uint64_t v = 0;
        tl_ran = -1;
        int rc = kget(C1.m, (int)(round % 2), round, one_fn_bytes, one_fn_u64, NULL, false, 0, &v);
        int want_ran = runs == 1 ? 1 : -1;
        if ((rc != 0 || v != one_value(round) || tl_ran != want_ran) && bad_next++ < 5)
            diag("%s: round %u: after %d runs the next call got %s and ran run %d", label, round,
                 runs, memo_err_name(rc), tl_ran);
    }
    is_int(bad_runner, 0, "%s: the call that ran the failing run got 1 (code 1 is not \"look "
           "again\")", label);
    is_int(bad_result, 0, "%s: every caller got 1 or the value", label);
    is_int(too_many, 0, "%s: at most two runs per round (the one after the failure is stored)",
           label);
    is_int(bad_next, 0, "%s: the call after a round runs fn if only the failing run happened, "
           "else hits", label);
    ok(one_waiters > 0, "%s: waiters took code 1 from the failing run (%" PRIu64 ")", label,
       one_waiters);
    tap_barrier_destroy(&C1.start);
    memo_destroy(C1.m);
    free(C1.runs);
    free(C1.rc);
    free(C1.ran);
    free(C1.value);
}

/* ============================================================================================
 * (c) cycles, with DAG recursion alongside
 */

enum {
    CYC_THREADS = 10,
    CYC_MAX_LEN = 5,
    CYC_NODES = 64,       /* key numbers per round */
    DAG_THREADS = 4,
    DAG_NODES = 2000,
    DAG_GENS = 64,        /* fresh copies of the DAG, so that computing goes on all along */
};

#define CYC_BASE (1ull << 40)
#define DAG_BASE (1ull << 50)

typedef struct cyc_cycle {
    unsigned   len;
    bool       fallback; /* fn stores a fallback on MEMO_EDEADLK, else returns it */
    bool       sync;     /* the cycle's threads are all inside fn before asking */
    atomic_int inside;
} cyc_cycle_t;

typedef struct cyc_node {
    unsigned   cycle, next;
    unsigned   memo;
    int        space;
    uint64_t   key;
    atomic_int computations;
} cyc_node_t;

typedef struct cyc_role {
    unsigned node;
    bool     outsider;
    int      rc;
    uint64_t value;
} cyc_role_t;

typedef struct cyc {
    memo_t           *memo[2];
    unsigned          rounds, round;
    pthread_barrier_t start;     /* a round: the cycle threads and main */
    pthread_barrier_t dag_start; /* the DAG threads and main, once */
    pthread_mutex_t   done_lock;
    pthread_cond_t    done_cond;
    unsigned          done; /* outer calls finished, all rounds; under done_lock */
    bool              stop;
    unsigned          ncycles, nnodes;
    cyc_cycle_t       cycle[CYC_THREADS];
    cyc_node_t        node[CYC_THREADS];
    cyc_role_t        role[CYC_THREADS];
    atomic_int        bad_key, spin_timeouts;
    /* the DAG */
    atomic_int        dag_stop, dag_gen;
    uint64_t          dag_expected[DAG_NODES];
    atomic_uchar     *dag_computed; /* [gen][node] */
    atomic_uint_fast64_t dag_calls;
    atomic_int        dag_deadlocks, dag_other, dag_wrong;
} cyc_t;

static cyc_t CY;

static uint64_t cyc_fallback(uint64_t key)
{
    return mix64(key) | 1;
}

static int cyc_fn_u64(void *ctx, uint64_t key, uint64_t *value);
static int cyc_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out);

static int cyc_compute(uint64_t key, uint64_t *value)
{
    uint64_t round_base = CYC_BASE + (uint64_t)CY.round * CYC_NODES;
    if (key < round_base || key - round_base >= CY.nnodes) {
        atomic_fetch_add(&CY.bad_key, 1);
        return 9999;
    }
    cyc_node_t  *nd = &CY.node[key - round_base];
    cyc_cycle_t *cy = &CY.cycle[nd->cycle];
    atomic_fetch_add(&nd->computations, 1);
    if (cy->sync) {
        /* a spinning barrier: every key of the cycle is being computed before any asks for the
         * next, so the cycle closes across threads, at nearly the same moment */
        atomic_fetch_add(&cy->inside, 1);
        uint64_t deadline = tap_now_ns() + (uint64_t)g_part_limit_s * 1000000000u;
        for (unsigned spins = 0; atomic_load(&cy->inside) < (int)cy->len; spins++) {
            if (spins % 64 == 63)
                sched_yield();
            if (spins % 4096 == 4095 && tap_now_ns() > deadline) {
                atomic_fetch_add(&CY.spin_timeouts, 1);
                break;
            }
        }
    }
    jitter();
    const cyc_node_t *nx = &CY.node[nd->next];
    uint64_t          v = 0;
    int rc = kget(CY.memo[nx->memo], nx->space, nx->key, cyc_fn_bytes, cyc_fn_u64, NULL, false, 0,
                  &v);
    if (rc == MEMO_EDEADLK && cy->fallback) {
        *value = cyc_fallback(key);
        return 0;
    }
    if (rc != 0)
        return rc;
    *value = v + 1;
    return 0;
}

static int cyc_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return cyc_compute(key, value);
}

static int cyc_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k)) {
        atomic_fetch_add(&CY.bad_key, 1);
        return 9999;
    }
    int rc = cyc_compute(k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static void *cyc_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    thread_init(3, i);
    for (;;) {
        tap_barrier_wait(&CY.start);
        if (CY.stop)
            break;
        cyc_role_t       *role = &CY.role[i];
        const cyc_node_t *nd = &CY.node[role->node];
        if (role->outsider)
            jitter();
        role->value = 0;
        role->rc = kget(CY.memo[nd->memo], nd->space, nd->key, cyc_fn_bytes, cyc_fn_u64, NULL,
                        false, 0, &role->value);
        pthread_mutex_lock(&CY.done_lock);
        CY.done++;
        pthread_cond_signal(&CY.done_cond);
        pthread_mutex_unlock(&CY.done_lock);
    }
    return NULL;
}

/* DAG node d of generation g: key, memo and key space. Edges go to smaller nodes only. */
static uint64_t dag_key(unsigned gen, unsigned d)
{
    return DAG_BASE + (uint64_t)gen * DAG_NODES + d;
}

static unsigned dag_memo(unsigned d)
{
    return (unsigned)(mix64(d ^ 0xDA6) & 1);
}

static int dag_space(unsigned d)
{
    return (int)((mix64(d ^ 0xDA6) >> 1) & 1);
}

static unsigned dag_deps(unsigned d, unsigned dep[3])
{
    if (d < 4)
        return 0;
    uint64_t h = mix64(g_seed ^ (d * 0x51ull));
    dep[0] = d - 1 - (unsigned)(h % 16 < d ? h % 16 : 0);
    dep[1] = (unsigned)((h >> 16) % d);
    dep[2] = d / 2 + (unsigned)((h >> 32) % (d - d / 2));
    return 3;
}

static uint64_t dag_combine(unsigned d, const uint64_t *v, unsigned n)
{
    uint64_t x = d + 1;
    for (unsigned i = 0; i < n; i++)
        x = x * 31 + v[i];
    return x;
}

static int dag_fn_u64(void *ctx, uint64_t key, uint64_t *value);
static int dag_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out);

static int dag_get(unsigned gen, unsigned d, uint64_t *v)
{
    int rc = kget(CY.memo[dag_memo(d)], dag_space(d), dag_key(gen, d), dag_fn_bytes, dag_fn_u64,
                  NULL, false, 0, v);
    if (rc == MEMO_EDEADLK)
        atomic_fetch_add(&CY.dag_deadlocks, 1);
    return rc;
}

static int dag_compute(uint64_t key, uint64_t *value)
{
    if (key < DAG_BASE || key - DAG_BASE >= (uint64_t)DAG_GENS * DAG_NODES) {
        atomic_fetch_add(&CY.bad_key, 1);
        return 9999;
    }
    unsigned gen = (unsigned)((key - DAG_BASE) / DAG_NODES);
    unsigned d = (unsigned)((key - DAG_BASE) % DAG_NODES);
    atomic_fetch_add(&CY.dag_computed[(size_t)gen * DAG_NODES + d], 1);
    if (prng_next(&tl_rng) % 2)
        jitter();
    unsigned dep[3];
    uint64_t v[3] = { 0, 0, 0 };
    unsigned n = dag_deps(d, dep);
    for (unsigned i = 0; i < n; i++) {
        int rc = dag_get(gen, dep[i], &v[i]);
        if (rc != 0)
            return rc;
    }
    *value = dag_combine(d, v, n);
    return 0;
}

static int dag_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return dag_compute(key, value);
}

static int dag_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k)) {
        atomic_fetch_add(&CY.bad_key, 1);
        return 9999;
    }
    int rc = dag_compute(k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static void *dag_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    thread_init(4, i);
    tap_barrier_wait(&CY.dag_start);
    uint64_t calls = 0;
    while (!atomic_load(&CY.dag_stop)) {
        unsigned gen = (unsigned)atomic_load(&CY.dag_gen);
        uint64_t r = prng_next(&tl_rng);
        /* mostly near the top, for deep recursion through many computations at once */
        unsigned d = r % 2 ? DAG_NODES - 1 - (unsigned)((r >> 8) % (DAG_NODES / 8))
                           : (unsigned)((r >> 8) % DAG_NODES);
        uint64_t v = 0;
        int      rc = dag_get(gen, d, &v);
        if (rc != 0 && rc != MEMO_EDEADLK)
            atomic_fetch_add(&CY.dag_other, 1);
        else if (rc == 0 && v != CY.dag_expected[d])
            atomic_fetch_add(&CY.dag_wrong, 1);
        /* a fresh generation every 500 calls of thread 0: new keys, computed all over again */
        if (i == 0 && ++calls % 500 == 0 && gen + 1 < DAG_GENS)
            atomic_store(&CY.dag_gen, (int)gen + 1);
        atomic_fetch_add(&CY.dag_calls, 1);
    }
    return NULL;
}

static void run_cycles(void)
{
    const char *label = "(c) cycles";
    memset(&CY, 0, sizeof CY);
    CY.rounds = sized(8000);
    CY.memo[0] = new_memo(0);
    CY.memo[1] = new_memo(4);
    CY.dag_computed = xcalloc((size_t)DAG_GENS * DAG_NODES, sizeof *CY.dag_computed);
    for (unsigned d = 0; d < DAG_NODES; d++) {
        unsigned dep[3];
        uint64_t v[3];
        unsigned n = dag_deps(d, dep);
        for (unsigned i = 0; i < n; i++)
            v[i] = CY.dag_expected[dep[i]];
        CY.dag_expected[d] = dag_combine(d, v, n);
    }
    pthread_mutex_init(&CY.done_lock, NULL);
    pthread_cond_init(&CY.done_cond, NULL);
    tap_barrier_init(&CY.start, CYC_THREADS + 1);
    tap_barrier_init(&CY.dag_start, DAG_THREADS + 1);
    diag("%s: %u rounds of %d threads in random cycles of 1-%d keys (two memos, both key "
         "spaces), %d threads recursing over a %d-key DAG meanwhile",
         label, CY.rounds, CYC_THREADS, CYC_MAX_LEN, DAG_THREADS, DAG_NODES);
    pthread_t tids[CYC_THREADS + DAG_THREADS];
    for (unsigned i = 0; i < CYC_THREADS; i++)
        if (pthread_create(&tids[i], NULL, cyc_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    for (unsigned i = 0; i < DAG_THREADS; i++)
        if (pthread_create(&tids[CYC_THREADS + i], NULL, dag_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    tap_barrier_wait(&CY.dag_start); /* the DAG threads start */

    prng_t   rng = prng_make(3, 1000);
    unsigned bad_propagate = 0, bad_fallback = 0, not_broken = 0, stored_failure = 0,
             fallback_cycles = 0, propagate_cycles = 0, sync_cycles = 0, self_cycles = 0,
             outsiders = 0, computed_twice = 0;
    uint64_t t0 = tap_now_ns(), worst_ns = 0;
    for (unsigned round = 0; round < CY.rounds; round++) {
        /* split the threads into cycles at random; some become outsiders */
        unsigned perm[CYC_THREADS];
        for (unsigned i = 0; i < CYC_THREADS; i++)
            perm[i] = i;
        for (unsigned i = CYC_THREADS - 1; i > 0; i--) {
            unsigned j = (unsigned)(prng_next(&rng) % (i + 1)), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        CY.round = round;
        CY.ncycles = CY.nnodes = 0;
        unsigned next_thread = 0, members = CYC_THREADS - (unsigned)(prng_next(&rng) % 3);
        while (next_thread < members) {
            unsigned len = 1 + (unsigned)(prng_next(&rng) % CYC_MAX_LEN);
            if (len > members - next_thread)
                len = members - next_thread;
            cyc_cycle_t *cy = &CY.cycle[CY.ncycles];
            cy->len = len;
            cy->fallback = prng_next(&rng) % 2;
            cy->sync = prng_next(&rng) % 4 != 0;
            atomic_store(&cy->inside, 0);
            unsigned first = CY.nnodes;
            for (unsigned p = 0; p < len; p++) {
                cyc_node_t *nd = &CY.node[CY.nnodes];
                nd->cycle = CY.ncycles;
                nd->next = first + (p + 1) % len;
                uint64_t r = prng_next(&rng);
                nd->memo = (unsigned)(r & 1);
                nd->space = (int)((r >> 1) & 1);
                nd->key = CYC_BASE + (uint64_t)round * CYC_NODES + CY.nnodes;
                atomic_store(&nd->computations, 0);
                CY.role[perm[next_thread]] = (cyc_role_t){ CY.nnodes, false, -100, 0 };
                next_thread++;
                CY.nnodes++;
            }
            CY.ncycles++;
        }
        for (; next_thread < CYC_THREADS; next_thread++) {
            CY.role[perm[next_thread]] =
                (cyc_role_t){ (unsigned)(prng_next(&rng) % CY.nnodes), true, -100, 0 };
            outsiders++;
        }

        uint64_t r0 = tap_now_ns();
        tap_barrier_wait(&CY.start);
        struct timespec limit;
        clock_gettime(CLOCK_REALTIME, &limit);
        limit.tv_sec += g_part_limit_s / 4;
        pthread_mutex_lock(&CY.done_lock);
        while (CY.done < CYC_THREADS * (round + 1)) {
            if (pthread_cond_timedwait(&CY.done_cond, &CY.done_lock, &limit) == ETIMEDOUT) {
                ok(0, "%s: round %u still running after %u s: a cycle was not detected", label,
                   round, g_part_limit_s / 4);
                for (unsigned c = 0; c < CY.ncycles; c++)
                    diag("%s: round %u cycle %u: %u keys, %s, %s", label, round, c,
                         CY.cycle[c].len, CY.cycle[c].sync ? "threads synchronized" : "free",
                         CY.cycle[c].fallback ? "fallback" : "propagate");
                bail_out("%s: threads stuck in a cycle of computations", label);
            }
        }
        pthread_mutex_unlock(&CY.done_lock);
        uint64_t dt = tap_now_ns() - r0;
        worst_ns = dt > worst_ns ? dt : worst_ns;

        /* outcomes, cycle by cycle */
        for (unsigned c = 0; c < CY.ncycles; c++) {
            const cyc_cycle_t *cy = &CY.cycle[c];
            fallback_cycles += cy->fallback;
            propagate_cycles += !cy->fallback;
            sync_cycles += cy->sync;
            self_cycles += cy->len == 1;
        }
        for (unsigned t = 0; t < CYC_THREADS; t++) {
            const cyc_role_t  *role = &CY.role[t];
            const cyc_node_t  *nd = &CY.node[role->node];
            const cyc_cycle_t *cy = &CY.cycle[nd->cycle];
            uint64_t           stored = 0;
            int                lrc = klookup(CY.memo[nd->memo], nd->space, nd->key, &stored);
            if (!cy->fallback && role->rc != MEMO_EDEADLK) {
                if (bad_propagate++ < 5)
                    diag("%s: round %u: a call in a %u-key propagating cycle got %s", label, round,
                         cy->len, memo_err_name(role->rc));
            }
            if (cy->fallback && (role->rc != 0 || lrc != 0 || role->value != stored)) {
                if (bad_fallback++ < 5)
                    diag("%s: round %u: a call in a %u-key fallback cycle got %s, value %" PRIu64
                         ", stored %s %" PRIu64, label, round, cy->len, memo_err_name(role->rc),
                         role->value, memo_err_name(lrc), stored);
            }
        }
        for (unsigned c = 0; c < CY.ncycles; c++) {
            const cyc_cycle_t *cy = &CY.cycle[c];
            unsigned           fallbacks = 0, inconsistent = 0;
            for (unsigned n = 0; n < CY.nnodes; n++) {
                const cyc_node_t *nd = &CY.node[n];
                if (nd->cycle != c)
                    continue;
                uint64_t v = 0, nv = 0;
                int      rc = klookup(CY.memo[nd->memo], nd->space, nd->key, &v);
                if (!cy->fallback) {
                    if (rc != MEMO_ENOENT)
                        stored_failure++;
                    continue;
                }
                if (atomic_load(&nd->computations) != 1 && computed_twice++ < 5)
                    diag("%s: round %u: a key of a fallback cycle computed %d times", label, round,
                         atomic_load(&nd->computations));
                const cyc_node_t *nx = &CY.node[nd->next];
                int               nrc = klookup(CY.memo[nx->memo], nx->space, nx->key, &nv);
                if (rc == 0 && v == cyc_fallback(nd->key))
                    fallbacks++;
                else if (rc != 0 || nrc != 0 || v != nv + 1)
                    inconsistent++;
            }
            if (cy->fallback && (fallbacks == 0 || inconsistent != 0)) {
                if (not_broken++ < 5)
                    diag("%s: round %u: a %u-key fallback cycle has %u fallback values and %u "
                         "values that are not the next key's + 1", label, round, cy->len,
                         fallbacks, inconsistent);
            }
        }
    }
    uint64_t t1 = tap_now_ns();
    atomic_store(&CY.dag_stop, 1);
    CY.stop = true;
    tap_barrier_wait(&CY.start);
    join_or_bail(tids, CYC_THREADS + DAG_THREADS, label);

    diag("%s: %u cycles: %u propagating, %u with fallback, %u with synchronized threads, %u "
         "self-recursions; %u outsider calls", label, propagate_cycles + fallback_cycles,
         propagate_cycles, fallback_cycles, sync_cycles, self_cycles, outsiders);
    is_int(bad_propagate, 0, "%s: every call into a propagating cycle ended with MEMO_EDEADLK",
           label);
    is_int(stored_failure, 0, "%s: nothing stored for the keys of propagating cycles", label);
    is_int(bad_fallback, 0, "%s: every call into a fallback cycle got 0 and the stored value",
           label);
    is_int(not_broken, 0, "%s: each fallback cycle was broken by MEMO_EDEADLK at one key at "
           "least, the others hold the next key's value + 1", label);
    is_int(computed_twice, 0, "%s: each key of a fallback cycle computed once", label);
    is_int(atomic_load(&CY.spin_timeouts), 0, "%s: the threads of every synchronized cycle met",
           label);
    is_int(atomic_load(&CY.bad_key), 0, "%s: fn only ever got keys of the current round", label);
    cmp_u64(worst_ns / 1000000, <, 1000ull * g_part_limit_s / 8,
            "%s: slowest round (ms)", label);

    unsigned gens = (unsigned)atomic_load(&CY.dag_gen) + 1, dag_twice = 0;
    uint64_t dag_computations = 0;
    for (size_t i = 0; i < (size_t)gens * DAG_NODES; i++) {
        unsigned n = atomic_load(&CY.dag_computed[i]);
        dag_computations += n;
        if (n > 1 && dag_twice++ < 5)
            diag("%s: DAG key gen %zu node %zu computed %u times", label, i / DAG_NODES,
                 i % DAG_NODES, n);
    }
    is_int(atomic_load(&CY.dag_deadlocks), 0,
           "%s: the DAG recursion never got MEMO_EDEADLK (%" PRIu64 " outer calls, %" PRIu64
           " computations, %u generations)", label, (uint64_t)atomic_load(&CY.dag_calls),
           dag_computations, gens);
    is_int(atomic_load(&CY.dag_other), 0, "%s: ... nor any other error", label);
    is_int(atomic_load(&CY.dag_wrong), 0, "%s: ... and every DAG value is right", label);
    is_int(dag_twice, 0, "%s: ... each DAG key computed at most once", label);
    diag("%s: %.1f s, slowest round %.0f ms", label, (double)(t1 - t0) / 1e9,
         (double)worst_ns / 1e6);
    tap_barrier_destroy(&CY.start);
    tap_barrier_destroy(&CY.dag_start);
    pthread_mutex_destroy(&CY.done_lock);
    pthread_cond_destroy(&CY.done_cond);
    memo_destroy(CY.memo[0]);
    memo_destroy(CY.memo[1]);
    free(CY.dag_computed);
}

/* ============================================================================================
 * (d) thread death
 */

enum { DEATH_WAITERS = 10, DEATH_MAX_VICTIMS = 3, DEATH_SLOTS = 3 * DEATH_MAX_VICTIMS };

typedef enum { DIE_EXIT, DIE_CANCEL } die_how_t;
typedef enum { AT_TOP, IN_NESTED, WHILE_WAITING } die_where_t;

#define DEATH_RETVAL ((void *)0xDEAD)

typedef struct death_victim {
    die_how_t   how;
    die_where_t where;
    unsigned    slot, nested_slot, wait_slot;
    unsigned    exit_after; /* delays before pthread_exit */
    bool        value_first; /* store a value, then die */
    pthread_t   tid;
    atomic_int  inside;
    atomic_int  returned; /* fn or memo returned: the victim did not die */
} death_victim_t;

typedef struct death_slot {
    int        space;
    uint64_t   key;
    int        victim; /* whose dying fn computes it, or -1 (a gated helper key) */
    bool       gated;
    bool       asked;  /* a waiter or the helper asks for it with the good fn */
    atomic_int good_done;
} death_slot_t;

typedef struct death_waiter {
    unsigned slot;
    unsigned delay_us;
    int      rc;
    uint64_t value;
} death_waiter_t;

typedef struct death {
    memo_t           *m;
    unsigned          rounds, round;
    unsigned          nvictims, nslots, nhelpers;
    death_victim_t    victim[DEATH_MAX_VICTIMS];
    death_slot_t      slot[DEATH_SLOTS];
    death_waiter_t    waiter[DEATH_WAITERS + DEATH_MAX_VICTIMS]; /* then the helpers */
    pthread_barrier_t start;
    atomic_int        gate_open, helpers_inside;
    atomic_int        bad_key;
} death_t;

static death_t DT;

static uint64_t death_good(uint64_t key)
{
    return mix64(key ^ 0xD1E) + 1;
}

static int death_slot_of(uint64_t key)
{
    uint64_t base = (uint64_t)DT.round * 16;
    if (key < base || key - base >= DT.nslots) {
        atomic_fetch_add(&DT.bad_key, 1);
        return -1;
    }
    return (int)(key - base);
}

static int good_compute(uint64_t key, uint64_t *value)
{
    int s = death_slot_of(key);
    if (s < 0)
        return 9999;
    if (DT.slot[s].gated) {
        /* the helper's key: held until the victims are dead, so a victim waits on it */
        atomic_fetch_add(&DT.helpers_inside, 1);
        uint64_t deadline = tap_now_ns() + (uint64_t)g_part_limit_s * 1000000000u;
        while (!atomic_load(&DT.gate_open) && tap_now_ns() < deadline)
            tap_sleep_ns(100000);
    }
    jitter();
    *value = death_good(key);
    atomic_fetch_add(&DT.slot[s].good_done, 1);
    return 0;
}

static int good_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return good_compute(key, value);
}

static int good_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k, v = 0;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k))
        return 9999;
    int rc = good_compute(k, &v);
    return rc != 0 ? rc : put_value(out, key, key_len, v);
}

static int dying_fn_u64(void *ctx, uint64_t key, uint64_t *value);
static int dying_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out);

static int dying_compute(uint64_t key, memo_result_t *out, uint64_t *value)
{
    int s = death_slot_of(key);
    if (s < 0 || DT.slot[s].victim < 0)
        return 9999;
    death_victim_t *v = &DT.victim[DT.slot[s].victim];
    if ((unsigned)s == v->slot) {
        atomic_store(&v->inside, 1);
        uint64_t ignored = 0;
        if (v->where == IN_NESTED) {
            /* dies inside the nested key's fn; if a waiter computed that one first, here */
            const death_slot_t *n = &DT.slot[v->nested_slot];
            jitter();
            kget(DT.m, n->space, n->key, dying_fn_bytes, dying_fn_u64, NULL, false, 0, &ignored);
        } else if (v->where == WHILE_WAITING) {
            /* asleep on the helper's computation when the cancel comes, most of the time */
            const death_slot_t *w = &DT.slot[v->wait_slot];
            jitter();
            kget(DT.m, w->space, w->key, good_fn_bytes, good_fn_u64, NULL, false, 0, &ignored);
        }
    }
    if (v->value_first) {
        uint64_t junk = 666;
        if (out != NULL)
            memo_result_set(out, &junk, sizeof junk);
        else
            *value = junk;
    }
    if (v->how == DIE_EXIT) {
        for (unsigned i = 0; i < v->exit_after; i++)
            jitter();
        pthread_exit(DEATH_RETVAL);
    }
    uint64_t deadline = tap_now_ns() + (uint64_t)g_part_limit_s * 1000000000u;
    while (tap_now_ns() < deadline) {
        jitter();
        tap_sleep_ns(prng_next(&tl_rng) % 50000); /* a cancellation point every time round */
    }
    atomic_store(&v->returned, 1);
    return 77;
}

static int dying_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return dying_compute(key, NULL, value);
}

static int dying_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    (void)ctx;
    if (!bkey_parse(key, key_len, &k))
        return 9999;
    return dying_compute(k, out, NULL);
}

static void *victim_thread(void *arg)
{
    death_victim_t     *v = (death_victim_t *)arg;
    const death_slot_t *s = &DT.slot[v->slot];
    thread_init(5, DT.round * 8 + (unsigned)(v - DT.victim));
    uint64_t value = 0;
    kget(DT.m, s->space, s->key, dying_fn_bytes, dying_fn_u64, NULL, false, 0, &value);
    atomic_store(&v->returned, 1);
    return NULL;
}

static void *death_waiter_thread(void *arg)
{
    death_waiter_t     *w = (death_waiter_t *)arg;
    const death_slot_t *s = &DT.slot[w->slot];
    thread_init(6, DT.round * 16 + (unsigned)(w - DT.waiter));
    if (w->delay_us != (unsigned)-1) /* not the helper */
        tap_barrier_wait(&DT.start);
    if (w->delay_us != (unsigned)-1 && w->delay_us)
        tap_sleep_ns((uint64_t)w->delay_us * 1000);
    w->rc = kget(DT.m, s->space, s->key, good_fn_bytes, good_fn_u64, NULL, false, 0, &w->value);
    return NULL;
}

static unsigned death_add_slot(int victim, bool gated, prng_t *rng)
{
    unsigned      i = DT.nslots++;
    death_slot_t *s = &DT.slot[i];
    s->space = (int)(prng_next(rng) & 1);
    s->key = (uint64_t)DT.round * 16 + i;
    s->victim = victim;
    s->gated = gated;
    s->asked = false;
    atomic_store(&s->good_done, 0);
    return i;
}

static TAP__UNUSED void run_death(void)
{
    const char *label = "(d) thread death";
    memset(&DT, 0, sizeof DT);
    DT.rounds = sized(700);
    DT.m = new_memo(0);
    diag("%s: %u rounds, 1-%d victims per round dying by pthread_exit or pthread_cancel inside "
         "fn, %d waiters", label, DT.rounds, DEATH_MAX_VICTIMS, DEATH_WAITERS);
    prng_t   rng = prng_make(5, 1000);
    unsigned bad_death = 0, bad_waiter = 0, bad_count = 0, bad_stored = 0, bad_next = 0;
    unsigned counts[2][3] = { { 0 } }, waiters_total = 0;
    uint64_t t0 = tap_now_ns();
    for (unsigned round = 0; round < DT.rounds; round++) {
        DT.round = round;
        DT.nslots = DT.nhelpers = 0;
        DT.nvictims = 1 + (unsigned)(prng_next(&rng) % DEATH_MAX_VICTIMS);
        atomic_store(&DT.gate_open, 0);
        atomic_store(&DT.helpers_inside, 0);
        for (unsigned i = 0; i < DT.nvictims; i++) {
            death_victim_t *v = &DT.victim[i];
            uint64_t        r = prng_next(&rng);
            v->how = r % 2 ? DIE_CANCEL : DIE_EXIT;
            v->where = (die_where_t)((r >> 4) % (v->how == DIE_CANCEL ? 3 : 2));
            v->exit_after = (unsigned)((r >> 8) % 4);
            v->value_first = (r >> 12) % 3 == 0;
            atomic_store(&v->inside, 0);
            atomic_store(&v->returned, 0);
            v->slot = death_add_slot((int)i, false, &rng);
            if (v->where == IN_NESTED)
                v->nested_slot = death_add_slot((int)i, false, &rng);
            if (v->where == WHILE_WAITING) {
                v->wait_slot = death_add_slot(-1, true, &rng);
                DT.slot[v->wait_slot].asked = true;
                DT.waiter[DEATH_WAITERS + DT.nhelpers++] =
                    (death_waiter_t){ v->wait_slot, (unsigned)-1, -100, 0 };
            }
            counts[v->how][v->where]++;
        }
        /* waiters: random slots; a round now and then has none, so the next caller computes */
        unsigned nwaiters = prng_next(&rng) % 8 == 0 ? 0 : DEATH_WAITERS;
        for (unsigned i = 0; i < nwaiters; i++) {
            uint64_t r = prng_next(&rng);
            DT.waiter[i] = (death_waiter_t){ (unsigned)(r % DT.nslots),
                                             (unsigned)((r >> 16) % 3000), -100, 0 };
            DT.slot[DT.waiter[i].slot].asked = true;
        }
        waiters_total += nwaiters;

        /* helpers first (their keys are in flight before a victim asks), then the victims
         * (inside fn before the waiters start), then the waiters on a barrier */
        pthread_t wt[DEATH_WAITERS + DEATH_MAX_VICTIMS];
        tap_barrier_init(&DT.start, nwaiters + 1);
        for (unsigned h = 0; h < DT.nhelpers; h++)
            if (pthread_create(&wt[DEATH_WAITERS + h], NULL, death_waiter_thread,
                               &DT.waiter[DEATH_WAITERS + h]) != 0)
                bail_out("pthread_create");
        uint64_t deadline = tap_now_ns() + (uint64_t)g_part_limit_s * 1000000000u;
        while (atomic_load(&DT.helpers_inside) < (int)DT.nhelpers && tap_now_ns() < deadline)
            tap_sleep_ns(100000);
        for (unsigned i = 0; i < DT.nvictims; i++)
            if (pthread_create(&DT.victim[i].tid, NULL, victim_thread, &DT.victim[i]) != 0)
                bail_out("pthread_create");
        for (unsigned i = 0; i < DT.nvictims; i++)
            while (!atomic_load(&DT.victim[i].inside) && !atomic_load(&DT.victim[i].returned) &&
                   tap_now_ns() < deadline)
                tap_sleep_ns(50000);
        for (unsigned i = 0; i < nwaiters; i++)
            if (pthread_create(&wt[i], NULL, death_waiter_thread, &DT.waiter[i]) != 0)
                bail_out("pthread_create");
        tap_barrier_wait(&DT.start);
        for (unsigned i = 0; i < DT.nvictims; i++) {
            death_victim_t *v = &DT.victim[i];
            if (v->how == DIE_CANCEL) {
                tap_sleep_ns(prng_next(&rng) % 2000000);
                pthread_cancel(v->tid);
            }
        }
        for (unsigned i = 0; i < DT.nvictims; i++) {
            death_victim_t *v = &DT.victim[i];
            void           *ret = NULL;
            struct timespec limit;
            clock_gettime(CLOCK_REALTIME, &limit);
            limit.tv_sec += g_part_limit_s;
            if (pthread_timedjoin_np(v->tid, &ret, &limit) != 0) {
                ok(0, "%s: round %u: a victim thread did not die", label, round);
                bail_out("%s hung", label);
            }
            void *want = v->how == DIE_EXIT ? DEATH_RETVAL : PTHREAD_CANCELED;
            if ((atomic_load(&v->returned) || ret != want) && bad_death++ < 5)
                diag("%s: round %u: victim %u (%s) %s", label, round, i,
                     v->how == DIE_EXIT ? "exit" : "cancel",
                     atomic_load(&v->returned) ? "returned instead of dying" : "died otherwise");
        }
        atomic_store(&DT.gate_open, 1);
        if (nwaiters)
            join_or_bail(wt, nwaiters, label);
        if (DT.nhelpers)
            join_or_bail(&wt[DEATH_WAITERS], DT.nhelpers, label);
        tap_barrier_destroy(&DT.start);

        for (unsigned i = 0; i < nwaiters + DT.nhelpers; i++) {
            const death_waiter_t *w = &DT.waiter[i < nwaiters ? i : DEATH_WAITERS + i - nwaiters];
            uint64_t              want = death_good(DT.slot[w->slot].key);
            if ((w->rc != 0 || w->value != want) && bad_waiter++ < 5)
                diag("%s: round %u: a %s on slot %u got %s, value %" PRIu64 " (want %" PRIu64
                     ")", label, round, i < nwaiters ? "waiter" : "helper", w->slot,
                     memo_err_name(w->rc), w->value, want);
        }
        for (unsigned i = 0; i < DT.nslots; i++) {
            death_slot_t *s = &DT.slot[i];
            int           done = atomic_load(&s->good_done);
            if (done != (s->asked ? 1 : 0) && bad_count++ < 5)
                diag("%s: round %u: slot %u (%s, %s) had %d good computations", label, round, i,
                     space_name(s->space), s->asked ? "asked for" : "nobody asked", done);
            uint64_t v = 0;
            int      rc = klookup(DT.m, s->space, s->key, &v);
            if ((s->asked ? (rc != 0 || v != death_good(s->key)) : rc != MEMO_ENOENT) &&
                bad_stored++ < 5)
                diag("%s: round %u: slot %u lookup %s value %" PRIu64, label, round, i,
                     memo_err_name(rc), v);
            if (!s->asked) {
                /* the next caller computes instead of waiting on the dead thread */
                rc = kget(DT.m, s->space, s->key, good_fn_bytes, good_fn_u64, NULL, false, 0, &v);
                if ((rc != 0 || v != death_good(s->key) || atomic_load(&s->good_done) != 1) &&
                    bad_next++ < 5)
                    diag("%s: round %u: slot %u, the next caller got %s", label, round, i,
                         memo_err_name(rc));
            }
        }
    }
    uint64_t t1 = tap_now_ns();
    diag("%s: deaths: exit at top %u, exit nested %u, cancel at top %u, cancel nested %u, "
         "cancel while waiting %u; %u waiter calls", label, counts[DIE_EXIT][AT_TOP],
         counts[DIE_EXIT][IN_NESTED], counts[DIE_CANCEL][AT_TOP], counts[DIE_CANCEL][IN_NESTED],
         counts[DIE_CANCEL][WHILE_WAITING], waiters_total);
    is_int(bad_death, 0, "%s: every victim died inside fn", label);
    is_int(bad_waiter, 0, "%s: every waiter and helper woke and got 0 with the right value",
           label);
    is_int(bad_count, 0, "%s: exactly one good computation of each key asked for, none of "
           "the others", label);
    is_int(bad_stored, 0, "%s: the good values are stored, nothing of the dead", label);
    is_int(bad_next, 0, "%s: a key that its dead owner left behind is computed by the next call",
           label);
    is_int(atomic_load(&DT.bad_key), 0, "%s: fn only got keys of the current round", label);
    diag("%s: %.1f s", label, (double)(t1 - t0) / 1e9);
    memo_destroy(DT.m);
}

#ifdef TAP_ASAN
/*
 * A thread that pthread_cancel unwinds leaves its frames' redzones poisoned on the real stack;
 * the __asan_handle_no_return before _Unwind_Resume in memo's cleanup landing pad then trips on
 * them: a false stack-buffer-underflow in the sigaltstack interceptor, whose report dies with
 * "CHECK failed: ... kCurrentStackFrameMagic" (google/sanitizers issues 1010 and 1399). Part (d)
 * hits it every run. With fake stacks (detect_stack_use_after_return=1) the locals that have
 * redzones live off the real stack. __asan_default_options in the executable is not seen by
 * GCC's shared libasan (the symbol is not exported), so the binary re-executes itself once with
 * the option added to ASAN_OPTIONS, before any thread starts.
 */
static void asan_fake_stacks(char **argv)
{
    const char *opts = getenv("ASAN_OPTIONS");
    if (opts != NULL && strstr(opts, "detect_stack_use_after_return") != NULL)
        return;
    char buf[2048];
    snprintf(buf, sizeof buf, "%s%sdetect_stack_use_after_return=1", opts ? opts : "",
             opts && *opts ? ":" : "");
    setenv("ASAN_OPTIONS", buf, 1);
    execv("/proc/self/exe", argv);
    diag("re-executing with ASAN_OPTIONS=%s failed: %s", buf, strerror(errno));
}
#endif

int main(int argc, char **argv)
{
    (void)argc;
#ifdef TAP_ASAN
    asan_fake_stacks(argv);
#else
    (void)argv;
#endif
    g_scale = env_unsigned("MEMO_STRESS_SCALE", 1, 100000);
    const char *seed = getenv("MEMO_STRESS_SEED");
    g_seed = seed && *seed ? strtoull(seed, NULL, 0)
                           : (uint64_t)time(NULL) * 1000003u ^ (tap_now_ns() & 0xFFFFF);
    g_part_limit_s = 60 * g_scale;
#ifdef TAP_SANITIZED
    g_part_limit_s *= 2;
#endif
    tap_watchdog(6 * g_part_limit_s);
    diag("stress_torture: scale %u, seed %" PRIu64 " (MEMO_STRESS_SEED=%" PRIu64
         " replays it), part limit %u s%s", g_scale, g_seed, g_seed, g_part_limit_s,
         SANITIZER_DIVISOR > 1 ? ", sanitizer build: iterations / 2" : "");
    const char *parts = getenv("MEMO_STRESS_PARTS");
    if (parts == NULL || *parts == '\0')
        parts = "abcde";
    else
        diag("MEMO_STRESS_PARTS=%s: only those parts run", parts);
    uint64_t t0 = tap_now_ns();
    if (strchr(parts, 'a')) {
        run_herd();
        run_churn();
    }
    if (strchr(parts, 'b')) {
        run_flaky("(b) failures", 7, false, 0, sized(20000));
        run_code_one();
    }
    if (strchr(parts, 'c'))
        run_cycles();
    if (strchr(parts, 'd')) {
#ifdef TAP_TSAN
        /* tried: TSan then reports races between accesses that both hold memo's locals_lock
         * (it loses track of locks across the forced unwinding of pthread_exit/cancel) */
        skip(6, "(d) thread death: ThreadSanitizer does not support threads that die by forced "
                "unwinding inside fn (as test_death)");
#else
        run_death();
#endif
    }
    if (strchr(parts, 'e'))
        run_flaky("(e) timeouts", 8, true, 2000, sized(7000));
    diag("stress_torture: %.1f s in all", (double)(tap_now_ns() - t0) / 1e9);
    return done_testing();
}
