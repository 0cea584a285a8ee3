/*
 * Shards: one ck_hs per shard, SPMC: ck_hs_get runs lock-free under an epoch section, and every
 * writer call (put, set, remove, grow, reset) runs under the shard's lock with memo__alloc_local
 * set, so that ck's allocator callbacks know whose counters and epoch record to use.
 */
#include <stdlib.h>

#include "annotate.h"
#include "internal.h"

#define MEMO__HS_MODE (CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC | CK_HS_MODE_DELETE)
#define MEMO__HS_MIN  16 /* slots of an empty table */

static bool memo__tables_init(struct memo *m, struct memo_shard *s)
{
    /* The seed that ck_hs hands back to the hash callback is the memo: records do not keep
     * their hash, it is computed again (with the memo's secret) when a table grows. */
    if (!ck_hs_init(&s->u64, MEMO__HS_MODE, memo__hs_hash_u64, memo__hs_compare_u64, &m->table_alloc,
                    MEMO__HS_MIN, (unsigned long)m))
        return false;
    if (!ck_hs_init(&s->bytes, MEMO__HS_MODE, memo__hs_hash_bytes, memo__hs_compare_bytes, &m->table_alloc,
                    MEMO__HS_MIN, (unsigned long)m)) {
        ck_hs_destroy(&s->u64);
        return false;
    }
    return true;
}

int memo__shards_init(struct memo *m, size_t expected_entries)
{
    struct memo_local *l = memo__local(m);
    if (l == NULL)
        return MEMO_ENOMEM;
    m->shards = MEMO__TEST_ALLOC_FAILS(false) ? NULL :
        aligned_alloc(alignof(struct memo_shard), sizeof(struct memo_shard) * m->nshards);
    if (m->shards == NULL)
        return MEMO_ENOMEM;
    /* ck_hs grows at half full: room for twice the expected share keeps a presized memo from
     * rehashing under its shard locks. Up to MEMO__PRESIZE_MAX entries in all (memo_create has
     * refused a hint past what the shards can hold): past that, zeroing slot arrays for entries
     * that may never come costs more than growing does (2^30 entries on one shard would zero
     * 16 GiB up front), and the tables grow as entries come. A table is presized when its key
     * space is first used, so that a memo of u64 keys holds no empty byte-key table of that
     * size, and the other way round. */
    size_t presize = expected_entries < MEMO__PRESIZE_MAX ? expected_entries : MEMO__PRESIZE_MAX;
    unsigned long per_shard = presize / m->nshards * 2;
    memo__table_alloc_init(&m->table_alloc);
    memo__alloc_local = l;
    unsigned i;
    for (i = 0; i < m->nshards; i++) {
        struct memo_shard *s = &m->shards[i];
        /* Adaptive: critical sections are a few hundred ns, no user code; spinning a little
         * beats sleeping on the first collision. */
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
        pthread_mutex_init(&s->lock, &attr);
        pthread_mutexattr_destroy(&attr);
        atomic_init(&s->entries, 0);
        s->store = NULL;
        s->presize[0] = s->presize[1] = per_shard > MEMO__HS_MIN ? per_shard : 0;
        if (!memo__tables_init(m, s)) {
            pthread_mutex_destroy(&s->lock);
            break;
        }
    }
    if (i < m->nshards) {
        while (i-- > 0) {
            ck_hs_destroy(&m->shards[i].u64);
            ck_hs_destroy(&m->shards[i].bytes);
            pthread_mutex_destroy(&m->shards[i].lock);
        }
        memo__alloc_local = NULL;
        free(m->shards);
        m->shards = NULL;
        return MEMO_ENOMEM;
    }
    memo__alloc_local = NULL;
    return 0;
}

/* Before the first insert into a key space of s, under its lock: the presize that
 * expected_entries asked for. A failure leaves the table to grow as it fills. */
void memo__table_presize_locked(struct memo_shard *s, unsigned kind)
{
    unsigned long *want = &s->presize[kind == MEMO__KIND_U64 ? 0 : 1];
    if (memo__likely(*want == 0))
        return;
    (void)ck_hs_grow(kind == MEMO__KIND_U64 ? &s->u64 : &s->bytes, *want);
    *want = 0;
}

