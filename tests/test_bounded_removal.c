/*
 * test_bounded_removal: the removal callback of API.md 0.2 (on_removal) on bounded memos: when it
 * runs, what it is told, and refs that outlive the value's place in the memo. Hash table only:
 * dense keys with a bound are refused, so no _dense run. The bounds themselves are test_bounded;
 * both share bounded.h.
 * Every value is a function of its key, so that each one returned or reported can be checked;
 * callbacks are logged (tests/helpers.h) and checked after memo_destroy, when all have run.
 *
 *  - a ref held across the eviction of its value reads the same bytes, and the callback (which
 *    frees what the value points to) waits for its release (ASan: use-after-free, double free).
 *  - on_removal: the reason (evicted; forgotten by memo_forget / memo_forget_u64 / memo_clear;
 *    destroyed), key, value and key space of each call; none for failures; exactly once each.
 *  - a stress of more threads than cores mixing gets, lookups and forgets on a bounded memo:
 *    counters, values and callbacks add up at quiescence.
 * Verified against mutated copies of src/: evictions' reasons misreported, a u64 removal's
 * key_len wrong, records reclaimed without waiting for readers (the held ref's bytes change, its
 * callback runs early; planted bug M16): each fails assertions here.
 */
#include "tap.h"
#include "helpers.h"
#include "bounded.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

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
    is_code(memo_lookup(m, kb, klen, &r), MEMO_ENOENT, "%s: the held value is evicted (after %d new keys)", what, n);
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
    is_code(memo_get(m, "fails", 5, fail5_bytes, NULL, &r), 5, "%s: a failing fn (no failure_ttl)", what);
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
    test_ref_across_eviction(0, 200);
    test_ref_across_eviction(0, 3000);
    test_ref_across_eviction(MEMO_F_SYSTEM_ALLOC, 200);
    test_removal_frees(0);
    test_removal_frees(MEMO_F_SYSTEM_ALLOC);
    test_removal_reasons();
    test_stress();
    test_removals_free(&LOG);
    return done_testing();
}
