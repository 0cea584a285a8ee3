/*
 * test_once: "at most once" under contention.
 *
 * (a) Herd: 32 threads released by a barrier onto one fresh key per round, a compute function
 *     that sleeps ~1 ms. Catches: a miss path that inserts the in-flight marker without
 *     re-checking under the shard lock (two threads both miss and both compute); waiters that
 *     wake before the value is published and see garbage or miss again; lost wake-ups (a waiter
 *     that sleeps after the owner's wake: the watchdog fires); counters that lose increments.
 * (b) Churn: 8 threads (more than the 2 cores) x 200k calls over 4096 keys, u64 and byte keys.
 *     A per-key "computing now" counter, incremented on fn entry and decremented on exit, must
 *     never exceed 1, and each key must be computed exactly once. Catches: races between the
 *     miss insert and a concurrent table grow (a marker lost in the old slot array, so a second
 *     thread misses again), hash/compare bugs that split one key in two, a READY entry that is
 *     re-inserted, counters summed wrongly across threads (hits + waits + misses != calls).
 * Verified against mutated copies of src/: no re-check under the shard lock plus ck_hs_set
 * instead of put_unique -> (a) and (b) report double computations; waits not counted -> the
 * count identities fail.
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { HERD_THREADS = 32, HERD_ROUNDS = 200 };

/* ---- (a) the herd ---- */

typedef struct herd {
    memo_t           *m;
    pthread_barrier_t start;
    pthread_barrier_t end;
    bool              bytes;               /* byte keys instead of u64 */
    atomic_int        calls[HERD_ROUNDS];  /* fn calls per round */
    atomic_uint_fast64_t seq;              /* a fresh value per computation */
    uint64_t          got[HERD_THREADS][HERD_ROUNDS];
    int               rc[HERD_THREADS][HERD_ROUNDS];
} herd_t;

typedef struct herd_arg {
    herd_t  *h;
    unsigned index;
} herd_arg_t;

static herd_t herd;

/* The value is unique per computation: a second computation of a round shows as a second value. */
static int herd_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    herd_t *h = (herd_t *)ctx;
    atomic_fetch_add(&h->calls[key], 1);
    tap_sleep_ns(1000000);
    *value = atomic_fetch_add(&h->seq, 1) + 1000;
    return 0;
}

static int herd_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    herd_t  *h = (herd_t *)ctx;
    unsigned round;
    if (key_len != sizeof round)
        return 1;
    memcpy(&round, key, sizeof round);
    atomic_fetch_add(&h->calls[round], 1);
    tap_sleep_ns(1000000);
    uint64_t v = atomic_fetch_add(&h->seq, 1) + 1000;
    return memo_result_set(out, &v, sizeof v);
}

static void *herd_thread(void *arg)
{
    herd_arg_t *a = (herd_arg_t *)arg;
    herd_t     *h = a->h;
    for (unsigned round = 0; round < HERD_ROUNDS; round++) {
        tap_barrier_wait(&h->start);
        uint64_t v = 0;
        int      rc;
        if (h->bytes) {
            memo_ref_t r = MEMO_REF_INIT;
            rc = memo_get(h->m, &round, sizeof round, herd_fn_bytes, h, &r);
            if (rc == 0) {
                if (r.len == sizeof v)
                    memcpy(&v, r.data, sizeof v);
                else
                    rc = 999;
                memo_release(&r);
            }
        } else {
            rc = memo_get_u64(h->m, round, herd_fn_u64, h, &v);
        }
        h->got[a->index][round] = v;
        h->rc[a->index][round] = rc;
    }
    tap_barrier_wait(&h->end);
    return NULL;
}

