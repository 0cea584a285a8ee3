/*
 * stress_readers: lock-free readers must never miss a stored key while the tables grow and
 * other keys are forgotten, and refs must keep their bytes across forgets of their own key.
 *
 * Each round makes a fresh memo with no size hint and 16 shards, so every shard's table grows
 * from its smallest size many times over while:
 *  - 4 writers insert a growing set of keys, each in both key spaces (memo_get_u64 and
 *    memo_get with byte values of varying length), and publish an atomic high-water mark
 *    (release) once the get has returned;
 *  - 3 churners forget and re-get a disjoint set of churn keys (both spaces), so the tables
 *    also see removals, tombstones and retired entries all along;
 *  - 6 readers pick keys below a writer's high-water mark (acquire), half of them among the
 *    newest, and memo_lookup_u64 / memo_lookup them: each must return 0 with the right value,
 *    never MEMO_ENOENT; now and then a memo_get_u64 / memo_get of such a key, whose fn must never
 *    run (a stored key is a hit). They also look up churn keys: 0 with the right bytes, or
 *    MEMO_ENOENT;
 *  - 2 holders take refs to 16 churn keys (byte values of one size class), forget each of
 *    those keys themselves, allocate fresh entries of the same size (gets of other churn keys,
 *    re-gets of the forgotten ones), then check that every held ref still shows its bytes and
 *    release it.
 * After each round (quiescent) every writer key is looked up, and stats.entries must equal the
 * writer keys plus the churn keys that lookup finds.
 *
 * Catches: a lookup that misses while a table grows (a probe that reads the new slot array
 * before the entries are copied, or a grow that publishes the new size with the old array), a
 * removal that breaks the probe sequence of other keys (a tombstone left out: later keys of the
 * chain are missed), a hit path that takes a marker or a half-written entry as a value (wrong
 * bytes), entries freed before their grace period (a ref's bytes change, or ASan reports a
 * use-after-free), an ENOENT for a READY marker whose value entry is not yet in the table.
 *
 * Sizes scale with MEMO_STRESS_SCALE (default 1, about 10-30 s here); under sanitizers the
 * keys are divided by 12 (TSan) or 2 (ASan). MEMO_STRESS_SEED replays the random choices (the
 * seed is printed).
 *
 * Verified against the planted bugs of src/mutants.h (RelWithDebInfo, scale 1, two runs each):
 *  - M2 free-now: held refs show other keys' bytes after their key is forgotten ("every held ref
 *    kept its bytes" fails), holders' gets fail, readers see wrong churn values; both runs.
 *  - M1 double-compute: stats.entries off (duplicate entries), or, with the older version of
 *    the mutant, churners' and holders' gets failing with MEMO_ENOMEM.
 *  - M5 ready-before-value: wrong churn values in one run of two (a reader's lookup between
 *    READY and the value's store); stress_torture catches it every time.
 *  - M3, M4, M7, M8 pass here: no failures, deaths, cycles or timeouts happen.
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

#include "stress.h"

enum {
    WRITERS = 4,
    READERS = 6,
    CHURNERS = 3,
    HOLDERS = 2,
    THREADS = WRITERS + READERS + CHURNERS + HOLDERS,
    SHARDS = 16,
    CHURN_KEYS = 512,
    HELD = 16,
    CHURN_VALUE_LEN = 240, /* one size class for every churn entry: a freed one gets reused */
};

#define CHURN_BASE (0xC0ull << 56)
#define MUST_NOT_RUN 4242 /* the code of a fn that ran for a key that was stored */

#if defined(TAP_TSAN)
enum { SANITIZER_DIVISOR = 12 }; /* the writers' inserts are the round's length, ~20x slower */
#elif defined(TAP_ASAN)
enum { SANITIZER_DIVISOR = 2 };
#else
enum { SANITIZER_DIVISOR = 1 };
#endif

static unsigned g_scale = 1;
static uint64_t g_seed;
static unsigned g_round_limit_s;

