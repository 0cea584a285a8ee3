/*
 * test_bounded: the bounds of API.md 0.2 (max_entries, max_bytes, memo_set_limits) and the
 * removal callback. Hash table only: dense keys with a bound are refused, so no _dense run.
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
 *  - a ref held across the eviction of its value reads the same bytes, and the callback (which
 *    frees what the value points to) waits for its release (ASan: use-after-free, double free).
 *  - memo_set_limits: lowering evicts before it returns, raising and 0 lift the bound, inside
 *    fn, on a memo made without any 0.2 setting; MEMO_EINVAL for NULL.
 *  - stored failures (failure_ttl_ns) count toward max_entries, and get no callback.
 *  - a 128-entry memo keeps a hot set of 100 keys through scans of unique keys (an LRU: 0%).
 *  - on_removal: the reason (evicted; forgotten by memo_forget / memo_forget_u64 / memo_clear;
 *    destroyed), key, value and key space of each call; none for failures; exactly once each.
 *  - a stress of more threads than cores mixing gets, lookups and forgets on a bounded memo:
 *    counters, values and callbacks add up at quiescence.
 * Verified against mutated copies of src/: a bound off by one, evictions or their reasons not
 * counted or misreported, memo_set_limits that does not evict, max_bytes with 2 KiB of slack, a
 * u64 removal's key_len wrong, records reclaimed without waiting for readers (the held ref's
 * bytes change, its callback runs early): each fails assertions here.
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

static test_removals_t LOG; /* the callbacks of the memo under test */

/* A config with these bounds that logs its callbacks into LOG. */
static memo_config_t bounds(uint64_t max_entries, uint64_t max_bytes)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_entries = max_entries;
    cfg.max_bytes = max_bytes;
    cfg.on_removal = test_removals_cb;
    cfg.removal_ctx = &LOG;
    return cfg;
}

/* memo_create with LOG emptied; a refusal is a failed assertion (the test returns). */
static memo_t *new_memo(const memo_config_t *cfg, const char *what)
{
    test_removals_free(&LOG);
    test_removals_init(&LOG, false);
    memo_t *m = NULL;
    int     rc = memo_create(&m, cfg);
    return is_int(rc, 0, "%s: memo_create accepts the config (%s)", what, memo_err_name(rc)) ? m : NULL;
}

/* ---- keys and values ---- */

static uint64_t u64_value(uint64_t key)
{
    return key * 0x9E3779B97F4A7C15ull ^ 0x5DEECE66Dull;
}

/* A byte key: the u64 key's 8 bytes, padded to 8 .. 48 bytes by a length that depends on it. */
static size_t byte_key(uint64_t key, unsigned char buf[48])
{
    size_t len = 8 + (size_t)(key * 7 % 41);
    memcpy(buf, &key, 8);
    for (size_t i = 8; i < len; i++)
        buf[i] = (unsigned char)(key + i);
    return len;
}

static unsigned char pattern_byte(uint64_t key, size_t i)
{
    return (unsigned char)(key * 131 + i * 7 + (i >> 8));
}

/* Byte values' lengths: short (1 .. 100), or mixed 1 B .. 32 KiB (70% <= 64 B, 1% > 8 KiB). */
static size_t len_short(uint64_t key)
{
    return 1 + (size_t)(key % 100);
}

static size_t len_mixed(uint64_t key)
{
    uint64_t h = (key * 0x9E3779B97F4A7C15ull) >> 32, r = h % 100;
    return r < 70 ? 1 + h % 64 : r < 90 ? 65 + h % 960 : r < 99 ? 1024 + h % 7168 : 8192 + h % 24576;
}

/* True if data holds the first min(len, cap) bytes of key's value of length want. */
static bool bytes_right(uint64_t key, const void *data, size_t len, size_t want, size_t cap)
{
    if (len != want || (len && data == NULL))
        return false;
    for (size_t i = 0; i < len && i < cap; i++)
        if (((const unsigned char *)data)[i] != pattern_byte(key, i))
            return false;
    return true;
}

static test_herd_t HOLD; /* herds: tests/helpers.h */

typedef struct vctx {
    atomic_uint_fast64_t calls; /* computations */
    size_t             (*len_of)(uint64_t key);
} vctx_t;

