/*
 * Memory: one jemalloc arena per memo, with an explicit thread cache per (thread, memo), or plain
 * malloc/free with MEMO_F_SYSTEM_ALLOC (and in sanitizer builds, which cannot see into arenas).
 *
 * MALLOCX_ARENA(a) alone does not keep allocations in arena a: the automatic thread cache hands out
 * regions that came from other arenas. An explicit tcache used only with arena a does, at the cost
 * of the default tcache. Arena memory is only ever touched through mallocx / sdallocx / mallctl:
 * Debian's jemalloc has no prefix, so plain malloc may be glibc's or jemalloc's depending on how
 * the program links.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jemalloc/jemalloc.h>

#include "annotate.h"
#include "internal.h"

__attribute__((tls_model("initial-exec"))) _Thread_local struct memo_local *memo__alloc_local;

/*
 * Arenas are pooled: a destroyed memo's arena is reset (every allocation dropped at once, its
 * pages purged back to the system) and its index kept for the next memo. jemalloc's own
 * arena.<i>.destroy leaves about 4 KiB of metadata behind per arena, forever: a server that makes
 * and drops memos (per request, per job) would grow by that much each time. Reset and reuse
 * adds nothing, and jemalloc allows at most 4096 arenas in all, so the pool needs no other bound.
 * The pool is guarded by the registry lock, which the atfork handlers hold across fork().
 */
enum { MEMO__ARENA_POOL_MAX = 4096 };
static unsigned memo__arena_pool[MEMO__ARENA_POOL_MAX];
static unsigned memo__arena_pooled;

int memo__arena_create(struct memo *m)
{
    if (MEMO__TEST_ALLOC_FAILS(false))
        return MEMO_ENOMEM;
    memo__registry_lock();
    bool reused = memo__arena_pooled > 0;
    if (reused)
        m->arena = memo__arena_pool[--memo__arena_pooled];
    memo__registry_unlock();
    if (reused)
        return 0;
    unsigned arena;
    size_t len = sizeof arena;
    if (mallctl("arenas.create", &arena, &len, NULL, 0) != 0)
        return MEMO_ENOMEM;
    m->arena = arena;
    return 0;
}

void memo__arena_destroy(struct memo *m)
{
    char name[64];
    /* Every tcache that served this arena has been destroyed (flushed) by now, as
     * arena.<i>.reset requires; the arena's allocations are dropped whole, then its unused
     * pages go back to the system. */
    snprintf(name, sizeof name, "arena.%u.reset", m->arena);
    (void)mallctl(name, NULL, NULL, NULL, 0);
    snprintf(name, sizeof name, "arena.%u.purge", m->arena);
    (void)mallctl(name, NULL, NULL, NULL, 0);
    memo__registry_lock();
    if (memo__arena_pooled < MEMO__ARENA_POOL_MAX)
        memo__arena_pool[memo__arena_pooled++] = m->arena;
    memo__registry_unlock();
}

int memo__tcache_create(struct memo *m, unsigned *out)
{
    if (m->system_alloc) {
        *out = 0;
        return 0;
    }
    size_t len = sizeof *out;
    if (MEMO__TEST_ALLOC_FAILS(false))
        return MEMO_ENOMEM;
    return mallctl("tcache.create", out, &len, NULL, 0) == 0 ? 0 : MEMO_ENOMEM;
}

void memo__tcache_destroy(struct memo *m, unsigned tcache)
{
    if (!m->system_alloc && tcache != MEMO__NO_TCACHE)
        (void)mallctl("tcache.destroy", NULL, NULL, &tcache, sizeof tcache);
}

/* The spare local's "no thread cache" needs no branch here: jemalloc's encoding maps it there. */
_Static_assert(MALLOCX_TCACHE(MEMO__NO_TCACHE) == MALLOCX_TCACHE_NONE, "MEMO__NO_TCACHE encodes as none");

static inline int memo__mallocx_flags(const struct memo_local *l)
{
    return (int)(MALLOCX_ARENA(l->memo->arena) | MALLOCX_TCACHE(l->tcache));
}

static inline void *memo__alloc(struct memo_local *l, size_t size, bool table)
{
    if (MEMO__TEST_ALLOC_FAILS(table))
        return NULL;
    if (l->memo->system_alloc) {
        void *p = malloc(size);
        /* The local's own counter: only this thread writes it. Requested sizes, not usable
         * ones: the same allocation can get a usable size 16 bytes apart depending on what
         * malloc had free, and the count must come back exactly to its level. */
        if (p != NULL)
            atomic_store_explicit(&l->counters.sys_bytes,
                                  atomic_load_explicit(&l->counters.sys_bytes, memory_order_relaxed) +
                                      (int64_t)size,
                                  memory_order_relaxed);
        return p;
    }
    return mallocx(size, memo__mallocx_flags(l));
}

void *memo__mem_alloc(struct memo_local *l, size_t size)
{
    return memo__alloc(l, size, false);
}

void memo__mem_free(struct memo_local *l, void *p, size_t size)
{
    if (p == NULL)
        return;
    if (l->memo->system_alloc) {
        atomic_store_explicit(&l->counters.sys_bytes,
                              atomic_load_explicit(&l->counters.sys_bytes, memory_order_relaxed) -
                                  (int64_t)size,
                              memory_order_relaxed);
        free(p);
        return;
    }
    sdallocx(p, size, memo__mallocx_flags(l));
}

uint64_t memo__arena_bytes(struct memo *m)
{
    char name[96];
    size_t small = 0, large = 0, len = sizeof(size_t);
    uint64_t epoch = 1;
    size_t elen = sizeof epoch;
    /* Statistics are snapshots refreshed by writing "epoch". */
    (void)mallctl("epoch", &epoch, &elen, &epoch, elen);
    snprintf(name, sizeof name, "stats.arenas.%u.small.allocated", m->arena);
    if (mallctl(name, &small, &len, NULL, 0) != 0)
        small = 0;
    len = sizeof(size_t);
    snprintf(name, sizeof name, "stats.arenas.%u.large.allocated", m->arena);
    if (mallctl(name, &large, &len, NULL, 0) != 0)
        large = 0;
    return (uint64_t)small + large;
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
    if (defer)
        ck_epoch_call(&l->record, &b->retire, memo__table_reclaim);
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