static void run_herd(bool bytes)
{
    const char *label = bytes ? "herd, byte keys" : "herd, u64 keys";
    herd_t     *h = &herd;
    memset(h, 0, sizeof *h);
    h->bytes = bytes;
    if (test_memo_create(&h->m, NULL) != 0)
        bail_out("memo_create");
    tap_barrier_init(&h->start, HERD_THREADS);
    tap_barrier_init(&h->end, HERD_THREADS + 1);
    pthread_t  tids[HERD_THREADS];
    herd_arg_t args[HERD_THREADS];
    for (unsigned i = 0; i < HERD_THREADS; i++)
        args[i] = (herd_arg_t){ h, i };
    uint64_t t0 = tap_now_ns();
    tap_start_threads(tids, HERD_THREADS, herd_thread, args, sizeof args[0]);
    tap_barrier_wait(&h->end);
    tap_join_threads(tids, HERD_THREADS);
    uint64_t t1 = tap_now_ns();

    int rounds_not_once = 0, rounds_split = 0, bad_rc = 0;
    for (unsigned round = 0; round < HERD_ROUNDS; round++) {
        if (atomic_load(&h->calls[round]) != 1) {
            if (rounds_not_once++ < 5)
                diag("%s: round %u computed %d times", label, round, atomic_load(&h->calls[round]));
        }
        for (unsigned i = 0; i < HERD_THREADS; i++) {
            if (h->rc[i][round] != 0)
                bad_rc++;
            if (h->got[i][round] != h->got[0][round]) {
                rounds_split++;
                break;
            }
        }
    }
    is_int(bad_rc, 0, "%s: every one of %d calls returned 0", label, HERD_THREADS * HERD_ROUNDS);
    is_int(rounds_not_once, 0, "%s: exactly one computation in each of %d rounds of %d threads",
           label, HERD_ROUNDS, HERD_THREADS);
    is_int(rounds_split, 0, "%s: in every round all %d threads got the same value", label,
           HERD_THREADS);
    memo_stats_t s;
    memo_stats(h->m, &s);
    is_u64(s.misses, HERD_ROUNDS, "%s: stats.misses == rounds", label);
    is_u64(s.hits + s.waits + s.misses, (uint64_t)HERD_THREADS * HERD_ROUNDS,
           "%s: hits + waits + misses == calls (hits %" PRIu64 ", waits %" PRIu64 ")", label,
           s.hits, s.waits);
    is_u64(s.entries, HERD_ROUNDS, "%s: stats.entries == rounds", label);
    is_u64(s.errors, 0, "%s: stats.errors == 0", label);
    ok(s.waits > 0, "%s: some callers actually waited (waits %" PRIu64 ")", label, s.waits);
    diag("%s: %.0f ms", label, (double)(t1 - t0) / 1e6);
    tap_barrier_destroy(&h->start);
    tap_barrier_destroy(&h->end);
    memo_destroy(h->m);
}

/* ---- (b) churn over 4096 keys ---- */

enum { CHURN_THREADS = 8, CHURN_KEYS = 4096, CHURN_CALLS = 200000 };

typedef struct churn {
    memo_t           *m;
    pthread_barrier_t start;
    bool              bytes;
    atomic_int        computing[CHURN_KEYS]; /* fn running now for this key */
    atomic_int        computed[CHURN_KEYS];  /* fn calls for this key */
    atomic_int        max_computing;
    atomic_int        wrong_values;
    atomic_int        bad_rc;
    atomic_int        bad_key;
} churn_t;

static churn_t churn;

static uint64_t churn_value(uint64_t key)
{
    return key * 0x9E3779B97F4A7C15ull ^ 0xABCDEF;
}

static void churn_enter(churn_t *c, uint64_t key)
{
    int now = atomic_fetch_add(&c->computing[key], 1) + 1;
    int max = atomic_load(&c->max_computing);
    while (now > max && !atomic_compare_exchange_weak(&c->max_computing, &max, now)) {
    }
    atomic_fetch_add(&c->computed[key], 1);
    /* widen the window in which a second computation of this key would overlap */
    if (key % 3 == 0)
        sched_yield();
    else
        for (volatile int spin = 0; spin < 200; spin++) {
        }
}

static void churn_leave(churn_t *c, uint64_t key)
{
    atomic_fetch_sub(&c->computing[key], 1);
}

static int churn_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    churn_t *c = (churn_t *)ctx;
    if (key >= CHURN_KEYS) {
        atomic_fetch_add(&c->bad_key, 1);
        return 1;
    }
    churn_enter(c, key);
    *value = churn_value(key);
    churn_leave(c, key);
    return 0;
}

/* Byte keys of varying lengths: "k" + decimal + a tail of (key % 23) dashes. */
static size_t churn_key_bytes(uint64_t key, char *buf)
{
    int n = sprintf(buf, "k%" PRIu64, key);
    for (uint64_t i = 0; i < key % 23; i++)
        buf[n++] = '-';
    return (size_t)n;
}

static int churn_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    churn_t *c = (churn_t *)ctx;
    char     buf[64];
    if (key_len < 2 || key_len >= sizeof buf || ((const char *)key)[0] != 'k') {
        atomic_fetch_add(&c->bad_key, 1);
        return 1;
    }
    uint64_t k = strtoull((const char *)key + 1, NULL, 10);
    if (k >= CHURN_KEYS || churn_key_bytes(k, buf) != key_len || memcmp(buf, key, key_len) != 0) {
        atomic_fetch_add(&c->bad_key, 1);
        return 1;
    }
    churn_enter(c, k);
    /* value: the u64 value, then the key echoed: checks both value and length */
    unsigned char *p = (unsigned char *)memo_result_alloc(out, 8 + key_len);
    int            rc = 0;
    if (!p) {
        rc = MEMO_ENOMEM;
    } else {
        uint64_t v = churn_value(k);
        memcpy(p, &v, 8);
        memcpy(p + 8, key, key_len);
    }
    churn_leave(c, k);
    return rc;
}

