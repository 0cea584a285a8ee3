/*
 * stress_bounded: long, randomized runs of the bounded memo (API.md 0.2: max_entries, max_bytes,
 * memo_set_limits, ttl_ns, refresh_ns, memo_result_ttl, on_removal, the clock). Hash table only:
 * dense keys with any of these are MEMO_EINVAL, so there is no _dense run. Every part starts 10
 * workers (plus a controller or a clock thread) on a barrier, more threads than the 2 cores,
 * over both key spaces (u64 keys, byte keys of 8 to 16 bytes), picking keys a third uniformly, a
 * third skewed to small ids and a third from a hot set of 24 ids. Compute functions get random
 * delays (nothing, a yield or a 0-30 us sleep) between their start and their end. A hang fails
 * the part that hung (timed joins; tap_watchdog behind them).
 *
 * Single flight: every fn records the computations of its key in flight; two at once is a
 * failure unless something that may detach a computation explains it: a forget of the key or a
 * clear (memo.h: a forget detaches a computation and the next call computes afresh) that ended
 * after one of the two calls started and began before the second fn did (see excuse_begun).
 *
 * (a) max_entries. A memo bounded to 64 values over 2 x 1000 keys: memo_get_u64, memo_get (half
 *     of the refs held across the worker's later calls, up to 6 at a time, and checked again
 *     before release: under ASan an early free is a use-after-free), memo_lookup(_u64),
 *     memo_forget(_u64) (6% of the calls), memo_clear (rare, with refs held), and a controller
 *     that moves max_entries between 1, 1000 and unbounded with memo_set_limits (after each
 *     call, entries must be within the bound plus one value per worker: lowering evicts before
 *     it returns), then sets 64 for the last fifth of the run. Values are functions of their
 *     key: every value returned, looked up or reported to on_removal must be its key's. At
 *     quiescence: entries <= 64; lookups find exactly stats.entries keys; misses == fn runs;
 *     hits + waits + misses == gets + lookups that found; evictions > 0; after memo_destroy,
 *     callbacks: evicted == stats.evictions, destroyed == the entries left, none expired or
 *     replaced, no more than fn runs.
 *     Catches: an eviction that frees a value a ref still shows (wrong bytes, ASan), a record
 *     evicted but left in its table (wrong values; ASan: use-after-free) or in its list (entries
 *     and lookups off, a record freed twice), an eviction or a forget racing a store (two
 *     computations of a key at once, wrong values), a set_limits that does not evict, counters
 *     that drift.
 * (b) max_bytes. A memo bounded by bytes alone, moved by the controller between 16 KiB and
 *     1 MiB, 256 KiB for the last fifth, over u64 values and byte values of 16..2000 bytes, and
 *     1 key in 29 whose 300000-byte value passes the final bound: it must reach its callers
 *     and waiters right every time, and not be stored at the end. At quiescence: bytes <=
 *     max_bytes or entries == 0; entries > 0 and hits > 0.1% of gets (the memo keeps storing);
 *     the counters and callbacks as in (a). Catches: memory of values that were not stored
 *     (too big, detached) still counted against max_bytes until its grace period ends, which
 *     made the memo refuse every later value (0 entries, a few hits in 500000 gets).
 * (c) expiry and refresh on a fake clock (ttl 1000 ticks, refresh 400) that a clock thread moves
 *     in bursts (still for 0.1-0.6 ms, then 1-133 ticks on); byte values sometimes get their own
 *     ttl from memo_result_ttl: 0 (not stored), 500 or 2000. A value is (key, generation), from
 *     a per-key counter that fn bumps. Checks: no value reaches a call that started at or after
 *     its stored_at + ttl (stored_at is bounded from above by the clock when the computing call
 *     returned; the latest start of a call that got each (key, generation) is kept); the call
 *     that ran fn gets its own value; per thread, the generations of a key that others computed
 *     never go back; counters add up; then the clock jumps past every ttl: lookups find
 *     nothing, and 10 threads asking every key at once run fn exactly once per key, all getting
 *     that new value; callbacks: expired == stats.evictions, some replaced, none evicted.
 *     Catches: a hit path that skips the expiry check (stale values, a herd served the old
 *     value), an expiry measured from the wrong time, a refresh stored over a newer value,
 *     lookups of expired values, expired values waited on instead of recomputed.
 *     A refresh whose old value expires (or is evicted) while its fn runs makes the next call
 *     of its key wait for it, not compute the key a second time: no overlap is excused here
 *     (a library that let the call compute at once failed 15 to 31 times per run).
 * (d) on_removal frees what the value points to. max_entries moved by the controller (1 to
 *     400, 32 for the last fifth), no forget, clear or expiry: every fn run stores its value,
 *     so after memo_destroy the callbacks must be exactly the fn runs (evicted ==
 *     stats.evictions, destroyed == the entries left). A u64 value is the address of a malloc'd
 *     buffer naming its key (checked against the addresses made for that key: it may be freed
 *     by the time the caller looks); a byte value holds such an address, which readers follow
 *     while they hold the ref; the callback checks the buffer and frees it. Under ASan: a
 *     callback before the last ref's release is a use-after-free, two callbacks a double free,
 *     a missing one a leak.
 *
 * Sizes scale with MEMO_STRESS_SCALE (default 1: about 13 s here on 2 cores, 13 s under ASan,
 * 22 s under TSan); the iterations are divided by 5 under TSan, by 2 under ASan. MEMO_STRESS_SEED replays
 * a run's random choices (the seed is printed; thread scheduling still differs from run to run);
 * MEMO_STRESS_PARTS=ad runs only parts (a) and (d).
 *
 * Verified by breaking the library on purpose (scratch copies, RelWithDebInfo, scale 1):
 *  - the hit path skipping the expiry check (memo__policy_hit): (c) fails "no value was returned
 *    to a call that started past its ttl" (549 stale values) and "herd: every thread got that
 *    new value";
 *  - memo_set_limits not evicting: (a) and (d) fail "memo_set_limits evicted down to the bound
 *    before it returned";
 *  - eviction leaving the record in its table: SIGSEGV in (a); under ASan a heap-use-after-free
 *    in a hit (ck_hs_get comparing the freed record) in (d).
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
static unsigned g_part_limit_s; /* a part still running after this is hung */

#if defined(TAP_TSAN)
enum { SANITIZER_DIVISOR = 5 };
#elif defined(TAP_ASAN)
enum { SANITIZER_DIVISOR = 2 };
#else
enum { SANITIZER_DIVISOR = 1 };
#endif

enum { WORKERS = 10, HOLD = 6, MAX_INFLIGHT = 16 };

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

/* Nothing, a yield, or a sleep of 0-30 us. */
static void jitter(void)
{
    uint64_t r = prng_next(&tl_rng);
    switch (r % 4) {
    case 0:
    case 1:
        break;
    case 2:
        sched_yield();
        break;
    default:
        tap_sleep_ns((r >> 8) % 30001);
        break;
    }
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        bail_out("out of memory (%zu x %zu)", n, size);
    return p;
}

static void join_or_bail(pthread_t *tids, unsigned n, const char *label)
{
    unsigned stuck = tap_join_threads_timed(tids, n, g_part_limit_s);
    if (stuck != 0) {
        ok(0, "%s: %u of %u threads still running after %u s: hung", label, stuck, n,
           g_part_limit_s);
        bail_out("%s hung", label);
    }
}

static memo_stats_t stats_of(memo_t *m)
{
    memo_stats_t s;
    memset(&s, 0, sizeof s);
    memo_stats(m, &s);
    return s;
}

static memo_t *make_memo(const memo_config_t *cfg, const char *label)
{
    memo_t *m = NULL;
    int     rc = memo_create(&m, cfg);
    if (rc != 0)
        bail_out("%s: memo_create: %s", label, memo_strerror(rc));
    return m;
}

/* A third uniform, a third skewed to small ids (P(id) ~ log(n / id)), a third from a hot set of
 * the 24 smallest ids (48 keys over both spaces: they fit in (a)'s bound of 64). */
static uint64_t pick_key(unsigned nk)
{
    uint64_t r = prng_next(&tl_rng);
    switch (r % 3) {
    case 0:
        return (r >> 2) % nk;
    case 1:
        return prng_next(&tl_rng) % (1 + (r >> 20) % nk);
    default:
        return (r >> 2) % (nk < 24 ? nk : 24);
    }
}

/* ---- keys, and the computations in flight ---------------------------------------------------
 * Space 0: u64 key = id. Space 1: byte key = id's 8 bytes + (id % 9) tag bytes.
 */

enum { SP_U64 = 0, SP_BYTES = 1 };

typedef struct bkey {
    unsigned char b[24];
    size_t        len;
} bkey_t;

static bkey_t bkey_make(uint64_t id)
{
    bkey_t key;
    memcpy(key.b, &id, 8);
    key.len = 8 + (size_t)(id % 9);
    for (size_t i = 8; i < key.len; i++)
        key.b[i] = (unsigned char)('a' + i + id % 5);
    return key;
}

typedef struct kstate {
    pthread_mutex_t      lock;
    unsigned             inflight;
    uint64_t             snaps[MAX_INFLIGHT]; /* excuses ended at the in-flight calls' starts */
    atomic_uint_fast64_t forgets_begun;       /* forgets of this key begun, and ended */
    atomic_uint_fast64_t forgets_done;
    atomic_uint_fast64_t runs;                /* fn runs */
    atomic_uint_fast64_t gen;                 /* (c): the last generation computed */
    uintptr_t           *hist;                /* (d): every buffer made for this key */
    size_t               nhist, caphist;
} kstate_t;