static int fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    test_herd_hold(&HOLD, key);
    atomic_fetch_add(&((vctx_t *)ctx)->calls, 1);
    *value = u64_value(key);
    return 0;
}

static int fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    vctx_t  *c = (vctx_t *)ctx;
    uint64_t k;
    if (key_len < 8)
        return 1000;
    memcpy(&k, key, 8);
    test_herd_hold(&HOLD, k);
    atomic_fetch_add(&c->calls, 1);
    size_t         len = c->len_of(k);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, len);
    if (p == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < len; i++)
        p[i] = pattern_byte(k, i);
    return 0;
}

/* memo_get_u64, or memo_get of the key's byte key: 0 with *right, or the call's code. */
static int get_key(memo_t *m, bool bytes, uint64_t key, vctx_t *c, bool *right)
{
    unsigned char kb[48];
    memo_ref_t    r = MEMO_REF_INIT;
    uint64_t      v = 0;
    int rc = bytes ? memo_get(m, kb, byte_key(key, kb), fn_bytes, c, &r) : memo_get_u64(m, key, fn_u64, c, &v);
    *right = rc == 0 && (bytes ? bytes_right(key, r.data, r.len, c->len_of(key), SIZE_MAX) : v == u64_value(key));
    memo_release(&r);
    return rc;
}

/* memo_lookup(_u64): 0 when the key's right value is stored, MEMO_ENOENT, or 999 (wrong). */
static int lookup_key(memo_t *m, bool bytes, uint64_t key, vctx_t *c)
{
    unsigned char kb[48];
    memo_ref_t    r = MEMO_REF_INIT;
    uint64_t      v = 0;
    int rc = bytes ? memo_lookup(m, kb, byte_key(key, kb), &r) : memo_lookup_u64(m, key, &v);
    if (rc == 0 && !(bytes ? bytes_right(key, r.data, r.len, c->len_of(key), SIZE_MAX) : v == u64_value(key)))
        rc = 999;
    memo_release(&r);
    return rc;
}

/* LOG's records whose value is not their key's (after memo_destroy). */
static size_t wrong_records(size_t (*len_of)(uint64_t))
{
    size_t wrong = 0;
    for (size_t i = 0; i < LOG.n; i++) {
        const test_removal_t *r = &LOG.log[i];
        uint64_t              k;
        memcpy(&k, r->key, 8);
        wrong += r->key_space == MEMO_KEYS_U64 ? test_removal_u64(r) != u64_value(k)
                                               : !bytes_right(k, r->value, r->value_len, len_of(k), TEST_REMOVAL_BYTES);
    }
    return wrong;
}

/* One callback for (key space, key), with this reason and the key's value. */
static bool one_record(bool bytes, uint64_t key, int reason)
{
    unsigned char         kb[48];
    size_t                klen = bytes ? byte_key(key, kb) : (memcpy(kb, &key, 8), (size_t)8);
    const test_removal_t *r;
    if (test_removals_find(&LOG, bytes ? MEMO_KEYS_BYTES : MEMO_KEYS_U64, kb, klen, &r) != 1 || r->reason != reason)
        return false;
    return bytes ? bytes_right(key, r->value, r->value_len, len_short(key), TEST_REMOVAL_BYTES)
                 : r->key_len == 8 && r->value_len == 8 && test_removal_u64(r) == u64_value(key);
}

/* After memo_destroy: one well-formed callback per value stored, evicted ones as such. */
static void check_callbacks(const char *what, const memo_stats_t *s, uint64_t stored, size_t (*len_of)(uint64_t))
{
    ok(atomic_load(&LOG.total) == stored && atomic_load(&LOG.malformed) == 0,
       "%s: one callback per value stored (%" PRIu64 " for %" PRIu64 ")", what, (uint64_t)LOG.total, stored);
    ok(test_removals_count(&LOG, MEMO_REMOVED_EVICTED) == s->evictions &&
           test_removals_count(&LOG, MEMO_REMOVED_DESTROYED) == s->entries,
       "%s: MEMO_REMOVED_EVICTED for the %" PRIu64 " evicted, DESTROYED for the %" PRIu64 " left", what, s->evictions,
       s->entries);
    is_u64(wrong_records(len_of), 0, "%s: each callback with its key's value", what);
}

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
    is_int(memo_lookup_u64(m, 1, &v), MEMO_ENOENT, "%s: key 1 (hit 5 times) is gone: the last value stored is kept", what);
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
    is_int(memo_lookup(B.m, "huge!", 5, &r), MEMO_ENOENT, "%s: it is not stored (lookup: ENOENT)", what);
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

