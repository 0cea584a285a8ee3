/*
 * test_bounded: the bounds of API.md 0.2 (max_entries, max_bytes, memo_set_limits). Hash table
 * only: dense keys with a bound are refused, so no _dense run. The removal callback's own rules
 * are test_bounded_removal; both share bounded.h.
 * Every value is a function of its key, so that each one returned or reported can be checked;
 * callbacks are logged (tests/helpers.h) and checked after memo_destroy, when all have run.
 *
 *  - max_entries = 1 keeps exactly the last value stored, whatever was hit before and in either
 *    key space (one bound for both); the key it replaced is computed again. Catches a policy
 *    that keeps a hot old value over the new one, a bound per key space.
 *  - random workloads under max_entries N (1 .. 500), u64 and byte keys: entries <= N after
 *    every call, evictions == misses - entries, every value right, one callback per value.
 *    Catches a bound kept per shard or approximately, evictions miscounted or unreported.
 *  - an evicted key asked by 24 threads at once is computed once (single flight survives
 *    eviction: catches a stale marker or an evicted entry that lets two threads compute).
 *  - max_bytes over byte keys and values of 1 B .. 32 KiB: bytes <= max_bytes (or no entry)
 *    after every call; a value bigger than the bound is handed to its caller and waiters, not
 *    stored, and leaves the memo (its values, its bytes) as it was.
 *  - memo_set_limits: lowering evicts before it returns, raising and 0 lift the bound, inside
 *    fn, on a memo made without any 0.2 setting; MEMO_EINVAL for NULL.
 *  - stored failures (failure_ttl_ns) count toward max_entries, and get no callback.
 *  - a 128-entry memo keeps a hot set of 100 keys through scans of unique keys (an LRU: 0%).
 * Verified against mutated copies of src/: a bound off by one (planted bug M13), evictions not
 * counted or their callbacks missing, memo_set_limits that does not evict, max_bytes with 2 KiB
 * of slack: each fails assertions here.
 */
#include "tap.h"
#include "helpers.h"
#include "bounded.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

/* ---- max_entries = 1; random workloads under max_entries N ---- */

static void test_max_entries_one(void)
{
    const char   *what = "max_entries 1";
    memo_config_t cfg = bounds(1, 0);
    memo_t       *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t   c = { 0, len_short };
    bool     right;
    uint64_t v = 0;
    for (int i = 0; i < 6; i++)
        get_key(m, false, 1, &c, &right);
    is_u64(atomic_load(&c.calls), 1, "%s: key 1 computed once, then 5 hits", what);
    ok(get_key(m, false, 2, &c, &right) == 0 && right, "%s: key 2", what);
    is_code(memo_lookup_u64(m, 1, &v), MEMO_ENOENT, "%s: key 1 (hit 5 times) is gone: the last value stored is kept", what);
    ok(memo_lookup_u64(m, 2, &v) == 0 && v == u64_value(2), "%s: key 2 is stored", what);
    ok(get_key(m, false, 1, &c, &right) == 0 && right && atomic_load(&c.calls) == 3,
       "%s: key 1 asked again is computed again", what);
    int not_last = 0, prev_kept = 0, over = 0, wrong = 0;
    for (uint64_t k = 100; k < 400; k++) { /* u64 and byte keys in turn */
        wrong += get_key(m, k % 3 == 0, k, &c, &right) != 0 || !right;
        not_last += lookup_key(m, k % 3 == 0, k, &c) != 0;
        prev_kept += lookup_key(m, (k - 1) % 3 == 0, k - 1, &c) != MEMO_ENOENT;
        over += test_stats(m).entries != 1;
    }
    is_int(wrong, 0, "%s: 300 keys of both key spaces in turn (one bound for both): every value right", what);
    ok(not_last == 0 && prev_kept == 0 && over == 0,
       "%s: ... after each, only it is stored (%d not found, %d previous kept, %d entries != 1)", what, not_last,
       prev_kept, over);
    memo_stats_t s = test_stats(m);
    ok(s.misses == atomic_load(&c.calls) && s.evictions == s.misses - 1, "%s: misses == computations, evictions == misses - 1",
       what);
    memo_destroy(m);
    check_callbacks(what, &s, s.misses, len_short);
}

