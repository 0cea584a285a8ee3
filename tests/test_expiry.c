/*
 * test_expiry: the expiry rules of API.md 0.2 (ttl_ns, memo_result_ttl, refresh_ns,
 * failure_ttl_ns, the clock), on a fake clock that the test moves: nothing here sleeps for a
 * ttl. Hash table only (dense keys with expiry are refused). Values are key * 1000 + g, g the
 * key's computation count, so that a new value is told from the old one; u64 and byte keys
 * (8-byte keys and values) run the same scenarios.
 *
 *  - ttl: a value stored at s is a hit before s + ttl and recomputed at s + ttl (once, by a
 *    herd); lookups give MEMO_ENOENT from then on; evictions counts the expired values, whose
 *    callback says MEMO_REMOVED_EXPIRED. Catches an off-by-one at the deadline, an expiry
 *    measured from the last hit, expired values counted as hits.
 *  - a memo with no expiry setting never reads its clock (even bounded, with a callback).
 *  - memo_result_ttl: shorter, longer, never (UINT64_MAX, also near the clock's end: no
 *    overflow), 0 (to caller and waiters, not stored, no callback); NULL is MEMO_EINVAL.
 *  - refresh: one caller runs fn while others get the old value without waiting (they return
 *    while fn is held on a gate); then the new value, the old one MEMO_REMOVED_REPLACED. A
 *    failing refresh returns its code and leaves the old value until its ttl.
 *  - failure_ttl: a positive code is returned without fn (a hit) until it expires; lookups do not
 *    see it; forget removes it; memo's own negative codes are never stored; no callback.
 *  - expired values do not pile up: 130000 keys stored as the clock runs past their ttl.
 * Verified against mutated copies of src/: the deadline tested with > (on the slow or the fast
 * hit path), refresh due only past refresh_ns, negative codes stored, a refresh's old value
 * reported as evicted, the clock read on a store or a hit without expiry, no reclamation of
 * expired values on stores, expiries not counted as evictions, stored failures' hits not
 * counted: each fails assertions here.
 */
#include "tap.h"
#include "helpers.h"
#include "keyspace.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

#define T0 1000000000000ull /* the fake clock starts at 1000 s */

/* The clock and the callback log of the memo under test. */
static test_clock_t    CLK;
static test_removals_t LOG;

/* A memo on the fake clock (at T0) with LOG as its callback log; NULL (a failed assertion) if
 * memo_create refuses. LOG is freed by done(). */
static memo_t *new_memo(uint64_t ttl, uint64_t refresh, uint64_t failure_ttl, const char *what)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.ttl_ns = ttl;
    cfg.refresh_ns = refresh;
    cfg.failure_ttl_ns = failure_ttl;
    cfg.clock = test_clock_read;
    cfg.clock_ctx = &CLK;
    cfg.on_removal = test_removals_cb;
    cfg.removal_ctx = &LOG;
    test_clock_init(&CLK, T0);
    test_removals_init(&LOG, false);
    memo_t *m = NULL;
    int     rc = memo_create(&m, &cfg);
    if (!is_code(rc, 0, "%s: memo_create accepts the config (%s)", what, memo_err_name(rc))) {
        test_removals_free(&LOG);
        return NULL;
    }
    return m;
}

static void at(uint64_t t)
{
    test_clock_set(&CLK, T0 + t);
}

/* ---- the compute function: key * 1000 + g ---- */

enum { NKEYS = 1 << 18, HERD = 16 };

static test_herd_t HOLD; /* herds: tests/helpers.h */

static struct gen {
    atomic_uint_fast64_t calls;
    atomic_uint          gen[NKEYS];   /* computations of each key */
    atomic_int           fail_code;    /* fn returns it when non-zero */
    atomic_int           gated;        /* hold the computation of gate_key until gate_open */
    uint64_t             gate_key;
    atomic_int           in_fn, gate_open;
    atomic_int           ttl_rc;       /* memo_result_ttl's return inside fn */
} G;

static uint64_t value_of(uint64_t key, unsigned g)
{
    return key * 1000 + g;
}