/* ---- refs across evictions; a callback that frees what the value points to ---- */

#define BOX_MAGIC 0x786f626f6d656dull

/* A value that points to memory of its own, which the callback frees: a u64 value is the
 * address of a malloc'd box_t; a byte value starts with a box_t, then key-pattern bytes. */
typedef struct box {
    uint64_t magic, key;
    char    *heap; /* "heap of key K" */
} box_t;

static struct {
    atomic_uint_fast64_t made, freed, bad;
    size_t               value_len;
} X;

static char *heap_for(uint64_t key)
{
    char *p = (char *)malloc(40);
    if (p != NULL)
        snprintf(p, 40, "heap of key %" PRIu64, key);
    return p;
}

static bool heap_right(const char *p, uint64_t key)
{
    char want[40];
    snprintf(want, sizeof want, "heap of key %" PRIu64, key);
    return p != NULL && strcmp(p, want) == 0;
}

static int box_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    uint64_t k = 0;
    memcpy(&k, key, key_len < 8 ? key_len : 8);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, X.value_len);
    if (p == NULL)
        return MEMO_ENOMEM;
    box_t b = { BOX_MAGIC, k, heap_for(k) };
    memcpy(p, &b, sizeof b);
    for (size_t i = sizeof b; i < X.value_len; i++)
        p[i] = pattern_byte(k, i);
    atomic_fetch_add(&X.made, 1);
    return 0;
}

static int box_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    box_t *b = (box_t *)malloc(sizeof *b);
    if (b == NULL)
        return MEMO_ENOMEM;
    *b = (box_t){ BOX_MAGIC, key, heap_for(key) };
    *value = (uint64_t)(uintptr_t)b;
    atomic_fetch_add(&X.made, 1);
    return 0;
}

/* Reads what the value points to (ASan: use-after-free if it was freed early) and frees it
 * (ASan: double free if this value is reported twice). */
static void box_removal(void *ctx, const memo_removal_t *r)
{
    (void)ctx;
    test_removals_record(&LOG, r);
    box_t b;
    if (r->key_space == MEMO_KEYS_U64 && r->value_len == 8) {
        box_t *p = (box_t *)(uintptr_t)*(const uint64_t *)r->value;
        b = *p;
        p->magic = 0;
        free(p);
    } else if (r->key_space == MEMO_KEYS_BYTES && r->value_len >= sizeof b) {
        memcpy(&b, r->value, sizeof b);
    } else {
        atomic_fetch_add(&X.bad, 1);
        return;
    }
    if (b.magic != BOX_MAGIC || !heap_right(b.heap, b.key)) {
        atomic_fetch_add(&X.bad, 1);
        return;
    }
    free(b.heap);
    atomic_fetch_add(&X.freed, 1);
}

static memo_t *box_memo(uint64_t max_entries, unsigned flags, size_t value_len, const char *what)
{
    memset(&X, 0, sizeof X);
    X.value_len = value_len;
    memo_config_t cfg = bounds(max_entries, 0);
    cfg.on_removal = box_removal, cfg.flags = flags;
    return new_memo(&cfg, what);
}

static void check_boxes(const char *what)
{
    ok(atomic_load(&X.made) > 0 && atomic_load(&X.made) == atomic_load(&X.freed) && atomic_load(&X.bad) == 0 &&
           atomic_load(&LOG.total) == atomic_load(&X.made) && atomic_load(&LOG.malformed) == 0,
       "%s: by memo_destroy, one callback per value, each value's memory freed once (made %" PRIu64 ", freed %" PRIu64
       ", callbacks %" PRIu64 ")",
       what, (uint64_t)X.made, (uint64_t)X.freed, (uint64_t)LOG.total);
}

