/*
 * memo internals shared between the source files. Nothing here is API.
 *
 * Objects and who owns them:
 *   struct memo         one per memo_create: shards, an epoch domain, a hash secret.
 *   struct memo_shard   one ck_hs table and the lock that serializes its writers.
 *   struct memo_entry   one per key in a table: an in-flight marker (COMPUTING) or a stored value.
 *   struct memo_thread  one per thread that ever called memo: flight stack, waiting publication,
 *                       the thread's locals. Never freed: recycled through a pool, because other
 *                       threads read its flight slots and waiting fields without locks.
 *   struct memo_local   one per (thread, memo): the thread's ck_epoch record and counters for
 *                       that memo. Parked, not freed, when its thread exits (its pending frees
 *                       are then polled by the memo's other threads); reused by a later thread;
 *                       freed by memo_destroy.
 *   struct memo_flight  a slot of a thread's flight stack: identifies one computation in
 *                       progress, so that deadlock detection never dereferences an entry.
 */
#ifndef MEMO_INTERNAL_H
#define MEMO_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ck_epoch.h>
#include <ck_hs.h>
#include <ck_malloc.h>

#include "memo.h"
#include "mutants.h"

#define MEMO__CACHELINE 64
#define memo__likely(x) __builtin_expect(!!(x), 1)
#define memo__unlikely(x) __builtin_expect(!!(x), 0)
#define MEMO__HIDDEN __attribute__((visibility("hidden")))

/* ---- entries ------------------------------------------------------------------------------- */

/* The state word is also the futex word. Low bits: the state; then flag bits. */
#define MEMO__COMPUTING 0u /* an in-flight marker: its owner is running fn */
#define MEMO__READY     1u /* a value (stored, or handed to waiters of a detached flight) */
#define MEMO__FAILED    2u /* fn failed: code holds its code; already out of the table */
#define MEMO__ABANDONED 3u /* the owner died; already out of the table: waiters retry */
#define MEMO__STATE     3u
#define MEMO__WAITERS   4u /* someone sleeps (or is about to) on the futex: wake on change */
#define MEMO__DETACHED  8u /* forgotten or cleared; set while in flight, the owner must not store */

/* Whether a state word found in a table is a stored value that a hit or a lookup may return.
 * READY|DETACHED is not: either a forget or clear has begun removing it (it linearizes before
 * the reader), or it is the value of a computation detached in flight, which was never stored
 * (only that computation's own waiters take it, through memo__wait). */
static inline bool memo__stored(uint32_t state)
{
    return (state & (MEMO__STATE | MEMO__DETACHED)) == MEMO__READY;
}

#define MEMO__KIND_U64   1u
#define MEMO__KIND_BYTES 2u
#define MEMO__KIND_PROBE 3u /* a stack key used only for lookups, never in a table */

struct memo_flight;

struct memo_entry {
    ck_epoch_entry_t    retire;     /* epoch-deferred free; its stack link also chains clears */
    _Atomic uint32_t    state;      /* MEMO__* above */
    uint32_t            kind;       /* MEMO__KIND_* */
    unsigned long       hash;       /* full hash: ck_hs rehashes with it when it grows */
    struct memo_flight *flight;     /* markers: the owner's flight slot */
    uint64_t            flight_seq; /* markers: that slot's seq while this computation runs */
    union {
        struct {                    /* u64 key space: 64 bytes in all */
            uint64_t key;
            union {
                uint64_t value;     /* READY */
                int64_t  code;      /* FAILED: fn's code */
            };
        } u64;
        struct {                    /* byte key space */
            size_t key_len;
            size_t alloc_size;
            struct memo_entry *final; /* markers: the value's entry: fn's, unpublished, while
                                         COMPUTING (owner only); the stored one from READY on */
            union {
                size_t  value_len;  /* value entries */
                int64_t code;       /* FAILED markers: fn's code */
            };
            /* then the key bytes, then the value at memo__value_offset() */
        } bytes;
    };
};
#define MEMO__U64_ENTRY_SIZE (offsetof(struct memo_entry, u64) + 2 * sizeof(uint64_t))
#define MEMO__BYTES_HEAD_SIZE sizeof(struct memo_entry)

static inline unsigned char *memo__entry_key(struct memo_entry *e)
{
    return (unsigned char *)e + MEMO__BYTES_HEAD_SIZE;
}

static inline void memo__entry_set_code(struct memo_entry *e, int code)
{
    if (e->kind == MEMO__KIND_U64)
        e->u64.code = code;
    else
        e->bytes.code = code;
}

static inline int memo__entry_code(const struct memo_entry *e)
{
    return (int)(e->kind == MEMO__KIND_U64 ? e->u64.code : e->bytes.code);
}

/* A lookup key on the stack; its head mirrors struct memo_entry up to the union. */
struct memo_probe {
    struct memo_entry head;         /* kind = MEMO__KIND_PROBE, hash */
    uint32_t          space;        /* MEMO__KIND_U64 or MEMO__KIND_BYTES */
    const void       *key;
    size_t            key_len;
    uint64_t          key_u64;
};

