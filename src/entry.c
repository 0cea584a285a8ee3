/*
 * Entries: their layout (internal.h), making and freeing them, their epoch-deferred reclamation,
 * and the callbacks through which ck_hs hashes and compares them.
 */
#include <string.h>

#include "annotate.h"
#include "internal.h"

_Static_assert(MEMO__U64_ENTRY_SIZE == 64, "a u64 entry is one cache line");
_Static_assert(alignof(max_align_t) <= 16, "values are aligned to 16");
_Static_assert(sizeof(struct memo_entry) % 16 == 0, "keys start aligned");

struct memo_entry *memo__entry_new_u64(struct memo_local *l, unsigned long hash, uint64_t key)
{
    struct memo_entry *e = memo__mem_alloc(l, MEMO__U64_ENTRY_SIZE);
    if (e == NULL)
        return NULL;
    atomic_init(&e->state, MEMO__COMPUTING);
    e->kind = MEMO__KIND_U64;
    e->hash = hash;
    e->flight = NULL;
    e->flight_seq = 0;
    e->u64.key = key;
    e->u64.value = 0;
    return e;
}

struct memo_entry *memo__entry_new_bytes(struct memo_local *l, unsigned long hash, const void *key,
                                         size_t key_len, size_t value_len)
{
    size_t offset = memo__value_offset(key_len);
    if (value_len > SIZE_MAX - offset || key_len > SIZE_MAX - MEMO__BYTES_HEAD_SIZE - 16)
        return NULL;
    size_t size = offset + value_len;
    struct memo_entry *e = memo__mem_alloc(l, size);
    if (e == NULL)
        return NULL;
    atomic_init(&e->state, MEMO__COMPUTING);
    e->kind = MEMO__KIND_BYTES;
    e->hash = hash;
    e->flight = NULL;
    e->flight_seq = 0;
    e->bytes.key_len = key_len;
    e->bytes.alloc_size = size;
    e->bytes.final = NULL;
    e->bytes.value_len = value_len;
    if (key_len != 0)
        memcpy(memo__entry_key(e), key, key_len);
    return e;
}

static size_t memo__entry_size(const struct memo_entry *e)
{
    return e->kind == MEMO__KIND_U64 ? MEMO__U64_ENTRY_SIZE : e->bytes.alloc_size;
}

void memo__entry_free_now(struct memo_local *l, struct memo_entry *e)
{
    memo__mem_free(l, e, memo__entry_size(e));
}

static void memo__entry_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_entry *e = (struct memo_entry *)retire; /* retire is the first member */
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    memo__entry_free_now(l, e);
}

#define MEMO__POLL_EVERY 64 /* deferred frees between two attempts to reclaim */

/* Frees what the epoch allows, and sets when retiring polls next: MEMO__POLL_EVERY retires from
 * now, whatever this poll achieved. Not at every retire while frees stay pending (a reader that
 * pins the epoch: a ref held long, a long wait): a poll scans every thread's record, so that
 * would make each retire O(threads). And not later and later either (an exponential back-off
 * while polls fail): one unlucky poll, while a reader's section still belonged to the previous
 * epoch, would then double the pending list, and under steady readers it never came back. */
void memo__epoch_poll(struct memo_local *l)
{
    struct memo_local *saved = memo__alloc_local;
    memo__alloc_local = l;
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
    pthread_mutex_unlock(&m->locals_lock);
}

/* Frees e once no reader can hold it: e must already be out of every table (or never have been
 * in one), and no thread may find it through a marker's final pointer after its grace period. */
void memo__entry_retire(struct memo_local *l, struct memo_entry *e)
{
#if MEMO_MUTANT == 2 /* M2 free-now: freed at once, readers may still hold it */
    memo__entry_free_now(l, e);
    return;
#endif
    ck_epoch_call(&l->record, &e->retire, memo__entry_reclaim);
    unsigned at = l->poll_at > MEMO__POLL_EVERY ? l->poll_at : MEMO__POLL_EVERY;
    if (l->record.n_pending >= at) {
        memo__epoch_poll(l);
        memo__epoch_poll_parked(l->memo);
    }
}

unsigned long memo__hs_hash(const void *object, unsigned long seed)
{
    (void)seed; /* memo's hash is seeded by the memo's secret; ck only needs it back to grow */
    return ((const struct memo_entry *)object)->hash;
}

/* ck_hs calls compare(stored, probe); probe is a struct memo_probe for lookups, or an entry
 * being put or set. */
bool memo__hs_compare(const void *stored_object, const void *probe_object)
{
    const struct memo_entry *a = stored_object;
    const struct memo_entry *b = probe_object;
    MEMO_ANN_GOT(a);
    if (a->hash != b->hash)
        return false;
    if (b->kind == MEMO__KIND_PROBE) {
        const struct memo_probe *p = probe_object;
        if (a->kind != p->space)
            return false;
        if (a->kind == MEMO__KIND_U64)
            return a->u64.key == p->key_u64;
        return a->bytes.key_len == p->key_len &&
               (p->key_len == 0 || memcmp(memo__entry_key((struct memo_entry *)a), p->key, p->key_len) == 0);
    }
    if (a->kind != b->kind)
        return false;
    if (a->kind == MEMO__KIND_U64)
        return a->u64.key == b->u64.key;
    return a->bytes.key_len == b->bytes.key_len &&
           memcmp(memo__entry_key((struct memo_entry *)a), memo__entry_key((struct memo_entry *)b),
                  a->bytes.key_len) == 0;
}
