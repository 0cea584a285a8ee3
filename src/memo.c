/*
 * The public calls: creating and destroying memos, get-or-compute with in-flight markers,
 * lookups, forgetting, statistics, compute results and the decorator's helpers.
 *
 * A key's life in its shard's table (u64 or bytes):
 *
 *   absent --miss, under the shard lock--> marker (COMPUTING, owner's flight; a tagged slot)
 *   marker --fn returned 0, under the lock--> the value's record replaces the marker (ck_hs_set);
 *                              the marker becomes READY, with the value (u64) or the record
 *                              (bytes) in it for its waiters, and is retired
 *   marker --fn failed-->      removed, then FAILED(code): waiters take the code
 *   marker --owner died-->     removed, then ABANDONED: waiters retry, one of them computes
 *   marker --forget/clear-->   removed and DETACHED: its owner stores nothing, its waiters still
 *                              get its result, and the owner retires it
 *   record --forget/clear-->   removed and retired (a clear drops a shard's whole store at once)
 *
 * DETACHED changes only under the shard lock, and the owner publishes under it: no race decides
 * who frees a marker. Every removal is followed by an epoch-deferred free, so readers inside a
 * section (hits, waiters, holders of refs) never see freed memory. A record never changes once
 * published: a reader that found it returns it, linearized at the moment it read the slot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "annotate.h"
#include "hash.h"
#include "internal.h"

/* What fn stores into: the value's record, until it is published, hangs from the marker
 * (marker->value_rec), where the fork handler finds it too. */
struct memo_result {
    struct memo        *memo;
    struct memo_marker *marker;
};


inline void memo__section_end(struct memo_local *l)
{
    MEMO_ANN_SECTION_END(l->memo);
    ck_epoch_end(&l->record, NULL);
}

/* The spare local (struct memo) serves lookups too, when the calling thread's own local cannot be
 * made: a lookup may not fail for want of memory (the API gives it no MEMO_ENOMEM). Several
 * threads may then be inside sections on the spare's one record, so its nesting count changes
 * under spare_lock, and its counters are added to atomically. While any such section lasts (a
 * ref from such a lookup), the spare record pins the epoch, as any held ref does. */
static struct memo_local *memo__spare_begin(struct memo *m)
{
    memo__mutex_lock(&m->spare_lock);
    ck_epoch_begin(&m->spare->record, NULL);
    memo__mutex_unlock(&m->spare_lock);
    return m->spare;
}

static void memo__spare_end(struct memo *m)
{
    memo__mutex_lock(&m->spare_lock);
    memo__section_end(m->spare);
    memo__mutex_unlock(&m->spare_lock);
}

/* A lookup's section: on the thread's own local, or on the spare. */
static inline struct memo_local *memo__lookup_begin(struct memo *m)
{
    struct memo_local *l = memo__local(m);
    if (memo__unlikely(l == NULL))
        return memo__spare_begin(m);
    ck_epoch_begin(&l->record, NULL);
    return l;
}

static inline void memo__lookup_end(struct memo_local *l)
{
    if (memo__unlikely(l->is_spare))
        memo__spare_end(l->memo);
    else
        memo__section_end(l);
}

static inline void memo__count_hit(struct memo_local *l)
{
    if (memo__unlikely(l->is_spare))
        atomic_fetch_add_explicit(&l->counters.hits, 1, memory_order_relaxed);
    else
        memo__count(&l->counters.hits);
}

static uint64_t memo__deadline(uint64_t timeout_ns)
{
    if (timeout_ns == 0)
        return UINT64_MAX; /* do not wait at all */
    uint64_t now = memo__now_ns();
    return timeout_ns >= UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + timeout_ns;
}


static inline void memo__key_u64(struct memo_key *k, const struct memo *m, uint64_t key)
{
    k->kind = MEMO__KIND_U64;
    k->hash = memo__hash_u64(m, key);
    k->u64 = key;
}

static inline void memo__key_bytes(struct memo_key *k, const struct memo *m, const void *key, size_t key_len)
{
    k->kind = MEMO__KIND_BYTES;
    k->hash = memo__hash_bytes(m, key, key_len);
    k->probe.head.a = key_len;
    k->probe.head.b = MEMO__PROBE_TAG;
    k->probe.key = key;
}

static inline const void *memo__key_probe(const struct memo_key *k)
{
    return k->kind == MEMO__KIND_U64 ? (const void *)&k->u64 : (const void *)&k->probe;
}

static inline ck_hs_t *memo__table(struct memo_shard *s, unsigned kind)
{
    return kind == MEMO__KIND_U64 ? &s->u64 : &s->bytes;
}

/* ---- create / destroy ---------------------------------------------------------------------- */

#define MEMO__CONFIG_MAX 1024 /* a struct_size past this is a bad argument, not a later version */

static unsigned memo__default_shards(void)
{
    /* 32 shards per CPU: two threads missing on disjoint keys rarely meet on a shard lock
     * (measured with memo-dp: 8 shards on 2 CPUs gave no speed-up to inserts, 256 gave 1.8x). */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cpus > 0 ? (unsigned)cpus * 32 : 64, n = 16;
    while (n < want && n < 1024)
        n <<= 1;
    return n;
}

static void memo__teardown(struct memo *m)
{
    memo__registry_remove_locals(m);
    /* Every pending free, whatever its epoch: nobody uses m any more. */
    for (struct memo_local *l = m->locals; l != NULL; l = l->next) {
        memo__alloc_local = l;
        memo__batch_seal(l);
        ck_epoch_reclaim(&l->record);
        if (l->reserve != NULL)
            memo__mem_free(l, l->reserve, sizeof *l->reserve);
        memo__markers_drop(l);
    }
    memo__alloc_local = NULL;
    if (m->locals != NULL)
        memo__removals_run(m->locals); /* values retired before: their callbacks */
    if (m->shards != NULL)
        memo__shards_destroy(m, m->locals);
    memo__dense_destroy(m);
    memo__policy_destroy(m);
    for (struct memo_local *l = m->locals, *next; l != NULL; l = next) {
        next = l->next;
        free(l);
    }
    pthread_mutex_destroy(&m->dense_lock);
    pthread_mutex_destroy(&m->spare_lock);
    pthread_mutex_destroy(&m->locals_lock);
    free(m);
}