/* ---- keys and values ----------------------------------------------------------------------
 * Writer w's i-th key is (w << 40) | i, in both spaces. Its byte key: the number's 8 bytes and
 * (number % 7) tag bytes; its byte value: 8 + number % 41 bytes of a pattern of the number.
 * Churn key j is CHURN_BASE | j; its byte key is always 16 bytes and its byte value always
 * CHURN_VALUE_LEN bytes (a pattern of the number), so that all churn entries share a size.
 */

static uint64_t writer_key(unsigned w, uint64_t i)
{
    return ((uint64_t)w << 40) | i;
}

static uint64_t u64_value(uint64_t key)
{
    return mix64(key ^ 0x5EED);
}

typedef struct bkey {
    unsigned char b[16];
    size_t        len;
} bkey_t;

static bkey_t bkey_make(uint64_t key)
{
    bkey_t k;
    memcpy(k.b, &key, 8);
    if (key >= CHURN_BASE) {
        uint64_t tag = mix64(key);
        memcpy(k.b + 8, &tag, 8);
        k.len = 16;
    } else {
        k.len = 8 + (size_t)(key % 7);
        for (size_t i = 8; i < k.len; i++)
            k.b[i] = (unsigned char)(0x40 + i);
    }
    return k;
}

static size_t bytes_value_len(uint64_t key)
{
    return key >= CHURN_BASE ? CHURN_VALUE_LEN : 8 + (size_t)(key % 41);
}

static unsigned char pattern_byte(uint64_t key, size_t i)
{
    return (unsigned char)(mix64(key + i / 8) >> (8 * (i % 8)));
}

static bool bytes_value_ok(const memo_ref_t *r, uint64_t key)
{
    const unsigned char *p = (const unsigned char *)r->data;
    if (p == NULL || r->len != bytes_value_len(key))
        return false;
    for (size_t i = 0; i < r->len; i++)
        if (p[i] != pattern_byte(key, i))
            return false;
    return true;
}

/* ---- the round's shared state ----------------------------------------------------------- */

typedef struct readers {
    memo_t              *m;
    unsigned             rounds, keys_per_writer, round;
    pthread_barrier_t    start;
    pthread_mutex_t      done_lock;
    pthread_cond_t       done_cond;
    unsigned             done; /* threads finished, all rounds; under done_lock */
    bool                 stop;
    atomic_uint_fast64_t high_water[WRITERS]; /* keys 0..hwm-1 of writer w are stored */
    atomic_int           writers_running;
    /* failures, all rounds */
    atomic_int           writer_bad, reader_missed, reader_wrong, reader_bad_rc, reader_computed,
                         churn_bad, churn_wrong, held_corrupted, held_bad_rc;
    /* work done, all rounds */
    atomic_uint_fast64_t lookups, recent_lookups, reader_gets, churn_lookups, churn_ops,
                         forgets_done, held_refs, held_checks;
} readers_t;

static readers_t R;

static int writer_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = u64_value(key);
    return 0;
}

static int bytes_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    (void)ctx;
    if (key_len < 8)
        return 1;
    memcpy(&k, key, 8);
    bkey_t want = bkey_make(k);
    if (want.len != key_len || memcmp(want.b, key, key_len) != 0)
        return 1;
    size_t         len = bytes_value_len(k);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, len);
    if (p == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(k, i);
    return 0;
}

static int must_not_run_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key, (void)value;
    atomic_fetch_add(&R.reader_computed, 1);
    return MUST_NOT_RUN;
}

static int must_not_run_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len, (void)out;
    atomic_fetch_add(&R.reader_computed, 1);
    return MUST_NOT_RUN;
}

static void round_done(void)
{
    pthread_mutex_lock(&R.done_lock);
    R.done++;
    pthread_cond_signal(&R.done_cond);
    pthread_mutex_unlock(&R.done_lock);
}

/* ---- writers ---- */

