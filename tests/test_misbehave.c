/*
 * test_misbehave: a compute function that misbehaves. Whatever it does: no leak, no stranded
 * thread, no wrong answer. Both key spaces wherever it applies. Waiters that misbehave are
 * test_misbehave_waiters ((d) and (f)) and test_misbehave_cancel ((e)); the shared helpers are
 * in misbehave.h.
 *
 * (a) fn stores nothing and returns 0: a byte key stores an empty value (len 0), a u64 key stores
 *     0 (fn is called with *value 0, as the header says), and the caller and every waiter get
 *     exactly that. Catches: a NULL or garbage value handed out, a waiter that sees "no value"
 *     and recomputes or fails, a u64 value that is whatever the caller's variable held.
 * (b) fn stores twice (memo_result_set, memo_result_alloc, memo_result_set with other lengths, or
 *     set then alloc last), or stores and then fails: the last store wins for the caller and all
 *     waiters; a failure stores nothing and hands its code to every waiter; memo_stats.bytes goes
 *     back to its level after forget and clear. Catches: an earlier store that wins or is mixed
 *     with a later one (wrong length or bytes), a replaced or failed value that is never freed
 *     (bytes grow by 65 KiB a key; LSan reports it in the ASan build), waiters of a failed run
 *     that are not woken (planted bug M3: they sleep until the join gives up).
 * (c) fn forgets its own key (memo_forget -> MEMO_ENOENT: nothing was stored, the in-flight key
 *     is detached), or clears the memo: the caller and its waiters still get fn's value, nothing
 *     is stored, the next get recomputes exactly once. fn that forgets its key and then calls
 *     memo_get on it: the key is free, so the nested call computes it afresh on the same thread
 *     (no MEMO_EDEADLK: after the forget, no new call waits on the computation that began
 *     before it) and stores that inner value; the outer call and its waiters get the outer value.
 *     Catches: a detached computation that stores anyway, strands or misleads its waiters, a
 *     self-forget that deadlocks on the shard lock, a nested computation of a forgotten key that
 *     reports a false cycle, hangs, or is overwritten by the outer, detached value.
 *
 * Each part runs WAITERS callers asleep on the misbehaving computation: more threads than the
 * machine's cores, started on a barrier, all seen asleep in memo in /proc before the computation
 * proceeds (so a late thread cannot turn a wait into a hit or a recomputation). A watchdog turns
 * a hang into a failure.
 *
 * Verified against mutated copies of src/: memo_result_alloc that drops the value it replaces ->
 * (b) fails (bytes, and LSan); planted bug M3 -> (b) (the waiters of a failed run stay asleep:
 * bail-out).
 */
#include "tap.h"
#include "helpers.h"
#include "misbehave.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { WAITERS = 6, FAIL_CODE = 7 };
enum { BIG_VALUE = 65 * 1024 }; /* beyond jemalloc's thread cache: freed to the arena at once */

static const uint64_t V_OWNER = 1111, V_INNER = 2222, V_FRESH = 3333, V_TWICE = 4444;
static const char     LAST[] = "the last store wins: all 37 bytes, ok";
static const char     SEVEN[] = "seven!!";
static unsigned char  big_source[BIG_VALUE];

/* ---- (a) (b) (c): one misbehaving computation, WAITERS callers asleep on it ---- */

typedef enum {
    STORE_NOTHING,          /* (a) returns 0 and stores nothing */
    STORE_TWICE,            /* (b) set 5 bytes, alloc BIG_VALUE, set LAST: LAST wins (u64: two
                               writes of *value, the second wins) */
    STORE_TWICE_ALLOC_LAST, /* (b) set BIG_VALUE bytes, then alloc 7 filled in place: they win */
    STORE_THEN_FAIL,        /* (b) set, alloc BIG_VALUE, then return FAIL_CODE: nothing stored */
    FORGET_OWN_KEY,         /* (c) memo_forget of its own key, then V_OWNER */
    CLEAR_INSIDE,           /* (c) memo_clear, then V_OWNER */
    FORGET_THEN_GET,        /* (c) forget its key, memo_get it (nested), then V_OWNER */
} misdeed_t;

