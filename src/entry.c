/*
 * Records, markers and stores (their layout is in internal.h): making them, freeing them after
 * their grace period, and the callbacks through which ck_hs hashes and compares them.
 *
 * Reclamation: markers and big records carry their own ck_epoch entry (a policy record's is its
 * list links, free once it is out of its list). Store records carry
 * nothing: a retired one is appended to the retiring thread's batch, and a whole batch goes
 * through the epoch as one entry, when it is full or when the thread polls. A record whose batch
 * cannot be had (memory ran out) stays allocated in its store until the store is dropped, which
 * loses nothing: a store's slabs are freed whole.
 */
#include <stdlib.h>
#include <string.h>

#include "annotate.h"
#include "hash.h"
#include "internal.h"

/* Under ASan, the free parts of a store are poisoned (ASan cannot see inside slabs otherwise): a
 * record read after its grace period, or a slab byte never handed out, is reported like a use
 * after free. A free record keeps its first word readable: its link. */
#if defined(__SANITIZE_ADDRESS__)
#define MEMO__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang's way of saying it */
#define MEMO__ASAN 1
#endif
#endif
#ifdef MEMO__ASAN
#include <sanitizer/asan_interface.h>
#define MEMO__POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define MEMO__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define MEMO__POISON(p, n) ((void)(p), (void)(n))
#define MEMO__UNPOISON(p, n) ((void)(p), (void)(n))
#endif

_Static_assert(sizeof(struct memo_rec) == 16, "a u64 record is its key and value");
_Static_assert(alignof(max_align_t) <= MEMO__ALIGN, "values are aligned for any type");
_Static_assert(offsetof(struct memo_big, rec) % 16 == 0, "a big record is 16-aligned");
_Static_assert(sizeof(struct memo_pol) % MEMO__ALIGN == 0, "a policy record is as aligned as its block");
_Static_assert(offsetof(struct memo_pol, retire) == 0 && sizeof(ck_epoch_entry_t) == 2 * sizeof(void *),
               "a retired policy record's epoch entry is its list links, no more");
_Static_assert(sizeof(struct memo_slab) % 16 == 0, "slab records start 16-aligned");
_Static_assert(offsetof(struct memo_marker, key) % 8 == 0, "a marker's slot has its low bit free for the tag");

/* ---- markers ------------------------------------------------------------------------------- */

/* u64 markers (all of one size) that a local keeps for reuse once their grace period is over:
 * a miss then costs no malloc and no free. Not with MEMO_F_SYSTEM_ALLOC, whose byte counts come
 * back exactly and whose every block a sanitizer sees freed. */
#define MEMO__MARKERS_KEPT 64

struct memo_marker *memo__marker_new(struct memo_local *l, unsigned kind, unsigned long hash,
                                     uint64_t key_u64, const void *key, size_t key_len)
{
    size_t size = sizeof(struct memo_marker);
    struct memo_marker *k;
    if (kind == MEMO__KIND_U64 && l->markers != NULL) {
        k = l->markers;
        l->markers = *(struct memo_marker **)k;
        l->nmarkers--;
    } else {
        if (kind == MEMO__KIND_BYTES) {
            if (key_len > SIZE_MAX - size)
                return NULL;
            size += key_len;
        }
        if ((k = memo__mem_alloc(l, size)) == NULL)
            return NULL;
    }
    atomic_init(&k->state, MEMO__COMPUTING);
    k->kind = kind;
    k->hash = hash;
    k->flight = NULL;
    k->flight_seq = 0;
    k->value_rec = NULL;
    k->value = 0;
    k->alloc_size = size;
    k->ttl = 0;
    k->ttl_set = false;
    if (kind == MEMO__KIND_U64) {
        k->key.a = key_u64;
        k->key.b = 0;
    } else {
        k->key.a = key_len;
        k->key.b = 0;
        if (key_len != 0)
            memcpy(memo__rec_key(&k->key), key, key_len);
    }
    return k;
}