static void writer_round(unsigned w)
{
    for (uint64_t i = 0; i < R.keys_per_writer; i++) {
        uint64_t   key = writer_key(w, i), v = 0;
        bkey_t     bk = bkey_make(key);
        memo_ref_t r = MEMO_REF_INIT;
        int        rc = memo_get_u64(R.m, key, writer_fn_u64, NULL, &v);
        if (rc != 0 || v != u64_value(key))
            atomic_fetch_add(&R.writer_bad, 1);
        rc = memo_get(R.m, bk.b, bk.len, bytes_fn, NULL, &r);
        if (rc != 0 || !bytes_value_ok(&r, key))
            atomic_fetch_add(&R.writer_bad, 1);
        memo_release(&r);
        /* release: a reader that sees i + 1 also sees both keys stored (the gets returned) */
        atomic_store_explicit(&R.high_water[w], i + 1, memory_order_release);
    }
}

/* ---- readers ---- */

static void check_writer_key(prng_t *rng, uint64_t key, uint64_t *lookups)
{
    uint64_t   r = prng_next(rng), v = 0;
    bkey_t     bk = bkey_make(key);
    memo_ref_t ref = MEMO_REF_INIT;
    int        rc;
    (*lookups)++;
    if (r % 64 == 0) {
        /* a get of a stored key is a hit: its fn must never run */
        atomic_fetch_add(&R.reader_gets, 1);
        rc = memo_get_u64(R.m, key, must_not_run_u64, NULL, &v);
        if (rc != 0 || v != u64_value(key))
            atomic_fetch_add(rc == MUST_NOT_RUN ? &R.reader_missed : &R.reader_wrong, 1);
        rc = memo_get(R.m, bk.b, bk.len, must_not_run_bytes, NULL, &ref);
        if (rc != 0 || !bytes_value_ok(&ref, key))
            atomic_fetch_add(rc == MUST_NOT_RUN ? &R.reader_missed : &R.reader_wrong, 1);
        memo_release(&ref);
        return;
    }
    rc = memo_lookup_u64(R.m, key, &v);
    if (rc == MEMO_ENOENT) {
        if (atomic_fetch_add(&R.reader_missed, 1) < 5)
            diag("round %u: memo_lookup_u64 missed stored key %#" PRIx64, R.round, key);
    } else if (rc != 0) {
        atomic_fetch_add(&R.reader_bad_rc, 1);
    } else if (v != u64_value(key)) {
        atomic_fetch_add(&R.reader_wrong, 1);
    }
    rc = memo_lookup(R.m, bk.b, bk.len, &ref);
    if (rc == MEMO_ENOENT) {
        if (atomic_fetch_add(&R.reader_missed, 1) < 5)
            diag("round %u: memo_lookup missed stored byte key %#" PRIx64, R.round, key);
    } else if (rc != 0) {
        atomic_fetch_add(&R.reader_bad_rc, 1);
    } else if (!bytes_value_ok(&ref, key)) {
        atomic_fetch_add(&R.reader_wrong, 1);
    }
    memo_release(&ref);
}

static void reader_round(prng_t *rng)
{
    uint64_t lookups = 0, recent = 0, churn = 0;
    while (atomic_load(&R.writers_running) > 0) {
        uint64_t r = prng_next(rng);
        unsigned w = (unsigned)(r % WRITERS);
        uint64_t hwm = atomic_load_explicit(&R.high_water[w], memory_order_acquire);
        if (hwm == 0) {
            sched_yield();
            continue;
        }
        uint64_t i;
        if ((r >> 8) % 2) {
            /* among the newest 64: the keys most likely in a table being grown */
            uint64_t back = (r >> 16) % 64;
            i = back < hwm ? hwm - 1 - back : 0;
            recent++;
        } else {
            i = (r >> 16) % hwm;
        }
        check_writer_key(rng, writer_key(w, i), &lookups);
        if ((r >> 40) % 8 == 0) {
            /* a churn key: there or not, but never wrong */
            uint64_t   key = CHURN_BASE | ((r >> 44) % CHURN_KEYS), v = 0;
            bkey_t     bk = bkey_make(key);
            memo_ref_t ref = MEMO_REF_INIT;
            int        rc = memo_lookup_u64(R.m, key, &v);
            if ((rc != 0 && rc != MEMO_ENOENT) || (rc == 0 && v != u64_value(key)))
                atomic_fetch_add(&R.churn_wrong, 1);
            rc = memo_lookup(R.m, bk.b, bk.len, &ref);
            if ((rc != 0 && rc != MEMO_ENOENT) || (rc == 0 && !bytes_value_ok(&ref, key)))
                atomic_fetch_add(&R.churn_wrong, 1);
            memo_release(&ref);
            churn++;
        }
    }
    atomic_fetch_add(&R.lookups, lookups);
    atomic_fetch_add(&R.recent_lookups, recent);
    atomic_fetch_add(&R.churn_lookups, churn);
}

