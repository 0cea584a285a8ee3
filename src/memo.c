/*
 * The public calls: creating and destroying memos, get-or-compute with in-flight markers,
 * lookups, forgetting, statistics, compute results and the decorator's helpers.
 *
 * A key's life in a shard's table:
 *
 *   absent --miss, under the shard lock--> marker (COMPUTING, owner's flight)
 *   marker --fn returned 0-->  u64:   the marker itself becomes READY with the value in it
 *                              bytes: the value's entry replaces the marker (ck_hs_set), and the
 *                                     marker becomes READY pointing to it, for its waiters
 *   marker --fn failed-->      removed, then FAILED(code): waiters take the code
 *   marker --owner died-->     removed, then ABANDONED: waiters retry, one of them computes
 *   marker --forget/clear-->   removed and DETACHED: its owner stores nothing, its waiters still
 *                              get its result, and the owner frees it
 *
 * Every removal is followed by an epoch-deferred free, so readers inside a section (hits, waiters,
 * holders of refs) never see freed memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "annotate.h"
#include "hash.h"
#include "internal.h"

/* What fn stores into: the value's entry, until it is published, hangs from the marker
 * (marker->bytes.final), where the fork handler finds it too. */
struct memo_result {
    struct memo       *memo;
    struct memo_entry *marker;  /* the key */
};

/* One computation run by the calling thread: what the cleanup handler needs if it dies. */
struct memo_flight_run {
    struct memo        *memo;
    struct memo_shard  *shard;
    struct memo_entry  *marker;
    struct memo_flight *flight; /* the marker's: read from here, since a stored u64 marker may be
                                   retired by a concurrent forget as soon as it is READY */
    struct memo_thread *self;
};

static inline void memo__count(_Atomic uint64_t *counter)
{
    /* Only the owning thread writes its counters: a plain increment, atomic only so that
     * memo_stats may read it from another thread. No shared cache line is written. */
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static inline void memo__section_end(struct memo_local *l)
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
    pthread_mutex_lock(&m->spare_lock);
    ck_epoch_begin(&m->spare->record, NULL);
    pthread_mutex_unlock(&m->spare_lock);
    return m->spare;
}

static void memo__spare_end(struct memo *m)
{
    pthread_mutex_lock(&m->spare_lock);
    memo__section_end(m->spare);
    pthread_mutex_unlock(&m->spare_lock);
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

static inline void memo__probe_u64(struct memo_probe *p, const struct memo *m, uint64_t key)
{
    p->head.kind = MEMO__KIND_PROBE;
    p->head.hash = memo__hash_u64(m, key);
    p->space = MEMO__KIND_U64;
    p->key_u64 = key;
}

static inline void memo__probe_bytes(struct memo_probe *p, const struct memo *m, const void *key,
                                     size_t key_len)
{
    p->head.kind = MEMO__KIND_PROBE;
    p->head.hash = memo__hash_bytes(m, key, key_len);
    p->space = MEMO__KIND_BYTES;
    p->key = key;
    p->key_len = key_len;
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
        ck_epoch_reclaim(&l->record);
    }
    memo__alloc_local = NULL;
    if (m->shards != NULL)
        memo__shards_destroy(m, m->locals);
    for (struct memo_local *l = m->locals, *next; l != NULL; l = next) {
        next = l->next;
        free(l);
    }
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
        if (cfg->struct_size < offsetof(memo_config_t, seed) + sizeof(uint64_t) ||
            cfg->struct_size > MEMO__CONFIG_MAX)
            return MEMO_EINVAL;
        if (cfg->struct_size > sizeof c) {
            const unsigned char *tail = (const unsigned char *)cfg + sizeof c;
            for (size_t i = 0; i < cfg->struct_size - sizeof c; i++)
                if (tail[i] != 0)
                    return MEMO_EINVAL;
        }
        memcpy(&c, cfg, sizeof c);
        c.struct_size = sizeof c;
    }
    if (c.flags & ~MEMO_F_SYSTEM_ALLOC)
        return MEMO_EINVAL;
    if (c.shards != 0 && ((c.shards & (c.shards - 1)) != 0 || c.shards > 4096))
        return MEMO_EINVAL;

    unsigned nshards = c.shards ? c.shards : memo__default_shards();
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
    m->nshards = nshards;
    pthread_mutex_init(&m->locals_lock, NULL);
    pthread_mutex_init(&m->spare_lock, NULL);
    ck_epoch_init(&m->epoch);
    memo__hash_init(m, c.seed);
    if (memo__spare_init(m) != 0 || memo__shards_init(m, c.expected_entries) != 0) {
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

/* Sets a marker's final state; wakes sleepers if the old word said there were any. Returns the
 * old word. The release pairs with the acquire loads of waiters (memo__wait, memo__get). */
static uint32_t memo__settle(struct memo_entry *marker, uint32_t state)
{
    uint32_t old = atomic_load_explicit(&marker->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&marker->state, &old,
                                                  state | (old & MEMO__DETACHED),
                                                  memory_order_acq_rel, memory_order_relaxed))
        ;
    if (old & MEMO__WAITERS)
        memo__wake(marker);
    return old;
}