int memo_create(memo_t **out, const memo_config_t *cfg)
{
    memo_config_t c = MEMO_CONFIG_INIT;
    if (out == NULL)
        return MEMO_EINVAL;
    if (cfg != NULL) {
        /* The first version's fields are all required; a later, longer struct is accepted when
         * the fields this version does not know are zero (as with Linux's extensible structs). */
        size_t v01 = offsetof(memo_config_t, seed) + sizeof(uint64_t); /* 0.1's memo_config_t */
        if (cfg->struct_size < v01 || (cfg->struct_size > v01 && cfg->struct_size < sizeof c) ||
            cfg->struct_size > MEMO__CONFIG_MAX)
            return MEMO_EINVAL; /* not the size of any version's memo_config_t */
        if (cfg->struct_size > sizeof c) {
            const unsigned char *tail = (const unsigned char *)cfg + sizeof c;
            for (size_t i = 0; i < cfg->struct_size - sizeof c; i++)
                if (tail[i] != 0)
                    return MEMO_EINVAL;
        }
        /* An older config: only its own fields (the rest keep MEMO_CONFIG_INIT's zeros). */
        memcpy(&c, cfg, cfg->struct_size < sizeof c ? cfg->struct_size : sizeof c);
        c.struct_size = sizeof c;
    }
    if (c.flags & ~MEMO_F_SYSTEM_ALLOC)
        return MEMO_EINVAL;
    /* A policy (policy.c): bounds, expiry or a removal callback. The clock and the callback's
     * context alone ask for nothing. Dense keys take none of them (API.md). */
    bool policy = c.max_entries != 0 || c.max_bytes != 0 || c.ttl_ns != 0 || c.refresh_ns != 0 ||
                  c.failure_ttl_ns != 0 || c.on_removal != NULL;
    if (c.dense_keys != 0 && (policy || c.clock != NULL))
        return MEMO_EINVAL;
    if (c.shards != 0 && ((c.shards & (c.shards - 1)) != 0 || c.shards > 4096))
        return MEMO_EINVAL;

    /* A memo with a policy has one shard unless asked for more: its stores all take the policy's
     * lock anyway, and empty tables would count against a small max_bytes. */
    unsigned nshards = c.shards ? c.shards : policy ? 1 : memo__default_shards();
    if (c.expected_entries / nshards > MEMO__SHARD_ENTRIES_MAX ||
        (c.expected_entries / nshards == MEMO__SHARD_ENTRIES_MAX && c.expected_entries % nshards != 0))
        return MEMO_EINVAL; /* more than the shards can hold */

    struct memo *m = MEMO__TEST_ALLOC_FAILS(false) ? NULL :
        aligned_alloc(MEMO__CACHELINE, (sizeof *m + MEMO__CACHELINE - 1) & ~(size_t)(MEMO__CACHELINE - 1));
    if (m == NULL)
        return MEMO_ENOMEM;
    memset(m, 0, sizeof *m);
    m->id = memo__next_id();
    m->flags = c.flags;
    m->system_alloc = (c.flags & MEMO_F_SYSTEM_ALLOC) != 0;
    m->nshards = nshards;
    m->shard_mask = nshards - 1;
    pthread_mutex_init(&m->locals_lock, NULL);
    pthread_mutex_init(&m->spare_lock, NULL);
    ck_epoch_init(&m->epoch);
    memo__hash_init(m, c.seed);
    pthread_mutex_init(&m->dense_lock, NULL);
    /* The policy before anything is allocated: its byte count sees every allocation. */
    if ((policy && memo__policy_init(m, &c) != 0) || memo__spare_init(m) != 0 ||
        memo__shards_init(m, c.expected_entries) != 0 ||
        (c.dense_keys != 0 && memo__dense_init(m, c.dense_keys) != 0)) {
        memo__teardown(m);
        return MEMO_ENOMEM;
    }
    memo__fork_handlers_install();
    memo__registry_add(m);
    *out = m;
    return 0;
}

void memo_destroy(memo_t *m)
{
    if (m != NULL)
        memo__teardown(m);
}

/* ---- publishing a computation's outcome ---------------------------------------------------- */

/* Whether forget or clear detached k; only meaningful under the shard lock. */
static inline bool memo__detached(struct memo_marker *k)
{
    return (atomic_load_explicit(&k->state, memory_order_relaxed) & MEMO__DETACHED) != 0;
}

/* A stored failure (failure_ttl_ns): a policy record with fn's code and the key, no value. NULL
 * when memory ran out (the failure is then not stored). */
static struct memo_rec *memo__failure_new(struct memo_local *l, struct memo_marker *e, int code)
{
    struct memo_policy *p = l->memo->pol;
    struct memo_rec *r;
    if (e->kind == MEMO__KIND_U64) {
        r = memo__rec_pol_u64_new(l, e->key.a, 0);
    } else {
        r = memo__rec_big_new(l, memo__rec_key(&e->key), e->key.a, 0);
    }
    if (r == NULL)
        return NULL;
    struct memo_pol *h = memo__pol_of(r);
    h->kind = (uint8_t)e->kind;
    h->code = code;
    h->stored_at = memo__policy_now(p);
    h->expires = h->stored_at > UINT64_MAX - p->failure_ttl_ns ? UINT64_MAX : h->stored_at + p->failure_ttl_ns;
    return r;
}

/* Puts policy record r in the table in place of marker e (under both locks; ck_hs_set replaces a
 * slot and does not grow, so it cannot fail) and in the policy's lists. */
static void memo__policy_publish_locked(struct memo_flight_run *run, struct memo_local *l, struct memo_rec *r)
{
    struct memo_marker *e = run->marker;
    void *previous = NULL;
    void *slot = (void *)((uintptr_t)r | MEMO__POLICY_TAG);
    MEMO_ANN_PUBLISH(slot);
    (void)ck_hs_set(run->table, e->hash, slot, &previous);
    atomic_fetch_add_explicit(&run->shard->entries, 1, memory_order_relaxed);
    memo__policy_stored_locked(run->memo, l, memo__pol_of(r), run->shard);
}

/* fn failed (code != 0) or its owner died (code == 0): out of the table (or, for a positive code
 * of a memo with failure_ttl_ns, replaced by the stored failure), then settled. */
static void memo__flight_fail(struct memo_flight_run *run, struct memo_local *l, int code)
{
    struct memo_marker *e = run->marker;
    struct memo *m = run->memo;
    struct memo_rec *failure = NULL;
    if (code > 0 && m->pol != NULL && m->pol->failure_ttl_ns != 0)
        failure = memo__failure_new(l, e, code);
    memo__lock(m, run->shard, l);
    bool stored = false;
    if (!memo__detached(e)) {
        if (failure != NULL) {
            memo__policy_publish_locked(run, l, failure);
            stored = true;
        } else {
            (void)ck_hs_remove(run->table, e->hash, memo__marker_slot(e));
        }
    }
    if (code != 0)
        e->code = code;
    (void)memo__marker_finish(e, code != 0 ? MEMO__FAILED : MEMO__ABANDONED);
    memo__unlock_shard(run->shard);
    if (m->pol != NULL)
        memo__mutex_unlock(&m->pol->lock);
    if (failure != NULL && !stored)
        memo__rec_big_free_now(l, failure);
    memo__flight_pop(run->self, run->flight);
    if (e->value_rec != NULL) {
        memo__rec_big_free_now(l, e->value_rec); /* never published */
        e->value_rec = NULL;
    }
    memo__marker_retire(l, e);
    memo__retire_poll(l);
}

/* Cleanup handler: the computing thread is unwinding (pthread_exit, cancellation, a C++
 * exception through fn). Its waiters wake and retry. */
static void memo__flight_abandon(void *arg)
{
    struct memo_flight_run *run = arg;
    struct memo_local *l = memo__local(run->memo);
    MEMO__CHECK(l != NULL, "a computing thread's state for its memo exists since its miss");
    memo__flight_fail(run, l, 0);
}

/* Stores fn's result: under the shard lock, the value's record replaces the marker, unless a
 * forget or clear detached it; then the marker settles READY for its waiters. Returns the
 * record published (bytes), or NULL if the marker was detached (its waiters still take the
 * value from the marker). *stored_out says which. A record that cannot be had is MEMO_ENOMEM
 * for the caller and the waiters (returned through *rc; the marker is left as it was). */
/* A policy memo's value record r (made, not yet published), just before it is stored: its
 * deadlines. Returns false if it must not be stored: memo_result_ttl(0), or too big for max_bytes
 * even alone (everything the memo holds but its stored records, plus r, passes max_bytes). */
static bool memo__policy_admit_locked(struct memo *m, struct memo_marker *e, struct memo_rec *r)
{
    struct memo_policy *p = m->pol;
    struct memo_pol *h = memo__pol_of(r);
    h->kind = (uint8_t)e->kind;
    h->code = 0;
    uint64_t ttl = e->ttl_set ? e->ttl : p->ttl_ns;
    if (e->ttl_set && ttl == 0)
        return false;
    if (p->max_bytes != 0 &&
        (uint64_t)atomic_load_explicit(&p->bytes, memory_order_relaxed) - p->rec_bytes > p->max_bytes)
        return false;
    bool expires = ttl != 0 && ttl != UINT64_MAX;
    h->stored_at = expires || p->refresh_ns != 0 ? memo__policy_now(p) : 0;
    h->expires = !expires ? UINT64_MAX : h->stored_at > UINT64_MAX - ttl ? UINT64_MAX : h->stored_at + ttl;
    return true;
}