void memo__marker_free_now(struct memo_local *l, struct memo_marker *k)
{
    /* Not with a policy either: max_bytes counts what memo holds, and kept markers would be. */
    if (k->kind == MEMO__KIND_U64 && l->nmarkers < MEMO__MARKERS_KEPT && !l->memo->system_alloc &&
        l->memo->pol == NULL) {
        *(struct memo_marker **)k = l->markers;
        l->markers = k;
        l->nmarkers++;
        return;
    }
    memo__mem_free(l, k, k->alloc_size);
}

/* memo_destroy: the markers l kept. */
void memo__markers_drop(struct memo_local *l)
{
    while (l->markers != NULL) {
        struct memo_marker *k = l->markers;
        l->markers = *(struct memo_marker **)k;
        memo__mem_free(l, k, k->alloc_size);
    }
    l->nmarkers = 0;
}

static void memo__marker_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_marker *k = (struct memo_marker *)retire; /* retire is the first member */
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    if (l->memo->pol != NULL)
        memo__mem_account(l, (int64_t)k->alloc_size); /* counted out when it was retired */
    memo__marker_free_now(l, k);
}

/* ---- stores -------------------------------------------------------------------------------- */

static inline unsigned memo__class_of(size_t size)
{
    return (unsigned)((size + MEMO__ALIGN - 1) / MEMO__ALIGN) - 1;
}

struct memo_store *memo__store_new(struct memo_local *l)
{
    struct memo_store *st = memo__mem_alloc(l, sizeof *st);
    if (st == NULL)
        return NULL;
    memset(st, 0, sizeof *st);
    atomic_init(&st->refs, 1);
    for (unsigned c = 0; c < MEMO__CLASSES; c++)
        atomic_init(&st->reclaimed[c], NULL);
    return st;
}

void memo__store_free(struct memo_local *l, struct memo_store *st)
{
    for (struct memo_slab *sl = st->slabs, *next; sl != NULL; sl = next) {
        next = sl->next;
        MEMO__UNPOISON(sl, sl->size);
        memo__mem_free(l, sl, sl->size);
    }
    memo__mem_free(l, st, sizeof *st);
}

/* One reference to st less: the shard's (a clear replaced it) or a retired record's (it came
 * back). The last one frees the store and its slabs. */
static void memo__store_unref(struct memo_local *l, struct memo_store *st)
{
    /* acq_rel: every push of a record into st happens before the free. */
    if (atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
        memo__store_free(l, st);
}

static void memo__store_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_store *st = (struct memo_store *)retire;
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    memo__store_unref(l, st);
}

/* A clear replaced st: it goes, with every record in it, once no reader can see them. */
void memo__store_retire(struct memo_local *l, struct memo_store *st)
{
    ck_epoch_call(&l->record, &st->retire, memo__store_reclaim);
}

/* A record of class c from s's store, made on first use; NULL when memory ran out. */
static void *memo__store_alloc_locked(struct memo_local *l, struct memo_shard *s, unsigned c)
{
    struct memo_store *st = s->store;
    if (st == NULL && (st = s->store = memo__store_new(l)) == NULL)
        return NULL;
    void *r = st->free[c];
    if (r == NULL) {
        /* Acquire: pairs with the release of the pushes, so the links read are theirs. */
        r = atomic_exchange_explicit(&st->reclaimed[c], NULL, memory_order_acquire);
    }
    size_t size = ((size_t)c + 1) * 16;
    if (r != NULL) {
        st->free[c] = *(void **)r;
        MEMO__UNPOISON(r, size);
        return r;
    }
    if ((size_t)(st->end - st->bump) < size) {
        /* The rest of the old slab, if any, is left unused: at most MEMO__CLASS_MAX bytes. */
        size_t slab = st->slabs == NULL ? MEMO__SLAB_FIRST : st->slabs->size * 2;
        slab = slab < MEMO__SLAB_SIZE ? slab : MEMO__SLAB_SIZE;
        struct memo_slab *sl = memo__mem_alloc(l, slab);
        if (sl == NULL)
            return NULL;
        sl->next = st->slabs;
        sl->size = slab;
        st->slabs = sl;
        st->bump = (unsigned char *)(sl + 1);
        st->end = (unsigned char *)sl + slab;
        MEMO__POISON(st->bump, (size_t)(st->end - st->bump));
    }
    r = st->bump;
    st->bump += size;
    MEMO__UNPOISON(r, size);
    return r;
}