static kstate_t            *KS[2];
static unsigned             NK;
static const char          *g_label;
static atomic_uint_fast64_t g_clears_begun; /* memo_clear calls begun, and ended */
static atomic_uint_fast64_t g_clears_done;
static _Atomic uint64_t    *g_excuse_clock; /* (c): a clock move excuses an overlap */
static atomic_uint_fast64_t g_runs, g_overlaps, g_excused, g_inflight_full;
static atomic_uint_fast64_t g_progress; /* worker operations done */

/* The excuses ended when this thread's current call started (see excuse_done). */
static _Thread_local uint64_t tl_snap;

static bool bkey_parse(const void *key, size_t len, uint64_t *id)
{
    if (len < 8 || len > 16)
        return false;
    memcpy(id, key, 8);
    if (*id >= NK)
        return false;
    bkey_t want = bkey_make(*id);
    return want.len == len && memcmp(want.b, key, len) == 0;
}

static void keys_init(unsigned nk, const char *label)
{
    NK = nk;
    g_label = label;
    for (int sp = 0; sp < 2; sp++) {
        KS[sp] = xcalloc(nk, sizeof *KS[sp]);
        for (unsigned i = 0; i < nk; i++)
            pthread_mutex_init(&KS[sp][i].lock, NULL);
    }
    atomic_store(&g_clears_begun, 0);
    atomic_store(&g_clears_done, 0);
    g_excuse_clock = NULL;
    atomic_store(&g_runs, 0);
    atomic_store(&g_overlaps, 0);
    atomic_store(&g_excused, 0);
    atomic_store(&g_inflight_full, 0);
    atomic_store(&g_progress, 0);
}

static void keys_free(void)
{
    for (int sp = 0; sp < 2; sp++) {
        for (unsigned i = 0; i < NK; i++) {
            pthread_mutex_destroy(&KS[sp][i].lock);
            free(KS[sp][i].hist);
        }
        free(KS[sp]);
        KS[sp] = NULL;
    }
}

/*
 * What may detach a computation of a key: a forget of the key, a clear, and in (c) a clock move
 * (see (c)). A computation whose call started at S can be detached only by one of them that ends
 * after S (a forget that began before S may remove the marker inserted after it). So when fn of
 * B starts while fn of A runs, one of the two was detached only if more of them have begun by
 * now than had ended when A's call, or B's, started: either may be the detached one (B's marker
 * may have been detached before A's call, while B's thread had not yet entered fn). Counted on
 * both sides of each forget and clear.
 */
static uint64_t excuse_begun(int sp, uint64_t id)
{
    return atomic_load(&KS[sp][id].forgets_begun) + atomic_load(&g_clears_begun) +
           (g_excuse_clock != NULL ? atomic_load(g_excuse_clock) : 0);
}

static uint64_t excuse_done(int sp, uint64_t id)
{
    return atomic_load(&KS[sp][id].forgets_done) + atomic_load(&g_clears_done) +
           (g_excuse_clock != NULL ? atomic_load(g_excuse_clock) : 0);
}

/* Before every get. */
static void call_begin(int sp, uint64_t id)
{
    tl_snap = excuse_done(sp, id);
}

/* fn starts: fails if another computation of the key is in flight and nothing that ended after
 * its call or this one began explains a second one. */
static void fn_enter(int sp, uint64_t id)
{
    kstate_t *k = &KS[sp][id];
    atomic_fetch_add(&k->runs, 1);
    atomic_fetch_add(&g_runs, 1);
    pthread_mutex_lock(&k->lock);
    uint64_t now = excuse_begun(sp, id);
    for (unsigned i = 0; i < k->inflight; i++) {
        if (now <= k->snaps[i] && now <= tl_snap) {
            if (atomic_fetch_add(&g_overlaps, 1) < 5)
                diag("%s: %s key %" PRIu64 ": fn started while %u computation%s of it ran "
                     "(excuses begun now %" PRIu64 ", ended when its call began %" PRIu64
                     ", when this one began %" PRIu64 ")", g_label, sp ? "byte" : "u64", id,
                     k->inflight, k->inflight > 1 ? "s" : "", now, k->snaps[i], tl_snap);
            break;
        }
        if (i + 1 == k->inflight)
            atomic_fetch_add(&g_excused, 1);
    }
    if (k->inflight < MAX_INFLIGHT)
        k->snaps[k->inflight++] = tl_snap;
    else
        atomic_fetch_add(&g_inflight_full, 1);
    pthread_mutex_unlock(&k->lock);
}

static void fn_leave(int sp, uint64_t id)
{
    kstate_t *k = &KS[sp][id];
    pthread_mutex_lock(&k->lock);
    for (unsigned i = 0; i < k->inflight; i++)
        if (k->snaps[i] == tl_snap) {
            k->snaps[i] = k->snaps[--k->inflight];
            break;
        }
    pthread_mutex_unlock(&k->lock);
}

static void check_flights(const char *label)
{
    is_int(atomic_load(&g_overlaps), 0, "%s: never two computations of one key at once", label);
    is_int(atomic_load(&g_inflight_full), 0, "%s: the in-flight records never overflowed",
           label);
}

/* ---- values that are functions of their key -------------------------------------------------
 * A byte value: the id's 8 bytes, then a pattern drawn from (id, salt).
 */

/* Eight bytes at a time (the pattern's bytes i >= 8 are h's bytes xor i / 8): big values too. */
static uint64_t pattern_word(uint64_t h, size_t word)
{
    return h ^ ((uint64_t)(unsigned char)word * 0x0101010101010101ull);
}

static void fill_value(unsigned char *p, size_t len, uint64_t id, uint64_t salt)
{
    uint64_t h = mix64(id ^ salt);
    size_t   i = 0;
    for (; i < 8 && i < len; i++)
        p[i] = (unsigned char)(id >> (8 * i));
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(h, i / 8);
        memcpy(p + i, &w, 8);
    }
    for (; i < len; i++)
        p[i] = (unsigned char)((h >> (8 * (i % 8))) ^ (i >> 3));
}

static bool value_right(const void *data, size_t len, uint64_t id, uint64_t salt, size_t want)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t             h = mix64(id ^ salt);
    if (data == NULL || len != want)
        return false;
    size_t i = 0;
    for (; i < 8 && i < len; i++)
        if (p[i] != (unsigned char)(id >> (8 * i)))
            return false;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(h, i / 8), got;
        memcpy(&got, p + i, 8);
        if (got != w)
            return false;
    }
    for (; i < len; i++)
        if (p[i] != (unsigned char)((h >> (8 * (i % 8))) ^ (i >> 3)))
            return false;
    return true;
}

/* A worker's refs, held across its later calls; checked again before they are released. */
typedef struct held {
    memo_ref_t ref;
    uint64_t   id;
    size_t     len;
} held_t;

typedef struct worker {
    unsigned index;
    uint64_t gets, lookups, found, forgets, clears;
    uint64_t wrong, bad_rc, broken_refs, held_total;
    unsigned nheld;
    held_t   held[HOLD];
    /* (c) */
    uint64_t not_own, went_back;
    uint32_t *last_gen; /* [space * NK + id]: the last stored generation seen */
    /* (b) */
    uint64_t big_gets;
} worker_t;

typedef bool held_check_fn(const held_t *h);

static void held_release_all(worker_t *w, held_check_fn *check)
{
    for (unsigned i = 0; i < w->nheld; i++) {
        if (!check(&w->held[i]) && w->broken_refs++ < 5)
            diag("%s: worker %u: a held ref of byte key %" PRIu64 " changed its bytes", g_label,
                 w->index, w->held[i].id);
        memo_release(&w->held[i].ref);
    }
    w->nheld = 0;
}

/* Keeps r (moved into the ring; r is emptied), releasing every held ref first if the ring is full. */
static void held_keep(worker_t *w, memo_ref_t *r, uint64_t id, size_t len, held_check_fn *check)
{
    if (w->nheld == HOLD)
        held_release_all(w, check);
    w->held[w->nheld].ref = *r;
    w->held[w->nheld].id = id;
    w->held[w->nheld].len = len;
    w->nheld++;
    w->held_total++;
    memset(r, 0, sizeof *r);
}

/* ---- the controller: memo_set_limits up and down while the workers run ---------------------- */

typedef struct limits {
    uint64_t max_entries, max_bytes;
} limits_t;

typedef struct controller {
    memo_t            *m;
    pthread_barrier_t *start;
    const limits_t    *choices;
    unsigned           nchoices;
    limits_t           final;
    uint64_t           until; /* progress at which the final limits are set */
    unsigned           changes;
    int                bad_rc;
    unsigned           over; /* set_limits returned with entries past the bound + WORKERS */
    uint64_t           final_at; /* progress when they were */
} controller_t;

static void *controller_thread(void *arg)
{
    controller_t *c = (controller_t *)arg;
    tl_rng = prng_make(99, (uint64_t)(uintptr_t)c->choices);
    tap_barrier_wait(c->start);
    while (atomic_load(&g_progress) < c->until) {
        const limits_t *l = &c->choices[prng_next(&tl_rng) % c->nchoices];
        if (memo_set_limits(c->m, l->max_entries, l->max_bytes) != 0)
            c->bad_rc++;
        c->changes++;
        /* Lowering evicts before it returns: past the bound by what the storing threads add. */
        memo_stats_t s = stats_of(c->m);
        if (l->max_entries != 0 && s.entries > l->max_entries + WORKERS && c->over++ < 5)
            diag("%s: memo_set_limits(%" PRIu64 ") returned with %" PRIu64 " entries", g_label,
                 l->max_entries, s.entries);
        tap_sleep_ns(prng_next(&tl_rng) % 1500000);
    }
    if (memo_set_limits(c->m, c->final.max_entries, c->final.max_bytes) != 0)
        c->bad_rc++;
    c->final_at = atomic_load(&g_progress);
    return NULL;
}