/* Stores fn's result: under the shard lock, the value's record replaces the marker, unless a
 * forget or clear detached it; then the marker settles READY for its waiters. Returns the
 * record published (bytes), or NULL if the marker was detached (its waiters still take the
 * value from the marker). *stored_out says which. A record that cannot be had is MEMO_ENOMEM
 * for the caller and the waiters (returned through *rc; the marker is left as it was). With a
 * policy, the record enters its lists and the bounds are kept (evicting) before the locks go. */
static struct memo_rec *memo__flight_done(struct memo_flight_run *run, struct memo_local *l,
                                          uint64_t value, bool *stored_out, int *rc)
{
    struct memo_marker *e = run->marker;
    struct memo *m = run->memo;
    struct memo_rec *rec = NULL;
    bool stored = false;
    *rc = 0;
    memo__lock(m, run->shard, l);
    if (e->kind == MEMO__KIND_U64) {
        e->value = value; /* ordered before READY by memo__marker_finish's release */
        if (!memo__detached(e)) {
            rec = memo__rec_u64_new_locked(l, run->shard, e->key.a, value);
            if (rec == NULL) {
                memo__unlock(m, run->shard);
                *rc = MEMO_ENOMEM;
                return NULL;
            }
        }
    } else if (!memo__detached(e)) {
        rec = memo__rec_publishable_locked(l, run->shard, e->value_rec);
        if (rec == NULL) {
            memo__unlock(m, run->shard);
            *rc = MEMO_ENOMEM;
            return NULL;
        }
        e->value_rec = rec;
    } else {
        rec = e->value_rec;
    }
    bool keep = !memo__detached(e) && (m->pol == NULL || memo__policy_admit_locked(m, e, rec));
    if (keep && m->pol != NULL) {
        memo__policy_publish_locked(run, l, rec);
        stored = true;
    } else if (keep) {
        void *previous = NULL;
        MEMO_ANN_PUBLISH(rec);
        /* Replacing the marker's slot: ck_hs_set does not grow, so it cannot fail. */
        stored = ck_hs_set(run->table, e->hash, rec, &previous);
        MEMO__ASSERT(stored, "ck_hs_set replaces the marker's slot, which it cannot fail to find");
        if (!stored) /* keep the table without the marker all the same */
            (void)ck_hs_remove(run->table, e->hash, memo__marker_slot(e));
        else
            atomic_fetch_add_explicit(&run->shard->entries, 1, memory_order_relaxed);
    } else if (!memo__detached(e)) {
        /* Not to be stored (a policy's decision): out of the table, as a detached marker. */
        (void)ck_hs_remove(run->table, e->hash, memo__marker_slot(e));
    }
    (void)memo__marker_finish(e, MEMO__READY | (stored ? 0u : MEMO__DETACHED));
    if (!stored && e->kind == MEMO__KIND_U64 && rec != NULL) {
        if (m->pol != NULL)
            memo__rec_big_free_now(l, rec); /* made, never published */
        else
            memo__rec_retire(l, run->shard, rec, MEMO__KIND_U64);
    }
    memo__unlock_shard(run->shard);
    if (m->pol != NULL)
        memo__mutex_unlock(&m->pol->lock);
    memo__flight_pop(run->self, run->flight);
    if (e->kind == MEMO__KIND_BYTES) {
        rec = e->value_rec;
        if (!stored)
            memo__rec_retire_big(l, rec); /* never published; its waiters hold sections */
    }
    memo__marker_retire(l, e); /* e may be freed from here on (this thread holds no section) */
    memo__retire_poll(l);
    *stored_out = stored;
    return rec;
}

/* ---- get or compute ------------------------------------------------------------------------ */


/* Hands a byte-key record to the caller: the section stays open, the ref pins it until
 * memo_release. */
static void memo__deliver_bytes(struct memo_call *c, struct memo_rec *r)
{
    c->ref->data = memo__rec_value(r);
    c->ref->len = r->b;
    c->ref->memo__local = c->local;
}

static struct memo_thread *memo__refreshing_owner(const struct memo_policy *p, unsigned long hash, unsigned kind);
static void memo__refresh_forget_locked(struct memo_policy *p, unsigned long hash, unsigned kind);

/* A miss: insert a marker under the shard lock, then run fn outside every lock and section.
 * If another thread inserted the key first, sets *again and returns still inside the caller's
 * section (the caller looks again); otherwise the section has ended and the result is the call's
 * (0, a memo code, or fn's own code, which may be any int: hence the flag, not a code). */
static int memo__compute(struct memo_call *c, bool *again)
{
    struct memo_local *l = c->local;
    struct memo_shard *s = c->shard;
    struct memo_thread *self = memo__self;
    ck_hs_t *table = memo__table(s, c->key.kind);
    unsigned long hash = c->key.hash;
    struct memo_marker *e;

    memo__lock(c->memo, s, l);
    if (c->memo->pol != NULL && c->memo->pol->nrefreshing != 0) {
        struct memo_thread *owner = memo__refreshing_owner(c->memo->pol, hash, c->key.kind);
        if (owner != NULL) {
            /* A refresh of this key runs (its old value expired or left meanwhile): its result
             * is the one to take, not a second computation. The call looks again shortly. */
            memo__unlock(c->memo, s);
            if (owner == self) { /* fn of the refresh asks for its own key */
                memo__section_end(l);
                return MEMO_EDEADLK;
            }
            if (c->deadline != 0 && (c->deadline == UINT64_MAX || memo__now_ns() >= c->deadline)) {
                memo__section_end(l);
                return MEMO_ETIMEDOUT;
            }
            struct timespec pause = { 0, 20000 };
            nanosleep(&pause, NULL);
            *again = true;
            return 0;
        }
    }
    void *there = ck_hs_get(table, hash, memo__key_probe(&c->key));
    if (there != NULL && memo__is_policy(there) && memo__pol_of(memo__slot_rec(there))->expires != UINT64_MAX &&
        memo__policy_now(c->memo->pol) >= memo__pol_of(memo__slot_rec(there))->expires) {
        /* Expired: this call computes afresh, in its place. */
        memo__policy_expire_locked(c->memo, l, memo__pol_of(memo__slot_rec(there)), s);
        there = NULL;
    }
    if (there != NULL) {
        memo__unlock(c->memo, s);
        *again = true;
        return 0;
    }
    memo__table_presize_locked(s, c->key.kind);
    e = memo__marker_new(l, c->key.kind, hash, c->key.u64, c->key.probe.key, c->key.probe.head.a);
    /* A full shard (memo.h, "Limits") is out of memory like a table that cannot grow. */
    bool room = ck_hs_count(table) < MEMO__SHARD_ENTRIES_MAX;
    struct memo_flight *f = e != NULL && room ? memo__flight_push(self) : NULL;
    int64_t held = c->memo->pol != NULL ? atomic_load_explicit(&c->memo->pol->bytes, memory_order_relaxed) : 0;
    if (f != NULL) {
        e->flight = f;
        e->flight_seq = atomic_load_explicit(&f->seq, memory_order_relaxed);
        MEMO_ANN_PUBLISH(memo__marker_slot(e));
        if (!ck_hs_put_unique(table, hash, memo__marker_slot(e))) {
            memo__flight_pop(self, f);
            f = NULL;
        }
    }
    /* The table grew for the marker: its new slot array may pass max_bytes even if this
     * computation stores nothing, so the bound is kept now. Only then: other computations'
     * values in the making count in the bytes too, and a miss that takes no memory evicts
     * nothing for them. */
    if (f != NULL && c->memo->pol != NULL && c->memo->pol->max_bytes != 0 &&
        atomic_load_explicit(&c->memo->pol->bytes, memory_order_relaxed) > held)
        memo__policy_keep_bounds_locked(c->memo, l, s);
    memo__unlock(c->memo, s);
    memo__section_end(l); /* fn runs outside memo's read-side sections */
    if (f == NULL) {
        if (e != NULL)
            memo__marker_free_now(l, e);
        return MEMO_ENOMEM;
    }
    memo__count(&l->counters.misses);

    struct memo_result result = { .memo = c->memo, .marker = e };
    struct memo_flight_run run = { .memo = c->memo, .shard = s, .table = table, .marker = e, .flight = f,
                                   .self = self };
    uint64_t value = 0;
    int rc;
    pthread_cleanup_push(memo__flight_abandon, &run);
    if (c->key.kind == MEMO__KIND_U64)
        rc = c->fn_u64(c->ctx, c->key.u64, &value);
    else
        rc = c->fn(c->ctx, c->key.probe.key, c->key.probe.head.a, &result);
    pthread_cleanup_pop(0);

    /* fn may have made this thread use other memos: the local is still this thread's. */
    if (rc == 0 && c->key.kind == MEMO__KIND_BYTES && e->value_rec == NULL) {
        e->value_rec = memo__rec_big_new(l, c->key.probe.key, c->key.probe.head.a, 0);
        if (e->value_rec == NULL)
            rc = MEMO_ENOMEM;
    }
    if (rc != 0) {
        memo__count(&l->counters.errors);
        memo__flight_fail(&run, l, rc);
        return rc;
    }
    if (c->key.kind == MEMO__KIND_BYTES)
        ck_epoch_begin(&l->record, NULL); /* before the record can be forgotten and retired */
    bool stored;
    struct memo_rec *rec = memo__flight_done(&run, l, value, &stored, &rc);
    if (rc != 0) { /* no room for the record: the computation fails with MEMO_ENOMEM */
        if (c->key.kind == MEMO__KIND_BYTES)
            memo__section_end(l); /* the one begun for the ref above */
        memo__count(&l->counters.errors);
        memo__flight_fail(&run, l, rc);
        return rc;
    }
    if (c->key.kind == MEMO__KIND_U64) {
        *c->value = value;
        return 0;
    }
    memo__deliver_bytes(c, rec);
    return 0;
}

