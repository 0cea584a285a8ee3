/*
 * Shards: one ck_hs per shard, SPMC: ck_hs_get runs lock-free under an epoch section, and every
 * writer call (put, set, remove, grow, reset) runs under the shard's lock with memo__alloc_local
 * set, so that ck's allocator callbacks know whose counters and epoch record to use.
 */
#include <stdlib.h>

#include "annotate.h"
#include "internal.h"

#define MEMO__HS_MODE (CK_HS_MODE_OBJECT | CK_HS_MODE_SPMC | CK_HS_MODE_DELETE)

int memo__shards_init(struct memo *m, size_t expected_entries)
{
    struct memo_local *l = memo__local(m);
    if (l == NULL)
        return MEMO_ENOMEM;
    m->shards = MEMO__TEST_ALLOC_FAILS(false) ? NULL :
        aligned_alloc(MEMO__CACHELINE, sizeof(struct memo_shard) * m->nshards);
    if (m->shards == NULL)
        return MEMO_ENOMEM;
    /* ck_hs grows at half full: room for twice the expected share keeps a presized memo from
     * rehashing under its shard locks. Up to MEMO__PRESIZE_MAX entries in all (memo_create has
     * refused a hint past what the shards can hold): past that, zeroing slot arrays for entries
     * that may never come costs more than growing does (2^30 entries on one shard would zero
     * 16 GiB up front), and the tables grow as entries come. */
    size_t presize = expected_entries < MEMO__PRESIZE_MAX ? expected_entries : MEMO__PRESIZE_MAX;
    unsigned long per_shard = presize / m->nshards * 2;
    per_shard = per_shard < 16 ? 16 : per_shard;
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
        if (!ck_hs_init(&s->table, MEMO__HS_MODE, memo__hs_hash, memo__hs_compare, &m->table_alloc,
                        per_shard, (unsigned long)m->seed)) {
            pthread_mutex_destroy(&s->lock);
            break;
        }
    }
    if (i < m->nshards) {
        while (i-- > 0) {
            ck_hs_destroy(&m->shards[i].table);
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

/* memo_destroy: nobody uses m any more. Frees every entry of every table, then the tables. */
void memo__shards_destroy(struct memo *m, struct memo_local *l)
{
    memo__alloc_local = l;
    for (unsigned i = 0; i < m->nshards; i++) {
        struct memo_shard *s = &m->shards[i];
        ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
        void *obj;
        while (ck_hs_next(&s->table, &it, &obj))
            memo__entry_free_now(l, obj);
        ck_hs_destroy(&s->table);
        pthread_mutex_destroy(&s->lock);
    }
    memo__alloc_local = NULL;
    free(m->shards);
    m->shards = NULL;
}

/*
 * Empties one shard. Every entry is unlinked first (the whole table reset at once, or one by one
 * if a fresh slot array cannot be had), then marked DETACHED: stored entries are retired through
 * the epoch; in-flight markers are left to their owners, who will not store and free them
 * themselves. Entries are chained through their retire links between the steps, so clearing
 * allocates nothing.
 *
 * The order matters. The owner of a u64 marker publishes without the lock, by a CAS on the state
 * word, so the fetch_or's old value decides who frees: a marker seen still COMPUTING is the
 * owner's, anything already READY is ours. Once DETACHED is set the owner may free its marker at
 * once (this thread holds no read-side section to hold the free back), so nothing may read a
 * marker after the fetch_or: not ck_hs's compare during a removal, not the chain link.
 */
void memo__shard_clear(struct memo *m, struct memo_shard *s, struct memo_local *l)
{
    (void)m;
    ck_stack_entry_t *unlinked = NULL, *chain = NULL;
    int64_t stored = 0;
    pthread_mutex_lock(&s->lock);
    memo__alloc_local = l;
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(&s->table, &it, &obj)) {
        struct memo_entry *e = obj;
        e->retire.stack_entry.next = unlinked;
        unlinked = &e->retire.stack_entry;
    }
    if (!ck_hs_reset(&s->table)) {
        for (ck_stack_entry_t *c = unlinked; c != NULL; c = c->next) {
            struct memo_entry *e = (struct memo_entry *)((char *)c - offsetof(struct memo_entry, retire.stack_entry));
            (void)ck_hs_remove(&s->table, e->hash, e);
        }
    }
    memo__alloc_local = NULL;
    while (unlinked != NULL) {
        ck_stack_entry_t *next = unlinked->next; /* read before the marker may be freed */
        struct memo_entry *e = (struct memo_entry *)((char *)unlinked - offsetof(struct memo_entry, retire.stack_entry));
        uint32_t old = atomic_fetch_or_explicit(&e->state, MEMO__DETACHED, memory_order_acq_rel);
        if ((old & MEMO__STATE) != MEMO__COMPUTING) {
            e->retire.stack_entry.next = chain;
            chain = &e->retire.stack_entry;
            stored++;
        }
        unlinked = next;
    }
    atomic_fetch_sub_explicit(&s->entries, stored, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    while (chain != NULL) {
        ck_stack_entry_t *next = chain->next;
        memo__entry_retire(l, (struct memo_entry *)((char *)chain - offsetof(struct memo_entry, retire.stack_entry)));
        chain = next;
    }
}