/* ---- churners ---- */

static void churn_get(uint64_t key, int space)
{
    if (space == 0) {
        uint64_t v = 0;
        int      rc = memo_get_u64(R.m, key, writer_fn_u64, NULL, &v);
        if (rc != 0)
            atomic_fetch_add(&R.churn_bad, 1);
        else if (v != u64_value(key))
            atomic_fetch_add(&R.churn_wrong, 1);
        return;
    }
    bkey_t     bk = bkey_make(key);
    memo_ref_t ref = MEMO_REF_INIT;
    int        rc = memo_get(R.m, bk.b, bk.len, bytes_fn, NULL, &ref);
    if (rc != 0)
        atomic_fetch_add(&R.churn_bad, 1);
    else if (!bytes_value_ok(&ref, key))
        atomic_fetch_add(&R.churn_wrong, 1);
    memo_release(&ref);
}

static int churn_forget(uint64_t key, int space)
{
    if (space == 0)
        return memo_forget_u64(R.m, key);
    bkey_t bk = bkey_make(key);
    return memo_forget(R.m, bk.b, bk.len);
}

static void churner_round(prng_t *rng)
{
    uint64_t ops = 0, forgets = 0;
    while (atomic_load(&R.writers_running) > 0) {
        uint64_t r = prng_next(rng);
        uint64_t key = CHURN_BASE | ((r >> 8) % CHURN_KEYS);
        int      space = (int)((r >> 4) & 1);
        if (r % 2) {
            int rc = churn_forget(key, space);
            if (rc == 0)
                forgets++;
            else if (rc != MEMO_ENOENT)
                atomic_fetch_add(&R.churn_bad, 1);
        }
        churn_get(key, space);
        ops++;
    }
    atomic_fetch_add(&R.churn_ops, ops);
    atomic_fetch_add(&R.forgets_done, forgets);
}

/* ---- holders: refs across forgets of their own keys ---- */

static void holder_round(prng_t *rng)
{
    uint64_t refs_taken = 0, checks = 0, forgets = 0;
    while (atomic_load(&R.writers_running) > 0) {
        memo_ref_t held[HELD];
        uint64_t   key[HELD];
        for (unsigned h = 0; h < HELD; h++) {
            key[h] = CHURN_BASE | (prng_next(rng) % CHURN_KEYS);
            bkey_t bk = bkey_make(key[h]);
            held[h] = (memo_ref_t)MEMO_REF_INIT;
            if (memo_get(R.m, bk.b, bk.len, bytes_fn, NULL, &held[h]) != 0 ||
                !bytes_value_ok(&held[h], key[h]))
                atomic_fetch_add(&R.held_bad_rc, 1);
            refs_taken++;
        }
        /* forget each held key, then make entries of the same size: other keys first (they
         * would take the freed memory if it were freed now), then the forgotten key again */
        for (unsigned h = 0; h < HELD; h++) {
            bkey_t bk = bkey_make(key[h]);
            int    rc = memo_forget(R.m, bk.b, bk.len);
            if (rc == 0)
                forgets++;
            else if (rc != MEMO_ENOENT) /* a churner may have forgotten it first */
                atomic_fetch_add(&R.held_bad_rc, 1);
            churn_get(CHURN_BASE | (prng_next(rng) % CHURN_KEYS), 1);
            churn_get(key[h], 1);
        }
        for (unsigned h = 0; h < HELD; h++) {
            if (!bytes_value_ok(&held[h], key[h])) {
                if (atomic_fetch_add(&R.held_corrupted, 1) < 5)
                    diag("round %u: a held ref of churn key %#" PRIx64 " changed after its "
                         "key was forgotten", R.round, key[h]);
            }
            checks++;
        }
        for (unsigned h = HELD; h-- > 0;)
            memo_release(&held[h]);
    }
    atomic_fetch_add(&R.held_refs, refs_taken);
    atomic_fetch_add(&R.held_checks, checks);
    atomic_fetch_add(&R.forgets_done, forgets);
}