/* ---- on_removal: counts per reason, checks what it is told ---------------------------------- */

typedef bool removal_check_fn(const memo_removal_t *r);

typedef struct removals {
    atomic_uint_fast64_t by_reason[8];
    atomic_uint_fast64_t total, malformed, wrong;
    removal_check_fn    *check;
} removals_t;

static void removals_cb(void *ctx, const memo_removal_t *r)
{
    removals_t *l = (removals_t *)ctx;
    atomic_fetch_add(&l->total, 1);
    if (r == NULL || r->reason < MEMO_REMOVED_EVICTED || r->reason > MEMO_REMOVED_DESTROYED ||
        (r->key_space != MEMO_KEYS_U64 && r->key_space != MEMO_KEYS_BYTES) || r->key == NULL ||
        (r->value == NULL && r->value_len != 0) ||
        (r->key_space == MEMO_KEYS_U64 && (r->key_len != 8 || r->value_len != 8))) {
        atomic_fetch_add(&l->malformed, 1);
        return;
    }
    atomic_fetch_add(&l->by_reason[r->reason], 1);
    if (l->check != NULL && !l->check(r) && atomic_fetch_add(&l->wrong, 1) < 5)
        diag("%s: on_removal (reason %d) got a %s key whose value is not its own", g_label,
             r->reason, r->key_space == MEMO_KEYS_U64 ? "u64" : "byte");
}

static uint64_t removed(removals_t *l, int reason)
{
    return atomic_load(&l->by_reason[reason]);
}

/* The callbacks once the memo is destroyed: right values, nothing malformed. */
static void check_removals_common(removals_t *l, const char *label)
{
    is_int(atomic_load(&l->malformed), 0, "%s: no malformed on_removal call", label);
    is_int(atomic_load(&l->wrong), 0, "%s: on_removal always saw its key's value", label);
}

/* Reads every key at quiescence: how many lookups find, and whether each found value is right. */
typedef bool lookup_check_fn(int sp, uint64_t id, const void *data, size_t len, uint64_t u64);

static uint64_t lookup_all(memo_t *m, lookup_check_fn *check, uint64_t *wrong)
{
    uint64_t found = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t id = 0; id < NK; id++) {
            int rc;
            if (sp == SP_U64) {
                uint64_t v = 0;
                rc = memo_lookup_u64(m, id, &v);
                if (rc == 0 && !check(sp, id, NULL, 0, v))
                    (*wrong)++;
            } else {
                bkey_t     k = bkey_make(id);
                memo_ref_t r = MEMO_REF_INIT;
                rc = memo_lookup(m, k.b, k.len, &r);
                if (rc == 0 && !check(sp, id, r.data, r.len, 0))
                    (*wrong)++;
                memo_release(&r);
            }
            if (rc == 0)
                found++;
            else if (rc != MEMO_ENOENT)
                (*wrong)++;
        }
    return found;
}

static void sum_workers(const worker_t *w, unsigned n, worker_t *sum)
{
    memset(sum, 0, sizeof *sum);
    for (unsigned i = 0; i < n; i++) {
        sum->gets += w[i].gets;
        sum->lookups += w[i].lookups;
        sum->found += w[i].found;
        sum->forgets += w[i].forgets;
        sum->clears += w[i].clears;
        sum->wrong += w[i].wrong;
        sum->bad_rc += w[i].bad_rc;
        sum->broken_refs += w[i].broken_refs;
        sum->held_total += w[i].held_total;
        sum->not_own += w[i].not_own;
        sum->went_back += w[i].went_back;
        sum->big_gets += w[i].big_gets;
    }
}

/* The checks every part makes on its workers' results and the memo's counters at quiescence. */
static void check_counters(const worker_t *sum, const memo_stats_t *s, const char *label)
{
    is_u64(sum->wrong, 0, "%s: every value returned or looked up is its key's", label);
    is_u64(sum->bad_rc, 0, "%s: every call returned 0 (lookups: 0 or MEMO_ENOENT)", label);
    is_u64(sum->broken_refs, 0, "%s: every held ref kept its bytes until released (%" PRIu64
           " held)", label, sum->held_total);
    is_u64(s->misses, atomic_load(&g_runs), "%s: stats.misses == fn runs", label);
    is_u64(s->hits + s->waits + s->misses, sum->gets + sum->found,
           "%s: hits + waits + misses == gets + lookups that found (%" PRIu64 " + %" PRIu64 ")",
           label, sum->gets, sum->found);
    is_u64(s->errors, 0, "%s: stats.errors == 0", label);
}

/* ============================================================================================
 * Salted values: parts (a) and (b) store, for key id, mix64(id ^ salt) (u64) or len(id) bytes
 * made by fill_value from id and salt; these check what comes back against that.
 */

typedef size_t salted_len_fn(uint64_t id);

static int salted_fn_u64(uint64_t key, uint64_t *value, uint64_t salt)
{
    if (key >= NK)
        return 9999;
    fn_enter(SP_U64, key);
    jitter();
    *value = mix64(key ^ salt);
    fn_leave(SP_U64, key);
    return 0;
}

static int salted_fn_bytes(const void *key, size_t key_len, memo_result_t *out, uint64_t salt,
                           salted_len_fn *len)
{
    uint64_t id;
    if (!bkey_parse(key, key_len, &id))
        return 9999;
    fn_enter(SP_BYTES, id);
    jitter();
    unsigned char *p = memo_result_alloc(out, len(id));
    if (p != NULL)
        fill_value(p, len(id), id, salt);
    fn_leave(SP_BYTES, id);
    return p != NULL ? 0 : MEMO_ENOMEM;
}

static bool salted_lookup_right(int sp, uint64_t id, const void *data, size_t len, uint64_t v, uint64_t salt,
                                salted_len_fn *len_of)
{
    return sp == SP_U64 ? v == mix64(id ^ salt) : value_right(data, len, id, salt, len_of(id));
}

static bool salted_removal_right(const memo_removal_t *r, uint64_t salt, salted_len_fn *len)
{
    uint64_t id;
    if (r->key_space == MEMO_KEYS_U64) {
        memcpy(&id, r->key, 8);
        uint64_t v;
        memcpy(&v, r->value, 8);
        return id < NK && v == mix64(id ^ salt);
    }
    return bkey_parse(r->key, r->key_len, &id) && value_right(r->value, r->value_len, id, salt, len(id));
}

/* ============================================================================================
 * (a) max_entries, forget, clear, set_limits
 */

#define A_SALT 0x51ED270B27A3C5E1ull

static memo_t           *A_m;
static pthread_barrier_t A_start;
static unsigned          A_iters;

static uint64_t a_u64_value(uint64_t id)
{
    return mix64(id ^ A_SALT);
}

static size_t a_len(uint64_t id)
{
    return 8 + (size_t)(mix64(id * 3 + 1) % 200);
}

static int a_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return salted_fn_u64(key, value, A_SALT);
}

static int a_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    return salted_fn_bytes(key, key_len, out, A_SALT, a_len);
}

static bool a_held_right(const held_t *h)
{
    return value_right(h->ref.data, h->ref.len, h->id, A_SALT, h->len);
}

static bool a_lookup_right(int sp, uint64_t id, const void *data, size_t len, uint64_t v)
{
    return salted_lookup_right(sp, id, data, len, v, A_SALT, a_len);
}

static bool a_removal_right(const memo_removal_t *r)
{
    return salted_removal_right(r, A_SALT, a_len);
}

static void wrong_value(worker_t *w, const char *what, int sp, uint64_t id, int rc)
{
    if (w->wrong++ < 5)
        diag("%s: worker %u: %s of %s key %" PRIu64 " gave a wrong value (rc %s)", g_label,
             w->index, what, sp ? "byte" : "u64", id, memo_err_name(rc));
}

static void bad_rc(worker_t *w, const char *what, int sp, uint64_t id, int rc)
{
    if (w->bad_rc++ < 5)
        diag("%s: worker %u: %s of %s key %" PRIu64 " returned %s", g_label, w->index, what,
             sp ? "byte" : "u64", id, memo_err_name(rc));
}

/* A worker's memo_get of byte key id: counts it, checks the value (check, as lookup_all does),
 * and keeps the ref half of the time (held_len and held_check: what held_release_all checks). */
static void worker_get_bytes(worker_t *w, memo_t *m, memo_fn *fn, uint64_t id, lookup_check_fn *check,
                             size_t held_len, held_check_fn *held_check)
{
    bkey_t     k = bkey_make(id);
    memo_ref_t ref = MEMO_REF_INIT;
    call_begin(SP_BYTES, id);
    int rc = memo_get(m, k.b, k.len, fn, NULL, &ref);
    w->gets++;
    if (rc != 0) {
        bad_rc(w, "memo_get", SP_BYTES, id, rc);
    } else if (!check(SP_BYTES, id, ref.data, ref.len, 0)) {
        wrong_value(w, "memo_get", SP_BYTES, id, rc);
        memo_release(&ref);
    } else if (prng_next(&tl_rng) % 2) {
        held_keep(w, &ref, id, held_len, held_check);
    } else {
        memo_release(&ref);
    }
}