static const char *const misdeed_name[] = {
    "fn stores nothing",
    "fn stores twice",
    "fn stores twice, alloc last",
    "fn stores, then fails",
    "fn forgets its own key",
    "fn clears the memo",
    "fn forgets its own key, then gets it",
};

static const uint64_t SCENE_KEY = 0x5eed, BYSTANDER_KEY = 0xb1;

typedef struct scene {
    memo_t           *m;
    bool              bytes;
    misdeed_t         misdeed;
    pthread_barrier_t start;
    atomic_int        owner_tid, inside, gate, arrived;
    atomic_int        owner_calls;  /* the misbehaving fn */
    atomic_int        waiter_calls; /* the waiters' own fn: must not run while they wait */
    atomic_int        fresh_calls;  /* the well-behaved fn of later calls */
    atomic_int        inner_calls;  /* the nested computation's fn */
    uint64_t          value_on_entry;
    int               step_rc;    /* the first memo_result_* call in fn that failed */
    int               removal_rc; /* memo_forget inside fn */
    got_t             nested;     /* memo_get inside fn */
    got_t             owner, waiter[WAITERS];
} scene_t;

static scene_t SC;

static void step(scene_t *s, int rc)
{
    if (rc != 0 && s->step_rc == 0)
        s->step_rc = rc;
}

static int inner_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->inner_calls, 1);
    return set_u64_value(out, V_INNER);
}

static int inner_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->inner_calls, 1);
    *value = V_INNER;
    return 0;
}

static int misbehave_bytes(scene_t *s, misdeed_t d, const void *key, size_t key_len,
                           memo_result_t *out)
{
    unsigned char *p;
    switch (d) {
    case STORE_NOTHING:
        return 0;
    case STORE_TWICE:
        step(s, memo_result_set(out, "first", 5));
        if ((p = (unsigned char *)memo_result_alloc(out, BIG_VALUE)) != NULL)
            memset(p, 'x', BIG_VALUE);
        else
            step(s, MEMO_ENOMEM);
        step(s, memo_result_set(out, LAST, sizeof LAST - 1));
        return 0;
    case STORE_TWICE_ALLOC_LAST:
        step(s, memo_result_set(out, big_source, BIG_VALUE));
        if ((p = (unsigned char *)memo_result_alloc(out, sizeof SEVEN - 1)) != NULL)
            memcpy(p, SEVEN, sizeof SEVEN - 1);
        else
            step(s, MEMO_ENOMEM);
        return 0;
    case STORE_THEN_FAIL:
        step(s, memo_result_set(out, "doomed", 6));
        if ((p = (unsigned char *)memo_result_alloc(out, BIG_VALUE)) != NULL)
            memset(p, 'y', BIG_VALUE);
        else
            step(s, MEMO_ENOMEM);
        return FAIL_CODE;
    case FORGET_OWN_KEY:
        s->removal_rc = memo_forget(s->m, key, key_len);
        break;
    case CLEAR_INSIDE:
        memo_clear(s->m);
        break;
    case FORGET_THEN_GET:
        s->removal_rc = memo_forget(s->m, key, key_len);
        s->nested = get_any(s->m, true, SCENE_KEY, inner_bytes, inner_u64, s);
        break;
    }
    return set_u64_value(out, V_OWNER);
}

static int misbehave_u64(scene_t *s, misdeed_t d, uint64_t key, uint64_t *value)
{
    volatile uint64_t *v = value; /* both stores happen */
    switch (d) {
    case STORE_NOTHING:
        return 0;
    case STORE_TWICE:
    case STORE_TWICE_ALLOC_LAST:
        *v = 1;
        *v = V_TWICE;
        return 0;
    case STORE_THEN_FAIL:
        *v = 99;
        return FAIL_CODE;
    case FORGET_OWN_KEY:
        s->removal_rc = memo_forget_u64(s->m, key);
        break;
    case CLEAR_INSIDE:
        memo_clear(s->m);
        break;
    case FORGET_THEN_GET:
        s->removal_rc = memo_forget_u64(s->m, key);
        s->nested = get_any(s->m, false, SCENE_KEY, inner_bytes, inner_u64, s);
        break;
    }
    *v = V_OWNER;
    return 0;
}