static void *worker(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    for (unsigned round = 0;; round++) {
        tap_barrier_wait(&R.start);
        if (R.stop)
            break;
        prng_t rng = { mix64(g_seed ^ ((uint64_t)round << 32) ^ index) };
        if (index < WRITERS) {
            writer_round(index);
            atomic_fetch_sub(&R.writers_running, 1);
        } else if (index < WRITERS + READERS) {
            reader_round(&rng);
        } else if (index < WRITERS + READERS + CHURNERS) {
            churner_round(&rng);
        } else {
            holder_round(&rng);
        }
        round_done();
    }
    return NULL;
}

int main(void)
{
    g_scale = env_unsigned("MEMO_STRESS_SCALE", 1, 100000);
    const char *seed = getenv("MEMO_STRESS_SEED");
    g_seed = seed && *seed ? strtoull(seed, NULL, 0)
                           : (uint64_t)time(NULL) * 1000003u ^ (tap_now_ns() & 0xFFFFF);
    g_round_limit_s = 60 * g_scale;
#ifdef TAP_SANITIZED
    g_round_limit_s *= 2;
#endif
    memset(&R, 0, sizeof R);
    R.rounds = 10 * g_scale;
    R.keys_per_writer = 60000 / SANITIZER_DIVISOR;
    tap_watchdog(R.rounds * g_round_limit_s / 2 + 60);
    diag("stress_readers: scale %u, seed %" PRIu64 " (MEMO_STRESS_SEED=%" PRIu64 " replays it)%s",
         g_scale, g_seed, g_seed,
         SANITIZER_DIVISOR > 1 ? ", sanitizer build: fewer keys per writer" : "");
    diag("%u rounds, each a fresh memo (%d shards, no size hint): %d writers x %u keys x 2 "
         "spaces, %d readers, %d churners over %d keys, %d holders of %d refs",
         R.rounds, SHARDS, WRITERS, R.keys_per_writer, READERS, CHURNERS, CHURN_KEYS, HOLDERS,
         HELD);
    pthread_mutex_init(&R.done_lock, NULL);
    pthread_cond_init(&R.done_cond, NULL);
    tap_barrier_init(&R.start, THREADS + 1);
    pthread_t tids[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        if (pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");

    uint64_t t0 = tap_now_ns();
    unsigned final_missing = 0, entries_off = 0;
    for (unsigned round = 0; round < R.rounds; round++) {
        memo_config_t cfg = MEMO_CONFIG_INIT;
        cfg.shards = SHARDS;
        cfg.expected_entries = 0;
        if (test_memo_create(&R.m, &cfg) != 0)
            bail_out("memo_create");
        R.round = round;
        for (unsigned w = 0; w < WRITERS; w++)
            atomic_store(&R.high_water[w], 0);
        atomic_store(&R.writers_running, WRITERS);
        uint64_t r0 = tap_now_ns();
        tap_barrier_wait(&R.start);
        struct timespec limit;
        clock_gettime(CLOCK_REALTIME, &limit);
        limit.tv_sec += g_round_limit_s;
        pthread_mutex_lock(&R.done_lock);
        while (R.done < THREADS * (round + 1))
            if (pthread_cond_timedwait(&R.done_cond, &R.done_lock, &limit) == ETIMEDOUT) {
                ok(0, "round %u still running after %u s: hung", round, g_round_limit_s);
                bail_out("stress_readers hung");
            }
        pthread_mutex_unlock(&R.done_lock);
        uint64_t r1 = tap_now_ns();

        /* quiescent: every writer key is there, and the entry count adds up */
        uint64_t churn_present = 0;
        for (unsigned w = 0; w < WRITERS; w++)
            for (uint64_t i = 0; i < R.keys_per_writer; i++) {
                uint64_t   key = writer_key(w, i), v = 0;
                bkey_t     bk = bkey_make(key);
                memo_ref_t ref = MEMO_REF_INIT;
                if (memo_lookup_u64(R.m, key, &v) != 0 || v != u64_value(key))
                    final_missing++;
                if (memo_lookup(R.m, bk.b, bk.len, &ref) != 0 || !bytes_value_ok(&ref, key))
                    final_missing++;
                memo_release(&ref);
            }
        for (uint64_t j = 0; j < CHURN_KEYS; j++) {
            uint64_t   key = CHURN_BASE | j, v = 0;
            bkey_t     bk = bkey_make(key);
            memo_ref_t ref = MEMO_REF_INIT;
            churn_present += memo_lookup_u64(R.m, key, &v) == 0;
            if (memo_lookup(R.m, bk.b, bk.len, &ref) == 0)
                churn_present++;
            memo_release(&ref);
        }
        memo_stats_t s;
        memo_stats(R.m, &s);
        uint64_t want = 2ull * WRITERS * R.keys_per_writer + churn_present;
        if (s.entries != want && entries_off++ < 5)
            diag("round %u: stats.entries %" PRIu64 ", want %" PRIu64, round, s.entries, want);
        diag("round %u: %.1f s, %" PRIu64 " entries, %.1f MB", round, (double)(r1 - r0) / 1e9,
             s.entries, (double)s.bytes / 1e6);
        memo_destroy(R.m);
        R.m = NULL;
    }
    R.stop = true;
    tap_barrier_wait(&R.start);
    if (tap_join_threads_timed(tids, THREADS, g_round_limit_s) != 0)
        bail_out("threads did not finish");
    uint64_t t1 = tap_now_ns();

    is_int(atomic_load(&R.writer_bad), 0, "writers: every get returned 0 and the right value");
    is_int(atomic_load(&R.reader_missed), 0,
           "readers: no stored key missed (%" PRIu64 " lookups of writer keys in both spaces, "
           "%" PRIu64 " among the newest 64, %" PRIu64 " gets)",
           (uint64_t)atomic_load(&R.lookups), (uint64_t)atomic_load(&R.recent_lookups),
           (uint64_t)atomic_load(&R.reader_gets));
    is_int(atomic_load(&R.reader_computed), 0, "readers: fn never ran for a stored key");
    is_int(atomic_load(&R.reader_wrong), 0, "readers: every value found is the key's");
    is_int(atomic_load(&R.reader_bad_rc), 0, "readers: lookups returned only 0");
    cmp_u64(atomic_load(&R.lookups), >, 1000, "readers: did read while the writers wrote");
    is_int(atomic_load(&R.churn_bad), 0,
           "churners: every get returned 0, every forget 0 or MEMO_ENOENT (%" PRIu64
           " operations, %" PRIu64 " forgets in all)",
           (uint64_t)atomic_load(&R.churn_ops), (uint64_t)atomic_load(&R.forgets_done));
    is_int(atomic_load(&R.churn_wrong), 0,
           "churn keys: every value got or looked up is the key's (%" PRIu64 " reader lookups)",
           (uint64_t)atomic_load(&R.churn_lookups));
    is_int(atomic_load(&R.held_bad_rc), 0, "holders: every get and forget succeeded");
    is_int(atomic_load(&R.held_corrupted), 0,
           "holders: every held ref kept its bytes across the forget of its key (%" PRIu64
           " refs checked)", (uint64_t)atomic_load(&R.held_checks));
    is_int(final_missing, 0, "after each round every writer key is found with its value");
    is_int(entries_off, 0, "after each round stats.entries == writer keys + churn keys found");
    diag("stress_readers: %.1f s", (double)(t1 - t0) / 1e9);
    tap_barrier_destroy(&R.start);
    pthread_mutex_destroy(&R.done_lock);
    pthread_cond_destroy(&R.done_cond);
    return done_testing();
}