/* A record back from its grace period: onto its store's stack for its class (lock-free: the
 * writer takes the whole stack at once, so no pop races a push), then one ref of the store less. */
static void memo__store_put(struct memo_local *l, struct memo_store *st, struct memo_rec *r, unsigned c)
{
    MEMO__POISON((unsigned char *)r + sizeof(void *), ((size_t)c + 1) * 16 - sizeof(void *));
    void *head = atomic_load_explicit(&st->reclaimed[c], memory_order_relaxed);
    do
        *(void **)r = head;
    while (!atomic_compare_exchange_weak_explicit(&st->reclaimed[c], &head, r, memory_order_release,
                                                  memory_order_relaxed));
    memo__store_unref(l, st);
}

/* ---- records ------------------------------------------------------------------------------- */

bool memo__rec_is_big(const struct memo *m, const struct memo_rec *r, unsigned kind)
{
    if (m->system_alloc || m->pol != NULL)
        return true;
    return kind == MEMO__KIND_BYTES && memo__rec_size(r->a, r->b) > MEMO__CLASS_MAX;
}

/* A big record's block: a memo_big, or with a policy its header (struct memo_pol, the block's
 * start). */
static void *memo__big_block(const struct memo *m, struct memo_rec *r)
{
    if (m->pol != NULL)
        return memo__pol_of(r);
    return (unsigned char *)r - offsetof(struct memo_big, rec);
}

static size_t memo__big_size(const struct memo *m, struct memo_rec *r)
{
    return m->pol != NULL ? memo__pol_size(memo__pol_of(r)) : ((struct memo_big *)memo__big_block(m, r))->size;
}

/* A big record of rec_size bytes (kind: what memo__pol_size needs to find the size again). */
static struct memo_rec *memo__big_new(struct memo_local *l, size_t rec_size, unsigned kind)
{
    bool pol = l->memo->pol != NULL;
    size_t head = pol ? sizeof(struct memo_pol) : offsetof(struct memo_big, rec);
    if (rec_size > SIZE_MAX - head)
        return NULL;
    size_t size = head + rec_size;
    if (pol) {
        struct memo_pol *e = memo__mem_alloc(l, size);
        if (e == NULL)
            return NULL;
        memset(e, 0, sizeof *e);
        e->expires = UINT64_MAX;
        e->kind = (uint8_t)kind;
        return memo__pol_rec(e);
    }
    struct memo_big *b = memo__mem_alloc(l, size);
    if (b == NULL)
        return NULL;
    b->size = size;
    return &b->rec;
}

struct memo_rec *memo__rec_u64_new_locked(struct memo_local *l, struct memo_shard *s, uint64_t key,
                                          uint64_t value)
{
    if (l->memo->pol != NULL)
        return memo__rec_pol_u64_new(l, key, value);
    struct memo_rec *r = l->memo->system_alloc ? memo__big_new(l, sizeof *r, MEMO__KIND_U64) :
                                                 memo__store_alloc_locked(l, s, 0);
    if (r != NULL) {
        r->a = key;
        r->b = value;
    }
    return r;
}

/* A policy memo's u64 record (no lock needed: it is malloc'd alone). */
struct memo_rec *memo__rec_pol_u64_new(struct memo_local *l, uint64_t key, uint64_t value)
{
    struct memo_rec *r = memo__big_new(l, sizeof *r, MEMO__KIND_U64);
    if (r != NULL) {
        r->a = key;
        r->b = value;
    }
    return r;
}

/* A byte-key record that fn fills: always big (fn runs outside the shard lock, so it cannot
 * carve from the store); memo__rec_publishable_locked moves a small one into the store. */