/* The result of a computation that c found in flight (marker e, read inside c's section): taken
 * at once if it is READY, else waited for. Returns true when the call is over (*rc is its result;
 * the section has ended, or pins a byte ref), false when the caller must look again (still inside
 * the section): the owner died (one of the waiters computes afresh), or the marker was READY but
 * detached (forgotten, or a value that was never stored: not a hit). */
bool memo__take_marker(struct memo_call *c, struct memo_marker *e, int *rc)
{
    struct memo_thread *self = memo__self;
    uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
    if ((st & MEMO__STATE) == MEMO__READY) {
        if (st & MEMO__DETACHED)
            return false;
        /* Stored just now; its record replaced the marker after this thread read it. */
        memo__count(&c->local->counters.hits);
    } else {
        int r = memo__wait(self, c->local, e, c->deadline);
        if (r == (int)MEMO__ABANDONED)
            return false;
        if (r < 0) { /* MEMO_EDEADLK, MEMO_ETIMEDOUT */
            memo__section_end(c->local);
            *rc = r;
            return true;
        }
        /* This computation's result, stored or (detached) not: a wait either way. */
        memo__count(&c->local->counters.waits);
        if (r == (int)MEMO__FAILED) {
            *rc = (int)e->code;
            memo__section_end(c->local);
            return true;
        }
    }
    if (c->key.kind == MEMO__KIND_U64) {
        *c->value = e->value;
        memo__section_end(c->local);
    } else {
        memo__deliver_bytes(c, e->value_rec);
    }
    *rc = 0;
    return true;
}

/* ---- policy records: hits, expiry, refresh ------------------------------------------------- */

/* A refresh in progress (stale-while-revalidate): what its cleanup needs if its thread dies. */
struct memo_refresh {
    struct memo_call   *call;
    struct memo_rec    *old;        /* the stale record; may be freed once the section ended */
    uint64_t            token;      /* old's claim while this refresh runs */
    struct memo_marker *marker;     /* private: where fn's memo_result puts a byte value */
};

/* Claims the refresh of h's value for call c (under the policy lock, so that the claim and the
 * key's entry among the refreshes running appear together): its token, or 0 if another call
 * claimed it first or MEMO__REFRESHING_MAX refreshes are running (the old value is served). */
static uint64_t memo__refresh_claim(struct memo_call *c, struct memo_pol *h)
{
    struct memo_policy *p = c->memo->pol;
    uint64_t token = 0;
    memo__mutex_lock(&p->lock);
    /* Still the key's record? Another call may have found it expired and taken it out, and then
     * compute the key itself: a refresh now would be a second computation of it (the caller then
     * serves the value it read, which its start time allows). Every writer holds the policy lock,
     * so the table cannot change under this look. */
    void *there = ck_hs_get(memo__table(c->shard, c->key.kind), c->key.hash, memo__key_probe(&c->key));
    if (there != (void *)((uintptr_t)memo__pol_rec(h) | MEMO__POLICY_TAG)) {
        memo__mutex_unlock(&p->lock);
        return 0;
    }
    if (atomic_load_explicit(&h->claim, memory_order_relaxed) == 0 && p->nrefreshing < MEMO__REFRESHING_MAX) {
        token = atomic_fetch_add_explicit(&p->claims, 1, memory_order_relaxed) + 1;
        atomic_store_explicit(&h->claim, token, memory_order_relaxed);
        p->refreshing[p->nrefreshing].hash = c->key.hash;
        p->refreshing[p->nrefreshing].kind = c->key.kind;
        p->refreshing[p->nrefreshing].owner = memo__self;
        p->refreshing[p->nrefreshing].token = token;
        p->nrefreshing++;
    }
    memo__mutex_unlock(&p->lock);
    return token;
}

/* The refresh with token is over (under the policy lock). */
static void memo__refresh_unregister_locked(struct memo_policy *p, uint64_t token)
{
    for (unsigned i = 0; i < p->nrefreshing; i++) {
        if (p->refreshing[i].token == token) {
            p->refreshing[i] = p->refreshing[--p->nrefreshing];
            return;
        }
    }
}

/* Under the policy lock: a forget of the key of hash (and kind), or with kind 0 a clear: calls
 * no longer wait for its refresh. */
static void memo__refresh_forget_locked(struct memo_policy *p, unsigned long hash, unsigned kind)
{
    for (unsigned i = 0; i < p->nrefreshing;) {
        if (kind == 0 || (p->refreshing[i].hash == hash && p->refreshing[i].kind == kind))
            p->refreshing[i] = p->refreshing[--p->nrefreshing];
        else
            i++;
    }
}

/* Under the policy lock: the thread refreshing the key of hash (and kind), or NULL. A hash that
 * two keys share makes one wait for the other's refresh: harmless, and rare. */
static struct memo_thread *memo__refreshing_owner(const struct memo_policy *p, unsigned long hash, unsigned kind)
{
    for (unsigned i = 0; i < p->nrefreshing; i++)
        if (p->refreshing[i].hash == hash && p->refreshing[i].kind == kind)
            return p->refreshing[i].owner;
    return NULL;
}

/* Under both locks: whether old is still the key's record and still claimed by this refresh
 * (a record freed and another made at its address carries another claim). */
static bool memo__refresh_still_locked(struct memo_refresh *rf, ck_hs_t *table)
{
    struct memo_call *c = rf->call;
    void *p = ck_hs_get(table, c->key.hash, memo__key_probe(&c->key));
    return p == (void *)((uintptr_t)rf->old | MEMO__POLICY_TAG) &&
           atomic_load_explicit(&memo__pol_of(rf->old)->claim, memory_order_relaxed) == rf->token;
}

/* The refresh failed or its thread is dying: the old value stays, unclaimed, and the next call
 * past refresh_ns tries again. */
static void memo__refresh_release(struct memo_refresh *rf, struct memo_local *l)
{
    struct memo_call *c = rf->call;
    memo__lock(c->memo, c->shard, l);
    if (memo__refresh_still_locked(rf, memo__table(c->shard, c->key.kind)))
        atomic_store_explicit(&memo__pol_of(rf->old)->claim, 0, memory_order_relaxed);
    memo__refresh_unregister_locked(c->memo->pol, rf->token);
    memo__unlock(c->memo, c->shard);
    if (rf->marker->value_rec != NULL)
        memo__rec_big_free_now(l, rf->marker->value_rec);
    memo__marker_free_now(l, rf->marker);
}