static void *churn_thread(void *arg)
{
    unsigned index = (unsigned)(uintptr_t)arg;
    churn_t *c = &churn;
    uint64_t x = 0x243F6A8885A308D3ull * (index + 1);
    char     buf[64];
    tap_barrier_wait(&c->start);
    for (unsigned i = 0; i < CHURN_CALLS; i++) {
        uint64_t key;
        if (i < CHURN_KEYS) {
            /* first pass: every thread sweeps the keys in the same order, so they collide */
            key = i;
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            key = x % CHURN_KEYS;
        }
        if (c->bytes) {
            size_t     n = churn_key_bytes(key, buf);
            memo_ref_t r = MEMO_REF_INIT;
            int        rc = memo_get(c->m, buf, n, churn_fn_bytes, c, &r);
            if (rc != 0) {
                atomic_fetch_add(&c->bad_rc, 1);
                continue;
            }
            uint64_t v;
            memcpy(&v, r.data, 8);
            if (r.len != 8 + n || v != churn_value(key) ||
                memcmp((const char *)r.data + 8, buf, n) != 0)
                atomic_fetch_add(&c->wrong_values, 1);
            memo_release(&r);
        } else {
            uint64_t v = 0;
            int      rc = memo_get_u64(c->m, key, churn_fn_u64, c, &v);
            if (rc != 0)
                atomic_fetch_add(&c->bad_rc, 1);
            else if (v != churn_value(key))
                atomic_fetch_add(&c->wrong_values, 1);
        }
    }
    return NULL;
}

static void run_churn(bool bytes)
{
    const char *label = bytes ? "churn, byte keys" : "churn, u64 keys";
    churn_t    *c = &churn;
    memset(c, 0, sizeof *c);
    c->bytes = bytes;
    /* start small (no hint, 2 shards) so that the tables grow while threads insert */
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 2;
    if (test_memo_create(&c->m, &cfg) != 0)
        bail_out("memo_create");
    tap_barrier_init(&c->start, CHURN_THREADS);
    pthread_t tids[CHURN_THREADS];
    uint64_t  t0 = tap_now_ns();
    for (unsigned i = 0; i < CHURN_THREADS; i++)
        if (pthread_create(&tids[i], NULL, churn_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    tap_join_threads(tids, CHURN_THREADS);
    uint64_t t1 = tap_now_ns();

    int not_once = 0;
    for (unsigned k = 0; k < CHURN_KEYS; k++)
        if (atomic_load(&c->computed[k]) != 1 && not_once++ < 5)
            diag("%s: key %u computed %d times", label, k, atomic_load(&c->computed[k]));
    is_int(atomic_load(&c->max_computing), 1,
           "%s: never more than one computation of a key at a time (max seen)", label);
    is_int(not_once, 0, "%s: each of %d keys computed exactly once", label, CHURN_KEYS);
    is_int(atomic_load(&c->bad_rc), 0, "%s: every call returned 0", label);
    is_int(atomic_load(&c->bad_key), 0, "%s: fn was always handed a well-formed key", label);
    is_int(atomic_load(&c->wrong_values), 0, "%s: every value is f(key)", label);
    memo_stats_t s;
    memo_stats(c->m, &s);
    const uint64_t calls = (uint64_t)CHURN_THREADS * CHURN_CALLS;
    is_u64(s.misses, CHURN_KEYS, "%s: stats.misses == 4096", label);
    is_u64(s.hits + s.waits + s.misses, calls,
           "%s: hits + waits + misses == %" PRIu64 " calls (hits %" PRIu64 ", waits %" PRIu64 ")",
           label, calls, s.hits, s.waits);
    is_u64(s.entries, CHURN_KEYS, "%s: stats.entries == 4096", label);
    diag("%s: %.0f ms for %" PRIu64 " calls", label, (double)(t1 - t0) / 1e6, calls);
    tap_barrier_destroy(&c->start);
    memo_destroy(c->m);
}

int main(void)
{
    tap_watchdog(100);
    run_herd(false);
    run_herd(true);
    run_churn(false);
    run_churn(true);
    return done_testing();
}