struct memo_rec *memo__rec_big_new(struct memo_local *l, const void *key, size_t key_len, size_t value_len)
{
    size_t offset = memo__rec_value_offset(key_len);
    if (key_len > SIZE_MAX - 32 || value_len > SIZE_MAX - offset)
        return NULL;
    struct memo_rec *r = memo__big_new(l, offset + value_len, MEMO__KIND_BYTES);
    if (r == NULL)
        return NULL;
    r->a = key_len;
    r->b = value_len;
    if (key_len != 0)
        memcpy(memo__rec_key(r), key, key_len);
    return r;
}

void memo__rec_big_free_now(struct memo_local *l, struct memo_rec *r)
{
    memo__mem_free(l, memo__big_block(l->memo, r), memo__big_size(l->memo, r));
}

/* The record to publish for fn's value: the pending big record itself, or, when it is small and
 * the memo packs records, a copy of it carved from s's store (the pending one is then freed;
 * nobody else has seen it). NULL when the copy cannot be had (memory ran out). */
struct memo_rec *memo__rec_publishable_locked(struct memo_local *l, struct memo_shard *s,
                                              struct memo_rec *pending)
{
    size_t size = memo__rec_size(pending->a, pending->b);
    if (memo__rec_is_big(l->memo, pending, MEMO__KIND_BYTES))
        return pending;
    struct memo_rec *r = memo__store_alloc_locked(l, s, memo__class_of(size));
    if (r == NULL)
        return NULL; /* a small record is always in a store: that is how it is told apart */
    memcpy(r, pending, size);
    memo__rec_big_free_now(l, pending);
    return r;
}

static void memo__big_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_big *b = (struct memo_big *)retire;
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    memo__mem_free(l, b, b->size);
}

/* A policy record that was never stored (not admitted, or its computation detached): its bytes
 * left the memo's count when it was retired (memo__rec_retire_big), as a stored one's do. */
static void memo__pol_reclaim_silent(ck_epoch_entry_t *retire)
{
    struct memo_pol *e = (struct memo_pol *)retire; /* retire is the first member */
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    size_t size = memo__pol_size(e);
    memo__mem_account(l, (int64_t)size);
    memo__mem_free(l, e, size);
}

/* A stored policy record's grace period is over. Its bytes left the memo's count when it was
 * retired (memo__pol_retire); it is freed now, or, if the memo has a removal callback and it held
 * a value (not a failure), handed to memo__removals_run, which calls back and frees. */
static void memo__pol_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_pol *e = (struct memo_pol *)retire; /* retire is the first member */
    struct memo_local *l = memo__alloc_local;
    struct memo_policy *p = l->memo->pol;
    MEMO_ANN_RECLAIM(l->memo);
    if (p->on_removal != NULL && e->code == 0) {
        struct memo_pol *head = atomic_load_explicit(&p->removed, memory_order_relaxed);
        do
            e->retire.stack_entry.next = (ck_stack_entry_t *)head;
        while (!atomic_compare_exchange_weak_explicit(&p->removed, &head, e, memory_order_release,
                                                      memory_order_relaxed));
        return;
    }
    size_t size = memo__pol_size(e);
    memo__mem_account(l, (int64_t)size);
    memo__mem_free(l, e, size);
}

/* Retires e's record, just taken out of its table and its list: its bytes leave the memo's count
 * now (what memo_stats.bytes and max_bytes see), its memory once no reader can hold it. Its list
 * links become its epoch entry: e must be out of its list (nobody reads them after). */
void memo__pol_retire(struct memo_local *l, struct memo_pol *e)
{
    MEMO__ASSERT(e->list == MEMO__LIST_NONE, "a policy record is retired out of its list");
    memo__mem_account(l, -(int64_t)memo__pol_size(e));
    ck_epoch_call(&l->record, &e->retire, memo__pol_reclaim);
}