/* A worker's lookup of key id in key space sp: counts it and what it found, checks the value. */
static void worker_lookup(worker_t *w, memo_t *m, int sp, uint64_t id, lookup_check_fn *check)
{
    int rc;
    w->lookups++;
    if (sp == SP_U64) {
        uint64_t v = 0;
        rc = memo_lookup_u64(m, id, &v);
        if (rc == 0 && !check(sp, id, NULL, 0, v))
            wrong_value(w, "memo_lookup_u64", sp, id, rc);
    } else {
        bkey_t     k = bkey_make(id);
        memo_ref_t ref = MEMO_REF_INIT;
        rc = memo_lookup(m, k.b, k.len, &ref);
        if (rc == 0 && !check(sp, id, ref.data, ref.len, 0))
            wrong_value(w, "memo_lookup", sp, id, rc);
        memo_release(&ref);
    }
    if (rc == 0)
        w->found++;
    else if (rc != MEMO_ENOENT)
        bad_rc(w, "lookup", sp, id, rc);
}

static void *a_worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    tl_rng = prng_make(1, w->index);
    tap_barrier_wait(&A_start);
    for (unsigned it = 0; it < A_iters; it++) {
        uint64_t r = prng_next(&tl_rng) % 1000;
        uint64_t id = pick_key(NK);
        int      sp = (int)(prng_next(&tl_rng) & 1);
        if (r < 400) {
            uint64_t v = 0;
            call_begin(SP_U64, id);
            int rc = memo_get_u64(A_m, id, a_fn_u64, NULL, &v);
            w->gets++;
            if (rc != 0)
                bad_rc(w, "memo_get_u64", SP_U64, id, rc);
            else if (v != a_u64_value(id))
                wrong_value(w, "memo_get_u64", SP_U64, id, rc);
        } else if (r < 780) {
            worker_get_bytes(w, A_m, a_fn_bytes, id, a_lookup_right, a_len(id), a_held_right);
        } else if (r < 930) {
            worker_lookup(w, A_m, sp, id, a_lookup_right);
        } else if (r < 990) {
            int rc;
            w->forgets++;
            atomic_fetch_add(&KS[sp][id].forgets_begun, 1); /* it may detach a computation */
            if (sp == SP_U64) {
                rc = memo_forget_u64(A_m, id);
            } else {
                bkey_t k = bkey_make(id);
                rc = memo_forget(A_m, k.b, k.len);
            }
            atomic_fetch_add(&KS[sp][id].forgets_done, 1);
            if (rc != 0 && rc != MEMO_ENOENT)
                bad_rc(w, "forget", sp, id, rc);
        } else if (prng_next(&tl_rng) % 40 == 0) {
            w->clears++;
            atomic_fetch_add(&g_clears_begun, 1);
            memo_clear(A_m); /* while this thread holds refs, too */
            atomic_fetch_add(&g_clears_done, 1);
        } else {
            held_release_all(w, a_held_right);
        }
        atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
    }
    held_release_all(w, a_held_right);
    return NULL;
}

static void run_a(void)
{
    const char *label = "(a) max_entries";
    enum { A_KEYS = 1000, A_BOUND = 64 };
    keys_init(A_KEYS, label);
    A_iters = sized(150000);
    removals_t rl;
    memset(&rl, 0, sizeof rl);
    rl.check = a_removal_right;
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_entries = A_BOUND;
    cfg.on_removal = removals_cb;
    cfg.removal_ctx = &rl;
    A_m = make_memo(&cfg, label);
    static const limits_t choices[] = { { 1, 0 },  { 4, 0 },   { 16, 0 }, { 64, 0 },
                                        { 200, 0 }, { 1000, 0 }, { 0, 0 } };
    controller_t ctl = { A_m, &A_start, choices, sizeof choices / sizeof *choices, { A_BOUND, 0 },
                         (uint64_t)A_iters * WORKERS * 4 / 5, 0, 0, 0, 0 };
    diag("%s: %d workers x %u operations over 2 x %d keys, max_entries %d (moved by a "
         "controller until the last fifth)", label, WORKERS, A_iters, A_KEYS, A_BOUND);
    worker_t *w = xcalloc(WORKERS, sizeof *w);
    pthread_t tids[WORKERS + 1];
    tap_barrier_init(&A_start, WORKERS + 1);
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i].index = i;
        if (pthread_create(&tids[i], NULL, a_worker, &w[i]) != 0)
            bail_out("pthread_create");
    }
    if (pthread_create(&tids[WORKERS], NULL, controller_thread, &ctl) != 0)
        bail_out("pthread_create");
    join_or_bail(tids, WORKERS + 1, label);
    uint64_t t1 = tap_now_ns();
    tap_barrier_destroy(&A_start);

    worker_t sum;
    sum_workers(w, WORKERS, &sum);
    memo_stats_t s = stats_of(A_m);
    diag("%s: %" PRIu64 " gets, %" PRIu64 " lookups (%" PRIu64 " found), %" PRIu64
         " forgets, %" PRIu64 " clears, %u limit changes; %" PRIu64 " fn runs, %" PRIu64
         " hits, %" PRIu64 " waits, %" PRIu64 " evictions; %" PRIu64
         " overlaps excused by a forget or clear", label, sum.gets, sum.lookups, sum.found,
         sum.forgets, sum.clears, ctl.changes, (uint64_t)atomic_load(&g_runs), s.hits, s.waits,
         s.evictions, (uint64_t)atomic_load(&g_excused));
    check_flights(label);
    check_counters(&sum, &s, label);
    is_int(ctl.bad_rc, 0, "%s: memo_set_limits returned 0", label);
    is_int(ctl.over, 0, "%s: memo_set_limits evicted down to the bound before it returned",
           label);
    ok(ctl.final_at < (uint64_t)A_iters * WORKERS,
       "%s: the final bound was set while the workers still ran", label);
    cmp_u64(s.entries, <=, A_BOUND, "%s: stats.entries <= max_entries at quiescence", label);
    cmp_u64(s.evictions, >, 0, "%s: values were evicted", label);
    uint64_t wrong = 0, found = lookup_all(A_m, a_lookup_right, &wrong);
    is_u64(found, s.entries, "%s: lookups find exactly stats.entries keys", label);
    is_u64(wrong, 0, "%s: every value looked up at the end is its key's", label);
    memo_destroy(A_m);
    check_removals_common(&rl, label);
    is_u64(removed(&rl, MEMO_REMOVED_EVICTED), s.evictions,
           "%s: evicted callbacks == stats.evictions", label);
    is_u64(removed(&rl, MEMO_REMOVED_DESTROYED), s.entries,
           "%s: destroyed callbacks == the entries left", label);
    is_u64(removed(&rl, MEMO_REMOVED_EXPIRED) + removed(&rl, MEMO_REMOVED_REPLACED), 0,
           "%s: nothing expired or replaced", label);
    cmp_u64(atomic_load(&rl.total), <=, atomic_load(&g_runs),
            "%s: no more callbacks than fn runs", label);
    ok(removed(&rl, MEMO_REMOVED_FORGOTTEN) > 0, "%s: forgotten values were called back",
       label);
    diag("%s: %.1f s", label, (double)(t1 - t0) / 1e9);
    free(w);
    keys_free();
}

/* ============================================================================================
 * (b) max_bytes, values of mixed sizes, values too big for the bound
 */

#define B_SALT 0x2545F4914F6CDD1Dull
enum { B_BIG = 300000, B_FINAL = 256 * 1024 };

static memo_t           *B_m;
static pthread_barrier_t B_start;
static unsigned          B_iters;

static bool b_big(uint64_t id)
{
    return id % 29 == 3;
}

static size_t b_len(uint64_t id)
{
    return b_big(id) ? B_BIG : 16 + (size_t)(mix64(id ^ B_SALT) % 1985);
}

static uint64_t b_u64_value(uint64_t id)
{
    return mix64(id ^ B_SALT);
}

static int b_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    return salted_fn_u64(key, value, B_SALT);
}

static int b_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    return salted_fn_bytes(key, key_len, out, B_SALT, b_len);
}

static bool b_held_right(const held_t *h)
{
    return value_right(h->ref.data, h->ref.len, h->id, B_SALT, h->len);
}

static bool b_lookup_right(int sp, uint64_t id, const void *data, size_t len, uint64_t v)
{
    return salted_lookup_right(sp, id, data, len, v, B_SALT, b_len);
}

static bool b_removal_right(const memo_removal_t *r)
{
    return salted_removal_right(r, B_SALT, b_len);
}

static void *b_worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    tl_rng = prng_make(2, w->index);
    tap_barrier_wait(&B_start);
    for (unsigned it = 0; it < B_iters; it++) {
        uint64_t r = prng_next(&tl_rng) % 1000;
        uint64_t id = pick_key(NK);
        int      sp = (int)(prng_next(&tl_rng) & 1);
        if (r < 350) {
            uint64_t v = 0;
            call_begin(SP_U64, id);
            int rc = memo_get_u64(B_m, id, b_fn_u64, NULL, &v);
            w->gets++;
            if (rc != 0)
                bad_rc(w, "memo_get_u64", SP_U64, id, rc);
            else if (v != b_u64_value(id))
                wrong_value(w, "memo_get_u64", SP_U64, id, rc);
        } else if (r < 850) {
            w->big_gets += b_big(id);
            worker_get_bytes(w, B_m, b_fn_bytes, id, b_lookup_right, b_len(id), b_held_right);
        } else if (r < 990) {
            worker_lookup(w, B_m, sp, id, b_lookup_right);
        } else {
            held_release_all(w, b_held_right);
        }
        atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
    }
    held_release_all(w, b_held_right);
    return NULL;
}