static void memo__refresh_abandon(void *arg)
{
    struct memo_refresh *rf = arg;
    struct memo_local *l = memo__local(rf->call->memo);
    MEMO__CHECK(l != NULL, "a refreshing thread's state for its memo exists since its call began");
    memo__refresh_release(rf, l);
}

/* The call that found old (a value at least refresh_ns old, in c's section) and claimed it with
 * token: runs fn; on success the new value replaces old (MEMO_REMOVED_REPLACED) unless old left
 * meanwhile (forgotten, evicted, expired: then nothing is stored), and is the call's result. */
static int memo__refresh(struct memo_call *c, struct memo_rec *old, uint64_t token)
{
    struct memo *m = c->memo;
    struct memo_local *l = c->local;
    struct memo_marker *e = memo__marker_new(l, c->key.kind, c->key.hash, c->key.u64, c->key.probe.key,
                                             c->key.probe.head.a);
    if (e == NULL) {
        /* No room to refresh: the old value, and the next call tries again. */
        memo__mutex_lock(&m->pol->lock);
        atomic_store_explicit(&memo__pol_of(old)->claim, 0, memory_order_relaxed);
        memo__refresh_unregister_locked(m->pol, token);
        memo__mutex_unlock(&m->pol->lock);
        memo__count(&l->counters.hits);
        if (c->key.kind == MEMO__KIND_U64) {
            *c->value = old->b;
            memo__section_end(l);
        } else {
            memo__deliver_bytes(c, old);
        }
        return 0;
    }
    memo__section_end(l); /* fn runs outside memo's read-side sections */
    memo__count(&l->counters.misses);
    struct memo_refresh rf = { .call = c, .old = old, .token = token, .marker = e };
    struct memo_result result = { .memo = m, .marker = e };
    uint64_t value = 0;
    int rc;
    pthread_cleanup_push(memo__refresh_abandon, &rf);
    if (c->key.kind == MEMO__KIND_U64)
        rc = c->fn_u64(c->ctx, c->key.u64, &value);
    else
        rc = c->fn(c->ctx, c->key.probe.key, c->key.probe.head.a, &result);
    pthread_cleanup_pop(0);
    if (rc == 0 && c->key.kind == MEMO__KIND_BYTES && e->value_rec == NULL &&
        (e->value_rec = memo__rec_big_new(l, c->key.probe.key, c->key.probe.head.a, 0)) == NULL)
        rc = MEMO_ENOMEM;
    struct memo_rec *rec = NULL;
    if (rc == 0 && c->key.kind == MEMO__KIND_U64 &&
        (rec = memo__rec_pol_u64_new(l, c->key.u64, value)) == NULL)
        rc = MEMO_ENOMEM;
    if (rc != 0) {
        memo__count(&l->counters.errors);
        memo__refresh_release(&rf, l);
        return rc;
    }
    if (c->key.kind == MEMO__KIND_BYTES) {
        rec = e->value_rec;
        e->value_rec = NULL;
        ck_epoch_begin(&l->record, NULL); /* before the new record can be evicted and retired */
    }
    ck_hs_t *table = memo__table(c->shard, c->key.kind);
    memo__lock(m, c->shard, l);
    bool stored = false;
    if (memo__refresh_still_locked(&rf, table)) {
        if (memo__policy_admit_locked(m, e, rec)) {
            void *previous = NULL, *slot = (void *)((uintptr_t)rec | MEMO__POLICY_TAG);
            MEMO_ANN_PUBLISH(slot);
            (void)ck_hs_set(table, c->key.hash, slot, &previous);
            struct memo_pol *oh = memo__pol_of(old);
            oh->reason = MEMO_REMOVED_REPLACED;
            memo__policy_replaced_locked(m, l, oh, memo__pol_of(rec), c->shard);
            memo__pol_retire(l, oh);
            stored = true;
        } else {
            atomic_store_explicit(&memo__pol_of(old)->claim, 0, memory_order_relaxed);
        }
    }
    memo__refresh_unregister_locked(m->pol, token);
    memo__unlock(m, c->shard);
    memo__marker_free_now(l, e);
    if (c->key.kind == MEMO__KIND_U64) {
        *c->value = value;
        if (!stored)
            memo__rec_big_free_now(l, rec);
    } else {
        memo__deliver_bytes(c, rec);
        if (!stored)
            memo__rec_retire_big(l, rec); /* the ref's section holds it */
    }
    memo__retire_poll(l);
    return 0;
}

/* A policy record r found by c (in its section). Returns true when the call is over (*rc): a
 * hit (the value, or a stored failure's code), or a refresh this call ran. Returns false, still
 * in the section, when r has expired: the call computes afresh. */
static bool memo__policy_hit(struct memo_call *c, struct memo_rec *r, int *rc)
{
    struct memo_policy *p = c->memo->pol;
    struct memo_pol *h = memo__pol_of(r);
    uint64_t now = 0;
    /* The clock is read only for a record that can expire, or for refresh. */
    if (h->expires != UINT64_MAX || p->refresh_ns != 0) {
        now = memo__policy_now(p);
        if (h->expires != UINT64_MAX && now >= h->expires) /* UINT64_MAX: never, at any reading */
            return false;
    }
    if (atomic_load_explicit(&h->visited, memory_order_relaxed) == 0)
        atomic_store_explicit(&h->visited, 1, memory_order_relaxed);
    if (h->code != 0) {
        memo__count(&c->local->counters.hits);
        *rc = h->code;
        memo__section_end(c->local);
        return true;
    }
    if (p->refresh_ns != 0 && now - h->stored_at >= p->refresh_ns &&
        atomic_load_explicit(&h->claim, memory_order_relaxed) == 0) {
        uint64_t token = memo__refresh_claim(c, h);
        if (token != 0) {
            *rc = memo__refresh(c, r, token);
            return true;
        }
    }
    memo__count(&c->local->counters.hits);
    if (c->key.kind == MEMO__KIND_U64) {
        *c->value = r->b;
        memo__section_end(c->local);
    } else {
        memo__deliver_bytes(c, r);
    }
    *rc = 0;
    return true;
}

/* Everything after a first lookup that did not hit. Called inside a section; p is what the
 * table held (NULL, or a marker: a record would have been a hit). */
static int memo__get_slow(struct memo_call *c, void *p)
{
    ck_hs_t *table = memo__table(c->shard, c->key.kind);
    for (;;) {
        int rc;
        if (p == NULL) {
            bool again = false;
            rc = memo__compute(c, &again);
            if (!again)
                return rc; /* compute ended the section (a ref's section is a new one) */
        } else if (memo__is_policy(p)) {
            if (memo__policy_hit(c, memo__slot_rec(p), &rc))
                return rc;
            p = NULL; /* expired: computed afresh (memo__compute takes it out) */
            continue;
        } else if (!memo__is_marker(p)) {
            /* A record: stored by a computation that ended meanwhile. */
            memo__count(&c->local->counters.hits);
            if (c->key.kind == MEMO__KIND_U64) {
                *c->value = ((struct memo_rec *)p)->b;
                memo__section_end(c->local);
            } else {
                memo__deliver_bytes(c, p);
            }
            return 0;
        } else {
            MEMO_ANN_GOT(p);
            if (memo__take_marker(c, memo__slot_marker(p), &rc))
                return rc;
        }
        p = ck_hs_get(table, c->key.hash, memo__key_probe(&c->key));
        MEMO_ANN_GOT(p);
    }
}

/* A dense key's call past the hit path (l: the caller's local, or NULL when not known yet; no
 * section is open). The slot is read without a section; one is begun only to read a marker. */