static void memo__batch_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_batch *b = (struct memo_batch *)retire;
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    for (unsigned i = 0; i < b->n; i++)
        memo__store_put(l, b->item[i].store, b->item[i].rec, b->cls[i]);
    b->n = 0;
    if (l->reserve == NULL)
        l->reserve = b; /* recycled: the next seal needs no malloc */
    else
        memo__mem_free(l, b, sizeof *b);
}

/* Hands l's batch to the epoch: its records are freed once no reader can hold them. */
void memo__batch_seal(struct memo_local *l)
{
    struct memo_batch *b = l->batch;
    if (b == NULL || b->n == 0)
        return;
    l->batch = NULL;
    ck_epoch_call(&l->record, &b->retire, memo__batch_reclaim);
}

/* Retires a big record that was never published (a detached computation's value, which its
 * waiters may still be reading). */
void memo__rec_retire_big(struct memo_local *l, struct memo_rec *r)
{
    if (l->memo->pol != NULL) {
        struct memo_pol *e = memo__pol_of(r); /* never in a list */
        memo__mem_account(l, -(int64_t)memo__pol_size(e));
        ck_epoch_call(&l->record, &e->retire, memo__pol_reclaim_silent);
    }
    else
        ck_epoch_call(&l->record, &((struct memo_big *)memo__big_block(l->memo, r))->retire, memo__big_reclaim);
}

/* Retires r, a record just removed from one of s's tables (under s's lock): freed once no reader
 * can hold it. A small record in a table is always in s's store (memo__rec_publishable_locked),
 * so its size tells which. Does not poll (the caller holds the lock): memo__retire_poll does,
 * afterwards. */
void memo__rec_retire(struct memo_local *l, struct memo_shard *s, struct memo_rec *r, unsigned kind)
{
    if (l->memo->pol != NULL) {
        memo__pol_retire(l, memo__pol_of(r));
        return;
    }
    if (memo__rec_is_big(l->memo, r, kind)) {
        ck_epoch_call(&l->record, &((struct memo_big *)memo__big_block(l->memo, r))->retire, memo__big_reclaim);
        return;
    }
    struct memo_batch *b = l->batch;
    if (b == NULL || b->n == MEMO__BATCH) {
        memo__batch_seal(l);
        if ((b = l->reserve) != NULL)
            l->reserve = NULL;
        else if ((b = memo__mem_alloc(l, sizeof *b)) == NULL)
            return; /* r stays in its store until the store goes (see the top of this file) */
        b->n = 0;
        l->batch = b;
    }
    struct memo_store *st = s->store;
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed); /* dropped by store_put */
    b->item[b->n].rec = r;
    b->item[b->n].store = st;
    b->cls[b->n] = (unsigned char)memo__class_of(kind == MEMO__KIND_U64 ? sizeof *r : memo__rec_size(r->a, r->b));
    b->n++;
}

