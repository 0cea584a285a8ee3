/*
 * The policy of a memo with bounds, expiry or a removal callback: which stored values go when a
 * bound is reached, when they expire, and the callback that reports each one that goes.
 *
 * Eviction is W-TinyLFU (Einziger, Friedman and Manes, ACM TOS 2017; Caffeine's policy) made to
 * fit memo's lock-free hits: a hit does not move its record in any list, it sets the record's
 * visited bit if it is clear, and that is all it writes. Every record is in one of three FIFO
 * lists, changed only under the policy lock (by the threads that store, forget or evict):
 *
 *   window     new records, a small share of the bound (hill climbing moves the share);
 *   probation  records admitted from the window;
 *   protected  records hit while on probation (up to 80% of the main part).
 *
 * The lists' heads are second-chance clocks: a head found visited has its bit cleared, is
 * credited once in the frequency sketch (a count-min of 4-bit counters that also counts every
 * miss), and moves to a tail (probation -> protected, protected and window -> their own tail)
 * instead of leaving. A record leaving the window when the main part is full is admitted only if
 * the sketch rates its key more frequent than the main part's victim; else it is the one evicted.
 * So a scan of keys seen once passes through the window without flushing what is hit often, and
 * a loop longer than the bound keeps part of itself. bench/policies/sim.py simulates this very
 * algorithm (policy "memo") on the public traces against exact LRU: see bench/policies/README.md.
 *
 * Every removal (eviction, expiry, forget, clear, a refresh's replacement) takes the record out
 * of its table and its list, then retires it: its bytes leave memo_stats.bytes at once, its
 * memory is freed once no reader can hold it, and then on_removal is called for it from
 * memo__removals_run, on a thread inside a call of this memo with no memo lock held.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "annotate.h"
#include "hash.h"
#include "internal.h"

/* ---- clock --------------------------------------------------------------------------------- */

uint64_t memo__policy_now(const struct memo_policy *p)
{
    if (p->clock != NULL)
        return p->clock(p->clock_ctx);
    return memo__now_ns();
}

static inline uint64_t memo__add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- lists --------------------------------------------------------------------------------- */

static void memo__list_push(struct memo_policy *p, unsigned list, struct memo_pol *e)
{
    struct memo_pol *head = &p->list[list];
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
    e->list = (uint8_t)list;
    p->n[list]++;
}

static void memo__list_unlink(struct memo_policy *p, struct memo_pol *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = NULL;
    p->n[e->list]--;
    e->list = MEMO__LIST_NONE;
}

static inline struct memo_pol *memo__list_head(struct memo_policy *p, unsigned list)
{
    struct memo_pol *h = p->list[list].next;
    return h == &p->list[list] ? NULL : h;
}

static void memo__list_move(struct memo_policy *p, struct memo_pol *e, unsigned list)
{
    memo__list_unlink(p, e);
    memo__list_push(p, list, e);
}

/* ---- the frequency sketch ------------------------------------------------------------------ */

static inline uint64_t memo__sketch_index(const struct memo_policy *p, uint64_t hash, unsigned row)
{
    static const uint64_t seeds[MEMO__SKETCH_ROWS] = { 0x9e3779b97f4a7c15u, 0xc2b2ae3d27d4eb4fu,
                                                       0x165667b19e3779f9u, 0xd6e8feb86659fd93u };
    uint64_t h = (hash + row) * seeds[row];
    h ^= h >> 32;
    return (h & p->sketch_mask) + (uint64_t)row * (p->sketch_mask + 1);
}

static inline unsigned memo__sketch_get(const struct memo_policy *p, uint64_t i)
{
    return (p->sketch[i / 2] >> ((i & 1) * 4)) & 15u;
}