static void run_b(void)
{
    const char *label = "(b) max_bytes";
    enum { B_KEYS = 600 };
    keys_init(B_KEYS, label);
    B_iters = sized(60000);
    removals_t rl;
    memset(&rl, 0, sizeof rl);
    rl.check = b_removal_right;
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_bytes = B_FINAL;
    cfg.on_removal = removals_cb;
    cfg.removal_ctx = &rl;
    B_m = make_memo(&cfg, label);
    static const limits_t choices[] = { { 0, 16 * 1024 },  { 0, 64 * 1024 },   { 0, 128 * 1024 },
                                        { 0, 256 * 1024 }, { 0, 512 * 1024 }, { 0, 1024 * 1024 } };
    controller_t ctl = { B_m, &B_start, choices, sizeof choices / sizeof *choices, { 0, B_FINAL },
                         (uint64_t)B_iters * WORKERS * 4 / 5, 0, 0, 0, 0 };
    diag("%s: %d workers x %u operations over 2 x %d keys, byte values of 16..2000 bytes and "
         "1 in 29 of %d; max_bytes %d (moved by a controller between 16 KiB and 1 MiB until the "
         "last fifth)", label, WORKERS, B_iters, B_KEYS, B_BIG, B_FINAL);
    worker_t *w = xcalloc(WORKERS, sizeof *w);
    pthread_t tids[WORKERS + 1];
    tap_barrier_init(&B_start, WORKERS + 1);
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i].index = i;
        if (pthread_create(&tids[i], NULL, b_worker, &w[i]) != 0)
            bail_out("pthread_create");
    }
    if (pthread_create(&tids[WORKERS], NULL, controller_thread, &ctl) != 0)
        bail_out("pthread_create");
    join_or_bail(tids, WORKERS + 1, label);
    uint64_t t1 = tap_now_ns();
    tap_barrier_destroy(&B_start);

    worker_t sum;
    sum_workers(w, WORKERS, &sum);
    memo_stats_t s = stats_of(B_m);
    diag("%s: %" PRIu64 " gets (%" PRIu64 " of big values), %" PRIu64 " lookups (%" PRIu64
         " found), %u limit changes; %" PRIu64 " fn runs, %" PRIu64 " hits, %" PRIu64
         " waits, %" PRIu64 " evictions; at the end %" PRIu64 " entries, %" PRIu64 " bytes",
         label, sum.gets, sum.big_gets, sum.lookups, sum.found, ctl.changes,
         (uint64_t)atomic_load(&g_runs), s.hits, s.waits, s.evictions, s.entries, s.bytes);
    check_flights(label);
    check_counters(&sum, &s, label);
    is_int(ctl.bad_rc, 0, "%s: memo_set_limits returned 0", label);
    ok(ctl.final_at < (uint64_t)B_iters * WORKERS,
       "%s: the final bound was set while the workers still ran", label);
    ok(s.bytes <= B_FINAL || s.entries == 0,
       "%s: stats.bytes <= max_bytes or no entry at quiescence (%" PRIu64 " bytes, %" PRIu64
       " entries)", label, s.bytes, s.entries);
    cmp_u64(s.entries, >, 0, "%s: values are stored under the final bound", label);
    cmp_u64(s.hits, >, sum.gets / 1000, "%s: the memo keeps serving hits (over 0.1%% of gets)",
            label);
    cmp_u64(s.evictions, >, 0, "%s: values were evicted", label);
    cmp_u64(sum.big_gets, >, 0, "%s: values too big for the bound were asked for (and right)",
            label);
    uint64_t wrong = 0, found = lookup_all(B_m, b_lookup_right, &wrong);
    is_u64(found, s.entries, "%s: lookups find exactly stats.entries keys", label);
    is_u64(wrong, 0, "%s: every value looked up at the end is its key's", label);
    unsigned big_stored = 0;
    for (uint64_t id = 0; id < NK; id++)
        if (b_big(id)) {
            bkey_t     k = bkey_make(id);
            memo_ref_t ref = MEMO_REF_INIT;
            if (memo_lookup(B_m, k.b, k.len, &ref) == 0)
                big_stored++;
            memo_release(&ref);
        }
    is_int(big_stored, 0, "%s: no value bigger than max_bytes is stored at the end", label);
    memo_destroy(B_m);
    check_removals_common(&rl, label);
    is_u64(removed(&rl, MEMO_REMOVED_EVICTED), s.evictions,
           "%s: evicted callbacks == stats.evictions", label);
    is_u64(removed(&rl, MEMO_REMOVED_DESTROYED), s.entries,
           "%s: destroyed callbacks == the entries left", label);
    is_u64(atomic_load(&rl.total), removed(&rl, MEMO_REMOVED_EVICTED) + s.entries,
           "%s: nothing forgotten, expired or replaced", label);
    cmp_u64(atomic_load(&rl.total), <=, atomic_load(&g_runs),
            "%s: no more callbacks than fn runs", label);
    diag("%s: %.1f s", label, (double)(t1 - t0) / 1e9);
    free(w);
    keys_free();
}

/* ============================================================================================
 * (c) expiry and refresh on a fake clock
 */

enum { C_TTL = 1000, C_REFRESH = 400, C_GMAX = 4096 };
#define C_T0 ((uint64_t)1000000)
#define C_SALT 0x9E3779B97F4A7C15ull

/* memo_result_ttl codes, per (key, generation) */
enum { TTL_DEFAULT = 0, TTL_NONE = 1, TTL_LONG = 2, TTL_SHORT = 3 };

static uint64_t ttl_of(unsigned code)
{
    return code == TTL_NONE ? 0 : code == TTL_LONG ? 2 * C_TTL : code == TTL_SHORT ? C_TTL / 2 : C_TTL;
}

static memo_t           *C_m;
static pthread_barrier_t C_start;
static unsigned          C_iters;
static _Atomic uint64_t  C_clock = C_T0;
static atomic_int        C_workers_left;
static atomic_int        C_no_ttl0;
static atomic_uint_fast64_t C_gen_full;
/* [(space * NK + id) * C_GMAX + gen] */
static _Atomic uint64_t *C_start_max; /* the latest start (+1) of a call that got the value */
static _Atomic uint64_t *C_upper;     /* the clock when its computing call returned (+1) */
static _Atomic uint8_t  *C_ttl_code;

static _Thread_local uint64_t tl_produced; /* the generation this thread's fn made in this call */

static uint64_t c_clock_read(void *ctx)
{
    return atomic_load((_Atomic uint64_t *)ctx);
}

static size_t c_slot(int sp, uint64_t id, uint64_t gen)
{
    return ((size_t)sp * NK + id) * C_GMAX + gen;
}

/* fn for both spaces: the key's next generation, with random delays before and after. */
static int c_compute(int sp, uint64_t id, memo_result_t *out, uint64_t *value)
{
    fn_enter(sp, id);
    jitter();
    uint64_t gen = atomic_fetch_add(&KS[sp][id].gen, 1) + 1;
    if (gen >= C_GMAX) {
        atomic_fetch_add(&C_gen_full, 1);
        fn_leave(sp, id);
        return 7777;
    }
    unsigned code = TTL_DEFAULT;
    if (out != NULL) {
        uint64_t r = prng_next(&tl_rng) % 16;
        code = r == 0 ? (atomic_load(&C_no_ttl0) ? TTL_DEFAULT : TTL_NONE)
             : r <= 2 ? TTL_LONG
             : r == 3 ? TTL_SHORT
                      : TTL_DEFAULT;
        unsigned char *p = memo_result_alloc(out, 16 + 24);
        if (p == NULL) {
            fn_leave(sp, id);
            return MEMO_ENOMEM;
        }
        memcpy(p, &id, 8);
        memcpy(p + 8, &gen, 8);
        fill_value(p + 16, 24, id ^ gen, C_SALT);
        if (code != TTL_DEFAULT && memo_result_ttl(out, ttl_of(code)) != 0)
            code = 255; /* refused: the checks show it */
    } else {
        *value = id << 32 | gen;
    }
    atomic_store(&C_ttl_code[c_slot(sp, id, gen)], (uint8_t)code);
    tl_produced = gen;
    jitter();
    fn_leave(sp, id);
    return 0;
}

static int c_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    if (key >= NK)
        return 9999;
    return c_compute(SP_U64, key, NULL, value);
}

static int c_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t id;
    (void)ctx;
    if (!bkey_parse(key, key_len, &id))
        return 9999;
    return c_compute(SP_BYTES, id, out, NULL);
}

/* The generation in a value of key id, or 0 if the value is not one of id's. */
static uint64_t c_gen_of(int sp, uint64_t id, const void *data, size_t len, uint64_t v)
{
    uint64_t gen;
    if (sp == SP_U64) {
        if (v >> 32 != id)
            return 0;
        gen = v & 0xFFFFFFFFu;
    } else {
        uint64_t kid;
        if (data == NULL || len != 40)
            return 0;
        memcpy(&kid, data, 8);
        memcpy(&gen, (const char *)data + 8, 8);
        if (kid != id || !value_right((const char *)data + 16, 24, id ^ gen, C_SALT, 24))
            return 0;
    }
    return gen >= 1 && gen < C_GMAX && gen <= atomic_load(&KS[sp][id].gen) ? gen : 0;
}

static bool c_held_right(const held_t *h)
{
    return c_gen_of(SP_BYTES, h->id, h->ref.data, h->ref.len, 0) == h->len;
}

static bool c_lookup_right(int sp, uint64_t id, const void *data, size_t len, uint64_t v)
{
    return c_gen_of(sp, id, data, len, v) != 0;
}

static bool c_removal_right(const memo_removal_t *r)
{
    uint64_t id, v = 0;
    if (r->key_space == MEMO_KEYS_U64) {
        memcpy(&id, r->key, 8);
        memcpy(&v, r->value, 8);
        return id < NK && c_gen_of(SP_U64, id, NULL, 0, v) != 0;
    }
    return bkey_parse(r->key, r->key_len, &id) &&
           c_gen_of(SP_BYTES, id, r->value, r->value_len, 0) != 0;
}