static void test_random_bounds(void)
{
    static const uint64_t ns[] = { 1, 2, 3, 8, 64, 500 };
    for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
        uint64_t n = ns[b], seed = 0x1234567 + b, range = 3 * n + 5, peak = 0;
        char     what[64];
        snprintf(what, sizeof what, "random workload, max_entries %" PRIu64, n);
        memo_config_t cfg = bounds(n, 0);
        memo_t       *m = new_memo(&cfg, what);
        if (!m)
            continue;
        vctx_t c = { 0, len_short };
        int    over = 0, wrong = 0, calls = 0;
        for (; calls < 20000; calls++) {
            uint64_t r = test_rng(&seed);
            /* half uniform, half skewed to small keys (a hot set for the policy to find) */
            uint64_t key = (r >> 20) % (r & 1 ? range : 1 + (r >> 44) % range);
            bool     right;
            wrong += get_key(m, (r >> 8) % 4 == 0, key, &c, &right) != 0 || !right;
            memo_stats_t s = test_stats(m);
            over += s.entries > n;
            peak = s.entries > peak ? s.entries : peak;
        }
        memo_stats_t s = test_stats(m);
        is_int(wrong, 0, "%s: every value right", what);
        is_int(over, 0, "%s: entries <= %" PRIu64 " after every call (peak %" PRIu64 ")", what, n, peak);
        ok(s.misses == atomic_load(&c.calls) && s.hits + s.misses == (uint64_t)calls,
           "%s: misses == computations, hits + misses == calls", what);
        is_u64(s.evictions, s.misses - s.entries, "%s: evictions == stored - entries", what);
        memo_destroy(m);
        check_callbacks(what, &s, s.misses, len_short);
    }
}

/* ---- an evicted key is computed once by a herd ---- */

/* Asks new keys, each 3 times (so that a policy that counts frequencies prefers them), until
 * key is evicted; looks every 50 new keys only, since a lookup counts as an access too. */
static bool evict(memo_t *m, bool bytes, uint64_t key, uint64_t *next, vctx_t *c)
{
    bool right;
    for (int tries = 0; tries < 40; tries++) {
        for (int i = 0; i < 50; i++, (*next)++)
            for (int j = 0; j < 3; j++)
                get_key(m, bytes, *next, c, &right);
        if (lookup_key(m, bytes, key, c) == MEMO_ENOENT)
            return true;
    }
    return false;
}

enum { HERD = 24 };

static struct {
    memo_t *m;
    bool    bytes;
    vctx_t  c;
    bool    right[HERD];
} H;

static void *herd_thread(void *arg)
{
    test_herd_arrive(&HOLD);
    get_key(H.m, H.bytes, HOLD.key, &H.c, &H.right[(uintptr_t)arg]);
    return NULL;
}

static void test_evicted_herd(bool bytes)
{
    const char   *what = bytes ? "evicted key, herd of 24, byte keys" : "evicted key, herd of 24, u64 keys";
    memo_config_t cfg = bounds(4, 0);
    if ((H.m = new_memo(&cfg, what)) == NULL)
        return;
    H.bytes = bytes, H.c.len_of = len_short;
    uint64_t next = 1000;
    for (uint64_t key = 7; key < 12; key++) {
        bool right;
        get_key(H.m, bytes, key, &H.c, &right);
        if (!ok(evict(H.m, bytes, key, &next, &H.c), "%s, key %" PRIu64 ": evicted by new keys", what, key))
            break;
        memo_stats_t s0 = test_stats(H.m);
        memset(H.right, 0, sizeof H.right);
        test_herd_run(&HOLD, key, HERD, herd_thread, what);
        memo_stats_t s1 = test_stats(H.m);
        int          bad = 0;
        for (unsigned i = 0; i < HERD; i++)
            bad += !H.right[i];
        ok(bad == 0 && atomic_load(&HOLD.held) == 1,
           "%s, key %" PRIu64 ": computed once (%d), all 24 calls get its value (%d wrong)", what, key,
           atomic_load(&HOLD.held), bad);
        ok(s1.misses - s0.misses == 1 && (s1.hits - s0.hits) + (s1.waits - s0.waits) == HERD - 1,
           "%s, key %" PRIu64 ": 1 miss, 23 hits + waits (misses +%" PRIu64 ", waits +%" PRIu64 ")", what, key,
           s1.misses - s0.misses, s1.waits - s0.waits);
    }
    memo_destroy(H.m);
}

/* ---- max_bytes ---- */