static unsigned memo__sketch_estimate(const struct memo_policy *p, uint64_t hash)
{
    unsigned min = 15;
    for (unsigned row = 0; row < MEMO__SKETCH_ROWS; row++) {
        unsigned c = memo__sketch_get(p, memo__sketch_index(p, hash, row));
        min = c < min ? c : min;
    }
    return min;
}

static void memo__sketch_add(struct memo_policy *p, uint64_t hash)
{
    for (unsigned row = 0; row < MEMO__SKETCH_ROWS; row++) {
        uint64_t i = memo__sketch_index(p, hash, row);
        if (memo__sketch_get(p, i) < 15)
            p->sketch[i / 2] = (unsigned char)(p->sketch[i / 2] + (1u << ((i & 1) * 4)));
    }
    /* Aging: every sketch_period additions, every counter is halved. */
    if (++p->sketch_adds >= p->sketch_period) {
        size_t bytes = (size_t)(p->sketch_mask + 1) * MEMO__SKETCH_ROWS / 2;
        for (size_t b = 0; b < bytes; b++)
            p->sketch[b] = (unsigned char)((p->sketch[b] >> 1) & 0x77u);
        p->sketch_adds /= 2;
    }
}

static uint64_t memo__pol_hash(const struct memo *m, const struct memo_pol *e)
{
    const struct memo_rec *r = memo__pol_rec(e);
    return e->kind == MEMO__KIND_U64 ? memo__hash_u64(m, r->a) : memo__hash_bytes(m, r + 1, r->a);
}

/* ---- create, destroy ----------------------------------------------------------------------- */

/* The sketch's width follows the bound it serves: a counter per entry and row, at least 2^10
 * (a memo bounded by bytes alone does not know its entries ahead: 2^16). */
static int memo__sketch_init(struct memo_policy *p)
{
    uint64_t want = p->max_entries != 0 ? p->max_entries : (p->max_bytes != 0 ? 65536 : 1024);
    uint64_t width = 1024;
    while (width < want && width < ((uint64_t)1 << 24))
        width <<= 1;
    unsigned char *sk = calloc((size_t)width * MEMO__SKETCH_ROWS / 2, 1);
    if (sk == NULL)
        return MEMO_ENOMEM;
    free(p->sketch);
    p->sketch = sk;
    p->sketch_mask = width - 1;
    p->sketch_adds = 0;
    p->sketch_period = 10 * (want > 16 ? want : 16);
    return 0;
}