static inline size_t memo__value_offset(size_t key_len)
{
    /* aligned for max_align_t (16 on the targets memo supports) */
    return (MEMO__BYTES_HEAD_SIZE + key_len + 15) & ~(size_t)15;
}

static inline void *memo__entry_value(struct memo_entry *e)
{
    return (unsigned char *)e + memo__value_offset(e->bytes.key_len);
}

/* ---- threads, locals, flights -------------------------------------------------------------- */

struct memo_flight {
    _Atomic uint64_t    seq;        /* odd while the computation that uses this slot runs */
    struct memo_thread *thread;     /* the owner: fixed for the slot's life */
};

#define MEMO__FLIGHTS_PER_BLOCK 62
struct memo_flight_block {
    struct memo_flight_block *prev, *next;
    struct memo_flight        slot[MEMO__FLIGHTS_PER_BLOCK];
};

struct memo_counters {
    _Atomic uint64_t hits, misses, waits, errors;
    _Atomic int64_t  bytes;         /* bytes allocated minus freed through this local */
};

struct memo_local {
    ck_epoch_record_t    record;    /* cache-line aligned by ck */
    alignas(MEMO__CACHELINE) struct memo_counters counters;
    struct memo         *memo;
    /* The owner; NULL while parked. Written by the owner (parking) and under the registry lock
     * (taking a parked local, memo_destroy); read by memo_release to tell a ref of the calling
     * thread's from one whose section was already ended when its thread exited. */
    _Atomic(struct memo_thread *) thread;
    unsigned             slot;      /* index in thread->slots */
    unsigned             poll_at;   /* pending frees at which retiring next polls the epoch */
    bool                 is_spare;  /* memo->spare: shared, used under memo->spare_lock */
    struct memo_local   *next;      /* memo->locals: every local of the memo */
    struct memo_local   *next_parked;
};

struct memo_slot {
    _Atomic uint64_t   id;          /* memo id, 0 = empty; written under the registry lock */
    struct memo_local *local;
};

struct memo_thread {
    /* Waiting publication, read by other threads' deadlock walks: a seqlock over the pair. */
    alignas(MEMO__CACHELINE) _Atomic uint32_t wait_gen;
    _Atomic(struct memo_flight *) wait_flight;
    _Atomic uint64_t              wait_seq;

    /* Owned by the thread: */
    alignas(MEMO__CACHELINE) struct memo *cache_memo;
    uint64_t                  cache_id;
    struct memo_local        *cache_local;
    struct memo_flight_block *flight_block;   /* block of the next free slot */
    unsigned                  flight_index;   /* next free slot in it */
    struct memo_flight_block *flight_first;
    struct memo_slot         *slots;          /* swapped under the registry lock */
    unsigned                  nslots;
    struct memo_thread       *next_free;      /* the pool */
    unsigned                  exit_rounds;    /* thread-exit destructor rounds deferred (thread.c) */
    bool                      pooled;         /* in the pool (its thread exited) */
    struct memo_thread       *next_all;       /* every thread struct, under the registry lock */
};

/* ---- the memo ------------------------------------------------------------------------------ */

struct memo_shard {
    alignas(MEMO__CACHELINE) pthread_mutex_t lock; /* every ck_hs writer call runs under it */
    ck_hs_t          table;
    _Atomic int64_t  entries;       /* stored values (markers not counted) */
};

struct memo {
    uint64_t           id;          /* unique for the process: per-thread state is keyed by it */
    unsigned           flags;
    unsigned           nshards;     /* power of two */
    struct memo_shard *shards;
    struct ck_malloc   table_alloc;
    alignas(MEMO__CACHELINE) ck_epoch_t epoch;
    alignas(MEMO__CACHELINE) unsigned char secret[192]; /* XXH3 secret derived from the seed */
    uint64_t           seed;
    pthread_mutex_t    locals_lock; /* locals, parked */
    struct memo_local *locals;
    struct memo_local *parked;      /* locals of exited threads, for reuse */
    _Atomic bool       parked_pending; /* some parked local may still have frees pending */
    /* A local for forget, clear and lookups when a thread's own cannot be made (memory ran out):
     * they never fail for want of memory. Used under spare_lock; no thread cache (memo.c). */
    pthread_mutex_t    spare_lock;
    struct memo_local *spare;
    struct memo       *next_live;   /* registry of live memos (fork handlers) */
#ifdef MEMO_TSAN
    char               tsan_epoch_sync; /* release at section end, acquire before reclaiming */
#endif
};

/* ---- cross-file functions ------------------------------------------------------------------ */

/* thread.c */
extern MEMO__HIDDEN __attribute__((tls_model("initial-exec"))) _Thread_local struct memo_thread *memo__self;
MEMO__HIDDEN struct memo_local *memo__local_slow(struct memo *m);
MEMO__HIDDEN int memo__spare_init(struct memo *m);
MEMO__HIDDEN struct memo_flight *memo__flight_push(struct memo_thread *t);
MEMO__HIDDEN void memo__flight_pop(struct memo_thread *t, struct memo_flight *f);
MEMO__HIDDEN void memo__registry_lock(void);
MEMO__HIDDEN void memo__registry_unlock(void);
MEMO__HIDDEN void memo__registry_add(struct memo *m);
MEMO__HIDDEN void memo__registry_remove_locals(struct memo *m);
MEMO__HIDDEN struct memo *memo__registry_first(void);
MEMO__HIDDEN uint64_t memo__next_id(void);
MEMO__HIDDEN void memo__threads_fork_child(struct memo_thread *self);