static void test_max_bytes(uint64_t max_bytes, unsigned shards, unsigned flags)
{
    char what[96];
    snprintf(what, sizeof what, "max_bytes %" PRIu64 " KiB, %u shards%s", max_bytes >> 10, shards,
             flags ? ", MEMO_F_SYSTEM_ALLOC" : "");
    memo_config_t cfg = bounds(0, max_bytes);
    cfg.shards = shards, cfg.flags = flags;
    memo_t *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t   c = { 0, len_mixed };
    uint64_t seed = 99 + max_bytes, peak = 0;
    int      over = 0, wrong = 0;
    for (int i = 0; i < 6000; i++) {
        uint64_t r = test_rng(&seed);
        bool     right;
        wrong += get_key(m, (r & 7) != 0, (r >> 16) % 3000, &c, &right) != 0 || !right;
        memo_stats_t s = test_stats(m);
        if (s.bytes > max_bytes && s.entries != 0 && over++ < 3)
            diag("%s: after call %d, bytes %" PRIu64 " with %" PRIu64 " entries", what, i, s.bytes, s.entries);
        peak = s.bytes > peak ? s.bytes : peak;
    }
    memo_stats_t s = test_stats(m);
    is_int(wrong, 0, "%s: 6000 gets, every value right", what);
    is_int(over, 0, "%s: bytes <= max_bytes (or no entry) after every call (peak %" PRIu64 ")", what, peak);
    ok(s.entries > 0 && s.evictions == s.misses - s.entries,
       "%s: values stored (%" PRIu64 "), evictions == stored - entries (%" PRIu64 ")", what, s.entries, s.evictions);
    memo_destroy(m);
    check_callbacks(what, &s, s.misses, len_mixed);
}

/* A value that alone does not fit max_bytes: to its caller and its waiters, never stored. Its
 * key's length says which: 5 ("small") a small value, else 1 MiB of pattern_byte(key_len, i). */
enum { BIG = 1 << 20, BIG_THREADS = 8 };

static struct {
    memo_t    *m;
    atomic_int calls;
    bool       right[BIG_THREADS];
} B;

static int big_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    atomic_fetch_add(&B.calls, 1);
    if (key_len == 5 && memcmp(key, "small", 5) == 0)
        return memo_result_set(out, "a small value", 13);
    test_herd_hold(&HOLD, key_len);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, BIG);
    if (p == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < BIG; i++)
        p[i] = pattern_byte(key_len, i);
    return 0;
}

static void *big_thread(void *arg)
{
    memo_ref_t r = MEMO_REF_INIT;
    test_herd_arrive(&HOLD);
    B.right[(uintptr_t)arg] = memo_get(B.m, "herd", 4, big_fn, NULL, &r) == 0 && bytes_right(4, r.data, r.len, BIG, BIG);
    memo_release(&r);
    return NULL;
}

static void test_too_big(void)
{
    const char   *what = "a 1 MiB value, max_bytes 256 KiB";
    memo_config_t cfg = bounds(0, 256 << 10);
    if ((B.m = new_memo(&cfg, what)) == NULL)
        return;
    memo_ref_t r = MEMO_REF_INIT;
    memo_get(B.m, "small", 5, big_fn, NULL, &r);
    memo_release(&r);
    memo_stats_t s0 = test_stats(B.m);
    ok(memo_get(B.m, "huge!", 5, big_fn, NULL, &r) == 0 && bytes_right(5, r.data, r.len, BIG, BIG),
       "%s: the caller gets the whole value", what);
    memo_release(&r);
    is_code(memo_lookup(B.m, "huge!", 5, &r), MEMO_ENOENT, "%s: it is not stored (lookup: ENOENT)", what);
    memo_stats_t s = test_stats(B.m);
    /* Not stored, so nothing is evicted for it: a miss must not flush the memo for a value that
     * then goes nowhere (API.md evicts "to make room", and there is no room to make). */
    ok(s.entries == 1 && s.evictions == 0 && memo_lookup(B.m, "small", 5, &r) == 0,
       "%s: the small value stays: entries 1, evictions 0 (got %" PRIu64 ", %" PRIu64 ")", what, s.entries, s.evictions);
    memo_release(&r);
    ok(s.bytes <= 256 << 10, "%s: once its ref is released, bytes %" PRIu64 " <= max_bytes (%" PRIu64 " before it)", what,
       s.bytes, s0.bytes);
    memo_get(B.m, "huge!", 5, big_fn, NULL, &r);
    memo_release(&r);
    is_int(atomic_load(&B.calls), 3, "%s: asked again, it is computed again", what);

    atomic_store(&B.calls, 0);
    s0 = test_stats(B.m);
    test_herd_run(&HOLD, 4, BIG_THREADS, big_thread, what);
    s = test_stats(B.m);
    int bad = 0;
    for (unsigned i = 0; i < BIG_THREADS; i++)
        bad += !B.right[i];
    is_int(bad, 0, "%s: 8 threads at once: each gets the whole value", what);
    ok(s.waits > s0.waits && s.misses - s0.misses + s.waits - s0.waits == BIG_THREADS,
       "%s: ... computed or waited for, never a hit (waits +%" PRIu64 ", computations %d)", what, s.waits - s0.waits,
       atomic_load(&B.calls));
    ok(s.entries == 1 && memo_lookup(B.m, "herd", 4, &r) == MEMO_ENOENT, "%s: ... and not stored", what);
    memo_destroy(B.m);
    is_u64(atomic_load(&LOG.total), 1, "%s: no callback for a value never stored (only the small one's)", what);
}