static void test_ref_across_eviction(unsigned flags, size_t value_len)
{
    char what[96];
    snprintf(what, sizeof what, "ref across eviction, %zu-byte value%s", value_len, flags ? ", MEMO_F_SYSTEM_ALLOC" : "");
    memo_t *m = box_memo(2, flags, value_len, what);
    if (!m)
        return;
    unsigned char kb[48], nk[48], copy[4096];
    size_t        klen = byte_key(5, kb);
    memo_ref_t    held = MEMO_REF_INIT, r = MEMO_REF_INIT;
    if (memo_get(m, kb, klen, box_fn_bytes, NULL, &held) != 0 || held.len != value_len || value_len > sizeof copy)
        bail_out("%s: memo_get", what);
    memcpy(copy, held.data, value_len);
    /* new keys of both key spaces, each asked 3 times (as evict() does), until key 5 is gone */
    int n = 0;
    do {
        for (int i = 0; i < 50; i++, n++)
            for (int j = 0; j < 3; j++) {
                uint64_t v;
                memo_get(m, nk, byte_key(100 + (uint64_t)n, nk), box_fn_bytes, NULL, &r);
                memo_release(&r);
                memo_get_u64(m, 100 + (uint64_t)n, box_fn_u64, NULL, &v);
            }
    } while (memo_lookup(m, kb, klen, &r) == 0 && (memo_release(&r), n < 2000));
    is_int(memo_lookup(m, kb, klen, &r), MEMO_ENOENT, "%s: the held value is evicted (after %d new keys)", what, n);
    ok(held.len == value_len && memcmp(held.data, copy, value_len) == 0, "%s: the ref reads the same bytes", what);
    box_t b;
    memcpy(&b, held.data, sizeof b);
    ok(heap_right(b.heap, 5), "%s: what the value points to is not freed while the ref is held", what);
    is_size(test_removals_find(&LOG, MEMO_KEYS_BYTES, kb, klen, NULL), 0, "%s: no callback for it yet", what);
    memo_release(&held);
    for (int i = 0; i < 200; i++, n++) {
        memo_get(m, nk, byte_key(100 + (uint64_t)n, nk), box_fn_bytes, NULL, &r);
        memo_release(&r);
    }
    memo_destroy(m);
    const test_removal_t *rec;
    ok(test_removals_find(&LOG, MEMO_KEYS_BYTES, kb, klen, &rec) == 1 && rec->reason == MEMO_REMOVED_EVICTED,
       "%s: after release, one callback for it, MEMO_REMOVED_EVICTED", what);
    check_boxes(what);
}

/* Gets (holding a byte value's ref while reading what it points to), forgets, lookups and
 * clears on a bounded memo whose callback frees each value's memory. */