static int compute(uint64_t key, uint64_t *value)
{
    atomic_fetch_add(&G.calls, 1);
    unsigned g = atomic_fetch_add(&G.gen[key % NKEYS], 1) + 1;
    uint64_t deadline = tap_now_ns() + 20000000000ull;
    test_herd_hold(&HOLD, key);
    if (atomic_load(&G.gated) && key == G.gate_key) {
        atomic_store(&G.in_fn, 1);
        while (!atomic_load(&G.gate_open) && tap_now_ns() < deadline)
            tap_sleep_ms(1);
    }
    *value = value_of(key, g);
    return atomic_load(&G.fail_code);
}

static int gen_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return compute(key, value);
}

static int gen_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    uint64_t k = 0, v;
    memcpy(&k, key, key_len < 8 ? key_len : 8);
    int rc = compute(k, &v);
    return rc != 0 ? rc : memo_result_set(out, &v, sizeof v);
}

static void reset_gen(void)
{
    memset(&G, 0, sizeof G);
}

static int get(memo_t *m, bool bytes, uint64_t key, uint64_t *v)
{
    *v = 0;
    return keyspace_get(m, bytes, key, gen_bytes, gen_u64, NULL, v);
}

static int lookup(memo_t *m, bool bytes, uint64_t key, uint64_t *v)
{
    *v = 0;
    if (!bytes)
        return memo_lookup_u64(m, key, v);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_lookup(m, &key, sizeof key, &r);
    if (rc == 0 && r.len == 8)
        memcpy(v, r.data, 8);
    else if (rc == 0)
        rc = 555;
    memo_release(&r);
    return rc;
}

/* The callback reason for the value (key, value) after memo_destroy: 0 if none, -1 if more than
 * one, -2 if its record is malformed. */
static int reason_of(bool bytes, uint64_t key, uint64_t value)
{
    int found = 0, reason = 0;
    for (size_t i = 0; i < LOG.n; i++) {
        const test_removal_t *r = &LOG.log[i];
        if (r->key_space == (bytes ? MEMO_KEYS_BYTES : MEMO_KEYS_U64) && r->key_len == 8 &&
            memcmp(r->key, &key, 8) == 0 && r->value_len == 8 && test_removal_u64(r) == value)
            found++, reason = r->reason;
    }
    return found > 1 ? -1 : found ? reason : 0;
}

static void done(memo_t *m)
{
    memo_destroy(m);
    test_removals_free(&LOG);
}

static const char *space(bool bytes)
{
    return bytes ? "byte keys" : "u64 keys";
}

/* ---- ttl ---- */