/* ---- memo_set_limits ---- */

static memo_t *L_m;
static int     L_rc;

static size_t len_limits(uint64_t key)
{
    return key >= 6000 ? len_short(key) : len_mixed(key);
}

static int limits_fn(void *ctx, uint64_t key, uint64_t *value)
{
    L_rc = memo_set_limits(L_m, 1, 0);
    return fn_u64(ctx, key, value);
}

/* Gets of keys [from, to): the number of calls after which entries > max_entries or bytes >
 * max_bytes (with an entry); wrong values go to *wrong. */
static int fill(memo_t *m, bool bytes, uint64_t from, uint64_t to, vctx_t *c, uint64_t max_entries,
                uint64_t max_bytes, int *wrong)
{
    int  over = 0;
    bool right;
    for (uint64_t k = from; k < to; k++) {
        *wrong += get_key(m, bytes, k, c, &right) != 0 || !right;
        memo_stats_t s = test_stats(m);
        over += (max_entries && s.entries > max_entries) || (max_bytes && s.bytes > max_bytes && s.entries);
    }
    return over;
}

static void test_set_limits(void)
{
    const char *what = "memo_set_limits";
    is_code(memo_set_limits(NULL, 1, 1), MEMO_EINVAL, "memo_set_limits(NULL, ...) is MEMO_EINVAL");
    memo_config_t cfg = bounds(0, 0);
    memo_t       *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t c = { 0, len_limits };
    int    wrong = 0;
    fill(m, false, 0, 1000, &c, 0, 0, &wrong);
    fill(m, true, 0, 300, &c, 0, 0, &wrong);
    is_u64(test_stats(m).entries, 1300, "%s: an unbounded memo holds 1300 values", what);
    is_code(memo_set_limits(m, 10, 0), 0, "%s: lowering max_entries to 10 returns 0", what);
    memo_stats_t s = test_stats(m);
    ok(s.entries <= 10 && s.evictions == 1300 - s.entries,
       "%s: ... right after, entries %" PRIu64 " <= 10, the rest evicted (%" PRIu64 ")", what, s.entries, s.evictions);
    is_int(fill(m, true, 2000, 2250, &c, 10, 0, &wrong) + fill(m, false, 2250, 2500, &c, 10, 0, &wrong), 0,
           "%s: ... entries <= 10 over 500 new keys", what);
    is_code(memo_set_limits(m, 100, 0), 0, "%s: raising it to 100 returns 0", what);
    int over = fill(m, false, 3000, 3300, &c, 100, 0, &wrong);
    s = test_stats(m);
    ok(over == 0 && s.entries <= 100 && s.entries > 10, "%s: ... 300 new keys: entries in 11 .. 100 (%" PRIu64 ")", what,
       s.entries);
    is_code(memo_set_limits(m, 0, 0), 0, "%s: memo_set_limits(m, 0, 0) (no bound) returns 0", what);
    fill(m, false, 4000, 5000, &c, 0, 0, &wrong);
    memo_stats_t s2 = test_stats(m);
    ok(s2.entries == s.entries + 1000 && s2.evictions == s.evictions,
       "%s: ... 1000 new keys all stored, no eviction (entries %" PRIu64 ", evictions +%" PRIu64 ")", what, s2.entries,
       s2.evictions - s.evictions);
    /* half the bytes: above what the tables of an empty memo take; short values from key 6000
     * on, so that each fits alone and is stored (one callback per value, below) */
    uint64_t half = s2.bytes / 2;
    is_code(memo_set_limits(m, 0, half), 0, "%s: lowering max_bytes to half of bytes returns 0", what);
    s = test_stats(m);
    ok(s.bytes <= half || s.entries == 0, "%s: ... right after, bytes %" PRIu64 " <= %" PRIu64 " (entries %" PRIu64 ")", what,
       s.bytes, half, s.entries);
    over = fill(m, true, 6000, 6300, &c, 0, half, &wrong);
    ok(over == 0 && test_stats(m).entries > 0, "%s: ... and over 300 new byte values", what);
    memo_set_limits(m, 0, 0);
    s = test_stats(m);
    fill(m, true, 7000, 7300, &c, 0, 0, &wrong);
    is_u64(test_stats(m).evictions, s.evictions, "%s: memo_set_limits(m, 0, 0) again: 300 new values, no eviction", what);
    L_m = m, L_rc = -100;
    uint64_t v = 0;
    is_code(memo_get_u64(m, 424242, limits_fn, &c, &v), 0, "%s: a fn calling memo_set_limits(m, 1, 0) on its own memo", what);
    s = test_stats(m);
    ok(L_rc == 0 && s.entries == 1 && memo_lookup_u64(m, 424242, &v) == 0,
       "%s: ... it returns 0; then entries is 1, fn's value (got %d, %" PRIu64 ")", what, L_rc, s.entries);
    is_int(wrong, 0, "%s: every value returned was right", what);
    memo_destroy(m);
    check_callbacks(what, &s, s.misses, len_limits);

    /* memo.h: a memo made with none of the 0.2 settings has the lean layout (no room for a policy
     * in its records): memo_set_limits is MEMO_EINVAL there and changes nothing; a memo made with
     * max_entries = UINT64_MAX (bounded by nothing) can be bounded later. */
    what = "memo_set_limits on a memo made with MEMO_CONFIG_INIT";
    cfg = (memo_config_t)MEMO_CONFIG_INIT;
    if ((m = new_memo(&cfg, what)) == NULL)
        return;
    fill(m, false, 0, 100, &c, 0, 0, &wrong);
    is_code(memo_set_limits(m, 10, 0), MEMO_EINVAL, "%s: MEMO_EINVAL (the lean layout, memo.h)", what);
    is_u64(test_stats(m).entries, 100, "%s: ... and nothing is evicted", what);
    memo_destroy(m);
    what = "memo_set_limits on a memo made with max_entries = UINT64_MAX";
    cfg = bounds(UINT64_MAX, 0);
    if ((m = new_memo(&cfg, what)) == NULL)
        return;
    fill(m, false, 0, 100, &c, 0, 0, &wrong);
    is_u64(test_stats(m).evictions, 0, "%s: 100 values, no eviction", what);
    is_code(memo_set_limits(m, 10, 0), 0, "%s: returns 0", what);
    is_int(fill(m, false, 100, 200, &c, 10, 0, &wrong), 0, "%s: entries <= 10 from then on", what);
    memo_destroy(m);
}