static void update_max(_Atomic uint64_t *max, uint64_t now)
{
    uint64_t seen = atomic_load(max);
    while (now > seen && !atomic_compare_exchange_weak(max, &seen, now)) {
    }
}

/* After a call that returned key id's value with generation gen, started at clock t. */
static void c_observe(worker_t *w, int sp, uint64_t id, uint64_t gen, uint64_t t)
{
    update_max(&C_start_max[c_slot(sp, id, gen)], t + 1);
    if (tl_produced != 0) {
        /* this call ran fn: it must get its own value */
        if (gen != tl_produced && w->not_own++ < 5)
            diag("%s: worker %u: %s key %" PRIu64 ": the call that computed generation %" PRIu64
                 " got %" PRIu64, g_label, w->index, sp ? "byte" : "u64", id, tl_produced, gen);
        atomic_store(&C_upper[c_slot(sp, id, tl_produced)], atomic_load(&C_clock) + 1);
        tl_produced = 0;
        return;
    }
    /* a value that others computed: a stored one, or a waiter's; never older than one seen */
    uint32_t *last = &w->last_gen[(size_t)sp * NK + id];
    if (gen < *last) {
        if (w->went_back++ < 5)
            diag("%s: worker %u: %s key %" PRIu64 ": generation %" PRIu64 " after %u", g_label,
                 w->index, sp ? "byte" : "u64", id, gen, *last);
    } else {
        *last = (uint32_t)gen;
    }
}

static void *c_worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    tl_rng = prng_make(3, w->index);
    tap_barrier_wait(&C_start);
    for (unsigned it = 0; it < C_iters; it++) {
        uint64_t r = prng_next(&tl_rng) % 1000;
        uint64_t id = pick_key(NK);
        int      sp = (int)(prng_next(&tl_rng) & 1);
        if (prng_next(&tl_rng) % 4 == 0)
            tap_sleep_ns(prng_next(&tl_rng) % 50000); /* so that the clock moves between calls */
        uint64_t t = atomic_load(&C_clock);
        tl_produced = 0;
        if (r < 400) {
            uint64_t v = 0;
            call_begin(SP_U64, id);
            int rc = memo_get_u64(C_m, id, c_fn_u64, NULL, &v);
            w->gets++;
            uint64_t gen = rc == 0 ? c_gen_of(SP_U64, id, NULL, 0, v) : 0;
            if (rc != 0)
                bad_rc(w, "memo_get_u64", SP_U64, id, rc);
            else if (gen == 0)
                wrong_value(w, "memo_get_u64", SP_U64, id, rc);
            else
                c_observe(w, SP_U64, id, gen, t);
        } else if (r < 800) {
            bkey_t     k = bkey_make(id);
            memo_ref_t ref = MEMO_REF_INIT;
            call_begin(SP_BYTES, id);
            int rc = memo_get(C_m, k.b, k.len, c_fn_bytes, NULL, &ref);
            w->gets++;
            uint64_t gen = rc == 0 ? c_gen_of(SP_BYTES, id, ref.data, ref.len, 0) : 0;
            if (rc != 0) {
                bad_rc(w, "memo_get", SP_BYTES, id, rc);
            } else if (gen == 0) {
                wrong_value(w, "memo_get", SP_BYTES, id, rc);
                memo_release(&ref);
            } else {
                c_observe(w, SP_BYTES, id, gen, t);
                if (prng_next(&tl_rng) % 2)
                    held_keep(w, &ref, id, gen, c_held_right); /* len: the generation */
                else
                    memo_release(&ref);
            }
        } else if (r < 990) {
            int      rc;
            uint64_t gen = 0;
            w->lookups++;
            if (sp == SP_U64) {
                uint64_t v = 0;
                rc = memo_lookup_u64(C_m, id, &v);
                if (rc == 0)
                    gen = c_gen_of(sp, id, NULL, 0, v);
            } else {
                bkey_t     k = bkey_make(id);
                memo_ref_t ref = MEMO_REF_INIT;
                rc = memo_lookup(C_m, k.b, k.len, &ref);
                if (rc == 0)
                    gen = c_gen_of(sp, id, ref.data, ref.len, 0);
                memo_release(&ref);
            }
            if (rc == 0) {
                w->found++;
                if (gen == 0)
                    wrong_value(w, "lookup", sp, id, rc);
                else
                    c_observe(w, sp, id, gen, t);
            } else if (rc != MEMO_ENOENT) {
                bad_rc(w, "lookup", sp, id, rc);
            }
        } else {
            held_release_all(w, c_held_right);
        }
        atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
    }
    held_release_all(w, c_held_right);
    atomic_fetch_sub(&C_workers_left, 1);
    return NULL;
}

/* Moves the clock in bursts: still for 0.1-0.6 ms, then 1 to refresh/3 ticks on. */
static void *c_clock_thread(void *arg)
{
    (void)arg;
    tl_rng = prng_make(3, 1000);
    tap_barrier_wait(&C_start);
    while (atomic_load(&C_workers_left) > 0) {
        tap_sleep_ns(100000 + prng_next(&tl_rng) % 500000);
        if (atomic_load(&C_clock) - C_T0 < (uint64_t)(C_GMAX / 2) * C_REFRESH)
            atomic_fetch_add(&C_clock, 1 + prng_next(&tl_rng) % (C_REFRESH / 3));
    }
    return NULL;
}

/* After the clock jumped past every ttl: every thread asks for every key, in its own order. */
static struct {
    pthread_barrier_t start;
    uint64_t         *got; /* [thread][space * NK + id] */
    int               bad_rc;
} CH;

static void *c_herd_thread(void *arg)
{
    unsigned  index = (unsigned)(uintptr_t)arg;
    uint64_t *got = &CH.got[(size_t)index * 2 * NK];
    tl_rng = prng_make(4, index);
    uint64_t n = 2 * (uint64_t)NK, *order = xcalloc(n, sizeof *order);
    for (uint64_t i = 0; i < n; i++)
        order[i] = i;
    for (uint64_t i = n - 1; i > 0; i--) {
        uint64_t j = prng_next(&tl_rng) % (i + 1), x = order[i];
        order[i] = order[j], order[j] = x;
    }
    tap_barrier_wait(&CH.start);
    for (uint64_t i = 0; i < n; i++) {
        int      sp = (int)(order[i] / NK);
        uint64_t id = order[i] % NK, v = 0;
        int      rc;
        call_begin(sp, id);
        tl_produced = 0;
        if (sp == SP_U64) {
            rc = memo_get_u64(C_m, id, c_fn_u64, NULL, &v);
            got[order[i]] = rc == 0 ? c_gen_of(sp, id, NULL, 0, v) : 0;
        } else {
            bkey_t     k = bkey_make(id);
            memo_ref_t ref = MEMO_REF_INIT;
            rc = memo_get(C_m, k.b, k.len, c_fn_bytes, NULL, &ref);
            got[order[i]] = rc == 0 ? c_gen_of(sp, id, ref.data, ref.len, 0) : 0;
            memo_release(&ref);
        }
        if (rc != 0)
            __atomic_fetch_add(&CH.bad_rc, 1, __ATOMIC_RELAXED);
    }
    free(order);
    return NULL;
}