/* The owner's fn: holds until every waiter sleeps on it, then misbehaves. */
static void owner_enter(scene_t *s)
{
    atomic_fetch_add(&s->owner_calls, 1);
    atomic_store(&s->owner_tid, tid_now());
    atomic_store(&s->inside, 1);
    wait_flag(&s->gate, 30000);
}

static int owner_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    scene_t *s = (scene_t *)ctx;
    owner_enter(s);
    return misbehave_bytes(s, s->misdeed, key, key_len, out);
}

static int owner_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    scene_t *s = (scene_t *)ctx;
    s->value_on_entry = *value;
    owner_enter(s);
    return misbehave_u64(s, s->misdeed, key, value);
}

static int waiter_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->waiter_calls, 1);
    return set_u64_value(out, 999);
}

static int waiter_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->waiter_calls, 1);
    *value = 999;
    return 0;
}

static int fresh_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->fresh_calls, 1);
    return set_u64_value(out, V_FRESH);
}

static int fresh_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->fresh_calls, 1);
    *value = V_FRESH;
    return 0;
}

static void *scene_owner(void *arg)
{
    scene_t *s = (scene_t *)arg;
    s->owner = get_any(s->m, s->bytes, SCENE_KEY, owner_fn_bytes, owner_fn_u64, s);
    return NULL;
}

static void *scene_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    scene_t *s = &SC;
    tap_barrier_wait(&s->start);
    atomic_fetch_add(&s->arrived, 1);
    s->waiter[i] = get_any(s->m, s->bytes, SCENE_KEY, waiter_fn_bytes, waiter_fn_u64, s);
    return NULL;
}

/* What fn's misdeed hands to its caller and waiters. */
static got_t scene_result(bool bytes, misdeed_t d)
{
    got_t g = { 0, 0, 0 };
    switch (d) {
    case STORE_NOTHING:
        if (bytes)
            g.sum = fnv("", 0);
        else
            g.len = 8; /* the value 0 */
        return g;
    case STORE_TWICE:
        if (bytes)
            g.len = sizeof LAST - 1, g.sum = fnv(LAST, sizeof LAST - 1);
        else
            g = want(false, 0, V_TWICE);
        return g;
    case STORE_TWICE_ALLOC_LAST:
        if (bytes)
            g.len = sizeof SEVEN - 1, g.sum = fnv(SEVEN, sizeof SEVEN - 1);
        else
            g = want(false, 0, V_TWICE);
        return g;
    case STORE_THEN_FAIL:
        return want(bytes, FAIL_CODE, 0);
    default:
        return want(bytes, 0, V_OWNER);
    }
}