/* ---- stored failures count toward max_entries ---- */

/* keys >= 1000 fail with 7 */
static int fail_fn(void *ctx, uint64_t key, uint64_t *value)
{
    return key >= 1000 ? (atomic_fetch_add(&((vctx_t *)ctx)->calls, 1), 7) : fn_u64(ctx, key, value);
}

static void test_failures_count(void)
{
    const char  *what = "stored failures, max_entries 1";
    test_clock_t clk;
    test_clock_init(&clk, 1000000000000ull); /* time stands still: failures stay stored */
    memo_config_t cfg = bounds(1, 0);
    cfg.failure_ttl_ns = 3600000000000ull, cfg.clock = test_clock_read, cfg.clock_ctx = &clk;
    memo_t *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t   c = { 0, len_short };
    uint64_t v = 0;
    memo_get_u64(m, 1, fail_fn, &c, &v);
    is_code(memo_get_u64(m, 1000, fail_fn, &c, &v), 7, "%s: a value, then a failure (7)", what);
    is_code(memo_lookup_u64(m, 1, &v), MEMO_ENOENT, "%s: the stored failure took the only place", what);
    ok(memo_get_u64(m, 1000, fail_fn, &c, &v) == 7 && atomic_load(&c.calls) == 2, "%s: the failure, from the memo", what);
    memo_get_u64(m, 2, fail_fn, &c, &v);
    ok(memo_get_u64(m, 1000, fail_fn, &c, &v) == 7 && atomic_load(&c.calls) == 4,
       "%s: a new value evicted the failure (fn runs again)", what);
    memo_destroy(m);
    ok(test_removals_find_u64(&LOG, 1000, NULL) == 0 && atomic_load(&LOG.total) == 2,
       "%s: callbacks for the 2 values, none for the failures", what);

    /* 4 values, then 30 failures; whatever the policy kept, values + failures stored <= 4.
     * Failures are probed with a get (fn not run: it was stored); a probe that runs fn may evict
     * one not probed yet, so the count can only come out low, never high. */
    what = "stored failures, max_entries 4";
    cfg.max_entries = 4;
    if ((m = new_memo(&cfg, what)) == NULL)
        return;
    for (uint64_t k = 0; k < 1030; k = k == 3 ? 1000 : k + 1)
        memo_get_u64(m, k, fail_fn, &c, &v);
    int stored = 0;
    for (uint64_t k = 0; k < 4; k++)
        stored += memo_lookup_u64(m, k, &v) == 0;
    for (uint64_t k = 1000; k < 1030; k++) {
        uint64_t before = atomic_load(&c.calls);
        stored += memo_get_u64(m, k, fail_fn, &c, &v) == 7 && atomic_load(&c.calls) == before;
    }
    cmp_u64(stored, <=, 4, "%s: values and failures still stored <= 4", what);
    memo_destroy(m);
}