/* The calling thread's local for m, made on first use; NULL only when memory ran out. */
static inline struct memo_local *memo__local(struct memo *m)
{
    struct memo_thread *t = memo__self;
    /* The (pointer, id) pair guards against a destroyed memo's address being reused. */
    if (memo__likely(t != NULL && t->cache_memo == m && t->cache_id == m->id))
        return t->cache_local;
    return memo__local_slow(m);
}

/* alloc.c */
MEMO__HIDDEN void *memo__mem_alloc(struct memo_local *l, size_t size);
MEMO__HIDDEN void  memo__mem_free(struct memo_local *l, void *p, size_t size);
MEMO__HIDDEN void  memo__table_alloc_init(struct ck_malloc *a);
/* The local whose allocator ck_hs's callbacks use: set around every ck_hs writer call and every
 * epoch poll on this thread (ck's callbacks carry no context of their own). */
extern MEMO__HIDDEN __attribute__((tls_model("initial-exec"))) _Thread_local struct memo_local *memo__alloc_local;

/* entry.c */
MEMO__HIDDEN struct memo_entry *memo__entry_new_u64(struct memo_local *l, unsigned long hash, uint64_t key);
MEMO__HIDDEN struct memo_entry *memo__entry_new_bytes(struct memo_local *l, unsigned long hash,
                                                      const void *key, size_t key_len, size_t value_len);
MEMO__HIDDEN void memo__entry_free_now(struct memo_local *l, struct memo_entry *e);
MEMO__HIDDEN void memo__entry_retire(struct memo_local *l, struct memo_entry *e);
MEMO__HIDDEN void memo__epoch_poll(struct memo_local *l);
MEMO__HIDDEN void memo__epoch_poll_parked(struct memo *m);
MEMO__HIDDEN unsigned long memo__hs_hash(const void *object, unsigned long seed);
MEMO__HIDDEN bool memo__hs_compare(const void *stored, const void *probe);

/* table.c */
MEMO__HIDDEN int  memo__shards_init(struct memo *m, size_t expected_entries);
MEMO__HIDDEN void memo__shards_destroy(struct memo *m, struct memo_local *l);
MEMO__HIDDEN void memo__shard_clear(struct memo *m, struct memo_shard *s, struct memo_local *l);

/* ck_hs sizes its slot arrays through a 32-bit power of two: a table holds at most 2^31 slots,
 * and grows at half full, so a shard holds at most 2^30 entries (stored values and markers). */
#define MEMO__SHARD_ENTRIES_MAX (1ul << 30)
/* expected_entries presizes the tables for at most this many entries: 2^25 slots, 256 MiB, and
 * ck_hs's probe bounds beside them, about 300 MiB (memo.h). Enough for memo-dp's 3000 x 3000
 * edit distance (8.9 million states) to run without rehashing. */
#define MEMO__PRESIZE_MAX ((size_t)1 << 24)

static inline struct memo_shard *memo__shard(struct memo *m, unsigned long hash)
{
    /* High bits pick the shard; ck_hs indexes its slots by the low bits. */
    return &m->shards[(hash >> 32) & (m->nshards - 1)];
}

/* wait.c */
/* Clears what t says it waits for (every way out of a wait does; a pooled thread struct is
 * cleared again when reused, so no stale wait can ever reach another thread's deadlock walk). */
MEMO__HIDDEN void memo__unpublish_waiting(struct memo_thread *t);
/* Waits until e leaves COMPUTING, or the deadline passes (deadline_ns 0: none; UINT64_MAX:
 * already passed). Returns the state seen, MEMO_EDEADLK or MEMO_ETIMEDOUT. The caller is inside
 * l's read-side section, which a cancellation during the sleep ends. */
MEMO__HIDDEN int  memo__wait(struct memo_thread *self, struct memo_local *l, struct memo_entry *e,
                             uint64_t deadline_ns);
MEMO__HIDDEN void memo__wake(struct memo_entry *e);
MEMO__HIDDEN uint64_t memo__now_ns(void);

/* fork.c */
MEMO__HIDDEN void memo__fork_handlers_install(void);

/* testing.c, memo_testing only: whether the allocation about to be made must fail (table: a ck_hs
 * slot array). In libmemo, a constant false. */
#ifdef MEMO_TESTING
MEMO__HIDDEN bool memo__test_alloc_fails(bool table);
#define MEMO__TEST_ALLOC_FAILS(table) memo__unlikely(memo__test_alloc_fails(table))
#else
#define MEMO__TEST_ALLOC_FAILS(table) ((void)(table), false)
#endif

#endif /* MEMO_INTERNAL_H */