static void test_removal_frees(unsigned flags)
{
    const char *what = flags ? "callback frees values, MEMO_F_SYSTEM_ALLOC" : "callback frees values";
    memo_t     *m = box_memo(8, flags, 64, what);
    if (!m)
        return;
    uint64_t seed = 77;
    int      bad = 0;
    for (int i = 0; i < 4000; i++) {
        uint64_t      r = test_rng(&seed), key = (r >> 16) % 40, v;
        unsigned char kb[48];
        size_t        klen = byte_key(key, kb);
        memo_ref_t    ref = MEMO_REF_INIT;
        box_t         b;
        unsigned      op = (unsigned)(r % 10);
        if (op < 3)
            bad += memo_get_u64(m, key, box_fn_u64, NULL, &v) != 0 || v == 0;
        else if (op < 6)
            bad += memo_get(m, kb, klen, box_fn_bytes, NULL, &ref) != 0 || ref.len != 64 ||
                   (memcpy(&b, ref.data, sizeof b), !heap_right(b.heap, key));
        else if (op == 6)
            memo_forget_u64(m, key);
        else if (op == 7)
            memo_forget(m, kb, klen);
        else if (op == 8)
            memo_lookup(m, kb, klen, &ref);
        else if (i % 500 == 9)
            memo_clear(m);
        memo_release(&ref);
    }
    is_int(bad, 0, "%s: 4000 calls, each value and what it points to right", what);
    memo_destroy(m);
    check_boxes(what);
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
    is_int(memo_set_limits(NULL, 1, 1), MEMO_EINVAL, "memo_set_limits(NULL, ...) is MEMO_EINVAL");
    memo_config_t cfg = bounds(0, 0);
    memo_t       *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t c = { 0, len_limits };
    int    wrong = 0;
    fill(m, false, 0, 1000, &c, 0, 0, &wrong);
    fill(m, true, 0, 300, &c, 0, 0, &wrong);
    is_u64(test_stats(m).entries, 1300, "%s: an unbounded memo holds 1300 values", what);
    is_int(memo_set_limits(m, 10, 0), 0, "%s: lowering max_entries to 10 returns 0", what);
    memo_stats_t s = test_stats(m);
    ok(s.entries <= 10 && s.evictions == 1300 - s.entries,
       "%s: ... right after, entries %" PRIu64 " <= 10, the rest evicted (%" PRIu64 ")", what, s.entries, s.evictions);
    is_int(fill(m, true, 2000, 2250, &c, 10, 0, &wrong) + fill(m, false, 2250, 2500, &c, 10, 0, &wrong), 0,
           "%s: ... entries <= 10 over 500 new keys", what);
    is_int(memo_set_limits(m, 100, 0), 0, "%s: raising it to 100 returns 0", what);
    int over = fill(m, false, 3000, 3300, &c, 100, 0, &wrong);
    s = test_stats(m);
    ok(over == 0 && s.entries <= 100 && s.entries > 10, "%s: ... 300 new keys: entries in 11 .. 100 (%" PRIu64 ")", what,
       s.entries);
    is_int(memo_set_limits(m, 0, 0), 0, "%s: memo_set_limits(m, 0, 0) (no bound) returns 0", what);
    fill(m, false, 4000, 5000, &c, 0, 0, &wrong);
    memo_stats_t s2 = test_stats(m);
    ok(s2.entries == s.entries + 1000 && s2.evictions == s.evictions,
       "%s: ... 1000 new keys all stored, no eviction (entries %" PRIu64 ", evictions +%" PRIu64 ")", what, s2.entries,
       s2.evictions - s.evictions);
    /* half the bytes: above what the tables of an empty memo take; short values from key 6000
     * on, so that each fits alone and is stored (one callback per value, below) */
    uint64_t half = s2.bytes / 2;
    is_int(memo_set_limits(m, 0, half), 0, "%s: lowering max_bytes to half of bytes returns 0", what);
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
    is_int(memo_get_u64(m, 424242, limits_fn, &c, &v), 0, "%s: a fn calling memo_set_limits(m, 1, 0) on its own memo", what);
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
    is_int(memo_set_limits(m, 10, 0), MEMO_EINVAL, "%s: MEMO_EINVAL (the lean layout, memo.h)", what);
    is_u64(test_stats(m).entries, 100, "%s: ... and nothing is evicted", what);
    memo_destroy(m);
    what = "memo_set_limits on a memo made with max_entries = UINT64_MAX";
    cfg = bounds(UINT64_MAX, 0);
    if ((m = new_memo(&cfg, what)) == NULL)
        return;
    fill(m, false, 0, 100, &c, 0, 0, &wrong);
    is_u64(test_stats(m).evictions, 0, "%s: 100 values, no eviction", what);
    is_int(memo_set_limits(m, 10, 0), 0, "%s: returns 0", what);
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
    is_int(memo_get_u64(m, 1000, fail_fn, &c, &v), 7, "%s: a value, then a failure (7)", what);
    is_int(memo_lookup_u64(m, 1, &v), MEMO_ENOENT, "%s: the stored failure took the only place", what);
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

/* ---- on_removal: reasons, keys, values, key spaces ---- */

static int fail5_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    memo_result_set(out, key, key_len);
    return 5;
}