int memo__policy_init(struct memo *m, const memo_config_t *c)
{
    struct memo_policy *p = aligned_alloc(MEMO__CACHELINE, (sizeof *p + MEMO__CACHELINE - 1) &
                                                               ~(size_t)(MEMO__CACHELINE - 1));
    if (p == NULL)
        return MEMO_ENOMEM;
    memset(p, 0, sizeof *p);
    p->max_entries = c->max_entries;
    p->max_bytes = c->max_bytes;
    p->ttl_ns = c->ttl_ns;
    p->refresh_ns = c->refresh_ns;
    p->failure_ttl_ns = c->failure_ttl_ns;
    p->clock = c->clock;
    p->clock_ctx = c->clock_ctx;
    p->on_removal = c->on_removal;
    p->removal_ctx = c->removal_ctx;
    p->clocked = c->ttl_ns != 0 || c->refresh_ns != 0 || c->failure_ttl_ns != 0;
    for (unsigned i = 0; i < 4; i++)
        p->list[i].next = p->list[i].prev = &p->list[i];
    p->climb_dir = 1;
    if (memo__sketch_init(p) != 0) {
        free(p);
        return MEMO_ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    atomic_init(&p->bytes, 0);
    atomic_init(&p->evictions, 0);
    atomic_init(&p->claims, 0);
    atomic_init(&p->removed, NULL);
    m->pol = p;
    return 0;
}

void memo__policy_destroy(struct memo *m)
{
    if (m->pol == NULL)
        return;
    pthread_mutex_destroy(&m->pol->lock);
    free(m->pol->sketch);
    free(m->pol);
    m->pol = NULL;
}

void memo__policy_unlink_locked(struct memo *m, struct memo_pol *e);

/* ---- removing a record --------------------------------------------------------------------- */

/*
 * Takes e's record out of its table and its list, then retires it (reason: MEMO_REMOVED_*).
 * Under the policy lock; held is the shard whose lock the caller holds too (NULL: none), any
 * other shard's lock is taken here (no other thread holds a shard lock of this memo without
 * holding the policy lock first, so the order cannot cross).
 */
static void memo__policy_drop(struct memo *m, struct memo_local *l, struct memo_pol *e, unsigned reason,
                              struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    struct memo_rec *r = memo__pol_rec(e);
    unsigned long hash = (unsigned long)memo__pol_hash(m, e);
    struct memo_shard *s = memo__shard(m, hash);
    if (s != held)
        pthread_mutex_lock(&s->lock);
    struct memo_local *saved = memo__alloc_local;
    memo__alloc_local = l;
    void *slot = (void *)((uintptr_t)r | MEMO__POLICY_TAG);
    void *out = ck_hs_remove(e->kind == MEMO__KIND_U64 ? &s->u64 : &s->bytes, hash, slot);
    memo__alloc_local = saved;
    if (out != slot) /* cannot happen: a record in a list is in its table */
        abort();
    atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
    if (s != held)
        pthread_mutex_unlock(&s->lock);
    memo__policy_unlink_locked(m, e);
    if (reason == MEMO_REMOVED_EVICTED || reason == MEMO_REMOVED_EXPIRED)
        atomic_fetch_add_explicit(&p->evictions, 1, memory_order_relaxed);
    e->reason = (uint8_t)reason;
    memo__pol_retire(l, e);
}

/* A call found e expired (under both locks, held's its shard): it goes, counted as an eviction. */
void memo__policy_expire_locked(struct memo *m, struct memo_local *l, struct memo_pol *e, struct memo_shard *held)
{
    memo__policy_drop(m, l, e, MEMO_REMOVED_EXPIRED, held);
}

/* ---- entering, leaving --------------------------------------------------------------------- */

void memo__policy_link_locked(struct memo *m, struct memo_pol *e)
{
    struct memo_policy *p = m->pol;
    atomic_init(&e->visited, 0);
    memo__list_push(p, MEMO__LIST_WINDOW, e);
    p->count++;
    p->rec_bytes += memo__pbig_of(e)->size;
    memo__sketch_add(p, memo__pol_hash(m, e));
}

void memo__policy_unlink_locked(struct memo *m, struct memo_pol *e)
{
    struct memo_policy *p = m->pol;
    if (e->list == MEMO__LIST_NONE)
        return;
    memo__list_unlink(p, e);
    p->count--;
    p->rec_bytes -= memo__pbig_of(e)->size;
}

/* e's record was just taken out of its table (under both locks): out of its list, then retired
 * for reason (MEMO_REMOVED_FORGOTTEN, _DESTROYED: not counted as evictions). */
void memo__policy_remove_locked(struct memo *m, struct memo_local *l, struct memo_pol *e, unsigned reason)
{
    memo__policy_unlink_locked(m, e);
    e->reason = (uint8_t)reason;
    memo__pol_retire(l, e);
}

/* A refresh stored fresh in place of old: fresh takes old's place in its list. */
void memo__policy_replace_locked(struct memo *m, struct memo_pol *old, struct memo_pol *fresh)
{
    struct memo_policy *p = m->pol;
    unsigned list = old->list;
    atomic_init(&fresh->visited, atomic_load_explicit(&old->visited, memory_order_relaxed));
    fresh->list = (uint8_t)list;
    fresh->prev = old->prev;
    fresh->next = old->next;
    old->prev->next = fresh;
    old->next->prev = fresh;
    old->next = old->prev = NULL;
    old->list = MEMO__LIST_NONE;
    p->rec_bytes += memo__pbig_of(fresh)->size - memo__pbig_of(old)->size;
}

/* ---- choosing a victim --------------------------------------------------------------------- */

static inline bool memo__visited_take(struct memo_pol *e)
{
    if (atomic_load_explicit(&e->visited, memory_order_relaxed) == 0)
        return false;
    atomic_store_explicit(&e->visited, 0, memory_order_relaxed);
    return true;
}

/* The bound in entries that the lists' shares are taken of: max_entries, or, for a memo bounded
 * by bytes alone, the entries it holds now. */
static inline uint64_t memo__policy_capacity(const struct memo_policy *p)
{
    return p->max_entries != 0 && p->max_entries < p->count ? p->max_entries :
           p->max_entries != 0 ? p->max_entries : p->count;
}

/* The main part's victim: probation's clock head (a visited head is promoted to protected,
 * whose overflow goes back to probation). NULL when the main part is empty. */
static struct memo_pol *memo__main_victim(struct memo *m, uint64_t main_cap)
{
    struct memo_policy *p = m->pol;
    uint64_t protected_cap = main_cap - main_cap / 5;
    for (uint64_t turns = 0;; turns++) {
        struct memo_pol *v = memo__list_head(p, MEMO__LIST_PROBATION);
        if (v == NULL) {
            struct memo_pol *q = memo__list_head(p, MEMO__LIST_PROTECTED);
            if (q == NULL)
                return NULL;
            memo__list_move(p, q, MEMO__LIST_PROBATION);
            continue;
        }
        if (!memo__visited_take(v) || turns > 2 * (p->n[MEMO__LIST_PROBATION] + p->n[MEMO__LIST_PROTECTED]))
            return v;
        memo__sketch_add(p, memo__pol_hash(m, v));
        memo__list_move(p, v, MEMO__LIST_PROTECTED);
        while (p->n[MEMO__LIST_PROTECTED] > protected_cap) {
            struct memo_pol *q = memo__list_head(p, MEMO__LIST_PROTECTED);
            if (memo__visited_take(q)) {
                memo__sketch_add(p, memo__pol_hash(m, q));
                memo__list_move(p, q, MEMO__LIST_PROTECTED);
            } else {
                memo__list_move(p, q, MEMO__LIST_PROBATION);
            }
        }
    }
}

/* The record to evict so that the memo holds one fewer (never fresh, the record being stored,
 * unless it is the only one). Moves records between lists on the way. */
static struct memo_pol *memo__policy_victim(struct memo *m, struct memo_pol *fresh)
{
    struct memo_policy *p = m->pol;
    uint64_t cap = memo__policy_capacity(p);
    uint64_t wcap = p->window_cap < cap ? p->window_cap : cap;
    wcap = wcap != 0 ? wcap : 1;
    uint64_t main_cap = cap - wcap;
    for (uint64_t turns = 0;; turns++) {
        struct memo_pol *c = memo__list_head(p, MEMO__LIST_WINDOW);
        uint64_t main_n = p->n[MEMO__LIST_PROBATION] + p->n[MEMO__LIST_PROTECTED];
        if (c != NULL && (p->n[MEMO__LIST_WINDOW] > wcap || main_n == 0)) {
            bool guard = turns > 2 * p->count + 2; /* every bit cleared once: cannot loop */
            if (c == fresh && p->count > 1 && !guard) {
                memo__list_move(p, c, MEMO__LIST_WINDOW);
                continue;
            }
            if (!guard && memo__visited_take(c)) {
                memo__sketch_add(p, memo__pol_hash(m, c));
                memo__list_move(p, c, MEMO__LIST_WINDOW);
                continue;
            }
            if (main_n < main_cap) {
                memo__list_move(p, c, MEMO__LIST_PROBATION);
                continue;
            }
            struct memo_pol *v = memo__main_victim(m, main_cap);
            if (v == NULL || c == fresh)
                return c;
            if (memo__sketch_estimate(p, memo__pol_hash(m, c)) > memo__sketch_estimate(p, memo__pol_hash(m, v))) {
                memo__list_move(p, c, MEMO__LIST_PROBATION);
                return v;
            }
            return c;
        }
        struct memo_pol *v = memo__main_victim(m, main_cap);
        if (v != NULL)
            return v;
        if (c == NULL)
            return NULL;
        /* Only the window holds records: its own clock decides. */
        if (c == fresh && p->count > 1) {
            memo__list_move(p, c, MEMO__LIST_WINDOW);
            continue;
        }
        return c;
    }
}

static inline bool memo__policy_over(const struct memo_policy *p)
{
    if (p->max_entries != 0 && p->count > p->max_entries)
        return true;
    return p->max_bytes != 0 && p->count != 0 &&
           (uint64_t)atomic_load_explicit(&p->bytes, memory_order_relaxed) > p->max_bytes;
}

/* Evicts until the bounds hold (or nothing is left to evict). */
static void memo__policy_evict(struct memo *m, struct memo_local *l, struct memo_pol *fresh,
                               struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    while (memo__policy_over(p)) {
        struct memo_pol *v = memo__policy_victim(m, fresh);
        if (v == NULL)
            return;
        memo__policy_drop(m, l, v, MEMO_REMOVED_EVICTED, held);
        if (v == fresh)
            fresh = NULL;
    }
}

/* ---- expiry -------------------------------------------------------------------------------- */

/* A few records at the heads of the lists, on every store: the expired ones go. Without a bound,
 * a head that has not expired moves to its list's tail, so that a value with a long time to live
 * does not hide the ones behind it; with a bound, eviction turns the lists anyway. Expired values
 * so never pile up: each store looks at two records. */
static void memo__policy_expire(struct memo *m, struct memo_local *l, struct memo_pol *fresh,
                                struct memo_shard *held, uint64_t now)
{
    struct memo_policy *p = m->pol;
    bool bounded = p->max_entries != 0 || p->max_bytes != 0;
    unsigned looked = 0;
    for (unsigned list = MEMO__LIST_WINDOW; list <= MEMO__LIST_PROTECTED && looked < 2; list++) {
        while (looked < 2) {
            struct memo_pol *e = memo__list_head(p, list);
            if (e == NULL || e == fresh)
                break;
            looked++;
            if (now >= e->expires) {
                memo__policy_drop(m, l, e, MEMO_REMOVED_EXPIRED, held);
                continue;
            }
            if (!bounded)
                memo__list_move(p, e, list);
            break;
        }
    }
}

/* ---- hill climbing ------------------------------------------------------------------------- */

#define MEMO__CLIMB_PERIOD 10 /* requests per step, in bounds */

static void memo__policy_climb(struct memo *m)
{
    struct memo_policy *p = m->pol;
    uint64_t cap = p->max_entries != 0 ? p->max_entries : p->count;
    if (cap < 2 || ++p->climb_misses < (cap / 4 > 64 ? cap / 4 : 64))
        return;
    p->climb_misses = 0;
    uint64_t hits = 0, requests = 0;
    pthread_mutex_lock(&m->locals_lock);
    for (struct memo_local *x = m->locals; x != NULL; x = x->next) {
        uint64_t h = atomic_load_explicit(&x->counters.hits, memory_order_relaxed);
        hits += h;
        requests += h + atomic_load_explicit(&x->counters.misses, memory_order_relaxed) +
                    atomic_load_explicit(&x->counters.waits, memory_order_relaxed);
    }
    pthread_mutex_unlock(&m->locals_lock);
    uint64_t period_requests = requests - p->climb_requests;
    if (period_requests < MEMO__CLIMB_PERIOD * cap)
        return;
    double rate = (double)(hits - p->climb_hits) / (double)period_requests;
    p->climb_requests = requests;
    p->climb_hits = hits;
    if (p->climb_step == 0)
        p->climb_step = (double)cap * 0.0625 > 1 ? (double)cap * 0.0625 : 1;
    else if (rate < p->climb_prev_rate)
        p->climb_dir = -p->climb_dir;
    p->climb_prev_rate = rate;
    double w = (double)p->window_cap + p->climb_dir * p->climb_step;
    double wmax = (double)cap * 0.8;
    w = w < 1 ? 1 : w > wmax ? wmax : w;
    p->window_cap = (uint64_t)w;
    p->climb_step = p->climb_step * 0.98 > 1 ? p->climb_step * 0.98 : 1;
}

/* ---- after a store ------------------------------------------------------------------------- */

/* Under the policy lock (and held's, if not NULL), after fresh was linked: expired heads go, then
 * records are evicted until the bounds hold, then the window may move. */
void memo__policy_stored_locked(struct memo *m, struct memo_local *l, struct memo_pol *fresh,
                                struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    if (p->clocked)
        memo__policy_expire(m, l, fresh, held, fresh->stored_at);
    if (p->window_cap == 0) {
        uint64_t cap = memo__policy_capacity(p);
        p->window_cap = cap / 100 > 1 ? cap / 100 : 1;
    }
    memo__policy_evict(m, l, fresh, held);
}

void memo__policy_after_store(struct memo *m)
{
    if (m->pol->max_entries != 0 || m->pol->max_bytes != 0)
        memo__policy_climb(m);
}

/* ---- memo_set_limits ----------------------------------------------------------------------- */

/* memo_set_limits, under the policy lock. */
void memo__policy_set_limits_locked(struct memo *m, struct memo_local *l, uint64_t max_entries, uint64_t max_bytes)
{
    struct memo_policy *p = m->pol;
    bool grew = max_entries > p->max_entries || (max_entries == 0 && p->max_entries != 0);
    p->max_entries = max_entries;
    p->max_bytes = max_bytes;
    if (grew && max_entries != 0)
        (void)memo__sketch_init(p); /* wider for the new bound; the old one stays if not */
    p->window_cap = 0;
    uint64_t cap = memo__policy_capacity(p);
    p->window_cap = cap / 100 > 1 ? cap / 100 : 1;
    memo__policy_evict(m, l, NULL, NULL);
}

/* ---- the removal callback ------------------------------------------------------------------ */

/* Calls on_removal for every record whose grace period has ended, then frees it. On a thread
 * inside a call of m (or memo_destroy), with no memo lock held. */
void memo__removals_run(struct memo_local *l)
{
    struct memo *m = l->memo;
    struct memo_policy *p = m->pol;
    if (p == NULL || atomic_load_explicit(&p->removed, memory_order_relaxed) == NULL)
        return;
    struct memo_pbig *b = atomic_exchange_explicit(&p->removed, NULL, memory_order_acquire);
    while (b != NULL) {
        struct memo_pbig *next = (struct memo_pbig *)b->retire.stack_entry.next;
        struct memo_rec *r = &b->rec;
        memo_removal_t rm;
        if (b->pol.kind == MEMO__KIND_U64) {
            rm.key = &r->a;
            rm.key_len = sizeof r->a;
            rm.value = &r->b;
            rm.value_len = sizeof r->b;
            rm.key_space = MEMO_KEYS_U64;
        } else {
            rm.key = memo__rec_key(r);
            rm.key_len = r->a;
            rm.value = memo__rec_value(r);
            rm.value_len = r->b;
            rm.key_space = MEMO_KEYS_BYTES;
        }
        rm.reason = b->pol.reason;
        p->on_removal(p->removal_ctx, &rm);
        memo__mem_account(l, (int64_t)b->size); /* counted out when it was retired */
        memo__mem_free(l, b, b->size);
        b = next;
    }
}
