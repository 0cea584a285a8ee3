/*
 * The policy of a memo with bounds, expiry or a removal callback: which stored values go when a
 * bound is reached, when they expire, and the callback that reports each one that goes.
 *
 * Eviction is W-TinyLFU (Einziger, Friedman and Manes, ACM TOS 2017; Caffeine's policy) made to
 * fit memo's lock-free hits: a hit does not move its record in any list, it sets the record's
 * visited bit if it is clear, and that is all it writes. Every record is in one of three FIFO
 * lists, changed only under the policy lock (by the threads that store, forget or evict):
 *
 *   window     new records, a share of the bound that starts at 1% (ghosts move it, below);
 *   probation  records admitted from the window;
 *   protected  records hit while on probation (up to 80% of the main part).
 *
 * The lists' heads are second-chance clocks: a head found visited has its bit cleared, is
 * credited once in the frequency sketch (a count-min of 4-bit counters that also counts every
 * miss), and moves to a tail (probation -> protected, protected and window -> their own tail)
 * instead of leaving. A record leaving the window when the main part is full is admitted only if
 * the sketch rates its key more frequent than the main part's victim by more than a margin; else
 * it is the one evicted. So a scan of keys seen once passes through the window without flushing
 * what is hit often, and a loop longer than the bound keeps part of itself. Keys evicted lately
 * are remembered (ghosts): one asked for again after it left the window grows the window, one
 * that left the main part shrinks it, so that recency-heavy traffic gets an LRU-like window.
 * bench/policies/sim.py simulates this very algorithm (policy "memo") on the public traces beside
 * exact LRU; bench/w7_replay replays them through the library itself (bench/README.md, W7).
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
    uint64_t h = hash * seeds[row] + row;
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
#define MEMO__SKETCH_MAX ((uint64_t)1 << 20) /* counters per row: 2 MiB in all at most */
#define MEMO__SKETCH_MIN 1024 /* counters per row at least: a small bound's sketch is not flooded by
                               * the keys of a scan (measured: bench/policies/README.md) */
#define MEMO__GHOST_MAX  ((uint64_t)1 << 16) /* keys per ghost list */

/* The capacity in entries that the policy's structures are sized for: max_entries, or for a memo
 * bounded by bytes alone (or not at all) a guess that the lists' own counts then replace. */
static uint64_t memo__policy_size_hint(const struct memo_policy *p)
{
    /* A bound past 2^32 (max_entries = UINT64_MAX: "bounded later") sizes nothing for it. */
    return p->max_entries != 0 && p->max_entries <= ((uint64_t)1 << 32) ? p->max_entries : 4096;
}

/* The sketch: a counter per entry and row (at least 1024, at most MEMO__SKETCH_MAX), halved every
 * 20 x that many additions. The ghosts: cap / 2 keys each (at most MEMO__GHOST_MAX), and the map
 * that finds a key in them, at most half full. Made at create and when memo_set_limits changes
 * max_entries; on failure the old ones stay (the policy works with any size). */
static int memo__policy_size(struct memo_policy *p)
{
    uint64_t cap = memo__policy_size_hint(p);
    uint64_t want = cap < MEMO__SKETCH_MAX ? (cap > 16 ? cap : 16) : MEMO__SKETCH_MAX;
    uint64_t width = MEMO__SKETCH_MIN;
    while (width < want)
        width <<= 1;
    uint64_t ghost = cap / 2 < MEMO__GHOST_MAX ? cap / 2 : MEMO__GHOST_MAX;
    uint64_t map = 4;
    while (map < 4 * ghost)
        map <<= 1;
    unsigned char *sk = calloc((size_t)width * MEMO__SKETCH_ROWS / 2, 1);
    struct memo_ghost *g = ghost != 0 ? calloc((size_t)ghost * 2, sizeof *g) : NULL;
    struct memo_ghost *gm = calloc((size_t)map, sizeof *gm);
    if (sk == NULL || (ghost != 0 && g == NULL) || gm == NULL) {
        free(sk);
        free(g);
        free(gm);
        return MEMO_ENOMEM;
    }
    free(p->sketch);
    free(p->ghost[0]);
    free(p->gmap);
    p->sketch = sk;
    p->sketch_mask = width - 1;
    p->sketch_adds = 0;
    p->sketch_period = 20 * (cap > 16 ? (cap < MEMO__SKETCH_MAX ? cap : MEMO__SKETCH_MAX) : 16);
    p->ghost[0] = g;
    p->ghost[1] = g != NULL ? g + ghost : NULL;
    p->ghost_cap = ghost;
    p->ghost_head[0] = p->ghost_head[1] = p->ghost_n[0] = p->ghost_n[1] = 0;
    p->gmap = gm;
    p->gmap_mask = map - 1;
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
    if (memo__policy_size(p) != 0) {
        free(p);
        return MEMO_ENOMEM;
    }
    p->cold = true;
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
    free(m->pol->ghost[0]);
    free(m->pol->gmap);
    free(m->pol);
    m->pol = NULL;
}