static void test_removal_reasons(void)
{
    const char   *what = "on_removal, unbounded memo";
    memo_config_t cfg = bounds(0, 0);
    memo_t       *m = new_memo(&cfg, what);
    if (!m)
        return;
    vctx_t        c = { 0, len_short };
    bool          right;
    unsigned char kb[48];
    memo_ref_t    r = MEMO_REF_INIT;
    for (uint64_t k = 10; k < 13; k++)
        get_key(m, false, k, &c, &right), get_key(m, true, k, &c, &right);
    is_int(memo_get(m, "fails", 5, fail5_bytes, NULL, &r), 5, "%s: a failing fn (no failure_ttl)", what);
    ok(memo_forget_u64(m, 10) == 0 && memo_forget(m, kb, byte_key(10, kb)) == 0, "%s: memo_forget(_u64) of 2 values", what);
    memo_clear(m);
    get_key(m, false, 30, &c, &right), get_key(m, true, 30, &c, &right);
    memo_destroy(m);
    ok(one_record(false, 10, MEMO_REMOVED_FORGOTTEN) && one_record(true, 10, MEMO_REMOVED_FORGOTTEN),
       "%s: memo_forget_u64, memo_forget: MEMO_REMOVED_FORGOTTEN once, with key and value", what);
    ok(one_record(false, 11, MEMO_REMOVED_FORGOTTEN) && one_record(true, 11, MEMO_REMOVED_FORGOTTEN) &&
           one_record(false, 12, MEMO_REMOVED_FORGOTTEN) && one_record(true, 12, MEMO_REMOVED_FORGOTTEN),
       "%s: memo_clear: MEMO_REMOVED_FORGOTTEN once for each value", what);
    ok(one_record(false, 30, MEMO_REMOVED_DESTROYED) && one_record(true, 30, MEMO_REMOVED_DESTROYED),
       "%s: memo_destroy: MEMO_REMOVED_DESTROYED for what was left", what);
    ok(atomic_load(&LOG.total) == 8 && atomic_load(&LOG.malformed) == 0 &&
           test_removals_find(&LOG, MEMO_KEYS_BYTES, "fails", 5, NULL) == 0,
       "%s: 8 callbacks for 8 values, none for the failure (got %" PRIu64 ")", what, (uint64_t)LOG.total);

    what = "on_removal, max_entries 1";
    cfg = bounds(1, 0);
    if ((m = new_memo(&cfg, what)) == NULL)
        return;
    get_key(m, false, 40, &c, &right), get_key(m, true, 41, &c, &right), get_key(m, false, 42, &c, &right);
    memo_destroy(m);
    ok(one_record(false, 40, MEMO_REMOVED_EVICTED) && one_record(true, 41, MEMO_REMOVED_EVICTED) &&
           one_record(false, 42, MEMO_REMOVED_DESTROYED) && atomic_load(&LOG.total) == 3,
       "%s: MEMO_REMOVED_EVICTED for the u64 and the byte value evicted, DESTROYED for the last", what);
}

/* ---- stress: more threads than cores ---- */

enum { ST_KEYS = 512, ST_BOUND = 64, ST_MAX_THREADS = 32 };

typedef struct st_arg {
    unsigned idx;
    uint64_t gets, found, forgot, wrong;
} st_arg_t;

static struct {
    memo_t              *m;
    pthread_barrier_t    start;
    vctx_t               c;
    unsigned             iters;
    atomic_uint_fast64_t cb_wrong;
} ST;

static int st_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    if (key % 7 == 0)
        sched_yield();
    return fn_u64(ctx, key, value);
}

static void st_removal(void *ctx, const memo_removal_t *r)
{
    (void)ctx;
    uint64_t k = 0;
    if (r->key != NULL && r->key_len >= 8)
        memcpy(&k, r->key, 8);
    if (!(r->key_space == MEMO_KEYS_U64 ? r->value_len == 8 && *(const uint64_t *)r->value == u64_value(k)
                                        : bytes_right(k, r->value, r->value_len, len_short(k), SIZE_MAX)))
        atomic_fetch_add(&ST.cb_wrong, 1);
    test_removals_record(&LOG, r);
}