static void test_ttl(bool bytes)
{
    char what[64];
    snprintf(what, sizeof what, "ttl 1000, %s", space(bytes));
    reset_gen();
    memo_t *m = new_memo(1000, 0, 0, what);
    if (!m)
        return;
    uint64_t v;
    ok(get(m, bytes, 1, &v) == 0 && v == 1001, "%s: stored at s", what);
    at(999);
    ok(get(m, bytes, 1, &v) == 0 && v == 1001, "%s: s + 999: the stored value", what);
    ok(lookup(m, bytes, 1, &v) == 0 && v == 1001, "%s: s + 999: lookup finds it", what);
    is_u64(atomic_load(&G.calls), 1, "%s: ... fn not run", what);
    at(1000);
    is_code(lookup(m, bytes, 1, &v), MEMO_ENOENT, "%s: s + ttl: lookup gives MEMO_ENOENT", what);
    ok(get(m, bytes, 1, &v) == 0 && v == 1002, "%s: s + ttl: get computes a new value", what);
    ok(lookup(m, bytes, 1, &v) == 0 && v == 1002, "%s: ... which lookup finds", what);
    memo_stats_t s = test_stats(m);
    ok(s.misses == 2 && s.hits == 3 && s.evictions == 1,
       "%s: misses 2, hits 3, evictions 1 (got %" PRIu64 ", %" PRIu64 ", %" PRIu64 ")", what, s.misses, s.hits,
       s.evictions);

    /* 50 keys stored at 1000, 50 at 1500 */
    for (uint64_t k = 100; k < 200; k++) {
        if (k == 150)
            at(1500);
        get(m, bytes, k, &v);
    }
    int found = 0, wrong = 0;
    at(1999);
    for (uint64_t k = 100; k < 200; k++)
        found += lookup(m, bytes, k, &v) == 0 && v == value_of(k, 1);
    is_int(found, 100, "%s: at 1999 the 100 values are there", what);
    at(2000);
    found = 0;
    for (uint64_t k = 100; k < 200; k++)
        found += lookup(m, bytes, k, &v) == 0, wrong += k >= 150 && v != value_of(k, 1);
    ok(found == 50 && wrong == 0, "%s: at 2000 only the 50 stored at 1500 (%d found)", what, found);
    at(2500);
    found = 0;
    for (uint64_t k = 100; k < 200; k++)
        found += lookup(m, bytes, k, &v) == 0;
    is_int(found + (lookup(m, bytes, 1, &v) == 0), 0, "%s: at 2500 none", what);
    for (uint64_t k = 100; k < 200; k++)
        wrong += get(m, bytes, k, &v) != 0 || v != value_of(k, 2);
    wrong += get(m, bytes, 1, &v) != 0 || v != 1003;
    is_int(wrong, 0, "%s: ... gets compute all 101 afresh", what);
    s = test_stats(m);
    ok(s.misses == 203 && s.evictions == 102,
       "%s: misses 203, evictions 102: one per expired value (got %" PRIu64 ", %" PRIu64 ")", what, s.misses,
       s.evictions);
    memo_destroy(m);
    int bad = 0;
    for (uint64_t k = 100; k < 200; k++)
        bad += reason_of(bytes, k, value_of(k, 1)) != MEMO_REMOVED_EXPIRED ||
               reason_of(bytes, k, value_of(k, 2)) != MEMO_REMOVED_DESTROYED;
    ok(bad == 0 && reason_of(bytes, 1, 1001) == MEMO_REMOVED_EXPIRED && reason_of(bytes, 1, 1002) == MEMO_REMOVED_EXPIRED &&
           reason_of(bytes, 1, 1003) == MEMO_REMOVED_DESTROYED,
       "%s: callbacks: MEMO_REMOVED_EXPIRED for each expired value, DESTROYED for the rest", what);
    ok(atomic_load(&LOG.total) == s.misses && test_removals_count(&LOG, MEMO_REMOVED_EXPIRED) == s.evictions &&
           atomic_load(&LOG.malformed) == 0,
       "%s: one callback per value (%" PRIu64 ")", what, (uint64_t)LOG.total);
    test_removals_free(&LOG);
}

/* An expired key asked by HERD threads at once: computed once. */
static struct {
    memo_t  *m;
    bool     bytes;
    int      rc[HERD];
    uint64_t v[HERD];
} HD;

static void *herd_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    test_herd_arrive(&HOLD);
    HD.rc[i] = get(HD.m, HD.bytes, 7, &HD.v[i]);
    return NULL;
}

static void test_expired_herd(bool bytes)
{
    char what[64];
    snprintf(what, sizeof what, "expired key, herd of %d, %s", HERD, space(bytes));
    reset_gen();
    if ((HD.m = new_memo(1000, 0, 0, what)) == NULL)
        return;
    HD.bytes = bytes;
    uint64_t v;
    get(HD.m, bytes, 7, &v);
    at(1000);
    memo_stats_t s0 = test_stats(HD.m);
    test_herd_run(&HOLD, 7, HERD, herd_thread, what);
    int bad = 0;
    for (unsigned i = 0; i < HERD; i++)
        bad += HD.rc[i] != 0 || HD.v[i] != 7002;
    is_int(bad, 0, "%s: every thread gets the new value", what);
    ok(atomic_load(&G.calls) == 2 && atomic_load(&HOLD.held) == 1, "%s: computed once", what);
    memo_stats_t s1 = test_stats(HD.m);
    ok(s1.misses - s0.misses == 1 && s1.evictions == 1, "%s: 1 miss, 1 eviction", what);
    done(HD.m);
}