void memo__policy_unlink_locked(struct memo *m, struct memo_pol *e);

/* ---- removing a record --------------------------------------------------------------------- */

/*
 * Takes e's record out of its table and its list, then retires it (reason: MEMO_REMOVED_*).
 * Under the policy lock; held is the shard whose lock the caller holds too (NULL: none). Another
 * shard's lock is taken here with held's let go meanwhile: no other thread can take held's (every
 * writer of this memo takes the policy lock first), and no thread then ever holds two shard
 * locks at once (which ThreadSanitizer would report as an order that can cross, though the
 * policy lock keeps it from deadlocking).
 */
static void memo__policy_drop(struct memo *m, struct memo_local *l, struct memo_pol *e, unsigned reason,
                              struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    struct memo_rec *r = memo__pol_rec(e);
    unsigned long hash = (unsigned long)memo__pol_hash(m, e);
    struct memo_shard *s = memo__shard(m, hash);
    if (s != held) {
        if (held != NULL)
            memo__mutex_unlock(&held->lock);
        memo__mutex_lock(&s->lock);
    }
    struct memo_local *saved = memo__alloc_local;
    memo__alloc_local = l;
    void *slot = (void *)((uintptr_t)r | MEMO__POLICY_TAG);
    void *out = ck_hs_remove(e->kind == MEMO__KIND_U64 ? &s->u64 : &s->bytes, hash, slot);
    memo__alloc_local = saved;
    MEMO__CHECK(out == slot, "a record in the policy's lists is in its table");
    atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
    if (s != held) {
        memo__mutex_unlock(&s->lock);
        if (held != NULL)
            memo__mutex_lock(&held->lock);
    }
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

void memo__policy_unlink_locked(struct memo *m, struct memo_pol *e)
{
    struct memo_policy *p = m->pol;
    if (e->list == MEMO__LIST_NONE)
        return;
    memo__list_unlink(p, e);
    p->count--;
    p->rec_bytes -= memo__pol_size(e);
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
    p->rec_bytes += memo__pol_size(fresh) - memo__pol_size(old);
}

/* A candidate leaving the window takes the main victim's place only if the sketch rates it more
 * than this much more frequent: near-ties go to what is already cached. */
#define MEMO__ADMIT_MARGIN 2

/* ---- ghosts ------------------------------------------------------------------------------- */

/*
 * Two FIFOs of the hashes of keys evicted lately: from the window (GW, ghost[0]) and from the
 * main part (GM, ghost[1]), cap / 2 each, and a map (open addressing, linear probing, deletion by
 * backward shift) from a hash to the seq of its newest ghost entry and which ghost. A miss on a
 * key in GW says the window was too small to keep it: the window grows by one; in GM, the main
 * part was: the window shrinks by one. This is how the window finds its size (no hill climbing).
 */
#define MEMO__GHOST_WINDOW 0u
#define MEMO__GHOST_MAIN   1u

static inline uint64_t memo__gmap_key(uint64_t hash)
{
    return hash != 0 ? hash : 1; /* 0 marks an empty slot */
}

static struct memo_ghost *memo__gmap_find(struct memo_policy *p, uint64_t key)
{
    for (uint64_t i = key & p->gmap_mask;; i = (i + 1) & p->gmap_mask) {
        if (p->gmap[i].hash == key)
            return &p->gmap[i];
        if (p->gmap[i].hash == 0)
            return NULL;
    }
}

static void memo__gmap_delete(struct memo_policy *p, struct memo_ghost *slot)
{
    uint64_t i = (uint64_t)(slot - p->gmap);
    for (uint64_t j = (i + 1) & p->gmap_mask; p->gmap[j].hash != 0; j = (j + 1) & p->gmap_mask) {
        uint64_t home = p->gmap[j].hash & p->gmap_mask;
        /* j's entry may move to i if its home is not in (i, j] (cyclically). */
        if (((j - home) & p->gmap_mask) >= ((j - i) & p->gmap_mask)) {
            p->gmap[i] = p->gmap[j];
            i = j;
        }
    }
    p->gmap[i].hash = 0;
}

static void memo__ghost_add(struct memo_policy *p, uint64_t hash, unsigned tag)
{
    if (p->ghost_cap == 0)
        return;
    uint64_t key = memo__gmap_key(hash), seq = ++p->ghost_seq;
    struct memo_ghost *ring = p->ghost[tag];
    if (p->ghost_n[tag] == p->ghost_cap) { /* the oldest goes */
        struct memo_ghost *old = &ring[p->ghost_head[tag]];
        struct memo_ghost *in = memo__gmap_find(p, old->hash);
        if (in != NULL && in->seq == (old->seq << 1 | tag))
            memo__gmap_delete(p, in);
        p->ghost_head[tag] = (p->ghost_head[tag] + 1) % p->ghost_cap;
        p->ghost_n[tag]--;
    }
    struct memo_ghost *e = &ring[(p->ghost_head[tag] + p->ghost_n[tag]) % p->ghost_cap];
    e->hash = key;
    e->seq = seq;
    p->ghost_n[tag]++;
    struct memo_ghost *in = memo__gmap_find(p, key);
    if (in == NULL)
        for (in = &p->gmap[key & p->gmap_mask]; in->hash != 0; in = &p->gmap[(uint64_t)(in - p->gmap + 1) & p->gmap_mask])
            ;
    in->hash = key;
    in->seq = seq << 1 | tag;
}

/*
 * The cold start: until a key is asked for again (a ghost hit, or the hand finding a visited
 * record), the whole bound is the window, a second-chance FIFO close to LRU, so that traffic
 * with no reuse yet keeps its newest keys (a zigzag's first turn). Reuse seen early (within the
 * first bound's worth of evictions), or none after 32 bounds' worth, sets the window to its base
 * of 1%; reuse seen later leaves it whole, for the ghosts to move from there.
 */
#define MEMO__COLD_TURNS 32

static inline uint64_t memo__window_base(const struct memo_policy *p)
{
    uint64_t cap = memo__policy_size_hint(p);
    return cap / 100 > 1 ? cap / 100 : 1;
}

static void memo__policy_warm(struct memo_policy *p, bool timeout)
{
    p->cold = false;
    if (timeout || p->cold_evictions < memo__policy_size_hint(p))
        p->window_cap = memo__window_base(p);
}

/* A miss on hash: if it is a ghost, the window moves, and the ghost is forgotten. */
static void memo__ghost_take(struct memo *m, uint64_t hash, uint64_t cap)
{
    struct memo_policy *p = m->pol;
    if (p->ghost_cap == 0)
        return;
    struct memo_ghost *in = memo__gmap_find(p, memo__gmap_key(hash));
    if (in == NULL)
        return;
    if (p->cold)
        memo__policy_warm(p, false);
    if ((in->seq & 1u) == MEMO__GHOST_WINDOW) {
        /* Back after the window let it go: a larger window would have kept it, unless the key
         * is asked for more often than what the window holds (a hot key that lost its duel with
         * another: frequency, not recency, is at stake, and the window stays; without this, a
         * hot set a little larger than the main part drives the window to the whole bound). */
        struct memo_pol *head = memo__list_head(p, MEMO__LIST_WINDOW);
        if (head == NULL || memo__sketch_estimate(p, hash) <=
                                memo__sketch_estimate(p, memo__pol_hash(m, head)) + MEMO__ADMIT_MARGIN)
            p->window_cap = p->window_cap + 1 < cap ? p->window_cap + 1 : cap;
    } else {
        p->window_cap = p->window_cap > 1 ? p->window_cap - 1 : 1;
    }
    memo__gmap_delete(p, in);
}

/* ---- choosing what goes -------------------------------------------------------------------- */

static inline bool memo__visited_take(struct memo_pol *e)
{
    if (atomic_load_explicit(&e->visited, memory_order_relaxed) == 0)
        return false;
    atomic_store_explicit(&e->visited, 0, memory_order_relaxed);
    return true;
}

/* The bound in entries the lists' shares are taken of: max_entries, or, for a memo bounded by
 * bytes alone, one fewer than it holds (each step makes room for one). */
static inline uint64_t memo__policy_capacity(const struct memo_policy *p)
{
    return p->max_entries != 0 ? p->max_entries : (p->count > 1 ? p->count - 1 : 1);
}

/* The main part's victim: probation's head once it is not visited. A visited head is promoted to
 * protected (its bit credited to the sketch); protected past 80% of the main part demotes its
 * unvisited heads to probation. Leaves the victim at probation's head. */
static struct memo_pol *memo__main_victim(struct memo *m, uint64_t cap)
{
    struct memo_policy *p = m->pol;
    uint64_t protected_cap = (cap - p->window_cap) * 8 / 10;
    for (;;) {
        struct memo_pol *v = memo__list_head(p, MEMO__LIST_PROBATION);
        if (v == NULL) {
            struct memo_pol *q = memo__list_head(p, MEMO__LIST_PROTECTED);
            if (q == NULL)
                return NULL;
            if (memo__visited_take(q)) {
                memo__sketch_add(p, memo__pol_hash(m, q));
                memo__list_move(p, q, MEMO__LIST_PROTECTED);
            } else {
                memo__list_move(p, q, MEMO__LIST_PROBATION);
            }
            continue;
        }
        if (!memo__visited_take(v))
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


static void memo__evict(struct memo *m, struct memo_local *l, struct memo_pol *e, struct memo_shard *held,
                        int ghost)
{
    uint64_t hash = memo__pol_hash(m, e);
    memo__policy_drop(m, l, e, MEMO_REMOVED_EVICTED, held);
    if (ghost >= 0)
        memo__ghost_add(m->pol, hash, (unsigned)ghost);
}

/* One step towards the bound: the window's head moves on (to the window's tail if it was
 * visited, to probation while the main part has room) or one record is evicted: the window's
 * candidate or the main victim, whichever the sketch rates less. */
static void memo__evict_one(struct memo *m, struct memo_local *l, struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    uint64_t cap = memo__policy_capacity(p);
    if (p->cold && ++p->cold_evictions >= MEMO__COLD_TURNS * memo__policy_size_hint(p))
        memo__policy_warm(p, true);
    if (p->window_cap > cap)
        p->window_cap = cap;
    uint64_t main_n = p->n[MEMO__LIST_PROBATION] + p->n[MEMO__LIST_PROTECTED];
    if (cap <= 1 && main_n == 0) {
        /* One entry: the oldest goes, always (the newest is at the window's tail). */
        memo__evict(m, l, memo__list_head(p, MEMO__LIST_WINDOW), held, -1);
        return;
    }
    if (p->n[MEMO__LIST_WINDOW] > p->window_cap || main_n == 0) {
        struct memo_pol *c = memo__list_head(p, MEMO__LIST_WINDOW);
        if (memo__visited_take(c)) {
            if (p->cold)
                memo__policy_warm(p, false); /* the hand found a hit: reuse */
            memo__sketch_add(p, memo__pol_hash(m, c));
            memo__list_move(p, c, MEMO__LIST_WINDOW);
            return;
        }
        if (main_n < cap - p->window_cap) {
            memo__list_move(p, c, MEMO__LIST_PROBATION);
            return;
        }
        if (main_n == 0) {
            memo__evict(m, l, c, held, MEMO__GHOST_WINDOW);
            return;
        }
        struct memo_pol *v = memo__main_victim(m, cap);
        if (memo__sketch_estimate(p, memo__pol_hash(m, c)) >
            memo__sketch_estimate(p, memo__pol_hash(m, v)) + MEMO__ADMIT_MARGIN) {
            memo__evict(m, l, v, held, MEMO__GHOST_MAIN);
            memo__list_move(p, c, MEMO__LIST_PROBATION);
        } else {
            memo__evict(m, l, c, held, MEMO__GHOST_WINDOW);
        }
        return;
    }
    /* The window shrank: the main part is over its share. Its victim is remembered too: asked
     * for again, it argues for a larger main part (without it, a window grown to the whole
     * bound would never give any back). */
    memo__evict(m, l, memo__main_victim(m, cap), held, MEMO__GHOST_MAIN);
}

static inline bool memo__policy_over(const struct memo_policy *p)
{
    if (p->max_entries != 0 && p->count > p->max_entries)
        return true;
    return p->max_bytes != 0 && p->count != 0 &&
           (uint64_t)atomic_load_explicit(&p->bytes, memory_order_relaxed) > p->max_bytes;
}

/* Steps until the bounds hold (or nothing is left). Amortized O(1) per store: each step evicts,
 * or clears a visited bit that a hit set, or moves a record that a later step evicts or clears. */
static void memo__policy_evict(struct memo *m, struct memo_local *l, struct memo_shard *held)
{
    while (memo__policy_over(m->pol))
        memo__evict_one(m, l, held);
}

/* Under the policy lock (and held's): evicts if memory memo took for other than values (a table
 * that grew for a marker) passed max_bytes, so that the bound holds once calls are over even when
 * no value is stored after. */
void memo__policy_keep_bounds_locked(struct memo *m, struct memo_local *l, struct memo_shard *held)
{
    memo__policy_evict(m, l, held);
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
            if (e->expires != UINT64_MAX && now >= e->expires) {
                memo__policy_drop(m, l, e, MEMO_REMOVED_EXPIRED, held);
                continue;
            }
            if (!bounded)
                memo__list_move(p, e, list);
            break;
        }
    }
}

/* ---- a store ------------------------------------------------------------------------------- */

/* Under the policy lock (and held's, if not NULL): fresh, a record just put in its table, enters
 * the window (a ghost of its key moves the window; its key is counted in the sketch), expired
 * heads go, then the bounds are kept. */
void memo__policy_stored_locked(struct memo *m, struct memo_local *l, struct memo_pol *fresh,
                                struct memo_shard *held)
{
    struct memo_policy *p = m->pol;
    uint64_t hash = memo__pol_hash(m, fresh);
    atomic_init(&fresh->visited, 0);
    memo__list_push(p, MEMO__LIST_WINDOW, fresh);
    p->count++;
    p->rec_bytes += memo__pol_size(fresh);
    if (p->window_cap == 0)
        p->window_cap = p->cold ? memo__policy_size_hint(p) : memo__window_base(p);
    memo__ghost_take(m, hash, memo__policy_capacity(p));
    memo__sketch_add(p, hash);
    if (p->clocked)
        memo__policy_expire(m, l, fresh, held, memo__policy_now(p));
    memo__policy_evict(m, l, held);
}

/* A refresh's new record in place of the old one (under the policy lock): same list, same place;
 * the bounds are kept (the new value may be bigger). */
void memo__policy_replaced_locked(struct memo *m, struct memo_local *l, struct memo_pol *old,
                                  struct memo_pol *fresh, struct memo_shard *held)
{
    memo__policy_replace_locked(m, old, fresh);
    memo__policy_evict(m, l, held);
}

/* ---- memo_set_limits ----------------------------------------------------------------------- */

void memo__policy_set_limits_locked(struct memo *m, struct memo_local *l, uint64_t max_entries, uint64_t max_bytes)
{
    struct memo_policy *p = m->pol;
    bool resize = max_entries != p->max_entries;
    p->max_entries = max_entries;
    p->max_bytes = max_bytes;
    if (resize)
        (void)memo__policy_size(p); /* for the new bound; the old structures stay if not */
    p->window_cap = p->cold ? memo__policy_size_hint(p) : memo__window_base(p);
    memo__policy_evict(m, l, NULL);
}