static void *st_thread(void *arg)
{
    st_arg_t *a = (st_arg_t *)arg;
    uint64_t  seed = 0x9E3779B97F4A7C15ull * (a->idx + 1);
    tap_barrier_wait(&ST.start);
    for (unsigned i = 0; i < ST.iters; i++) {
        uint64_t      r = test_rng(&seed), key = (r >> 16) % (1 + (r >> 40) % ST_KEYS), v;
        bool          bytes = (r >> 8) % 4 == 0, right;
        unsigned      op = (unsigned)(r % 100);
        unsigned char kb[48];
        int           rc;
        if (op < 75) {
            rc = bytes ? get_key(ST.m, true, key, &ST.c, &right) : memo_get_u64(ST.m, key, st_fn_u64, &ST.c, &v);
            a->wrong += rc != 0 || !(bytes ? right : v == u64_value(key));
            a->gets++;
        } else if (op < 90) {
            rc = lookup_key(ST.m, bytes, key, &ST.c);
            a->found += rc == 0;
            a->wrong += rc != 0 && rc != MEMO_ENOENT;
        } else {
            rc = bytes ? memo_forget(ST.m, kb, byte_key(key, kb)) : memo_forget_u64(ST.m, key);
            a->forgot += rc == 0;
            a->wrong += rc != 0 && rc != MEMO_ENOENT;
        }
    }
    return NULL;
}

static void test_stress(void)
{
    long     cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = cpus > 3 ? (unsigned)(2 * cpus + 2) : 8;
    n = n > ST_MAX_THREADS ? ST_MAX_THREADS : n;
    char what[96];
    snprintf(what, sizeof what, "stress, %u threads, max_entries %d", n, ST_BOUND);
    memset(&ST, 0, sizeof ST);
    ST.c.len_of = len_short;
#ifdef TAP_SANITIZED
    ST.iters = 20000;
#else
    ST.iters = 100000;
#endif
    memo_config_t cfg = bounds(ST_BOUND, 0);
    cfg.on_removal = st_removal;
    if ((ST.m = new_memo(&cfg, what)) == NULL)
        return;
    LOG.counts_only = true;
    tap_barrier_init(&ST.start, n);
    pthread_t tids[ST_MAX_THREADS];
    st_arg_t  args[ST_MAX_THREADS];
    memset(args, 0, sizeof args);
    for (unsigned i = 0; i < n; i++)
        args[i].idx = i;
    tap_start_threads(tids, n, st_thread, args, sizeof args[0]);
    if (tap_join_threads_timed(tids, n, 80) != 0)
        bail_out("%s: threads hung", what);
    tap_barrier_destroy(&ST.start);
    uint64_t gets = 0, found = 0, forgot = 0, wrong = 0;
    for (unsigned i = 0; i < n; i++)
        gets += args[i].gets, found += args[i].found, forgot += args[i].forgot, wrong += args[i].wrong;
    memo_stats_t s = test_stats(ST.m);
    is_u64(wrong, 0, "%s: every value returned is its key's", what);
    cmp_u64(s.entries, <=, ST_BOUND, "%s: entries <= bound at quiescence", what);
    is_u64(s.misses, gets + found - s.hits - s.waits, "%s: misses == calls - hits - waits", what);
    ok(s.misses == atomic_load(&ST.c.calls) && s.errors == 0 && s.evictions > 0,
       "%s: misses == computations, no errors, %" PRIu64 " evictions", what, s.evictions);
    memo_destroy(ST.m);
    is_u64(atomic_load(&ST.cb_wrong) + atomic_load(&LOG.malformed), 0, "%s: callbacks well-formed, with their key's value",
           what);
    is_u64(test_removals_count(&LOG, MEMO_REMOVED_FORGOTTEN), forgot, "%s: FORGOTTEN callbacks == forgets that returned 0", what);
    is_u64(test_removals_count(&LOG, MEMO_REMOVED_EVICTED), s.evictions, "%s: EVICTED callbacks == stats.evictions", what);
    is_u64(test_removals_count(&LOG, MEMO_REMOVED_DESTROYED), s.entries, "%s: DESTROYED callbacks == entries left", what);
    ok(atomic_load(&LOG.total) == forgot + s.evictions + s.entries && atomic_load(&LOG.total) <= s.misses,
       "%s: no other callbacks, and no more than values computed", what);
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
    test_ref_across_eviction(0, 200);
    test_ref_across_eviction(0, 3000);
    test_ref_across_eviction(MEMO_F_SYSTEM_ALLOC, 200);
    test_removal_frees(0);
    test_removal_frees(MEMO_F_SYSTEM_ALLOC);
    test_removal_reasons();
    test_failures_count();
    test_set_limits();
    test_scan_resistance(false);
    test_scan_resistance(true);
    test_stress();
    test_removals_free(&LOG);
    return done_testing();
}