/* fn failed (code != 0) or its owner died (code == 0): out of the table, then settled. */
static void memo__flight_fail(struct memo_flight_run *run, struct memo_local *l, int code)
{
    struct memo_entry *e = run->marker;
    pthread_mutex_lock(&run->shard->lock);
    memo__alloc_local = l;
    /* DETACHED only changes under this lock: if set, forget or clear already removed it. */
    if (!(atomic_load_explicit(&e->state, memory_order_relaxed) & MEMO__DETACHED))
        (void)ck_hs_remove(&run->shard->table, e->hash, e);
    memo__alloc_local = NULL;
    if (code != 0)
        memo__entry_set_code(e, code);
#if MEMO_MUTANT == 3 /* M3 no-wake-on-fail: the state changes, sleepers are not woken */
    if (code != 0)
        atomic_store_explicit(&e->state,
                              MEMO__FAILED | (atomic_load_explicit(&e->state, memory_order_relaxed) & MEMO__DETACHED),
                              memory_order_release);
    else
#endif
    (void)memo__settle(e, code != 0 ? MEMO__FAILED : MEMO__ABANDONED);
    pthread_mutex_unlock(&run->shard->lock);
    memo__flight_pop(run->self, run->flight);
    if (e->kind == MEMO__KIND_BYTES && e->bytes.final != NULL) {
        memo__entry_free_now(l, e->bytes.final); /* never published */
        e->bytes.final = NULL;
    }
    memo__entry_retire(l, e);
}

/* Cleanup handler: the computing thread is unwinding (pthread_exit, cancellation, a C++
 * exception through fn). Its waiters wake and retry. */
static void memo__flight_abandon(void *arg)
{
#if MEMO_MUTANT == 4 /* M4 no-death-cleanup: the dying owner's marker stays COMPUTING */
    if (arg != NULL)
        return;
#endif
    struct memo_flight_run *run = arg;
    struct memo_local *l = memo__local(run->memo);
    if (l == NULL) /* cannot happen: this thread's local exists since the miss */
        abort();
    memo__flight_fail(run, l, 0);
}

static void memo__flight_done_u64(struct memo_flight_run *run, struct memo_local *l, uint64_t value)
{
    struct memo_entry *e = run->marker;
#if MEMO_MUTANT == 5 /* M5 ready-before-value: READY is published, then the value written */
    uint32_t old = memo__settle(e, MEMO__READY);
    e->u64.value = value;
#else
    e->u64.value = value; /* ordered before READY by memo__settle's release */
    /* Once READY and stored, e belongs to the table: a forget or clear may retire it at once,
     * and this thread holds no section, so e is not touched again. */
    uint32_t old = memo__settle(e, MEMO__READY);
#endif
    memo__flight_pop(run->self, run->flight);
    if (old & MEMO__DETACHED)
        memo__entry_retire(l, e); /* not stored: its waiters have the value */
    else
        atomic_fetch_add_explicit(&run->shard->entries, 1, memory_order_relaxed);
}