int memo__get_dense_slow(struct memo *m, uint64_t key, memo_fn_u64 *fn, void *ctx, uint64_t deadline,
                         uint64_t *value, struct memo_local *l)
{
    if (l == NULL && (l = memo__local(m)) == NULL)
        return MEMO_ENOMEM;
    struct memo_dense *d = &m->dense[key];
    struct memo_call c = { .memo = m, .local = l, .key = { .kind = MEMO__KIND_U64, .u64 = key },
                           .deadline = deadline, .fn_u64 = fn, .ctx = ctx, .value = value };
    unsigned spins = 0;
    for (;;) {
        if (memo__dense_hit(m->dense_chunks, m->dense, key, value)) {
            memo__count(&l->counters.hits);
            return 0;
        }
        /* A chunk not committed holds no claim: its slot is not read (memo__dense_hit). */
        uint64_t w = memo__dense_committed(m->dense_chunks, key >> MEMO__DENSE_CHUNK_SHIFT)
                         ? atomic_load_explicit(&d->word, memory_order_acquire) : 0;
        int rc;
        if (w == 0) {
            bool again = false;
            rc = memo__dense_compute(m, l, key, fn, ctx, value, &again);
            if (!again)
                return rc;
        } else if ((w & MEMO__DENSE_TAG) == MEMO__DENSE_COMPUTING) {
            ck_epoch_begin(&l->record, NULL);
            /* Still there once the section is open: its retirement (after it leaves the slot)
             * waits for this section. */
            if (atomic_load_explicit(&d->word, memory_order_acquire) == w) {
                struct memo_marker *e = (struct memo_marker *)(uintptr_t)(w - MEMO__DENSE_COMPUTING);
                if (memo__take_marker(&c, e, &rc))
                    return rc;
            }
            memo__section_end(l);
        } else if ((w & MEMO__DENSE_TAG) != MEMO__DENSE_READY) {
            memo__dense_wait_slot(&spins); /* publishing, or a clear giving the chunk back */
        }
    }
}

/* The hit on a policy record (a memo with bounds, expiry or a removal callback), from the hit
 * paths, inside the section: a value that has not expired and is not due for refresh is the
 * call's, with the record's visited bit set if it was clear (the only write). Anything else
 * (expired, a stored failure, refresh due) returns false, still in the section, for the slow
 * path. Out of line, so that the lean hit path keeps its registers. */
static inline bool memo__policy_hit_fast(struct memo *m, struct memo_pol *h)
{
    if (h->code != 0)
        return false;
    const struct memo_policy *p = m->pol;
    if (h->expires != UINT64_MAX || p->refresh_ns != 0) {
        uint64_t now = memo__policy_now(p);
        if ((h->expires != UINT64_MAX && now >= h->expires) ||
            (p->refresh_ns != 0 && now - h->stored_at >= p->refresh_ns))
            return false;
    }
    if (atomic_load_explicit(&h->visited, memory_order_relaxed) == 0)
        atomic_store_explicit(&h->visited, 1, memory_order_relaxed);
    return true;
}

__attribute__((noinline)) static bool memo__policy_hit_u64(struct memo *m, struct memo_local *l, void *p,
                                                           uint64_t *value)
{
    MEMO_ANN_GOT(p);
    struct memo_rec *r = memo__slot_rec(p);
    if (!memo__policy_hit_fast(m, memo__pol_of(r)))
        return false;
    *value = r->b;
    memo__section_end(l);
    memo__count(&l->counters.hits);
    return true;
}

__attribute__((noinline)) static bool memo__policy_hit_bytes(struct memo *m, struct memo_local *l, void *p,
                                                             memo_ref_t *ref)
{
    MEMO_ANN_GOT(p);
    struct memo_rec *r = memo__slot_rec(p);
    if (!memo__policy_hit_fast(m, memo__pol_of(r)))
        return false;
    memo__count(&l->counters.hits);
    ref->data = memo__rec_value(r);
    ref->len = r->b;
    ref->memo__local = l;
    ref->memo__pad = 0;
    return true;
}

/* A u64 call past the hit path. Either l is the caller's local, the call is inside its section,
 * and p is what the table held for the key (NULL or a marker); or l is NULL (the arguments not
 * checked yet, or the thread's local not in its cache) and no section is open. Kept out of line,
 * so that the hit path keeps few values live across ck_hs_get. */
__attribute__((noinline)) static int memo__get_u64_slow(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx,
                                                        uint64_t deadline, uint64_t *value,
                                                        struct memo_local *l, void *p)
{
    unsigned long hash;
    struct memo_shard *s;
    /* A bounded memo's hit comes here first (its record is tagged). */
    if (p != NULL && memo__is_policy(p) && memo__policy_hit_u64(m, l, p, value))
        return 0;
    if (l == NULL) {
        if (m == NULL || fn == NULL || value == NULL)
            return MEMO_EINVAL;
        if (key < m->dense_n)
            return memo__get_dense_slow(m, key, fn, ctx, deadline, value, NULL);
        if ((l = memo__local(m)) == NULL)
            return MEMO_ENOMEM;
        hash = memo__hash_u64(m, key);
        s = memo__shard(m, hash);
        ck_epoch_begin(&l->record, NULL);
        p = ck_hs_get(&s->u64, hash, &key);
        MEMO_ANN_GOT(p);
    } else {
        hash = memo__hash_u64(m, key);
        s = memo__shard(m, hash);
    }
    struct memo_call c = { .memo = m, .local = l, .shard = s, .key = { .kind = MEMO__KIND_U64, .hash = hash, .u64 = key },
                           .deadline = deadline, .fn_u64 = fn, .ctx = ctx, .value = value };
    return memo__get_slow(&c, p);
}

/* The hit path: no lock, no shared write, no system call; a record is read and nothing else.
 * The arguments sit in a struct whose address ck_hs_get sees (through the key), so they are read
 * back from the stack after the call instead of occupying saved registers; anything but a hit
 * goes to memo__get_u64_slow, which starts over. */
static inline int memo__get_u64(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx,
                                uint64_t deadline, uint64_t *value)
{
    struct {
        uint64_t           key;
        struct memo_local *l;
        uint64_t          *value;
        memo_t            *m;
        memo_fn_u64       *fn;
        void              *ctx;
    } a;
    a.key = key, a.value = value, a.m = m, a.fn = fn, a.ctx = ctx; /* a.l: set on the hit path */
    struct memo_thread *t = memo__self;
    /* A filter, not the argument check (memo__get_u64_slow does that): m is not NULL if it is the
     * cached memo (MEMO__NO_MEMO), and fn and value are not NULL if their bits have one in
     * common, which pointers of one process almost always have; any call it lets past is
     * checked in full on the slow path. */
    if (memo__likely(((uintptr_t)fn & (uintptr_t)value) != 0 &&
                     atomic_load_explicit(&t->cache_memo, memory_order_relaxed) == m)) {
        if (key < m->dense_n) {
            /* Dense: the slot, no section (memo__dense_hit). */
            struct memo_local *l = t->cache_local;
            if (memo__likely(memo__dense_hit(m->dense_chunks, m->dense, key, value))) {
                memo__count(&l->counters.hits);
                return 0;
            }
            return memo__get_dense_slow(m, key, fn, ctx, deadline, value, l);
        }
        a.l = t->cache_local;
        unsigned long hash = memo__hash_u64(m, key);
        ck_epoch_begin(&a.l->record, NULL);
        void *p = ck_hs_get(&memo__shard(m, hash)->u64, hash, &a.key);
        struct memo_local *l = a.l; /* read back once: the store to *value below may alias a */
        if (memo__likely(p != NULL && memo__is_lean(p))) {
            MEMO_ANN_GOT(p);
            *a.value = ((const struct memo_rec *)p)->b;
            memo__section_end(l);
            memo__count(&l->counters.hits);
            return 0;
        }
        return memo__get_u64_slow(a.m, a.key, a.fn, a.ctx, deadline, a.value, l, p); /* in the section */
    }
    return memo__get_u64_slow(a.m, a.key, a.fn, a.ctx, deadline, a.value, NULL, NULL);
}

int memo_get_u64(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx, uint64_t *value)
{
    return memo__get_u64(m, key, fn, ctx, 0, value);
}

int memo_get_u64_timed(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx, uint64_t timeout_ns,
                       uint64_t *value)
{
    return memo__get_u64(m, key, fn, ctx, memo__deadline(timeout_ns), value);
}