static void run_c(void)
{
    const char *label = "(c) expiry";
    enum { C_KEYS = 150 };
    keys_init(C_KEYS, label);
    g_excuse_clock = NULL; /* a refresh and a computation of one key never overlap */
    C_iters = sized(80000);
    size_t slots = (size_t)2 * C_KEYS * C_GMAX;
    C_start_max = xcalloc(slots, sizeof *C_start_max);
    C_upper = xcalloc(slots, sizeof *C_upper);
    C_ttl_code = xcalloc(slots, sizeof *C_ttl_code);
    atomic_store(&C_clock, C_T0);
    atomic_store(&C_workers_left, WORKERS);
    atomic_store(&C_no_ttl0, 0);
    atomic_store(&C_gen_full, 0);
    removals_t rl;
    memset(&rl, 0, sizeof rl);
    rl.check = c_removal_right;
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.ttl_ns = C_TTL;
    cfg.refresh_ns = C_REFRESH;
    cfg.clock = c_clock_read;
    cfg.clock_ctx = &C_clock;
    cfg.on_removal = removals_cb;
    cfg.removal_ctx = &rl;
    C_m = make_memo(&cfg, label);
    diag("%s: %d workers x %u operations over 2 x %d keys, ttl %d, refresh %d, a clock thread "
         "moving the clock in bursts", label, WORKERS, C_iters, C_KEYS, C_TTL, C_REFRESH);
    worker_t *w = xcalloc(WORKERS, sizeof *w);
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i].index = i;
        w[i].last_gen = xcalloc((size_t)2 * C_KEYS, sizeof *w[i].last_gen);
    }
    pthread_t tids[WORKERS + 1];
    tap_barrier_init(&C_start, WORKERS + 1);
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < WORKERS; i++)
        if (pthread_create(&tids[i], NULL, c_worker, &w[i]) != 0)
            bail_out("pthread_create");
    if (pthread_create(&tids[WORKERS], NULL, c_clock_thread, NULL) != 0)
        bail_out("pthread_create");
    join_or_bail(tids, WORKERS + 1, label);
    uint64_t t1 = tap_now_ns();
    tap_barrier_destroy(&C_start);
    g_excuse_clock = NULL; /* the clock is still from here on: nothing excuses an overlap */

    worker_t sum;
    sum_workers(w, WORKERS, &sum);
    memo_stats_t s = stats_of(C_m);
    uint64_t     gens = 0, max_gen = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t id = 0; id < NK; id++) {
            uint64_t g = atomic_load(&KS[sp][id].gen);
            gens += g;
            max_gen = g > max_gen ? g : max_gen;
        }
    diag("%s: %" PRIu64 " gets, %" PRIu64 " lookups (%" PRIu64 " found); the clock moved %"
         PRIu64 " ticks; %" PRIu64 " fn runs (up to %" PRIu64 " generations of a key), %" PRIu64
         " hits, %" PRIu64 " waits, %" PRIu64 " expired; %" PRIu64 " overlaps excused by a "
         "clock move (a refresh whose value expired meanwhile)", label, sum.gets, sum.lookups,
         sum.found, (uint64_t)atomic_load(&C_clock) - C_T0, (uint64_t)atomic_load(&g_runs),
         max_gen, s.hits, s.waits, s.evictions, (uint64_t)atomic_load(&g_excused));
    check_flights(label);
    check_counters(&sum, &s, label);
    is_int(atomic_load(&C_gen_full), 0, "%s: fewer than %d generations of any key", label,
           C_GMAX);
    is_u64(sum.not_own, 0, "%s: a call that ran fn got its own value", label);
    is_u64(sum.went_back, 0, "%s: per thread, stored generations of a key never went back",
           label);

    /* No value reached a call that started at or past its stored_at + ttl. */
    uint64_t stale = 0, no_upper = 0, bad_code = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t id = 0; id < NK; id++)
            for (uint64_t g = 1; g <= atomic_load(&KS[sp][id].gen) && g < C_GMAX; g++) {
                size_t   i = c_slot(sp, id, g);
                uint64_t seen = atomic_load(&C_start_max[i]), up = atomic_load(&C_upper[i]);
                unsigned code = atomic_load(&C_ttl_code[i]);
                if (code > TTL_SHORT) {
                    bad_code++;
                    continue;
                }
                if (seen == 0)
                    continue;
                if (up == 0) {
                    no_upper++;
                    continue;
                }
                uint64_t start = seen - 1, upper = up - 1, ttl = ttl_of(code);
                if (ttl == 0 ? start > upper : start >= upper + ttl) {
                    if (stale++ < 5)
                        diag("%s: %s key %" PRIu64 " generation %" PRIu64 " (ttl %" PRIu64
                             ", stored by %" PRIu64 ") reached a call that started at %" PRIu64,
                             label, sp ? "byte" : "u64", id, g, ttl, upper - C_T0, start - C_T0);
                }
            }
    is_u64(bad_code, 0, "%s: memo_result_ttl accepted every ttl", label);
    is_u64(no_upper, 0, "%s: every value seen was returned to the call that computed it", label);
    is_u64(stale, 0, "%s: no value was returned to a call that started past its ttl", label);

    /* Past every ttl: nothing to look up; then every key computed once by a herd. */
    atomic_fetch_add(&C_clock, 2 * C_TTL + 1);
    uint64_t wrong = 0, found = lookup_all(C_m, c_lookup_right, &wrong);
    is_u64(found + wrong, 0, "%s: past every ttl, lookups find nothing", label);
    atomic_store(&C_no_ttl0, 1);
    uint64_t runs0 = atomic_load(&g_runs), overlaps0 = atomic_load(&g_overlaps);
    uint64_t *before = xcalloc((size_t)2 * NK, sizeof *before);
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t id = 0; id < NK; id++)
            before[(size_t)sp * NK + id] = atomic_load(&KS[sp][id].gen);
    CH.got = xcalloc((size_t)WORKERS * 2 * NK, sizeof *CH.got);
    CH.bad_rc = 0;
    tap_barrier_init(&CH.start, WORKERS);
    for (unsigned i = 0; i < WORKERS; i++)
        if (pthread_create(&tids[i], NULL, c_herd_thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    join_or_bail(tids, WORKERS, label);
    tap_barrier_destroy(&CH.start);
    unsigned not_once = 0, split = 0;
    for (int sp = 0; sp < 2; sp++)
        for (uint64_t id = 0; id < NK; id++) {
            size_t   k = (size_t)sp * NK + id;
            uint64_t g = atomic_load(&KS[sp][id].gen);
            if (g != before[k] + 1 && not_once++ < 5)
                diag("%s: %s key %" PRIu64 " computed %" PRIu64 " times by the herd", label,
                     sp ? "byte" : "u64", id, g - before[k]);
            for (unsigned t = 0; t < WORKERS; t++)
                if (CH.got[(size_t)t * 2 * NK + k] != g && split++ < 5)
                    diag("%s: herd thread %u got generation %" PRIu64 " of %s key %" PRIu64
                         " (the last is %" PRIu64 ")", label, t, CH.got[(size_t)t * 2 * NK + k],
                         sp ? "byte" : "u64", id, g);
        }
    is_int(CH.bad_rc, 0, "%s: herd: every call returned 0", label);
    is_int(not_once, 0, "%s: herd: past every ttl, each key was computed exactly once", label);
    is_int(split, 0, "%s: herd: every thread got that new value", label);
    is_u64(atomic_load(&g_runs) - runs0, 2 * (uint64_t)NK, "%s: herd: fn ran once per key",
           label);
    is_u64(atomic_load(&g_overlaps) - overlaps0, 0,
           "%s: herd: never two computations of one key at once", label);

    s = stats_of(C_m);
    memo_destroy(C_m);
    check_removals_common(&rl, label);
    is_u64(removed(&rl, MEMO_REMOVED_EXPIRED), s.evictions,
           "%s: expired callbacks == stats.evictions", label);
    cmp_u64(removed(&rl, MEMO_REMOVED_EXPIRED), >, 0, "%s: values expired", label);
    cmp_u64(removed(&rl, MEMO_REMOVED_REPLACED), >, 0, "%s: refreshes replaced values", label);
    is_u64(removed(&rl, MEMO_REMOVED_EVICTED) + removed(&rl, MEMO_REMOVED_FORGOTTEN), 0,
           "%s: nothing evicted or forgotten", label);
    is_u64(removed(&rl, MEMO_REMOVED_DESTROYED), s.entries,
           "%s: destroyed callbacks == the entries left", label);
    is_u64(s.entries, 2 * (uint64_t)NK, "%s: every key stored after the herd", label);
    cmp_u64(atomic_load(&rl.total), <=, atomic_load(&g_runs),
            "%s: no more callbacks than fn runs", label);
    diag("%s: %.1f s (%" PRIu64 " generations in all)", label, (double)(t1 - t0) / 1e9, gens);
    for (unsigned i = 0; i < WORKERS; i++)
        free(w[i].last_gen);
    free(w);
    free(before);
    free(CH.got);
    free(C_start_max);
    free(C_upper);
    free(C_ttl_code);
    keys_free();
}

/* ============================================================================================
 * (d) on_removal frees what the value points to
 */

#define D_MAGIC 0xB0B0CAFEu

typedef struct dbuf {
    uint64_t id;
    uint32_t space;
    uint32_t magic;
    uint32_t len; /* pattern bytes after the header */
    unsigned char pattern[];
} dbuf_t;

/* A byte value: the buffer's address and the id, then a few pattern bytes. */
typedef struct dval {
    uint64_t addr;
    uint64_t id;
} dval_t;

#define D_SALT 0x7F4A7C159E3779B9ull

static memo_t           *D_m;
static pthread_barrier_t D_start;
static unsigned          D_iters;
static atomic_uint_fast64_t D_freed, D_bad_buf;

static size_t d_plen(uint64_t id)
{
    return 8 + (size_t)(mix64(id ^ D_SALT) % 150);
}

static bool d_buf_right(const dbuf_t *b, int sp, uint64_t id)
{
    return b != NULL && b->magic == D_MAGIC && b->id == id && b->space == (uint32_t)sp &&
           b->len == d_plen(id) && value_right(b->pattern, b->len, id, D_SALT, d_plen(id));
}

static dbuf_t *d_buf_new(int sp, uint64_t id)
{
    size_t  n = d_plen(id);
    dbuf_t *b = malloc(sizeof *b + n);
    if (b == NULL)
        return NULL;
    b->id = id;
    b->space = (uint32_t)sp;
    b->magic = D_MAGIC;
    b->len = (uint32_t)n;
    fill_value(b->pattern, n, id, D_SALT);
    kstate_t *k = &KS[sp][id];
    pthread_mutex_lock(&k->lock);
    if (k->nhist == k->caphist) {
        k->caphist = k->caphist ? 2 * k->caphist : 16;
        k->hist = realloc(k->hist, k->caphist * sizeof *k->hist);
        if (k->hist == NULL)
            bail_out("out of memory");
    }
    k->hist[k->nhist++] = (uintptr_t)b;
    pthread_mutex_unlock(&k->lock);
    return b;
}

/* Whether addr was made for (sp, id): a u64 value cannot be followed (it may be freed by now). */
static bool d_addr_of(int sp, uint64_t id, uint64_t addr)
{
    kstate_t *k = &KS[sp][id];
    bool      found = false;
    pthread_mutex_lock(&k->lock);
    for (size_t i = k->nhist; i-- > 0 && !found;)
        found = k->hist[i] == (uintptr_t)addr;
    pthread_mutex_unlock(&k->lock);
    return found;
}

static int d_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    if (key >= NK)
        return 9999;
    fn_enter(SP_U64, key);
    jitter();
    dbuf_t *b = d_buf_new(SP_U64, key);
    *value = (uint64_t)(uintptr_t)b;
    fn_leave(SP_U64, key);
    return b != NULL ? 0 : MEMO_ENOMEM;
}