/* The big records in a table (a store's records go with their store). */
static void memo__free_big_records(struct memo *m, ck_hs_t *table, unsigned kind, struct memo_local *l)
{
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(table, &it, &obj)) {
        if (memo__is_marker(obj))
            continue;
        if (memo__is_policy(obj)) {
            /* A value still stored: reported to the removal callback (MEMO_REMOVED_DESTROYED). */
            memo__policy_remove_locked(m, l, memo__pol_of(memo__slot_rec(obj)), MEMO_REMOVED_DESTROYED);
        } else if (memo__rec_is_big(m, obj, kind)) {
            memo__rec_big_free_now(l, obj);
        }
    }
}

/* memo_destroy: nobody uses m any more, and every pending free has run. Frees every record, the
 * stores, then the tables. */
void memo__shards_destroy(struct memo *m, struct memo_local *l)
{
    memo__alloc_local = l;
    for (unsigned i = 0; i < m->nshards; i++) {
        struct memo_shard *s = &m->shards[i];
        memo__free_big_records(m, &s->u64, MEMO__KIND_U64, l);
        memo__free_big_records(m, &s->bytes, MEMO__KIND_BYTES, l);
    }
    if (m->pol != NULL) {
        /* The records just retired: nobody reads them any more (this is memo_destroy). */
        ck_epoch_reclaim(&l->record);
        memo__removals_run(l);
    }
    for (unsigned i = 0; i < m->nshards; i++) {
        struct memo_shard *s = &m->shards[i];
        if (s->store != NULL)
            memo__store_free(l, s->store);
        ck_hs_destroy(&s->u64);
        ck_hs_destroy(&s->bytes);
        pthread_mutex_destroy(&s->lock);
    }
    memo__alloc_local = NULL;
    free(m->shards);
    m->shards = NULL;
}

/*
 * Empties one key space of a shard, under its lock: in-flight markers are detached (their owners
 * store nothing, and retire them) and big records are retired one by one; the caller drops the
 * shard's store, and with it every other record. Returns the number of stored values removed.
 * The table is replaced by an empty one in one step (the old slot array is freed after a grace
 * period); if a fresh slot array cannot be had, every slot is removed instead.
 */
static int64_t memo__table_clear_locked(struct memo *m, struct memo_shard *s, unsigned kind,
                                        struct memo_local *l)
{
    ck_hs_t *table = kind == MEMO__KIND_U64 ? &s->u64 : &s->bytes;
    int64_t stored = 0;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(table, &it, &obj)) {
        if (memo__is_marker(obj)) {
            atomic_fetch_or_explicit(&memo__slot_marker(obj)->state, MEMO__DETACHED, memory_order_relaxed);
            continue;
        }
        stored++;
        if (memo__is_policy(obj)) {
            memo__policy_remove_locked(m, l, memo__pol_of(memo__slot_rec(obj)), MEMO_REMOVED_FORGOTTEN);
        } else if (memo__rec_is_big(m, obj, kind)) {
            memo__rec_retire(l, s, obj, kind);
        }
    }
    if (!ck_hs_reset_size(table, MEMO__HS_MIN)) {
        /* Removal leaves a tombstone in place and moves nothing: one pass sees every slot. */
        it = (ck_hs_iterator_t)CK_HS_ITERATOR_INITIALIZER;
        while (ck_hs_next(table, &it, &obj)) {
            unsigned long h = kind == MEMO__KIND_U64 ? memo__hs_hash_u64(obj, (unsigned long)m)
                                                     : memo__hs_hash_bytes(obj, (unsigned long)m);
            (void)ck_hs_remove(table, h, obj);
        }
    }
    return stored;
}

/*
 * Empties one shard in one step: both tables are swapped for empty ones and the shard's store is
 * let go (the next record makes a new one), so that the old slot arrays and every record in the
 * old store are dropped whole once no reader can see them, instead of key by key. Big records
 * are retired one by one. In-flight markers are detached, as a forget does. Allocates nothing.
 */
void memo__shard_clear(struct memo *m, struct memo_shard *s, struct memo_local *l)
{
    memo__lock(m, s, l);
    int64_t stored = memo__table_clear_locked(m, s, MEMO__KIND_U64, l) +
                     memo__table_clear_locked(m, s, MEMO__KIND_BYTES, l);
    struct memo_store *old = s->store;
    s->store = NULL;
    atomic_fetch_sub_explicit(&s->entries, stored, memory_order_relaxed);
    memo__unlock(m, s);
    if (old != NULL)
        memo__store_retire(l, old);
}