/* ---- no expiry setting: the clock is never read ---- */

static int fail3(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key, (void)value;
    return 3;
}

static void test_no_clock_reads(void)
{
    for (int bounded = 0; bounded < 2; bounded++) {
        const char   *what = bounded ? "no expiry, bounded, with a callback" : "no expiry, a clock set";
        memo_config_t cfg = MEMO_CONFIG_INIT;
        cfg.clock = test_clock_read;
        cfg.clock_ctx = &CLK;
        if (bounded) {
            cfg.max_entries = 16;
            cfg.on_removal = test_removals_cb;
            cfg.removal_ctx = &LOG;
        }
        test_clock_init(&CLK, T0);
        test_removals_init(&LOG, false);
        reset_gen();
        memo_t *m = NULL;
        int     rc = memo_create(&m, &cfg);
        if (!is_code(rc, 0, "%s: memo_create accepts the config (%s)", what, memo_err_name(rc))) {
            test_removals_free(&LOG);
            continue;
        }
        uint64_t v;
        for (int round = 0; round < 3; round++) {
            for (uint64_t k = 0; k < 100; k++) {
                get(m, k % 2, k, &v), get(m, k % 2, k, &v); /* a miss, a hit */
                lookup(m, k % 2, k, &v), lookup(m, !(k % 2), k, &v);
                memo_get_u64_timed(m, k + 1000, gen_u64, NULL, 1000000, &v);
            }
            memo_get_u64(m, 5000, fail3, NULL, &v);
            memo_forget_u64(m, 1);
            memo_forget(m, &(uint64_t){ 2 }, 8);
            if (bounded)
                memo_set_limits(m, 8, 0), memo_set_limits(m, 16, 0);
            if (round == 1)
                memo_clear(m);
            at(1000000000 * (uint64_t)(round + 1));
        }
        memo_stats(m, &(memo_stats_t){ 0 });
        is_u64(atomic_load(&CLK.reads), 0, "%s: gets, lookups, forgets, clear, evictions: the clock is never read", what);
        done(m);
        is_u64(atomic_load(&CLK.reads), 0, "%s: ... nor by memo_destroy", what);
    }
    reset_gen();
    memo_t *m = new_memo(1000, 0, 0, "ttl 1000");
    if (m) {
        uint64_t v;
        get(m, false, 1, &v), get(m, false, 1, &v);
        ok(atomic_load(&CLK.reads) > 0, "ttl 1000: the memo's clock is the one read (%" PRIu64 " reads)",
           (uint64_t)CLK.reads);
        done(m);
    }
}

/* ---- memo_result_ttl ---- */

/* The value is the computation's number; memo_result_ttl by the key's first letter: d (none: the
 * memo's ttl), s 10, l 5000, f UINT64_MAX, n 0 (no-store). */
static int ttl_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    uint64_t v = atomic_fetch_add(&G.calls, 1) + 1;
    test_herd_hold(&HOLD, key_len); /* the herd asks "nherd" only */
    int rc = memo_result_set(out, &v, sizeof v);
    if (rc != 0)
        return rc;
    char c = key_len ? *(const char *)key : 'd';
    rc = c == 's' ? memo_result_ttl(out, 10) : c == 'l' ? memo_result_ttl(out, 5000)
       : c == 'f' ? memo_result_ttl(out, UINT64_MAX) : c == 'n' ? memo_result_ttl(out, 0) : 0;
    if (rc != 0)
        atomic_store(&G.ttl_rc, rc);
    return 0;
}

static bool has(memo_t *m, const char *key)
{
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_lookup(m, key, strlen(key), &r);
    memo_release(&r);
    return rc == 0;
}

static struct {
    memo_t  *m;
    int      rc[HERD];
    uint64_t v[HERD];
} NS;