/* ---- a hot set survives scans ---- */

static int scan_fn(void *ctx, uint64_t key, uint64_t *value)
{
    if (key < 100)
        atomic_fetch_add(&((vctx_t *)ctx)->calls, 1); /* hot misses */
    *value = u64_value(key);
    return 0;
}

/* 100 hot keys (in a new random order each round) and unique scan keys, max_entries 128:
 * interleaved one for one, or a block of 400 scan keys after each round of the hot set. An LRU
 * of 128 misses every hot key (each round's scan pushes them out). Over the last 100 of 300
 * rounds the hot keys must hit >= 90% interleaved; in blocks, >= 50% ("most of the hot set":
 * W-TinyLFU's hill-climbed window gave 76% .. 100%, 97.8% on average, over 200 sketch seeds). */
static void test_scan_resistance(bool blocks)
{
    const char   *what = blocks ? "hot set of 100 + blocks of 400 scan keys, max_entries 128"
                                : "hot set of 100 interleaved with a scan, max_entries 128";
    memo_config_t cfg = bounds(128, 0);
    memo_t       *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t   c = { 0, len_short };
    uint64_t seed = 3, scan = 1000000, v, hot_misses = 0, order[100];
    int      wrong = 0;
    for (int round = 0; round < 300; round++) {
        for (uint64_t i = 0; i < 100; i++)
            order[i] = i;
        for (int i = 99; i > 0; i--) {
            int      j = (int)(test_rng(&seed) % (uint64_t)(i + 1));
            uint64_t t = order[i];
            order[i] = order[j], order[j] = t;
        }
        if (round == 200)
            hot_misses = atomic_load(&c.calls);
        for (int i = 0; i < 100 + (blocks ? 400 : 100); i++) {
            uint64_t key = blocks ? (i < 100 ? order[i] : scan++) : i % 2 ? scan++ : order[i / 2];
            wrong += memo_get_u64(m, key, scan_fn, &c, &v) != 0 || v != u64_value(key);
        }
    }
    hot_misses = atomic_load(&c.calls) - hot_misses;
    is_int(wrong, 0, "%s: every value right", what);
    cmp_u64(test_stats(m).entries, <=, 128, "%s: entries <= 128", what);
    cmp_u64(hot_misses, <=, blocks ? 5000 : 1000, "%s: hot keys hit >= %d%% over the last 100 rounds (%.1f%%)", what,
            blocks ? 50 : 90, 100.0 - (double)hot_misses / 100.0);
    memo_destroy(m);
}

int main(void)
{
    tap_watchdog(110);
    test_max_entries_one();
    test_random_bounds();
    test_evicted_herd(false);
    test_evicted_herd(true);
    test_max_bytes(256 << 10, 0, 0);
    test_max_bytes(64 << 10, 1, 0);
    test_max_bytes(256 << 10, 0, MEMO_F_SYSTEM_ALLOC);
    test_too_big();
    test_failures_count();
    test_set_limits();
    test_scan_resistance(false);
    test_scan_resistance(true);
    test_removals_free(&LOG);
    return done_testing();
}
