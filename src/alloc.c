/*
 * Memory: every allocation of a memo (entries, keys, values, ck_hs slot arrays) comes from malloc
 * and is counted against the memo, in the allocating or freeing thread's own counter (no shared
 * write), so that memo_stats.bytes is exact and a bound can be kept. memo_destroy frees what is
 * left: every entry of every table and every pending free.
 *
 * memo used to give each memo a jemalloc arena, with an explicit thread cache per (thread, memo).
 * Each of these broke a promise: jemalloc allows about 4095 arenas and 4093 explicit thread caches
 * per process (memo_create failed past 4086 live memos, 64 threads x 72 memos gave MEMO_ENOMEM);
 * its fork handler empties the arenas' lists of thread caches in the child, so a child could not
 * destroy a memo it inherited (SIGSEGV); and Debian's libjemalloc.so.2 uses initial-exec TLS
 * (2.6 KB), more than glibc keeps for dlopen, so libmemo.so could not be loaded by ctypes or any
 * plugin host. Counting requested sizes against the memo keeps what the arena gave (measured,
 * bounded, all given back at destroy) without those limits. MEMO_F_SYSTEM_ALLOC now selects the
 * same allocator; it stays in the API, and memo.h says what it guarantees.
 */
#include <stdlib.h>
#include <string.h>

#include "annotate.h"
#include "internal.h"

__attribute__((tls_model("initial-exec"))) _Thread_local struct memo_local *memo__alloc_local;

/* The local's own counter: only the thread that owns l (or holds the lock that stands for the
 * owner: a parked local's locals_lock, the spare's spare_lock) writes it, so a plain increment
 * does; atomic only so that memo_stats may read it from another thread. Requested sizes, not
 * malloc_usable_size: the same request can get a usable size 16 bytes apart depending on what
 * malloc had free, and the count must come back exactly to its level. */
static inline void memo__count_bytes(struct memo_local *l, int64_t delta)
{
    atomic_store_explicit(&l->counters.bytes,
                          atomic_load_explicit(&l->counters.bytes, memory_order_relaxed) + delta,
                          memory_order_relaxed);
    /* A memo bounded by bytes checks its total on every store: kept in one shared counter too
     * (allocations are misses' work, never a hit's). */
    if (l->memo->pol != NULL)
        atomic_fetch_add_explicit(&l->memo->pol->bytes, delta, memory_order_relaxed);
}

static inline void *memo__alloc(struct memo_local *l, size_t size, bool table)
{
    if (MEMO__TEST_ALLOC_FAILS(table))
        return NULL;
    void *p = malloc(size);
    if (p != NULL)
        memo__count_bytes(l, (int64_t)size);
    return p;
}

void memo__mem_account(struct memo_local *l, int64_t delta)
{
    memo__count_bytes(l, delta);
}

void *memo__mem_alloc(struct memo_local *l, size_t size)
{
    return memo__alloc(l, size, false);
}

void memo__mem_free(struct memo_local *l, void *p, size_t size)
{
    if (p == NULL)
        return;
    memo__count_bytes(l, -(int64_t)size);
    free(p);
}

/*
 * ck_hs's allocator. ck's callbacks carry no context, so they use the local that the calling
 * thread set in memo__alloc_local around its ck_hs writer call (always under a shard lock) or its
 * epoch poll. A slot array that readers may still see comes with defer = true: it is freed through
 * the epoch, after every reader that could hold it has left its section.
 */
struct memo_table_block {
    ck_epoch_entry_t retire;
    size_t           size;
    alignas(MEMO__CACHELINE) unsigned char data[];
};

static void *memo__table_malloc(size_t size)
{
    struct memo_local *l = memo__alloc_local;
    size_t total = offsetof(struct memo_table_block, data) + size;
    struct memo_table_block *b = memo__alloc(l, total, true);
    if (b == NULL)
        return NULL;
    b->size = total;
    return b->data;
}

static void memo__table_reclaim(ck_epoch_entry_t *retire)
{
    struct memo_table_block *b =
        (struct memo_table_block *)((char *)retire - offsetof(struct memo_table_block, retire));
    struct memo_local *l = memo__alloc_local;
    MEMO_ANN_RECLAIM(l->memo);
    if (l->memo->pol != NULL)
        memo__count_bytes(l, (int64_t)b->size); /* counted out when it was retired */
    memo__mem_free(l, b, b->size);
}

static void memo__table_free(void *p, size_t size, bool defer)
{
    (void)size;
    if (p == NULL)
        return;
    struct memo_table_block *b =
        (struct memo_table_block *)((char *)p - offsetof(struct memo_table_block, data));
    struct memo_local *l = memo__alloc_local;
    if (defer) {
        /* With a policy, a slot array waiting for its grace period is not counted (entry.c,
         * memo__marker_retire). */
        if (l->memo->pol != NULL)
            memo__count_bytes(l, -(int64_t)b->size);
        ck_epoch_call(&l->record, &b->retire, memo__table_reclaim);
    }
    else
        memo__mem_free(l, b, b->size);
}

static void *memo__table_realloc(void *p, size_t old_size, size_t new_size, bool defer)
{
    /* ck_hs never reallocates; kept for a complete ck_malloc. */
    void *n = memo__table_malloc(new_size);
    if (n != NULL && p != NULL) {
        memcpy(n, p, old_size < new_size ? old_size : new_size);
        memo__table_free(p, old_size, defer);
    }
    return n;
}

void memo__table_alloc_init(struct ck_malloc *a)
{
    a->malloc = memo__table_malloc;
    a->realloc = memo__table_realloc;
    a->free = memo__table_free;
}