static void *nostore_thread(void *arg)
{
    unsigned   i = (unsigned)(uintptr_t)arg;
    memo_ref_t r = MEMO_REF_INIT;
    test_herd_arrive(&HOLD);
    NS.rc[i] = memo_get(NS.m, "nherd", 5, ttl_fn, NULL, &r);
    if (NS.rc[i] == 0 && r.len == 8)
        memcpy(&NS.v[i], r.data, 8);
    memo_release(&r);
    return NULL;
}

static void test_result_ttl(void)
{
    const char *what = "memo_result_ttl, memo ttl 1000";
    is_code(memo_result_ttl(NULL, 5), MEMO_EINVAL, "memo_result_ttl(NULL, 5) is MEMO_EINVAL");
    reset_gen();
    memo_t *m = new_memo(1000, 0, 0, what);
    if (!m)
        return;
    static const char *keys[] = { "default", "short", "long", "forever", "nostore" };
    int                bad = 0;
    for (int i = 0; i < 5; i++) {
        memo_ref_t r = MEMO_REF_INIT;
        uint64_t   v = 0;
        if (memo_get(m, keys[i], strlen(keys[i]), ttl_fn, NULL, &r) != 0 || r.len != 8)
            bad++;
        else
            memcpy(&v, r.data, 8), bad += v != (uint64_t)i + 1;
        memo_release(&r);
    }
    is_int(bad, 0, "%s: each caller gets its value", what);
    is_code(atomic_load(&G.ttl_rc), 0, "%s: memo_result_ttl inside fn returns 0", what);
    ok(!has(m, "nostore") && test_stats(m).entries == 4, "%s: ttl 0: returned, not stored (entries 4)", what);
    memo_ref_t r = MEMO_REF_INIT;
    memo_get(m, "nostore", 7, ttl_fn, NULL, &r);
    memo_release(&r);
    is_u64(atomic_load(&G.calls), 6, "%s: ttl 0: the next call computes it again", what);
    at(9);
    ok(has(m, "short") && has(m, "default"), "%s: at 9: ttl 10 and the memo's ttl still there", what);
    at(10);
    ok(!has(m, "short") && has(m, "default"), "%s: at 10: ttl 10 expired, the memo's ttl not", what);
    at(999);
    ok(has(m, "default") && has(m, "long"), "%s: at 999: the memo's ttl still there", what);
    at(1000);
    ok(!has(m, "default") && has(m, "long"), "%s: at 1000: the memo's ttl expired, ttl 5000 not", what);
    at(4999);
    ok(has(m, "long"), "%s: at 4999: ttl 5000 still there", what);
    at(5000);
    ok(!has(m, "long") && has(m, "forever"), "%s: at 5000: ttl 5000 expired, UINT64_MAX not", what);
    at(1000000000000000000ull);
    ok(has(m, "forever"), "%s: 10^18 ns later: UINT64_MAX still there", what);
    test_clock_set(&CLK, UINT64_MAX - 1);
    ok(has(m, "forever"), "%s: at the clock's end (UINT64_MAX - 1): still there (no overflow)", what);
    is_u64(atomic_load(&G.calls), 6, "%s: no lookup computed anything", what);

    /* ttl 0 under a herd: to the computing caller and its waiters, never stored */
    NS.m = m;
    memo_stats_t s0 = test_stats(m);
    test_herd_run(&HOLD, 5, HERD, nostore_thread, what);
    memo_stats_t s1 = test_stats(m);
    bad = 0;
    for (unsigned i = 0; i < HERD; i++)
        bad += NS.rc[i] != 0 || NS.v[i] < 7;
    is_int(bad, 0, "%s: ttl 0, herd of %d: every call gets a value", what, HERD);
    ok(s1.waits > s0.waits && s1.hits == s0.hits && s1.misses - s0.misses + s1.waits - s0.waits == HERD,
       "%s: ... by computing or waiting, never as a hit (misses +%" PRIu64 ", waits +%" PRIu64 ")", what,
       s1.misses - s0.misses, s1.waits - s0.waits);
    ok(!has(m, "nherd") && s1.entries == s0.entries, "%s: ... and it is not stored", what);
    memo_destroy(m);
    const test_removal_t *rec;
    bad = 0;
    for (int i = 0; i < 3; i++) /* expired, never asked again: still stored or not, either reason */
        bad += test_removals_find(&LOG, MEMO_KEYS_BYTES, keys[i], strlen(keys[i]), &rec) != 1 ||
               (rec->reason != MEMO_REMOVED_EXPIRED && rec->reason != MEMO_REMOVED_DESTROYED);
    ok(bad == 0 && test_removals_find(&LOG, MEMO_KEYS_BYTES, "forever", 7, &rec) == 1 &&
           rec->reason == MEMO_REMOVED_DESTROYED,
       "%s: one callback for each stored value", what);
    ok(test_removals_find(&LOG, MEMO_KEYS_BYTES, "nostore", 7, NULL) == 0 &&
           test_removals_find(&LOG, MEMO_KEYS_BYTES, "nherd", 5, NULL) == 0 && atomic_load(&LOG.total) == 4,
       "%s: none for the values with ttl 0 (never stored)", what);
    test_removals_free(&LOG);
}