void memo__marker_retire(struct memo_local *l, struct memo_marker *k)
{
    /* With a policy, what waits for its grace period is not counted in memo_stats.bytes, so
     * that max_bytes holds once calls are over (records, markers and slot arrays alike). */
    if (l->memo->pol != NULL)
        memo__mem_account(l, -(int64_t)k->alloc_size);
    ck_epoch_call(&l->record, &k->retire, memo__marker_reclaim);
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
    struct memo_pol *e = atomic_exchange_explicit(&p->removed, NULL, memory_order_acquire);
    while (e != NULL) {
        struct memo_pol *next = (struct memo_pol *)e->retire.stack_entry.next;
        struct memo_rec *r = memo__pol_rec(e);
        memo_removal_t rm;
        if (e->kind == MEMO__KIND_U64) {
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
        rm.reason = e->reason;
        p->on_removal(p->removal_ctx, &rm);
        size_t size = memo__pol_size(e);
        memo__mem_account(l, (int64_t)size); /* counted out when it was retired */
        memo__mem_free(l, e, size);
        e = next;
    }
}

/* ---- polling ------------------------------------------------------------------------------- */

#define MEMO__POLL_EVERY 64 /* deferred frees between two attempts to reclaim */

/* Seals l's batch and frees what the epoch allows, then sets when retiring polls next:
 * MEMO__POLL_EVERY deferred frees from now, whatever this poll achieved. Not at every retire
 * while frees stay pending (a reader that pins the epoch: a ref held long, a long wait): a poll
 * scans every thread's record, so that would make each retire O(threads). And not later and
 * later either (an exponential back-off while polls fail): one unlucky poll, while a reader's
 * section still belonged to the previous epoch, would then double the pending list, and under
 * steady readers it never came back. */
void memo__epoch_poll(struct memo_local *l)
{
    struct memo_local *saved = memo__alloc_local;
    memo__alloc_local = l;
    memo__batch_seal(l);
    (void)ck_epoch_poll(&l->record);
    memo__alloc_local = saved;
    l->poll_at = l->record.n_pending + MEMO__POLL_EVERY;
}

/* Polls the records of m's parked locals (threads that exited with frees still pending), from a
 * thread that is polling its own: nobody else would, until a new thread took such a local or
 * memo_destroy ran. Under locals_lock, which stands for the owner of a parked local; skipped
 * when another thread holds it (the next poll tries again). */
void memo__epoch_poll_parked(struct memo *m)
{
    if (!atomic_load_explicit(&m->parked_pending, memory_order_relaxed))
        return;
    if (pthread_mutex_trylock(&m->locals_lock) != 0)
        return;
    bool pending = false;
    for (struct memo_local *p = m->parked; p != NULL; p = p->next_parked) {
        if (p->record.n_pending != 0)
            memo__epoch_poll(p);
        pending |= p->record.n_pending != 0;
    }
    atomic_store_explicit(&m->parked_pending, pending, memory_order_relaxed);
    memo__mutex_unlock(&m->locals_lock);
}

/* After retiring, with no memo lock held: polls once enough frees are pending, counting a
 * batch's records one by one. */
void memo__retire_poll(struct memo_local *l)
{
    unsigned pending = l->record.n_pending + (l->batch != NULL ? l->batch->n : 0);
    unsigned at = l->poll_at > MEMO__POLL_EVERY ? l->poll_at : MEMO__POLL_EVERY;
    if (pending >= at) {
        memo__epoch_poll(l);
        memo__epoch_poll_parked(l->memo);
    }
    /* Records whose grace period ended, on any poll: their removal callbacks run here, where no
     * memo lock is held (not on the spare, which runs under spare_lock). */
    if (!l->is_spare)
        memo__removals_run(l);
}

/* ---- ck_hs callbacks ----------------------------------------------------------------------- */

/* Slots hold records and tagged markers; both point at a record prefix (a marker's key). ck_hs
 * rehashes from it when it grows: the seed it hands back is the memo. */
static inline const struct memo_rec *memo__untag(const void *slot)
{
    return (const struct memo_rec *)((uintptr_t)slot & ~MEMO__SLOT_TAGS);
}

unsigned long memo__hs_hash_u64(const void *object, unsigned long seed)
{
    return memo__hash_u64((const struct memo *)seed, memo__untag(object)->a);
}

unsigned long memo__hs_hash_bytes(const void *object, unsigned long seed)
{
    const struct memo_rec *r = memo__untag(object);
    return memo__hash_bytes((const struct memo *)seed, r + 1, r->a);
}

/* ck_hs calls compare(stored, probe): probe is the key (a uint64_t) for lookups and removals,
 * or a record or marker being set. Both begin with the key. */
bool memo__hs_compare_u64(const void *stored, const void *probe)
{
    MEMO_ANN_GOT(stored);
    return memo__untag(stored)->a == memo__untag(probe)->a;
}

bool memo__hs_compare_bytes(const void *stored, const void *probe)
{
    MEMO_ANN_GOT(stored);
    const struct memo_rec *a = memo__untag(stored), *b = memo__untag(probe);
    if (a->a != b->a)
        return false;
    const void *key = b->b == MEMO__PROBE_TAG ? ((const struct memo_probe *)b)->key : (const void *)(b + 1);
    return a->a == 0 || memcmp(a + 1, key, a->a) == 0;
}