/* Stores the value's entry in place of the marker and returns it; the caller is inside a section
 * that began before the entry became reachable, so the entry outlives its ref. */
static struct memo_entry *memo__flight_done_bytes(struct memo_flight_run *run, struct memo_local *l)
{
    struct memo_entry *e = run->marker, *final = e->bytes.final;
    atomic_store_explicit(&final->state, MEMO__READY, memory_order_relaxed);
    bool stored = false;
    pthread_mutex_lock(&run->shard->lock);
    memo__alloc_local = l;
    if (!(atomic_load_explicit(&e->state, memory_order_relaxed) & MEMO__DETACHED)) {
        void *previous = NULL;
        MEMO_ANN_PUBLISH(final);
        stored = ck_hs_set(&run->shard->table, e->hash, final, &previous);
        if (!stored) /* cannot happen when replacing: ck_hs_set grows only to insert */
            (void)ck_hs_remove(&run->shard->table, e->hash, e);
    }
    memo__alloc_local = NULL;
    (void)memo__settle(e, MEMO__READY | (stored ? 0u : MEMO__DETACHED));
    pthread_mutex_unlock(&run->shard->lock);
    memo__flight_pop(run->self, run->flight);
    if (stored)
        atomic_fetch_add_explicit(&run->shard->entries, 1, memory_order_relaxed);
    memo__entry_retire(l, e);
    if (!stored)
        memo__entry_retire(l, final); /* its waiters and this caller hold sections */
    return final;
}

/* ---- get or compute ------------------------------------------------------------------------ */

struct memo_call {
    struct memo       *memo;
    struct memo_local *local;
    struct memo_shard *shard;
    struct memo_probe  probe;
    uint64_t           deadline;   /* 0: none */
    memo_fn           *fn;
    memo_fn_u64       *fn_u64;
    void              *ctx;
    memo_ref_t        *ref;        /* bytes */
    uint64_t          *value;      /* u64 */
};

static void memo__deliver(struct memo_call *c, struct memo_entry *value_entry)
{
    if (c->probe.space == MEMO__KIND_U64) {
        *c->value = value_entry->u64.value;
        memo__section_end(c->local);
    } else {
        /* The section stays open: the ref pins it until memo_release. */
        c->ref->data = memo__entry_value(value_entry);
        c->ref->len = value_entry->bytes.value_len;
        c->ref->memo__local = c->local;
    }
}

/* A miss: insert a marker under the shard lock, then run fn outside every lock and section.
 * If another thread inserted the key first, sets *again and returns still inside the caller's
 * section (the caller looks again); otherwise the section has ended and the result is the call's
 * (0, a memo code, or fn's own code, which may be any int: hence the flag, not a code). */