static void run_scene(bool bytes, misdeed_t d)
{
    char label[128], b1[96], b2[96];
    snprintf(label, sizeof label, "%s, %s keys", misdeed_name[d], bytes ? "byte" : "u64");
    scene_t *s = &SC;
    memset(s, 0, sizeof *s);
    s->bytes = bytes;
    s->misdeed = d;
    s->value_on_entry = 0xdeadbeefull;
    if (test_memo_create(&s->m, NULL) != 0)
        bail_out("memo_create");
    /* a bystander key, stored before: clear must take it, forget must not */
    got_t by = get_any(s->m, bytes, BYSTANDER_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    atomic_store(&s->fresh_calls, 0);

    pthread_t owner, tids[WAITERS];
    pthread_create(&owner, NULL, scene_owner, s);
    if (!wait_flag(&s->inside, 10000))
        bail_out("%s: the owner never entered fn", label);
    tap_barrier_init(&s->start, WAITERS + 1);
    for (unsigned i = 0; i < WAITERS; i++)
        pthread_create(&tids[i], NULL, scene_waiter, (void *)(uintptr_t)i);
    tap_barrier_wait(&s->start);
    ok(settle(&s->arrived, WAITERS, &s->owner_tid, 1), "%s: %d waiters asleep on fn", label,
       WAITERS);
    atomic_store(&s->gate, 1);
    must_join(&owner, 1, 10, label);
    must_join(tids, WAITERS, 10, label);
    tap_barrier_destroy(&s->start);

    got_t expect = scene_result(bytes, d);
    ok(same(s->owner, expect), "%s: the caller that ran fn gets %s", label,
       show(expect, b1, sizeof b1));
    if (!same(s->owner, expect))
        diag("%s: the caller got %s", label, show(s->owner, b2, sizeof b2));
    int bad = 0;
    for (unsigned i = 0; i < WAITERS; i++) {
        if (!same(s->waiter[i], expect) && bad++ == 0)
            diag("%s: waiter %u got %s", label, i, show(s->waiter[i], b2, sizeof b2));
    }
    is_int(bad, 0, "%s: all %d waiters get the same", label, WAITERS);
    is_int(atomic_load(&s->owner_calls), 1, "%s: fn ran once", label);
    is_int(atomic_load(&s->waiter_calls), 0, "%s: no waiter ran its own fn", label);
    is_code(s->step_rc, 0, "%s: every memo_result_* call inside fn succeeded", label);
    if (!bytes)
        is_u64(s->value_on_entry, 0, "%s: fn was called with *value 0", label);

    memo_stats_t st = stats_of(s->m);
    is_u64(st.waits, WAITERS,
           "%s: stats.waits == %d (every waiter slept on fn and took its result)", label, WAITERS);
    is_u64(st.misses, 2 + (d == FORGET_THEN_GET), "%s: stats.misses (bystander, fn%s)", label,
           d == FORGET_THEN_GET ? ", the nested computation" : "");
    is_u64(st.errors, d == STORE_THEN_FAIL, "%s: stats.errors", label);
    bool stored = d == STORE_NOTHING || d == STORE_TWICE || d == STORE_TWICE_ALLOC_LAST;
    is_u64(st.entries, (d != CLEAR_INSIDE) + (stored || d == FORGET_THEN_GET),
           "%s: stats.entries (the bystander unless cleared, the key if stored)", label);

    got_t after = lookup_any(s->m, bytes, SCENE_KEY);
    if (stored)
        ok(same(after, expect), "%s: the value is stored (lookup: %s)", label,
           show(after, b2, sizeof b2));
    else if (d == FORGET_THEN_GET)
        ok(same(after, want(bytes, 0, V_INNER)),
           "%s: the nested computation's value is stored, not the outer one's (lookup: %s)", label,
           show(after, b2, sizeof b2));
    else
        is_code(after.rc, MEMO_ENOENT, "%s: nothing is stored (lookup)", label);

    if (d == FORGET_OWN_KEY || d == FORGET_THEN_GET)
        is_code(s->removal_rc, MEMO_ENOENT,
                "%s: memo_forget of the key in flight: MEMO_ENOENT (nothing was stored)", label);
    if (d == FORGET_THEN_GET) {
        ok(same(s->nested, want(bytes, 0, V_INNER)),
           "%s: the nested memo_get computes the freed key afresh on the same thread: %s", label,
           show(s->nested, b2, sizeof b2));
        is_int(atomic_load(&s->inner_calls), 1, "%s: ... its fn ran once", label);
    }
    got_t by_after = lookup_any(s->m, bytes, BYSTANDER_KEY);
    if (d == CLEAR_INSIDE)
        is_code(by_after.rc, MEMO_ENOENT, "%s: the clear took the bystander key too", label);
    else
        ok(same(by_after, by) && by.rc == 0, "%s: the bystander key is untouched", label);

    /* the next calls: a stored value is a hit; otherwise one fresh computation, then hits */
    got_t next1 = get_any(s->m, bytes, SCENE_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    got_t next2 = get_any(s->m, bytes, SCENE_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    got_t next_expect = stored ? expect : want(bytes, 0, d == FORGET_THEN_GET ? V_INNER : V_FRESH);
    ok(same(next1, next_expect) && same(next2, next_expect), "%s: the next two gets: %s", label,
       show(next_expect, b1, sizeof b1));
    is_int(atomic_load(&s->fresh_calls), !stored && d != FORGET_THEN_GET,
           "%s: ... %s", label,
           !stored && d != FORGET_THEN_GET ? "recomputed exactly once" : "without computing");
    memo_destroy(s->m);
}

/* (b) with many keys: replaced and failed values are freed (memo_stats.bytes, and LSan). */
enum { MEM_KEYS = 64 };

static misdeed_t mem_misdeed(uint64_t key)
{
    static const misdeed_t cycle[] = { STORE_TWICE, STORE_TWICE_ALLOC_LAST, STORE_THEN_FAIL };
    return cycle[key % 3];
}

static int mem_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    memcpy(&k, key, sizeof k);
    return misbehave_bytes((scene_t *)ctx, mem_misdeed(k), key, key_len, out);
}

static int well_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    return memo_result_set(out, LAST, sizeof LAST - 1);
}

static void test_store_twice_memory(unsigned flags)
{
    const char *label = flags & MEMO_F_SYSTEM_ALLOC ? "MEMO_F_SYSTEM_ALLOC" : "default allocator";
    scene_t     s;
    memset(&s, 0, sizeof s);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    if (test_memo_create(&s.m, &cfg) != 0)
        bail_out("memo_create");
    /* warm-up: the tables grow to hold MEM_KEYS keys, and keep that size through forget/clear */
    for (uint64_t k = 0; k < MEM_KEYS; k++) {
        got_t g = get_any(s.m, true, k, well_fn_bytes, NULL, &s);
        (void)g;
    }
    for (uint64_t k = 0; k < MEM_KEYS; k++)
        forget_any(s.m, true, k);
    memo_clear(s.m);
    uint64_t base = stats_of(s.m).bytes;

    int bad = 0;
    for (uint64_t k = 0; k < MEM_KEYS; k++) {
        got_t g = get_any(s.m, true, k, mem_fn_bytes, NULL, &s);
        if (!same(g, scene_result(true, mem_misdeed(k))))
            bad++;
    }
    is_int(bad, 0,
           "(b) %s: %d keys whose fn stores twice or stores then fails: each got the last store "
           "or the code", label, MEM_KEYS);
    is_code(s.step_rc, 0, "(b) %s: ... every memo_result_* call succeeded", label);
    uint64_t peak = stats_of(s.m).bytes;
    for (uint64_t k = 0; k < MEM_KEYS; k++)
        forget_any(s.m, true, k);
    memo_clear(s.m);
    uint64_t after = stats_of(s.m).bytes;
    diag("(b) %s: bytes %" PRIu64 " before, %" PRIu64 " with the values, %" PRIu64
         " after forget and clear (a leaked %d KiB value a key would add %d KiB)",
         label, base, peak, after, BIG_VALUE / 1024, MEM_KEYS * 2 / 3 * BIG_VALUE / 1024);
    if (exact_bytes(flags))
        is_u64(after, base, "(b) %s: memo_stats.bytes back to its level exactly", label);
    else
        cmp_u64(after, <=, base + 512 * 1024,
                "(b) %s: memo_stats.bytes back to its level (within the thread caches' 512 KiB)",
                label);
    memo_destroy(s.m);
}


int main(void)
{
    tap_watchdog(100);
    uint64_t t0 = tap_now_ns();
    for (size_t i = 0; i < sizeof big_source; i++)
        big_source[i] = (unsigned char)(i * 7);

    /* (a), (b), (c) */
    for (int bytes = 0; bytes < 2; bytes++) {
        for (misdeed_t d = STORE_NOTHING; d <= FORGET_THEN_GET; d++) {
            if (d == STORE_TWICE_ALLOC_LAST && !bytes)
                continue; /* a u64 fn has nothing to allocate */
            run_scene(bytes, d);
        }
    }
    test_store_twice_memory(0);
    test_store_twice_memory(MEMO_F_SYSTEM_ALLOC);
    diag("times: (a-c) %.2f s", (double)(tap_now_ns() - t0) / 1e9);
    return done_testing();
}