/* ---- refresh ---- */

enum { READERS = 8 };

static struct {
    memo_t  *m;
    bool     bytes;
    int      rc;
    uint64_t v;
    int      bad[READERS];
} RF;

static void *refresher(void *arg)
{
    (void)arg;
    RF.rc = get(RF.m, RF.bytes, 3, &RF.v);
    return NULL;
}

static void *reader(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    for (int j = 0; j < 3; j++) {
        uint64_t v;
        RF.bad[i] += get(RF.m, RF.bytes, 3, &v) != 0 || v != 3001;
    }
    return NULL;
}

static void test_refresh(bool bytes)
{
    char what[64];
    snprintf(what, sizeof what, "ttl 10000, refresh 1000, %s", space(bytes));
    reset_gen();
    memset(&RF, 0, sizeof RF);
    if ((RF.m = new_memo(10000, 1000, 0, what)) == NULL)
        return;
    RF.bytes = bytes;
    memo_t  *m = RF.m;
    uint64_t v;
    get(m, bytes, 3, &v);
    at(999);
    ok(get(m, bytes, 3, &v) == 0 && v == 3001 && atomic_load(&G.calls) == 1, "%s: at 999: a hit", what);
    at(1000);
    G.gate_key = 3;
    atomic_store(&G.gated, 1);
    pthread_t rt, tids[READERS];
    if (pthread_create(&rt, NULL, refresher, NULL) != 0)
        bail_out("pthread_create");
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (!atomic_load(&G.in_fn) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    ok(atomic_load(&G.in_fn), "%s: at 1000: a call runs fn to refresh (held in fn)", what);
    for (unsigned i = 0; i < READERS; i++)
        if (pthread_create(&tids[i], NULL, reader, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    unsigned stuck = tap_join_threads_timed(tids, READERS, 10);
    is_int(stuck, 0, "%s: meanwhile %d threads x 3 calls return without waiting for the refresh", what, READERS);
    ok(lookup(m, bytes, 3, &v) == 0 && v == 3001, "%s: ... lookup sees the old value", what);
    is_u64(atomic_load(&G.calls), 2, "%s: ... no second refresh", what);
    atomic_store(&G.gate_open, 1);
    pthread_join(rt, NULL);
    if (stuck)
        tap_join_threads(tids, READERS);
    atomic_store(&G.gated, 0);
    int bad = 0;
    for (unsigned i = 0; i < READERS; i++)
        bad += RF.bad[i];
    is_int(bad, 0, "%s: ... and all of them got the old value", what);
    ok(RF.rc == 0 && RF.v == 3002, "%s: the refreshing call returns the new value (%" PRIu64 ")", what, RF.v);
    ok(get(m, bytes, 3, &v) == 0 && v == 3002 && atomic_load(&G.calls) == 2, "%s: then the new value is stored", what);
    memo_stats_t s = test_stats(m);
    ok(s.misses == 2 && s.waits == 0 && s.hits == 27 && s.evictions == 0,
       "%s: misses 2, waits 0, hits 27, evictions 0 (got %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 ")", what,
       s.misses, s.waits, s.hits, s.evictions);
    at(1999);
    ok(get(m, bytes, 3, &v) == 0 && v == 3002 && atomic_load(&G.calls) == 2,
       "%s: at 1999: a hit (the new value's age counts from its refresh)", what);
    at(2000);
    ok(get(m, bytes, 3, &v) == 0 && v == 3003, "%s: at 2000: refreshed again, by a lone caller", what);
    memo_destroy(m);
    ok(reason_of(bytes, 3, 3001) == MEMO_REMOVED_REPLACED && reason_of(bytes, 3, 3002) == MEMO_REMOVED_REPLACED &&
           reason_of(bytes, 3, 3003) == MEMO_REMOVED_DESTROYED && atomic_load(&LOG.total) == 3,
       "%s: callbacks: MEMO_REMOVED_REPLACED for the refreshed values", what);
    test_removals_free(&LOG);
}

static void test_failing_refresh(bool bytes)
{
    char what[64];
    snprintf(what, sizeof what, "failing refresh, %s", space(bytes));
    reset_gen();
    memo_t *m = new_memo(10000, 1000, 0, what);
    if (!m)
        return;
    uint64_t v;
    get(m, bytes, 4, &v);
    at(1000);
    atomic_store(&G.fail_code, 7);
    is_code(get(m, bytes, 4, &v), 7, "%s: the refreshing call gets fn's code", what);
    ok(lookup(m, bytes, 4, &v) == 0 && v == 4001, "%s: the old value stays", what);
    is_code(get(m, bytes, 4, &v), 7, "%s: a later call tries again", what);
    is_u64(atomic_load(&G.calls), 3, "%s: ... running fn", what);
    at(9999);
    ok(lookup(m, bytes, 4, &v) == 0 && v == 4001, "%s: at 9999 the old value is still there", what);
    at(10000);
    is_code(lookup(m, bytes, 4, &v), MEMO_ENOENT, "%s: at 10000 (its ttl) it is gone", what);
    atomic_store(&G.fail_code, 0);
    ok(get(m, bytes, 4, &v) == 0 && v == 4004, "%s: then computed afresh", what);
    memo_stats_t s = test_stats(m);
    ok(s.errors == 2 && s.misses == 4, "%s: errors 2, misses 4", what);
    memo_destroy(m);
    ok(reason_of(bytes, 4, 4001) == MEMO_REMOVED_EXPIRED && reason_of(bytes, 4, 4004) == MEMO_REMOVED_DESTROYED &&
           atomic_load(&LOG.total) == 2,
       "%s: callbacks: the old value EXPIRED, not REPLACED", what);
    test_removals_free(&LOG);
}

/* ---- failure_ttl ---- */

static int forget_key(memo_t *m, bool bytes, uint64_t key)
{
    return bytes ? memo_forget(m, &key, sizeof key) : memo_forget_u64(m, key);
}

static void test_failure_ttl(bool bytes)
{
    char what[64];
    snprintf(what, sizeof what, "failure_ttl 500, %s", space(bytes));
    reset_gen();
    memo_t *m = new_memo(0, 0, 500, what);
    if (!m)
        return;
    uint64_t v;
    atomic_store(&G.fail_code, 42);
    is_code(get(m, bytes, 9, &v), 42, "%s: fn fails with 42", what);
    is_code(get(m, bytes, 9, &v), 42, "%s: the next call gets 42", what);
    at(499);
    is_code(get(m, bytes, 9, &v), 42, "%s: and at 499", what);
    is_u64(atomic_load(&G.calls), 1, "%s: ... without running fn", what);
    is_code(lookup(m, bytes, 9, &v), MEMO_ENOENT, "%s: lookup does not see a stored failure", what);
    memo_stats_t s = test_stats(m);
    ok(s.hits == 2 && s.misses == 1 && s.errors == 1, "%s: hits 2, misses 1, errors 1 (got %" PRIu64 ", %" PRIu64 ", %" PRIu64 ")",
       what, s.hits, s.misses, s.errors);
    at(500);
    is_code(get(m, bytes, 9, &v), 42, "%s: at 500 it expired: fn runs again", what);
    is_u64(atomic_load(&G.calls), 2, "%s: ... once", what);
    /* API.md: memo_forget returns "0, or MEMO_ENOENT if nothing was there", and says of a stored
     * failure "memo_forget removes it": it was there and is removed, so 0. */
    is_code(forget_key(m, bytes, 9), 0, "%s: forget of a stored failure returns 0", what);
    atomic_store(&G.fail_code, 0);
    ok(get(m, bytes, 9, &v) == 0 && v == 9003, "%s: ... and the next call runs fn", what);
    ok(get(m, bytes, 9, &v) == 0 && v == 9003 && atomic_load(&G.calls) == 3, "%s: ... whose value is stored", what);
    static const int neg[] = { MEMO_ENOMEM, MEMO_EDEADLK, MEMO_ETIMEDOUT, MEMO_EINVAL };
    int              again = 0;
    for (int i = 0; i < 4; i++) {
        atomic_store(&G.fail_code, neg[i]);
        uint64_t before = atomic_load(&G.calls);
        again += get(m, bytes, 20 + (uint64_t)i, &v) == neg[i] && get(m, bytes, 20 + (uint64_t)i, &v) == neg[i] &&
                 atomic_load(&G.calls) == before + 2;
    }
    is_int(again, 4, "%s: memo's own codes from fn are never stored (fn runs each time)", what);
    atomic_store(&G.fail_code, 0);
    memo_destroy(m);
    ok(atomic_load(&LOG.total) == 1 && reason_of(bytes, 9, 9003) == MEMO_REMOVED_DESTROYED,
       "%s: one callback, for the one value: none for stored failures", what);
    test_removals_free(&LOG);
}

/* ---- expired values do not pile up ---- */

static void test_no_pileup(void)
{
    const char *what = "ttl 1000, 130000 keys, the clock +100 per key";
    reset_gen();
    memo_t *m = new_memo(1000, 0, 0, what);
    if (!m)
        return;
    LOG.counts_only = true;
    uint64_t v, peak = 0, early_bytes = 0;
    int      wrong = 0;
    for (uint64_t k = 0; k < 130000; k++) {
        at(100 * k);
        wrong += get(m, k >= 100000, k, &v) != 0 || v != value_of(k, 1);
        if (k % 1000 == 999) {
            memo_stats_t s = test_stats(m);
            peak = s.entries > peak ? s.entries : peak;
            if (k == 4999)
                early_bytes = s.bytes;
        }
    }
    memo_stats_t s = test_stats(m);
    is_int(wrong, 0, "%s: every value right", what);
    cmp_u64(peak, <=, 5000, "%s: at most 10 live at once; entries peak <= 5000", what);
    cmp_u64(s.bytes, <=, 4 * early_bytes + (64 << 10), "%s: bytes stay near what they were after 5000 keys (%" PRIu64 ")",
            what, early_bytes);
    is_code(lookup(m, false, 5, &v), MEMO_ENOENT, "%s: an old key is gone", what);
    memo_destroy(m);
    ok(test_removals_count(&LOG, MEMO_REMOVED_EXPIRED) == s.evictions && atomic_load(&LOG.total) == s.misses,
       "%s: each value reported once; the expired ones (%" PRIu64 ") as MEMO_REMOVED_EXPIRED", what, s.evictions);
    test_removals_free(&LOG);
}

int main(void)
{
    tap_watchdog(110);
    for (int bytes = 0; bytes < 2; bytes++) {
        test_ttl(bytes);
        test_expired_herd(bytes);
        test_refresh(bytes);
        test_failing_refresh(bytes);
        test_failure_ttl(bytes);
    }
    test_no_clock_reads();
    test_result_ttl();
    test_no_pileup();
    return done_testing();
}