static int memo__compute(struct memo_call *c, bool *again)
{
    struct memo_local *l = c->local;
    struct memo_shard *s = c->shard;
    struct memo_thread *self = memo__self;
    unsigned long hash = c->probe.head.hash;
    struct memo_entry *e;

    pthread_mutex_lock(&s->lock);
#if MEMO_MUTANT != 1 /* M1 double-compute: no re-check under the shard lock */
    if (ck_hs_get(&s->table, hash, &c->probe) != NULL) {
        pthread_mutex_unlock(&s->lock);
        *again = true;
        return 0;
    }
#else
    (void)again;
#endif
    memo__alloc_local = l;
    if (c->probe.space == MEMO__KIND_U64)
        e = memo__entry_new_u64(l, hash, c->probe.key_u64);
    else
        e = memo__entry_new_bytes(l, hash, c->probe.key, c->probe.key_len, 0);
    /* A full shard (memo.h, "Limits") is out of memory like a table that cannot grow. */
    bool room = ck_hs_count(&s->table) < MEMO__SHARD_ENTRIES_MAX;
    struct memo_flight *f = e != NULL && room ? memo__flight_push(self) : NULL;
    if (f != NULL) {
        e->flight = f;
        e->flight_seq = atomic_load_explicit(&f->seq, memory_order_relaxed);
        MEMO_ANN_PUBLISH(e);
#if MEMO_MUTANT == 1 /* ...and the marker replaces whatever the table holds for the key */
        void *replaced = NULL;
        if (!ck_hs_set(&s->table, hash, e, &replaced)) {
#else
        if (!ck_hs_put_unique(&s->table, hash, e)) {
#endif
#if MEMO_MUTANT != 9 /* M9 ignore-grow-fail: a failed insert is taken as done */
            memo__flight_pop(self, f);
            f = NULL;
#endif
        }
    }
    memo__alloc_local = NULL;
    pthread_mutex_unlock(&s->lock);
    memo__section_end(l); /* fn runs outside memo's read-side sections */
    if (f == NULL) {
        if (e != NULL)
            memo__entry_free_now(l, e);
        return MEMO_ENOMEM;
    }
    memo__count(&l->counters.misses);

    struct memo_result result = { c->memo, e };
    struct memo_flight_run run = { c->memo, s, e, f, self };
    uint64_t value = 0;
    int rc;
    pthread_cleanup_push(memo__flight_abandon, &run);
    if (c->probe.space == MEMO__KIND_U64)
        rc = c->fn_u64(c->ctx, c->probe.key_u64, &value);
    else
        rc = c->fn(c->ctx, c->probe.key, c->probe.key_len, &result);
    pthread_cleanup_pop(0);

    /* fn may have made this thread use other memos: the local is still this thread's. */
    if (rc == 0 && c->probe.space == MEMO__KIND_BYTES && e->bytes.final == NULL) {
        e->bytes.final = memo__entry_new_bytes(l, hash, c->probe.key, c->probe.key_len, 0);
        if (e->bytes.final == NULL)
            rc = MEMO_ENOMEM;
    }
    if (rc != 0) {
        memo__count(&l->counters.errors);
        memo__flight_fail(&run, l, rc);
        return rc;
    }
    if (c->probe.space == MEMO__KIND_U64) {
        memo__flight_done_u64(&run, l, value);
        *c->value = value;
        return 0;
    }
    ck_epoch_begin(&l->record, NULL); /* before the value can be forgotten and retired */
    struct memo_entry *final = memo__flight_done_bytes(&run, l);
    memo__deliver(c, final);
    return 0;
}

/* Everything after a first lookup that did not hit. Called inside a section. */
static int memo__get_slow(struct memo_call *c, struct memo_entry *e)
{
    struct memo_thread *self = memo__self;
    for (;;) {
        if (e == NULL) {
            bool again = false;
            int rc = memo__compute(c, &again);
            if (!again)
                return rc; /* compute ended the section (a ref's section is a new one) */
        } else {
            MEMO_ANN_GOT(e);
            uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
            switch (st & MEMO__STATE) {
            case MEMO__READY:
                if (st & MEMO__DETACHED) {
                    /* Forgotten, or a detached computation's value that was never stored:
                     * not a hit. Forget and clear detach and unlink under the shard lock,
                     * so the insert path finds the key free. */
                    e = NULL;
                    continue;
                }
                memo__count(&c->local->counters.hits);
                memo__deliver(c, c->probe.space == MEMO__KIND_BYTES && e->bytes.final != NULL ? e->bytes.final : e);
                return 0;
            case MEMO__COMPUTING: {
                int r = memo__wait(self, c->local, e, c->deadline);
                if (r == (int)MEMO__READY) {
                    memo__count(&c->local->counters.waits);
                    memo__deliver(c, c->probe.space == MEMO__KIND_BYTES ? e->bytes.final : e);
                    return 0;
                }
                if (r == (int)MEMO__FAILED) {
                    int code = memo__entry_code(e);
                    memo__count(&c->local->counters.waits);
                    memo__section_end(c->local);
                    return code;
                }
                if (r < 0) { /* MEMO_EDEADLK, MEMO_ETIMEDOUT */
#if MEMO_MUTANT == 8 /* M8 timeout-removes: a timed-out waiter takes the marker out, as forget does */
                    if (r == MEMO_ETIMEDOUT) {
                        pthread_mutex_lock(&c->shard->lock);
                        if ((atomic_fetch_or(&e->state, MEMO__DETACHED) & MEMO__DETACHED) == 0) {
                            memo__alloc_local = c->local;
                            (void)ck_hs_remove(&c->shard->table, e->hash, e);
                            memo__alloc_local = NULL;
                        }
                        pthread_mutex_unlock(&c->shard->lock);
                    }
#endif
                    memo__section_end(c->local);
                    return r;
                }
                break; /* ABANDONED: look again; one of the waiters computes afresh */
            }
            default:
                break; /* FAILED or ABANDONED: already out of the table; look again */
            }
        }
        e = ck_hs_get(&c->shard->table, c->probe.head.hash, &c->probe);
    }
}

/* The hit path: no lock, no shared write, no system call. */
static inline int memo__get_u64(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx,
                                uint64_t deadline, uint64_t *value)
{
    if (memo__unlikely(m == NULL || fn == NULL || value == NULL))
        return MEMO_EINVAL;
    struct memo_local *l = memo__local(m);
    if (memo__unlikely(l == NULL))
        return MEMO_ENOMEM;
    struct memo_probe p;
    memo__probe_u64(&p, m, key);
    struct memo_shard *s = memo__shard(m, p.head.hash);
    ck_epoch_begin(&l->record, NULL);
    struct memo_entry *e = ck_hs_get(&s->table, p.head.hash, &p);
    if (memo__likely(e != NULL)) {
        MEMO_ANN_GOT(e);
        /* Acquire: pairs with memo__settle's release, so the value is the one stored. */
        if (memo__likely(memo__stored(atomic_load_explicit(&e->state, memory_order_acquire)))) {
            *value = e->u64.value;
            memo__section_end(l);
            memo__count(&l->counters.hits);
            return 0;
        }
    }
    struct memo_call c = { m, l, s, p, deadline, NULL, fn, ctx, NULL, value };
    return memo__get_slow(&c, e);
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

static int memo__get_bytes(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx,
                           uint64_t deadline, memo_ref_t *ref)
{
    if (ref != NULL)
        memset(ref, 0, sizeof *ref);
    if (m == NULL || fn == NULL || ref == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_local *l = memo__local(m);
    if (l == NULL)
        return MEMO_ENOMEM;
    struct memo_call c = { m, l, NULL, { .space = 0 }, deadline, fn, NULL, ctx, ref, NULL };
    memo__probe_bytes(&c.probe, m, key, key_len);
    c.shard = memo__shard(m, c.probe.head.hash);
    ck_epoch_begin(&c.local->record, NULL);
    struct memo_entry *e = ck_hs_get(&c.shard->table, c.probe.head.hash, &c.probe);
    if (memo__likely(e != NULL)) {
        MEMO_ANN_GOT(e);
        if (memo__stored(atomic_load_explicit(&e->state, memory_order_acquire)) &&
            e->bytes.final == NULL) {
            memo__count(&c.local->counters.hits);
            memo__deliver(&c, e);
            return 0;
        }
    }
    return memo__get_slow(&c, e);
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
    /* A ref released after its thread's state for the memo was parked (a thread-key destructor
     * that runs after the last round of memo's own, memo.h): parking ended its section already,
     * and the local may be another thread's by now. */
    if (memo__likely(l->is_spare ||
                     (memo__self != NULL && atomic_load_explicit(&l->thread, memory_order_relaxed) == memo__self)))
        memo__lookup_end(l);
    memset(ref, 0, sizeof *ref);
}

/* ---- lookups and forgetting ---------------------------------------------------------------- */

int memo_lookup(memo_t *m, const void *key, size_t key_len, memo_ref_t *ref)
{
    if (ref != NULL)
        memset(ref, 0, sizeof *ref);
    if (m == NULL || ref == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_probe p;
    memo__probe_bytes(&p, m, key, key_len);
    struct memo_local *l = memo__lookup_begin(m);
    struct memo_entry *e = ck_hs_get(&memo__shard(m, p.head.hash)->table, p.head.hash, &p);
    if (e != NULL) {
        MEMO_ANN_GOT(e);
        if (memo__stored(atomic_load_explicit(&e->state, memory_order_acquire))) {
            /* A marker that has just become READY is still found until replaced: its value
             * is the entry it points to (written before READY). */
            struct memo_entry *v = e->bytes.final != NULL ? e->bytes.final : e;
            memo__count_hit(l);
            ref->data = memo__entry_value(v);
            ref->len = v->bytes.value_len;
            ref->memo__local = l;
            return 0;
        }
    }
    memo__lookup_end(l);
    return MEMO_ENOENT;
}

int memo_lookup_u64(memo_t *m, uint64_t key, uint64_t *value)
{
    if (m == NULL || value == NULL)
        return MEMO_EINVAL;
    struct memo_probe p;
    memo__probe_u64(&p, m, key);
    int rc = MEMO_ENOENT;
    struct memo_local *l = memo__lookup_begin(m);
    struct memo_entry *e = ck_hs_get(&memo__shard(m, p.head.hash)->table, p.head.hash, &p);
    if (e != NULL) {
        MEMO_ANN_GOT(e);
        if (memo__stored(atomic_load_explicit(&e->state, memory_order_acquire))) {
            *value = e->u64.value;
            memo__count_hit(l);
            rc = 0;
        }
    }
    memo__lookup_end(l);
    return rc;
}

/* The local that forget and clear use: the calling thread's, or, when that cannot be made, the
 * memo's spare, locked until memo__spare_put (they work under shard locks, outside read-side
 * sections; see memo__spare_begin for lookups). Forgetting never fails for want of memory: the
 * API gives memo_forget no MEMO_ENOMEM, and memo_clear no error. */
static struct memo_local *memo__local_or_spare(struct memo *m)
{
    struct memo_local *l = memo__local(m);
    if (memo__likely(l != NULL))
        return l;
    pthread_mutex_lock(&m->spare_lock);
    return m->spare;
}

static void memo__spare_put(struct memo *m, struct memo_local *l)
{
    if (l->is_spare)
        pthread_mutex_unlock(&m->spare_lock);
}

/* Removes the key's entry. A stored value is retired (0); an in-flight marker is detached, so its
 * computation stores nothing and no later call waits on it (MEMO_ENOENT: nothing was stored). */
static int memo__forget(struct memo *m, struct memo_probe *p)
{
    struct memo_local *l = memo__local_or_spare(m);
    struct memo_shard *s = memo__shard(m, p->head.hash);
    int rc = MEMO_ENOENT;
    pthread_mutex_lock(&s->lock);
    memo__alloc_local = l;
    struct memo_entry *e = ck_hs_remove(&s->table, p->head.hash, p);
    memo__alloc_local = NULL;
    if (e != NULL) {
        /* Unlinked first, detached last: see memo__shard_clear. The old word decides who frees
         * a u64 marker, and once DETACHED is set its owner may free it at any time (this thread
         * holds no read-side section): nothing here may touch it after the fetch_or. */
        uint32_t old = atomic_fetch_or_explicit(&e->state, MEMO__DETACHED, memory_order_acq_rel);
        if ((old & MEMO__STATE) != MEMO__COMPUTING) {
            atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
            rc = 0;
        } else {
            e = NULL; /* the owner's */
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (e != NULL)
        memo__entry_retire(l, e);
    memo__spare_put(m, l);
    return rc;
}

int memo_forget(memo_t *m, const void *key, size_t key_len)
{
    if (m == NULL || (key == NULL && key_len != 0))
        return MEMO_EINVAL;
    struct memo_probe p;
    memo__probe_bytes(&p, m, key, key_len);
    return memo__forget(m, &p);
}

int memo_forget_u64(memo_t *m, uint64_t key)
{
    if (m == NULL)
        return MEMO_EINVAL;
    struct memo_probe p;
    memo__probe_u64(&p, m, key);
    return memo__forget(m, &p);
}

void memo_clear(memo_t *m)
{
    if (m == NULL)
        return;
    struct memo_local *l = memo__local_or_spare(m);
    for (unsigned i = 0; i < m->nshards; i++)
        memo__shard_clear(m, &m->shards[i], l);
    memo__epoch_poll(l);
    memo__epoch_poll_parked(m);
    memo__spare_put(m, l);
}

void memo_stats(memo_t *m, memo_stats_t *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (m == NULL)
        return;
    int64_t bytes = 0, entries = 0;
    pthread_mutex_lock(&m->locals_lock);
    for (struct memo_local *l = m->locals; l != NULL; l = l->next) {
        out->hits += atomic_load_explicit(&l->counters.hits, memory_order_relaxed);
        out->misses += atomic_load_explicit(&l->counters.misses, memory_order_relaxed);
        out->waits += atomic_load_explicit(&l->counters.waits, memory_order_relaxed);
        out->errors += atomic_load_explicit(&l->counters.errors, memory_order_relaxed);
        bytes += atomic_load_explicit(&l->counters.bytes, memory_order_relaxed);
    }
    pthread_mutex_unlock(&m->locals_lock);
    for (unsigned i = 0; i < m->nshards; i++)
        entries += atomic_load_explicit(&m->shards[i].entries, memory_order_relaxed);
    out->entries = entries > 0 ? (uint64_t)entries : 0;
    out->evictions = 0; /* no bounds yet: nothing is ever evicted */
    out->bytes = bytes > 0 ? (uint64_t)bytes : 0;
}

/* ---- compute results ----------------------------------------------------------------------- */

/* Makes the room for a new value of len bytes, fills it from src if given, then puts it in place
 * of the value made before, which is freed only now: src may point into it (memo_result_set from
 * memo_result_alloc's own room). */
static void *memo__result_replace(memo_result_t *out, size_t len, const void *src)
{
    struct memo_local *l = memo__local(out->memo);
    if (l == NULL)
        return NULL;
    struct memo_entry *k = out->marker;
    struct memo_entry *e = memo__entry_new_bytes(l, k->hash, memo__entry_key(k), k->bytes.key_len, len);
    if (e == NULL)
        return NULL;
    if (len != 0 && src != NULL)
        memcpy(memo__entry_value(e), src, len);
    struct memo_entry *old = k->bytes.final;
    k->bytes.final = e;
    if (old != NULL)
        memo__entry_free_now(l, old); /* never published */
    return memo__entry_value(e);
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

/* ---- MEMO_DEFINE_U64 ----------------------------------------------------------------------- */

memo_t *memo__define_memo(memo_t *volatile *slot)
{
    memo_t *m = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (m != NULL)
        return m;
    memo_t *fresh = NULL;
    int rc = memo_create(&fresh, NULL);
    if (rc != 0) {
        fprintf(stderr, "memo: creating a MEMO_DEFINE_U64 memo: %s\n", memo_strerror(rc));
        abort();
    }
    memo_t *expected = NULL;
    /* Acq_rel: the winner's memo is fully made before others see the pointer. */
    if (__atomic_compare_exchange_n(slot, &expected, fresh, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return fresh;
    memo_destroy(fresh);
    return expected;
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