/* A byte-key call past the hit path: no section is open, *ref is empty; starts over. */
__attribute__((noinline)) static int memo__get_bytes_slow(memo_t *m, const void *key, size_t key_len, memo_fn *fn,
                                                          void *ctx, uint64_t deadline, memo_ref_t *ref)
{
    if (m == NULL || fn == NULL || ref == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_local *l = memo__local(m);
    if (l == NULL)
        return MEMO_ENOMEM;
    struct memo_call c = { .memo = m, .local = l, .deadline = deadline, .fn = fn, .ctx = ctx, .ref = ref };
    memo__key_bytes(&c.key, m, key, key_len);
    c.shard = memo__shard(m, c.key.hash);
    ck_epoch_begin(&l->record, NULL);
    void *p = ck_hs_get(&c.shard->bytes, c.key.hash, &c.key.probe);
    MEMO_ANN_GOT(p);
    return memo__get_slow(&c, p);
}

/* The byte-key hit path, shaped like memo__get_u64's: the probe and the arguments in one struct
 * that ck_hs_get sees, anything but a hit to memo__get_bytes_slow. */
static inline int memo__get_bytes(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx,
                                  uint64_t deadline, memo_ref_t *ref)
{
    struct {
        struct memo_probe  probe;
        struct memo_local *l;
        memo_ref_t        *ref;
        memo_t            *m;
        memo_fn           *fn;
        void              *ctx;
    } a;
    a.probe.head.a = key_len, a.probe.head.b = MEMO__PROBE_TAG, a.probe.key = key;
    a.ref = ref, a.m = m, a.fn = fn, a.ctx = ctx;
    struct memo_thread *t = memo__self;
    if (memo__likely(fn != NULL && ref != NULL && (key != NULL || key_len == 0) &&
                     atomic_load_explicit(&t->cache_memo, memory_order_relaxed) == m)) { /* m: MEMO__NO_MEMO */
        a.l = t->cache_local;
        unsigned long hash = memo__hash_bytes(m, key, key_len);
        ck_epoch_begin(&a.l->record, NULL);
        void *p = ck_hs_get(&memo__shard(m, hash)->bytes, hash, &a.probe);
        struct memo_local *l = a.l;
        memo_ref_t *r = a.ref;
        if (memo__likely(p != NULL && memo__is_lean(p))) {
            MEMO_ANN_GOT(p);
            struct memo_rec *rec = p;
            memo__count(&l->counters.hits);
            /* The section stays open: the ref pins it until memo_release. */
            r->data = memo__rec_value(rec);
            r->len = rec->b;
            r->memo__local = l;
            r->memo__pad = 0;
            return 0;
        }
        if (p != NULL && memo__is_policy(p) && memo__policy_hit_bytes(a.m, l, p, r))
            return 0;
        memo__section_end(l);
    }
    if (a.ref != NULL)
        memset(a.ref, 0, sizeof *a.ref);
    return memo__get_bytes_slow(a.m, a.probe.key, a.probe.head.a, a.fn, a.ctx, deadline, a.ref);
}

int memo_get(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx, memo_ref_t *ref)
{
    return memo__get_bytes(m, key, key_len, fn, ctx, 0, ref);
}

int memo_get_timed(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx,
                   uint64_t timeout_ns, memo_ref_t *ref)
{
    return memo__get_bytes(m, key, key_len, fn, ctx, memo__deadline(timeout_ns), ref);
}

void memo_release(memo_ref_t *ref)
{
    if (ref == NULL || ref->memo__local == NULL)
        return;
    struct memo_local *l = ref->memo__local;
    ref->memo__local = NULL;
    ref->data = NULL;
    ref->len = 0;
    /* A ref released after its thread's state for the memo was parked (a thread-key destructor
     * that runs after the last round of memo's own, memo.h): parking ended its section already,
     * and the local may be another thread's by now. */
    if (memo__likely(atomic_load_explicit(&l->thread, memory_order_relaxed) == memo__self))
        memo__section_end(l);
    else if (l->is_spare)
        memo__spare_end(l->memo);
}

/* ---- lookups and forgetting ---------------------------------------------------------------- */

/* Whether a lookup may return the record in slot p: a lean one always; a policy record if it
 * holds a value (not a stored failure) that has not expired. A lookup is an access: it sets the
 * record's visited bit as a hit does. */
static bool memo__lookup_live(struct memo *m, void *p)
{
    if (memo__is_lean(p))
        return true;
    MEMO_ANN_GOT(p);
    struct memo_pol *h = memo__pol_of(memo__slot_rec(p));
    if (h->code != 0 || (h->expires != UINT64_MAX && memo__policy_now(m->pol) >= h->expires))
        return false;
    if (atomic_load_explicit(&h->visited, memory_order_relaxed) == 0)
        atomic_store_explicit(&h->visited, 1, memory_order_relaxed);
    return true;
}

int memo_lookup(memo_t *m, const void *key, size_t key_len, memo_ref_t *ref)
{
    if (ref != NULL)
        memset(ref, 0, sizeof *ref);
    if (m == NULL || ref == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_key k;
    memo__key_bytes(&k, m, key, key_len);
    struct memo_local *l = memo__lookup_begin(m);
    void *p = ck_hs_get(&memo__shard(m, k.hash)->bytes, k.hash, &k.probe);
    if (p != NULL && !memo__is_marker(p) && memo__lookup_live(m, p)) {
        MEMO_ANN_GOT(p);
        struct memo_rec *r = memo__slot_rec(p);
        memo__count_hit(l);
        ref->data = memo__rec_value(r);
        ref->len = r->b;
        ref->memo__local = l;
        return 0;
    }
    memo__lookup_end(l);
    return MEMO_ENOENT;
}

int memo_lookup_u64(memo_t *m, uint64_t key, uint64_t *value)
{
    if (m == NULL || value == NULL)
        return MEMO_EINVAL;
    if (key < m->dense_n) {
        if (!memo__dense_hit(m->dense_chunks, m->dense, key, value))
            return MEMO_ENOENT;
        struct memo_local *l = memo__local(m);
        memo__count_hit(l != NULL ? l : m->spare); /* a lookup may not fail for want of memory */
        return 0;
    }
    unsigned long hash = memo__hash_u64(m, key);
    int rc = MEMO_ENOENT;
    struct memo_local *l = memo__lookup_begin(m);
    void *p = ck_hs_get(&memo__shard(m, hash)->u64, hash, &key);
    if (p != NULL && !memo__is_marker(p) && memo__lookup_live(m, p)) {
        MEMO_ANN_GOT(p);
        *value = memo__slot_rec(p)->b;
        memo__count_hit(l);
        rc = 0;
    }
    memo__lookup_end(l);
    return rc;
}

/* The local that forget and clear use: the calling thread's, or, when that cannot be made, the
 * memo's spare, locked until memo__spare_unlock (they work under shard locks, outside read-side
 * sections; see memo__spare_begin for lookups). Forgetting never fails for want of memory: the
 * API gives memo_forget no MEMO_ENOMEM, and memo_clear no error. */
static struct memo_local *memo__local_or_spare(struct memo *m)
{
    struct memo_local *l = memo__local(m);
    if (memo__likely(l != NULL))
        return l;
    memo__mutex_lock(&m->spare_lock);
    return m->spare;
}

static void memo__spare_unlock(struct memo *m, struct memo_local *l)
{
    if (l->is_spare)
        memo__mutex_unlock(&m->spare_lock);
}

/* Removes the key's slot. A stored record is retired (0); an in-flight marker is detached, so its
 * computation stores nothing and no later call waits on it (MEMO_ENOENT: nothing was stored). */
static int memo__forget(struct memo *m, struct memo_key *k)
{
    struct memo_local *l = memo__local_or_spare(m);
    struct memo_shard *s = memo__shard(m, k->hash);
    int rc = MEMO_ENOENT;
    memo__lock(m, s, l);
    void *p = ck_hs_remove(memo__table(s, k->kind), k->hash, memo__key_probe(k));
    if (p != NULL && memo__is_marker(p)) {
        /* Under the lock, which the owner takes to publish: it will see DETACHED. */
        atomic_fetch_or_explicit(&memo__slot_marker(p)->state, MEMO__DETACHED, memory_order_relaxed);
    } else if (p != NULL && memo__is_policy(p)) {
        /* A value or a stored failure: either is forgotten (0). A refresh of it that runs is
         * forgotten too: later calls compute afresh instead of waiting for it (and it stores
         * nothing: its old value is gone). */
        memo__refresh_forget_locked(m->pol, k->hash, k->kind);
        atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
        memo__policy_remove_locked(m, l, memo__pol_of(memo__slot_rec(p)), MEMO_REMOVED_FORGOTTEN);
        rc = 0;
    } else if (p != NULL) {
        atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
        memo__rec_retire(l, s, p, k->kind);
        rc = 0;
    }
    memo__unlock(m, s);
    memo__retire_poll(l);
    memo__spare_unlock(m, l);
    return rc;
}

int memo_forget(memo_t *m, const void *key, size_t key_len)
{
    if (m == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_key k;
    memo__key_bytes(&k, m, key, key_len);
    return memo__forget(m, &k);
}

int memo_forget_u64(memo_t *m, uint64_t key)
{
    if (m == NULL)
        return MEMO_EINVAL;
    if (key < m->dense_n) {
        struct memo_local *l = memo__local_or_spare(m);
        int rc = memo__dense_forget(m, key, l);
        memo__spare_unlock(m, l);
        return rc;
    }
    struct memo_key k;
    memo__key_u64(&k, m, key);
    return memo__forget(m, &k);
}

void memo_clear(memo_t *m)
{
    if (m == NULL)
        return;
    struct memo_local *l = memo__local_or_spare(m);
    if (m->pol != NULL) {
        memo__mutex_lock(&m->pol->lock);
        memo__refresh_forget_locked(m->pol, 0, 0);
        memo__mutex_unlock(&m->pol->lock);
    }
    for (unsigned i = 0; i < m->nshards; i++)
        memo__shard_clear(m, &m->shards[i], l);
    if (m->dense != NULL)
        memo__dense_clear(m, l);
    memo__epoch_poll(l);
    memo__epoch_poll_parked(m);
    memo__spare_unlock(m, l);
    if (!l->is_spare)
        memo__removals_run(l);
}

int memo_set_limits(memo_t *m, uint64_t max_entries, uint64_t max_bytes)
{
    if (m == NULL || m->pol == NULL)
        return MEMO_EINVAL;
    struct memo_local *l = memo__local_or_spare(m);
    memo__mutex_lock(&m->pol->lock);
    memo__policy_set_limits_locked(m, l, max_entries, max_bytes);
    memo__mutex_unlock(&m->pol->lock);
    memo__retire_poll(l);
    memo__spare_unlock(m, l);
    return 0;
}

void memo_stats(memo_t *m, memo_stats_t *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (m == NULL)
        return;
    int64_t bytes = 0, entries = 0;
    memo__mutex_lock(&m->locals_lock);
    for (struct memo_local *l = m->locals; l != NULL; l = l->next) {
        out->hits += atomic_load_explicit(&l->counters.hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&l->counters.misses, memory_order_relaxed);
        out->waits += atomic_load_explicit(&l->counters.waits, memory_order_relaxed);
        out->errors += atomic_load_explicit(&l->counters.errors, memory_order_relaxed);
        bytes += atomic_load_explicit(&l->counters.bytes, memory_order_relaxed);
        entries += atomic_load_explicit(&l->counters.entries, memory_order_relaxed);
    }
    memo__mutex_unlock(&m->locals_lock);
    for (unsigned i = 0; i < m->nshards; i++)
        entries += atomic_load_explicit(&m->shards[i].entries, memory_order_relaxed);
    out->entries = entries > 0 ? (uint64_t)entries : 0;
    out->evictions = m->pol != NULL ? atomic_load_explicit(&m->pol->evictions, memory_order_relaxed) : 0;
    out->bytes = bytes > 0 ? (uint64_t)bytes : 0;
}

/* ---- compute results ----------------------------------------------------------------------- */

/* Makes the record for a new value of len bytes, fills it from src if given, then puts it in
 * place of the one made before, which is freed only now: src may point into it (memo_result_set
 * from memo_result_alloc's own room). */
static void *memo__result_replace(memo_result_t *out, size_t len, const void *src)
{
    struct memo_local *l = memo__local(out->memo);
    if (l == NULL)
        return NULL;
    struct memo_marker *k = out->marker;
    struct memo_rec *r = memo__rec_big_new(l, memo__rec_key(&k->key), k->key.a, len);
    if (r == NULL)
        return NULL;
    if (len != 0 && src != NULL)
        memcpy(memo__rec_value(r), src, len);
    struct memo_rec *old = k->value_rec;
    k->value_rec = r;
    if (old != NULL)
        memo__rec_big_free_now(l, old); /* never published */
    return memo__rec_value(r);
}

void *memo_result_alloc(memo_result_t *out, size_t len)
{
    return out == NULL ? NULL : memo__result_replace(out, len, NULL);
}

int memo_result_set(memo_result_t *out, const void *value, size_t len)
{
    if (out == NULL || (value == NULL && len != 0))
        return MEMO_EINVAL;
    return memo__result_replace(out, len, value) != NULL ? 0 : MEMO_ENOMEM;
}

int memo_result_ttl(memo_result_t *out, uint64_t ttl_ns)
{
    /* A memo without a policy keeps no deadline in its records (memo.h). */
    if (out == NULL || out->memo->pol == NULL)
        return MEMO_EINVAL;
    out->marker->ttl = ttl_ns;
    out->marker->ttl_set = true;
    return 0;
}

/* ---- MEMO_DEFINE_U64 ----------------------------------------------------------------------- */

memo_t *memo__define_memo_config(memo_t *volatile *slot, const memo_config_t *cfg)
{
    memo_t *m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (m != NULL)
        return m;
    memo_t *fresh = NULL;
    int rc = memo_create(&fresh, cfg);
    if (rc != 0) {
        fprintf(stderr, "memo: creating a decorator's memo: %s\n", memo_strerror(rc));
        abort();
    }
    memo_t *expected = NULL;
    /* Acq_rel: the winner's memo is fully made before others see the pointer. */
    if (__atomic_compare_exchange_n(slot, &expected, fresh, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return fresh;
    memo_destroy(fresh);
    return expected;
}

memo_t *memo__define_memo(memo_t *volatile *slot)
{
    return memo__define_memo_config(slot, NULL);
}

memo_t *memo__define_memo_bounded(memo_t *volatile *slot, uint64_t max_entries)
{
    memo_t *m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (m != NULL)
        return m;
    memo_config_t c = MEMO_CONFIG_INIT;
    c.max_entries = max_entries;
    return memo__define_memo_config(slot, &c);
}

uint64_t memo__define_call(memo_t *m, uint64_t key, memo_fn_u64 *fn, const char *name)
{
    uint64_t value = 0;
    int rc = memo_get_u64(m, key, fn, NULL, &value);
    if (rc != 0) {
        fprintf(stderr, "memo: %s(%llu): %s\n", name, (unsigned long long)key, memo_strerror(rc));
        abort();
    }
    return value;
}

/* ---- MEMO_DEFINE ---------------------------------------------------------------------------- */

void memo__define_get(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *result, size_t result_len,
                      const char *name)
{
    memo_ref_t ref = MEMO_REF_INIT;
    int rc = memo_get(m, key, key_len, fn, NULL, &ref);
    MEMO__ASSERT(rc != 0 || ref.len == result_len, "every value of a decorator's memo is a result's bytes");
    if (rc == 0 && ref.len != result_len)
        rc = MEMO_EINVAL;
    if (rc != 0) {
        fprintf(stderr, "memo: %s: %s\n", name, memo_strerror(rc));
        abort();
    }
    memcpy(result, ref.data, result_len);
    memo_release(&ref);
}