static int d_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t id;
    (void)ctx;
    if (!bkey_parse(key, key_len, &id))
        return 9999;
    fn_enter(SP_BYTES, id);
    jitter();
    unsigned char *p = memo_result_alloc(out, sizeof(dval_t) + 16);
    dbuf_t        *b = p != NULL ? d_buf_new(SP_BYTES, id) : NULL;
    if (b != NULL) {
        dval_t v = { (uint64_t)(uintptr_t)b, id };
        memcpy(p, &v, sizeof v);
        fill_value(p + sizeof v, 16, id, D_SALT);
    }
    fn_leave(SP_BYTES, id);
    return b != NULL ? 0 : MEMO_ENOMEM;
}

/* A byte value: its address and id, and the buffer it points to (followed: the ref pins it). */
static bool d_bytes_right(const void *data, size_t len, uint64_t id)
{
    dval_t v;
    if (data == NULL || len != sizeof v + 16)
        return false;
    memcpy(&v, data, sizeof v);
    return v.id == id && value_right((const char *)data + sizeof v, 16, id, D_SALT, 16) &&
           d_buf_right((const dbuf_t *)(uintptr_t)v.addr, SP_BYTES, id);
}

static bool d_held_right(const held_t *h)
{
    return d_bytes_right(h->ref.data, h->ref.len, h->id);
}

static bool d_lookup_right(int sp, uint64_t id, const void *data, size_t len, uint64_t v)
{
    return sp == SP_U64 ? d_addr_of(sp, id, v) : d_bytes_right(data, len, id);
}

/* Checks the buffer (a use-after-free under ASan if it was freed already) and frees it. */
static void d_removal(void *ctx, const memo_removal_t *r)
{
    removals_t *l = (removals_t *)ctx;
    removals_cb(ctx, r);
    if (r == NULL || r->key == NULL || r->value == NULL)
        return;
    uint64_t id, addr;
    int      sp;
    if (r->key_space == MEMO_KEYS_U64 && r->value_len == 8) {
        memcpy(&id, r->key, 8);
        memcpy(&addr, r->value, 8);
        sp = SP_U64;
    } else if (r->key_space == MEMO_KEYS_BYTES && r->value_len == sizeof(dval_t) + 16 &&
               bkey_parse(r->key, r->key_len, &id)) {
        memcpy(&addr, r->value, 8);
        sp = SP_BYTES;
    } else {
        atomic_fetch_add(&D_bad_buf, 1);
        return;
    }
    dbuf_t *b = (dbuf_t *)(uintptr_t)addr;
    if (id >= NK || !d_buf_right(b, sp, id)) {
        if (atomic_fetch_add(&D_bad_buf, 1) < 5)
            diag("%s: on_removal (reason %d): the buffer of %s key %" PRIu64 " is not its own",
                 g_label, r->reason, sp ? "byte" : "u64", id);
        return;
    }
    b->magic = 0; /* a second callback for it would see this, if ASan did not stop it first */
    free(b);
    atomic_fetch_add(&D_freed, 1);
    (void)l;
}

static void *d_worker(void *arg)
{
    worker_t *w = (worker_t *)arg;
    tl_rng = prng_make(5, w->index);
    tap_barrier_wait(&D_start);
    for (unsigned it = 0; it < D_iters; it++) {
        uint64_t r = prng_next(&tl_rng) % 1000;
        uint64_t id = pick_key(NK);
        int      sp = (int)(prng_next(&tl_rng) & 1);
        if (r < 400) {
            uint64_t v = 0;
            call_begin(SP_U64, id);
            int rc = memo_get_u64(D_m, id, d_fn_u64, NULL, &v);
            w->gets++;
            if (rc != 0)
                bad_rc(w, "memo_get_u64", SP_U64, id, rc);
            else if (!d_addr_of(SP_U64, id, v))
                wrong_value(w, "memo_get_u64", SP_U64, id, rc);
        } else if (r < 850) {
            worker_get_bytes(w, D_m, d_fn_bytes, id, d_lookup_right, 0, d_held_right);
        } else if (r < 990) {
            worker_lookup(w, D_m, sp, id, d_lookup_right);
        } else {
            held_release_all(w, d_held_right);
        }
        atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
    }
    held_release_all(w, d_held_right);
    return NULL;
}

static void run_d(void)
{
    const char *label = "(d) on_removal frees";
    enum { D_KEYS = 500, D_BOUND = 32 };
    keys_init(D_KEYS, label);
    D_iters = sized(120000);
    atomic_store(&D_freed, 0);
    atomic_store(&D_bad_buf, 0);
    removals_t rl;
    memset(&rl, 0, sizeof rl);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.max_entries = D_BOUND;
    cfg.on_removal = d_removal;
    cfg.removal_ctx = &rl;
    D_m = make_memo(&cfg, label);
    static const limits_t choices[] = { { 1, 0 }, { 8, 0 }, { 32, 0 }, { 100, 0 }, { 400, 0 } };
    controller_t ctl = { D_m, &D_start, choices, sizeof choices / sizeof *choices, { D_BOUND, 0 },
                         (uint64_t)D_iters * WORKERS * 4 / 5, 0, 0, 0, 0 };
    diag("%s: %d workers x %u operations over 2 x %d keys, max_entries %d (moved by a "
         "controller until the last fifth); values point to malloc'd buffers that on_removal "
         "frees", label, WORKERS, D_iters, D_KEYS, D_BOUND);
    worker_t *w = xcalloc(WORKERS, sizeof *w);
    pthread_t tids[WORKERS + 1];
    tap_barrier_init(&D_start, WORKERS + 1);
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < WORKERS; i++) {
        w[i].index = i;
        if (pthread_create(&tids[i], NULL, d_worker, &w[i]) != 0)
            bail_out("pthread_create");
    }
    if (pthread_create(&tids[WORKERS], NULL, controller_thread, &ctl) != 0)
        bail_out("pthread_create");
    join_or_bail(tids, WORKERS + 1, label);
    uint64_t t1 = tap_now_ns();
    tap_barrier_destroy(&D_start);

    worker_t sum;
    sum_workers(w, WORKERS, &sum);
    memo_stats_t s = stats_of(D_m);
    uint64_t     runs = atomic_load(&g_runs);
    diag("%s: %" PRIu64 " gets, %" PRIu64 " lookups (%" PRIu64 " found), %u limit changes; %"
         PRIu64 " fn runs, %" PRIu64 " hits, %" PRIu64 " waits, %" PRIu64 " evictions", label,
         sum.gets, sum.lookups, sum.found, ctl.changes, runs, s.hits, s.waits, s.evictions);
    check_flights(label);
    check_counters(&sum, &s, label);
    is_int(ctl.bad_rc, 0, "%s: memo_set_limits returned 0", label);
    is_int(ctl.over, 0, "%s: memo_set_limits evicted down to the bound before it returned",
           label);
    cmp_u64(s.entries, <=, D_BOUND, "%s: stats.entries <= max_entries at quiescence", label);
    cmp_u64(s.evictions, >, 0, "%s: values were evicted", label);
    uint64_t wrong = 0, found = lookup_all(D_m, d_lookup_right, &wrong);
    is_u64(found, s.entries, "%s: lookups find exactly stats.entries keys", label);
    is_u64(wrong, 0, "%s: every value looked up at the end is its key's", label);
    memo_destroy(D_m);
    check_removals_common(&rl, label);
    is_int(atomic_load(&D_bad_buf), 0, "%s: every callback found its key's buffer", label);
    is_u64(atomic_load(&rl.total), runs,
           "%s: one callback per fn run (every value stored, then removed once)", label);
    is_u64(atomic_load(&D_freed), runs, "%s: every buffer freed", label);
    is_u64(removed(&rl, MEMO_REMOVED_EVICTED), s.evictions,
           "%s: evicted callbacks == stats.evictions", label);
    is_u64(removed(&rl, MEMO_REMOVED_DESTROYED), s.entries,
           "%s: destroyed callbacks == the entries left", label);
    diag("%s: %.1f s", label, (double)(t1 - t0) / 1e9);
    free(w);
    keys_free();
}

int main(void)
{
    g_scale = env_unsigned("MEMO_STRESS_SCALE", 1, 100000);
    const char *seed = getenv("MEMO_STRESS_SEED");
    g_seed = seed && *seed ? strtoull(seed, NULL, 0)
                           : (uint64_t)time(NULL) * 1000003u ^ (tap_now_ns() & 0xFFFFF);
    g_part_limit_s = 60 * g_scale;
#ifdef TAP_SANITIZED
    g_part_limit_s *= 3;
#endif
    tap_watchdog(5 * g_part_limit_s);
    diag("stress_bounded: scale %u, seed %" PRIu64 " (MEMO_STRESS_SEED=%" PRIu64
         " replays it), part limit %u s%s", g_scale, g_seed, g_seed, g_part_limit_s,
         SANITIZER_DIVISOR == 5 ? ", TSan build: iterations / 5"
         : SANITIZER_DIVISOR == 2 ? ", ASan build: iterations / 2" : "");
    const char *parts = getenv("MEMO_STRESS_PARTS");
    if (parts == NULL || *parts == '\0')
        parts = "abcd";
    else
        diag("MEMO_STRESS_PARTS=%s: only those parts run", parts);
    uint64_t t0 = tap_now_ns();
    if (strchr(parts, 'a'))
        run_a();
    if (strchr(parts, 'b'))
        run_b();
    if (strchr(parts, 'c'))
        run_c();
    if (strchr(parts, 'd'))
        run_d();
    diag("stress_bounded: %.1f s in all", (double)(tap_now_ns() - t0) / 1e9);
    return done_testing();
}
