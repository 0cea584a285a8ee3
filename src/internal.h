/*
 * memo internals shared between the source files. Nothing here is API.
 *
 * Objects and who owns them:
 *   struct memo         one per memo_create: shards, an epoch domain, a hash secret.
 *   struct memo_shard   one ck_hs table and the lock that serializes its writers.
 *   struct memo_rec     a stored value in a table: key and value, nothing else (records below).
 *   struct memo_marker  a computation in flight, in a table until it settles.
 *   struct memo_store   where a shard's records are carved from.
 *   struct memo_thread  one per thread that ever called memo: flight stack, waiting publication,
 *                       the thread's locals. Never freed: recycled through a pool, because other
 *                       threads read its flights and waiting fields without locks.
 *   struct memo_local   one per (thread, memo): the thread's ck_epoch record and counters for
 *                       that memo. Parked, not freed, when its thread exits (its pending frees
 *                       are then polled by the memo's other threads); reused by a later thread;
 *                       freed by memo_destroy.
 *   struct memo_flight  an entry of a thread's flight stack: identifies one computation in
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

struct memo_policy;

#define MEMO__CACHELINE 64
#define memo__likely(x) __builtin_expect(!!(x), 1)
#define memo__unlikely(x) __builtin_expect(!!(x), 0)
#define MEMO__HIDDEN __attribute__((visibility("hidden")))

/* ---- checks --------------------------------------------------------------------------------- */

/* Prints "memo: <file>:<line>: <what> (<why>)" and aborts (errors.c; liburcu's urcu_die). */
MEMO__HIDDEN _Noreturn void memo__die(const char *file, int line, const char *what, const char *why);
/* An invariant whose failure memo cannot survive: checked in every build. */
#define MEMO__CHECK(cond, why)                                          \
    do {                                                                \
        if (memo__unlikely(!(cond)))                                    \
            memo__die(__FILE__, __LINE__, "check failed: " #cond, why); \
    } while (0)
/* An invariant of memo's own logic: checked in memo_testing and the sanitizer builds
 * (MEMO_CHECKS), free in the library as shipped. */
#ifdef MEMO_CHECKS
#define MEMO__ASSERT(cond, why) MEMO__CHECK(cond, why)
#else
#define MEMO__ASSERT(cond, why) ((void)sizeof(cond))
#endif

/* pthread mutexes: a failure (a lock memo holds already, a destroyed mutex) is a bug: it dies
 * with the error's name instead of going on unlocked. */
MEMO__HIDDEN void memo__mutex_failed(const char *file, int line, const char *what, int rc);
#define memo__mutex_lock(mu)                                                \
    do {                                                                    \
        int memo__rc_ = pthread_mutex_lock(mu);                             \
        if (memo__unlikely(memo__rc_ != 0))                                 \
            memo__mutex_failed(__FILE__, __LINE__, "pthread_mutex_lock(" #mu ")", memo__rc_); \
    } while (0)
#define memo__mutex_unlock(mu)                                              \
    do {                                                                    \
        int memo__rc_ = pthread_mutex_unlock(mu);                           \
        if (memo__unlikely(memo__rc_ != 0))                                 \
            memo__mutex_failed(__FILE__, __LINE__, "pthread_mutex_unlock(" #mu ")", memo__rc_); \
    } while (0)

/* ---- records and markers ------------------------------------------------------------------- */

/*
 * A shard has two ck_hs tables, one per key space. A slot points to either
 *  - a record: a stored value, immutable from the moment it is published, holding what a
 *    reader needs and nothing else (u64: the key and the value, 16 bytes, carved from the
 *    shard's store; bytes: the lengths, the key, the value, one malloc'd block); or
 *  - a marker, tagged with MEMO__MARKER_TAG in the pointer's low bit: a computation in flight,
 *    with the state word that waiters sleep on, its owner's flight, and the key as a record
 *    prefix (the slot points at that prefix, so ck_hs hashes and compares both alike).
 * The hit path reads a slot, sees no tag, and reads the record: nothing else.
 */
#define MEMO__MARKER_TAG ((uintptr_t)1)
/* A record of a memo with a policy (bounds, expiry, a removal callback: policy.c) is tagged with
 * MEMO__POLICY_TAG in its slot: the hit path of a lean record tests both bits at once and sends a
 * policy record to the out-of-line path, which reads the policy header before it (memo_pol). */
#define MEMO__POLICY_TAG ((uintptr_t)2)
#define MEMO__SLOT_TAGS  ((uintptr_t)3)

struct memo_rec {
    uint64_t a;   /* u64: the key;   bytes: the key's length */
    uint64_t b;   /* u64: the value; bytes: the value's length */
    /* bytes: the key at +16, the value at memo__rec_value_offset(key_len) */
};

/* Values are aligned for any type (max_align_t, 16 bytes on the targets memo supports). */
#define MEMO__ALIGN 16

static inline size_t memo__rec_value_offset(size_t key_len)
{
    return (sizeof(struct memo_rec) + key_len + MEMO__ALIGN - 1) & ~(size_t)(MEMO__ALIGN - 1);
}

static inline unsigned char *memo__rec_key(struct memo_rec *r)
{
    return (unsigned char *)(r + 1);
}

static inline void *memo__rec_value(struct memo_rec *r)
{
    return (unsigned char *)r + memo__rec_value_offset(r->a);
}

/* The bytes a byte-key record takes: lengths, key, padding, value. */
static inline size_t memo__rec_size(size_t key_len, size_t value_len)
{
    return memo__rec_value_offset(key_len) + value_len;
}

/* The state word is also the futex word. Low bits: the state; then flag bits. */
#define MEMO__COMPUTING 0u /* the owner is running fn */
#define MEMO__READY     1u /* fn's value is in the marker (u64) or its record (bytes) */
#define MEMO__FAILED    2u /* fn failed: code holds its code; already out of the table */
#define MEMO__ABANDONED 3u /* the owner died; already out of the table: waiters retry */
#define MEMO__STATE     3u
#define MEMO__WAITERS   4u /* someone sleeps (or is about to) on the futex: wake on change */
#define MEMO__DETACHED  8u /* forgotten or cleared in flight: the owner must not store */

#define MEMO__KIND_U64   1u
#define MEMO__KIND_BYTES 2u

struct memo_flight;

struct memo_marker {
    ck_epoch_entry_t    retire;     /* epoch-deferred free */
    _Atomic uint32_t    state;      /* MEMO__* above; changes to DETACHED only under the lock */
    uint32_t            kind;       /* MEMO__KIND_* */
    unsigned long       hash;
    struct memo_flight *flight;     /* the owner's flight */
    uint64_t            flight_seq; /* that flight's seq while this computation runs */
    struct memo_rec    *value_rec;  /* bytes: the value's record: fn's, unpublished, while
                                       COMPUTING (owner only); the stored one from READY on */
    union {
        uint64_t value;             /* u64, READY: the value */
        int64_t  code;              /* FAILED: fn's code */
    };
    size_t              alloc_size;
    uint64_t            ttl;        /* memo_result_ttl's, if ttl_set */
    bool                ttl_set;
    struct memo_rec     key;        /* the key as a record's prefix: what the table points at */
    /* bytes: the key bytes follow */
};

static inline bool memo__is_marker(const void *slot)
{
    return ((uintptr_t)slot & MEMO__MARKER_TAG) != 0;
}

/* A slot that holds a lean record: a hit reads it and nothing else. */
static inline bool memo__is_lean(const void *slot)
{
    return ((uintptr_t)slot & MEMO__SLOT_TAGS) == 0;
}

static inline bool memo__is_policy(const void *slot)
{
    return ((uintptr_t)slot & MEMO__POLICY_TAG) != 0;
}

static inline struct memo_rec *memo__slot_rec(const void *slot)
{
    return (struct memo_rec *)((uintptr_t)slot & ~MEMO__SLOT_TAGS);
}

static inline void *memo__marker_slot(struct memo_marker *k)
{
    return (void *)((uintptr_t)&k->key | MEMO__MARKER_TAG);
}

static inline struct memo_marker *memo__slot_marker(const void *slot)
{
    return (struct memo_marker *)((uintptr_t)slot - MEMO__MARKER_TAG - offsetof(struct memo_marker, key));
}

/* A byte key to look up: the probe handed to ck_hs_get / ck_hs_remove. Its b is the tag that
 * tells the compare callback it is a probe (no record has a value of SIZE_MAX bytes). */
#define MEMO__PROBE_TAG UINT64_MAX
struct memo_probe {
    struct memo_rec head;           /* a = the key's length, b = MEMO__PROBE_TAG */
    const void     *key;
};

/* ---- stores: where a shard's records live ---------------------------------------------------- */

/*
 * Records of up to MEMO__CLASS_MAX bytes are carved from slabs of their shard's store (1 KiB at
 * first, so that a small memo of many shards stays small, doubling up to 16 KiB), in
 * size classes 16 bytes apart, with no per-record header: a u64 record is its 16 bytes. Only the
 * shard's writer (under the shard lock) allocates from a store; records whose grace period has
 * ended come back through lock-free stacks, one per class, which the writer drains. memo_clear
 * replaces a shard's store and drops the old one whole, once no reader can see it and every
 * record of it retired earlier has come back (refs).
 *
 * Larger records, and every record of a MEMO_F_SYSTEM_ALLOC memo, are malloc'd alone, behind a
 * header with their own epoch entry ("big" records).
 */
#define MEMO__SLAB_SIZE 16384
#define MEMO__CLASSES   32
#define MEMO__CLASS_MAX (MEMO__CLASSES * 16) /* the largest record a store holds */

struct memo_slab {
    struct memo_slab *next;
    size_t            size;         /* 1 KiB for a store's first, doubling up to MEMO__SLAB_SIZE */
};
#define MEMO__SLAB_FIRST 1024

struct memo_store {
    ck_epoch_entry_t  retire;       /* the store itself, once a clear has replaced it */
    _Atomic int64_t   refs;         /* 1 while it is a shard's store, + records retired not yet back */
    struct memo_slab *slabs;        /* shard lock */
    unsigned char    *bump, *end;   /* the newest slab's uncarved part; shard lock */
    void             *free[MEMO__CLASSES];            /* free records, linked through their first word */
    _Atomic(void *)   reclaimed[MEMO__CLASSES];       /* records back from their grace period */
};

/* A big record: malloc'd alone, with its own epoch entry. */
struct memo_big {
    ck_epoch_entry_t retire;
    size_t           size;          /* of the whole block */
    uint64_t         pad;
    struct memo_rec  rec;           /* 16-aligned */
};

/* ---- policy records (policy.c) --------------------------------------------------------------- */

/*
 * A memo with a bound, an expiry setting or a removal callback keeps, before each record, what
 * its policy needs: its place in the policy's lists, its deadlines, and the bit a hit sets. Such
 * records are malloc'd alone, header and record in one block that begins with the header (48
 * bytes: a u64 value costs 64 in all), and tagged MEMO__POLICY_TAG in their slot. The block has
 * no size field (memo__pol_size derives it from the kind and the record) and no epoch entry of
 * its own: a record is retired only once out of its list, so the list links, which nobody reads
 * from then on, become the epoch entry (and then the link of memo_policy.removed).
 */
struct memo_pol {
    union {
        struct {
            struct memo_pol *next, *prev; /* its policy list (memo_policy.list); the policy lock */
        };
        ck_epoch_entry_t retire;    /* once retired: the epoch-deferred free */
    };
    uint64_t         stored_at;     /* the clock's reading when it was stored */
    uint64_t         expires;       /* a call that starts at or after it treats it as absent */
    _Atomic uint64_t claim;         /* a refresh of it is running: that refresh's token; 0 none */
    _Atomic uint8_t  visited;       /* set by a hit that finds it clear: the only write of a hit */
    uint8_t          list;          /* MEMO__LIST_*: which list it is in; the policy lock */
    uint8_t          kind;          /* MEMO__KIND_*, set when the block is made */
    uint8_t          reason;        /* MEMO_REMOVED_*: why it left its table */
    int32_t          code;          /* a stored failure: fn's code (0: a value) */
};

static inline struct memo_pol *memo__pol_of(const struct memo_rec *r)
{
    return (struct memo_pol *)((uintptr_t)r - sizeof(struct memo_pol));
}

static inline struct memo_rec *memo__pol_rec(const struct memo_pol *e)
{
    return (struct memo_rec *)((uintptr_t)e + sizeof(struct memo_pol));
}

/* The bytes of e's block: its header and its record (a u64 one, or key and value). */
static inline size_t memo__pol_size(const struct memo_pol *e)
{
    const struct memo_rec *r = memo__pol_rec(e);
    return sizeof *e + (e->kind == MEMO__KIND_U64 ? sizeof *r : memo__rec_size(r->a, r->b));
}

#define MEMO__LIST_NONE      0
#define MEMO__LIST_WINDOW    1 /* new records */
#define MEMO__LIST_PROBATION 2 /* admitted from the window, not hit since */
#define MEMO__LIST_PROTECTED 3 /* hit while on probation */

/* Records retired from stores, freed together after one grace period: (record, store) pairs.
 * 62 a batch: one epoch entry (and one deferred call) per 62 records, in about 1 KiB. */
#define MEMO__BATCH 62
struct memo_batch {
    ck_epoch_entry_t retire;
    unsigned         n;
    struct {
        struct memo_rec   *rec;
        struct memo_store *store;
    } item[MEMO__BATCH];
    unsigned char    cls[MEMO__BATCH]; /* each record's size class */
};

/* ---- dense keys (dense.c) -------------------------------------------------------------------- */

/* A dense key's slot: 16 bytes, in an array indexed by the key. The word says what it holds:
 *   0                              empty
 *   marker | MEMO__DENSE_COMPUTING a computation in flight (a u64 marker, as in the hash table)
 *   marker | MEMO__DENSE_PUBLISHING its owner is storing the value (a few instructions)
 *   gen << 3 | MEMO__DENSE_READY   stored: the value is in value; gen is the memo's clear count
 *   MEMO__DENSE_CLEARING           a clear is giving the slot's chunk back
 */
struct memo_dense {
    _Atomic uint64_t word;
    _Atomic uint64_t value;
};
#define MEMO__DENSE_COMPUTING  1u
#define MEMO__DENSE_READY      2u
#define MEMO__DENSE_PUBLISHING 3u
#define MEMO__DENSE_TAG        3u
#define MEMO__DENSE_CLEARING   4u
#define MEMO__DENSE_GEN_SHIFT  3
#define MEMO__DENSE_CHUNK_SHIFT 12 /* 4096 keys, 64 KiB: the unit of commit and of give-back */
#define MEMO__DENSE_MAX        ((uint64_t)1 << 40)

/* Whether chunk c is committed (counted in memo_stats.bytes, its pages populated for writing). */
static inline bool memo__dense_committed(const _Atomic uint64_t *chunks, uint64_t c)
{
    return (atomic_load_explicit(&chunks[c / 64], memory_order_acquire) >> (c % 64)) & 1u;
}

/*
 * The hit: a stored value, read between two equal reads of the word (a clear gives pages back
 * with madvise, which no reader section covers: a value read across it would be a zero page's;
 * the gen in the word tells a slot refilled after a clear from the one first read). A slot of a
 * chunk not committed is not read at all: it is empty, and reading it would map the kernel's zero
 * page there, which committing the chunk then replaces at the cost of a TLB flush on every other
 * CPU that runs the process (an inter-processor interrupt; measured below in dense.c).
 */
static inline bool memo__dense_hit(const _Atomic uint64_t *chunks, struct memo_dense *d, uint64_t key,
                                   uint64_t *value)
{
    if (!memo__dense_committed(chunks, key >> MEMO__DENSE_CHUNK_SHIFT))
        return false;
    d += key;
    uint64_t w = atomic_load_explicit(&d->word, memory_order_acquire);
    if ((w & MEMO__DENSE_TAG) != MEMO__DENSE_READY)
        return false;
    /* Acquire: the word is read again after the value (a plain load on x86). */
    uint64_t v = atomic_load_explicit(&d->value, memory_order_acquire);
    if (atomic_load_explicit(&d->word, memory_order_relaxed) != w)
        return false;
    *value = v;
    return true;
}

/* ---- threads, locals, flights -------------------------------------------------------------- */

struct memo_flight {
    _Atomic uint64_t    seq;        /* odd while the computation that uses this slot runs */
    struct memo_thread *thread;     /* the owner: fixed for the flight's life */
};

/* As many flights as make a block of 1 KiB with malloc's 16-byte header: 62. */
#define MEMO__FLIGHTS_PER_BLOCK ((1024 - 16 - 2 * sizeof(void *)) / sizeof(struct memo_flight))
struct memo_flight_block {
    struct memo_flight_block *prev, *next;
    struct memo_flight        flights[MEMO__FLIGHTS_PER_BLOCK];
};

struct memo_counters {
    _Atomic uint64_t hits, misses, waits, errors;
    _Atomic int64_t  bytes;         /* bytes allocated minus freed through this local */
    _Atomic int64_t  entries;       /* dense values stored minus removed through this local */
};

struct memo_local {
    ck_epoch_record_t    record;    /* cache-line aligned by ck */
    alignas(MEMO__CACHELINE) struct memo_counters counters;
    struct memo         *memo;
    /* The owner; NULL while parked. Written by the owner (parking) and under the registry lock
     * (taking a parked local, memo_destroy); read by memo_release to tell a ref of the calling
     * thread's from one whose section was already ended when its thread exited. */
    _Atomic(struct memo_thread *) thread;
    unsigned             ref_index; /* its entry in thread->local_refs */
    unsigned             poll_at;   /* pending frees at which retiring next polls the epoch */
    struct memo_batch   *batch;     /* store records retired since the last seal */
    struct memo_batch   *reserve;   /* an empty batch, so that sealing seldom needs malloc */
    struct memo_marker  *markers;   /* freed u64 markers kept for reuse (a miss needs one) */
    unsigned             nmarkers;
    bool                 is_spare;  /* memo->spare: shared, used under memo->spare_lock */
    struct memo_local   *next;      /* memo->locals: every local of the memo */
    struct memo_local   *next_parked;
};

struct memo_local_ref {
    _Atomic uint64_t   id;          /* memo id, 0 = empty; written under the registry lock */
    struct memo_local *local;
};

struct memo_thread {
    /* Waiting publication, read by other threads' deadlock walks: a seqlock over the pair. */
    alignas(MEMO__CACHELINE) _Atomic uint32_t wait_gen;
    _Atomic(struct memo_flight *) wait_flight;
    _Atomic uint64_t              wait_seq;

    /* Owned by the thread: */
    /* The memo of the last call (MEMO__NO_MEMO: none) and this thread's local for it. memo_destroy
     * clears cache_memo
     * (a compare-exchange under the registry lock) in every living thread that has a local for
     * the memo, so a later memo at the same address never finds the old local here. */
    alignas(MEMO__CACHELINE) _Atomic(struct memo *) cache_memo;
    struct memo_local        *cache_local;
    struct memo_flight_block *flight_block;   /* block of the next free slot */
    unsigned                  flight_index;   /* next free slot in it */
    struct memo_flight_block *flight_first;
    struct memo_local_ref    *local_refs;     /* (memo id, local) pairs; swapped under the registry lock */
    unsigned                  nlocal_refs;
    struct memo_thread       *next_free;      /* the pool */
    unsigned                  exit_rounds;    /* thread-exit destructor rounds deferred (thread.c) */
    bool                      pooled;         /* in the pool (its thread exited) */
    struct memo_thread       *next_all;       /* every thread struct, under the registry lock */
};

/* ---- the policy (policy.c) ------------------------------------------------------------------ */

#define MEMO__SKETCH_ROWS 4
#define MEMO__REFRESHING_MAX 64 /* refreshes running at once per memo; past that, calls serve the old
                                 * value and try again later */

struct memo_ghost {
    uint64_t hash;
    uint64_t seq;
};

/* A memo's policy: bounds, expiry, the removal callback, and the eviction state. Every writer of
 * a memo with a policy takes its lock before a shard lock (memo__lock); eviction takes the shard
 * lock of each victim in turn under it. Hits take neither. */
struct memo_policy {
    pthread_mutex_t  lock;
    uint64_t         max_entries;   /* 0: none (memo_set_limits changes them under the lock) */
    uint64_t         max_bytes;
    uint64_t         ttl_ns, refresh_ns, failure_ttl_ns; /* 0: none */
    memo_clock_fn   *clock;         /* NULL: CLOCK_MONOTONIC */
    void            *clock_ctx;
    memo_removal_fn *on_removal;
    void            *removal_ctx;
    bool             clocked;       /* some expiry setting: hits read the clock */
    /* The lists (sentinels) and what they hold; the lock. */
    struct memo_pol  list[4];       /* indexed by MEMO__LIST_*; [0] unused */
    uint64_t         n[4];
    uint64_t         count;         /* records in the lists */
    uint64_t         rec_bytes;     /* their blocks' bytes */
    uint64_t         window_cap;    /* the window's share; ghost hits move it */
    bool             cold;          /* no reuse seen yet: the window is the whole bound */
    uint64_t         cold_evictions;
    /* The frequency sketch: 4-bit counters, two per byte. */
    unsigned char   *sketch;
    uint64_t         sketch_mask;   /* counters per row - 1 */
    uint64_t         sketch_adds, sketch_period;
    /* The ghosts (policy.c): two rings of recently evicted keys' hashes, and a map of them. */
    struct memo_ghost *ghost[2];
    uint64_t         ghost_cap, ghost_head[2], ghost_n[2], ghost_seq;
    struct memo_ghost *gmap;        /* hash 0: empty; seq: seq << 1 | which ghost */
    uint64_t         gmap_mask;
    /* Refreshes running (memo.c): their keys' hashes, so that a call that finds the key gone or
     * expired waits for the refresh instead of computing it a second time. */
    struct {
        unsigned long       hash;
        unsigned            kind;
        struct memo_thread *owner;
        uint64_t            token;
    }                refreshing[MEMO__REFRESHING_MAX];
    unsigned         nrefreshing;
    /* Shared counters. */
    alignas(MEMO__CACHELINE) _Atomic int64_t bytes; /* memo_stats.bytes of the memo */
    _Atomic uint64_t evictions;
    _Atomic uint64_t claims;        /* refresh tokens handed out */
    _Atomic(struct memo_pol *) removed; /* records whose grace period ended, for on_removal */
};

/* ---- the memo ------------------------------------------------------------------------------ */

struct memo_shard {
    /* 256 bytes (a power of two: indexing a shard is a shift) */
    alignas(4 * MEMO__CACHELINE) pthread_mutex_t lock; /* every ck_hs writer call runs under it */
    ck_hs_t            u64;         /* the u64 key space */
    ck_hs_t            bytes;       /* the byte key space */
    struct memo_store *store;       /* made on first use; none with MEMO_F_SYSTEM_ALLOC */
    unsigned long      presize[2];  /* slots the u64 / bytes table gets at its first insert */
    _Atomic int64_t    entries;     /* stored values (markers not counted) */
};

struct memo {
    uint64_t           id;          /* unique for the process: per-thread state is keyed by it */
    unsigned           flags;
    bool               system_alloc; /* MEMO_F_SYSTEM_ALLOC: every record malloc'd alone */
    unsigned           nshards;     /* power of two */
    unsigned           shard_mask;  /* nshards - 1 */
    struct memo_shard *shards;
    uint64_t           dense_n;     /* dense_keys: keys below it are dense; 0 = none */
    struct memo_dense *dense;       /* the reserved slots (mmap) */
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
    /* Dense keys, besides the slots: */
    size_t             dense_size;  /* bytes reserved */
    _Atomic uint64_t  *dense_chunks; /* one bit per chunk: committed (counted in bytes) */
    size_t             dense_words; /* 64-bit words of dense_chunks */
    _Atomic uint64_t   dense_gen;   /* clears begun */
    pthread_mutex_t    dense_lock;  /* a clear, and the first commit of a chunk */
    struct memo_policy *pol;        /* NULL: no bound, expiry or removal callback (lean records) */
#ifdef MEMO_TSAN
    char               tsan_epoch_sync; /* release at section end, acquire before reclaiming */
#endif
};

/* ---- cross-file functions ------------------------------------------------------------------ */

/* registry.c: the registry lock (the first lock whenever taken), live memos, memo ids */
MEMO__HIDDEN void memo__registry_lock(void);
MEMO__HIDDEN void memo__registry_unlock(void);
MEMO__HIDDEN void memo__registry_add(struct memo *m);
MEMO__HIDDEN void memo__registry_unlink(struct memo *m);
MEMO__HIDDEN struct memo *memo__registry_first(void);
MEMO__HIDDEN uint64_t memo__next_id(void);

/* thread.c */
extern MEMO__HIDDEN __attribute__((tls_model("initial-exec"))) _Thread_local struct memo_thread *memo__self;
extern MEMO__HIDDEN struct memo_thread memo__nobody;
/* What a thread's cache_memo holds when it caches no memo: an address no memo has (not NULL, so
 * that the hit paths need no test of m against NULL: a NULL m never matches the cache). */
#define MEMO__NO_MEMO ((struct memo *)&memo__nobody)
MEMO__HIDDEN struct memo_local *memo__local_slow(struct memo *m);
MEMO__HIDDEN int memo__spare_init(struct memo *m);
MEMO__HIDDEN struct memo_flight *memo__flight_push(struct memo_thread *t);
MEMO__HIDDEN void memo__flight_pop(struct memo_thread *t, struct memo_flight *f);
MEMO__HIDDEN void memo__registry_remove_locals(struct memo *m);
MEMO__HIDDEN void memo__threads_fork_child(struct memo_thread *self);

/* The calling thread's local for m, made on first use; NULL only when memory ran out. */
static inline struct memo_local *memo__local(struct memo *m)
{
    struct memo_thread *t = memo__self; /* never NULL: memo__nobody until the first call */
    if (memo__likely(atomic_load_explicit(&t->cache_memo, memory_order_relaxed) == m))
        return t->cache_local;
    return memo__local_slow(m);
}

static inline void memo__count(_Atomic uint64_t *counter)
{
    /* Only the owning thread writes its counters: a plain increment, atomic only so that
     * memo_stats may read it from another thread. No shared cache line is written. */
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* alloc.c */
/* Adds delta to l's byte count (memory memo holds that no malloc'd block stands for). */
MEMO__HIDDEN void  memo__mem_account(struct memo_local *l, int64_t delta);
MEMO__HIDDEN void *memo__mem_alloc(struct memo_local *l, size_t size);
MEMO__HIDDEN void  memo__mem_free(struct memo_local *l, void *p, size_t size);
MEMO__HIDDEN void  memo__table_alloc_init(struct ck_malloc *a);
/* The local whose allocator ck_hs's callbacks use: set around every ck_hs writer call and every
 * epoch poll on this thread (ck's callbacks carry no context of their own). */
extern MEMO__HIDDEN __attribute__((tls_model("initial-exec"))) _Thread_local struct memo_local *memo__alloc_local;

/* entry.c: markers */
MEMO__HIDDEN struct memo_marker *memo__marker_new(struct memo_local *l, unsigned kind, unsigned long hash,
                                                  uint64_t key_u64, const void *key, size_t key_len);
MEMO__HIDDEN void memo__marker_free_now(struct memo_local *l, struct memo_marker *k);
MEMO__HIDDEN void memo__marker_retire(struct memo_local *l, struct memo_marker *k);
MEMO__HIDDEN void memo__markers_drop(struct memo_local *l);
/* entry.c: records. The _locked calls run under s's lock (they use its store). */
MEMO__HIDDEN struct memo_rec *memo__rec_u64_new_locked(struct memo_local *l, struct memo_shard *s,
                                                      uint64_t key, uint64_t value);
MEMO__HIDDEN struct memo_rec *memo__rec_big_new(struct memo_local *l, const void *key, size_t key_len,
                                                size_t value_len);
MEMO__HIDDEN struct memo_rec *memo__rec_pol_u64_new(struct memo_local *l, uint64_t key, uint64_t value);
MEMO__HIDDEN struct memo_rec *memo__rec_publishable_locked(struct memo_local *l, struct memo_shard *s,
                                                           struct memo_rec *pending);
MEMO__HIDDEN void memo__rec_big_free_now(struct memo_local *l, struct memo_rec *r);
MEMO__HIDDEN void memo__rec_retire(struct memo_local *l, struct memo_shard *s, struct memo_rec *r, unsigned kind);
MEMO__HIDDEN void memo__rec_retire_big(struct memo_local *l, struct memo_rec *r);
MEMO__HIDDEN struct memo_store *memo__store_new(struct memo_local *l);
MEMO__HIDDEN void memo__store_retire(struct memo_local *l, struct memo_store *st);
MEMO__HIDDEN void memo__store_free(struct memo_local *l, struct memo_store *st);
MEMO__HIDDEN bool memo__rec_is_big(const struct memo *m, const struct memo_rec *r, unsigned kind);
/* entry.c: reclamation */
MEMO__HIDDEN void memo__epoch_poll(struct memo_local *l);
MEMO__HIDDEN void memo__epoch_poll_parked(struct memo *m);
MEMO__HIDDEN void memo__retire_poll(struct memo_local *l);
MEMO__HIDDEN void memo__batch_seal(struct memo_local *l);
/* entry.c: ck_hs callbacks (seed: the memo) */
MEMO__HIDDEN unsigned long memo__hs_hash_u64(const void *object, unsigned long seed);
MEMO__HIDDEN unsigned long memo__hs_hash_bytes(const void *object, unsigned long seed);
MEMO__HIDDEN bool memo__hs_compare_u64(const void *stored, const void *probe);
MEMO__HIDDEN bool memo__hs_compare_bytes(const void *stored, const void *probe);

/* table.c */
MEMO__HIDDEN int  memo__shards_init(struct memo *m, size_t expected_entries);
MEMO__HIDDEN void memo__shards_destroy(struct memo *m, struct memo_local *l);
MEMO__HIDDEN void memo__shard_clear(struct memo *m, struct memo_shard *s, struct memo_local *l);
MEMO__HIDDEN void memo__table_presize_locked(struct memo_shard *s, unsigned kind);

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
    return &m->shards[(hash >> 32) & m->shard_mask];
}

/* wait.c */
/* Clears what t says it waits for (every way out of a wait does; a pooled thread struct is
 * cleared again when reused, so no stale wait can ever reach another thread's deadlock walk). */
MEMO__HIDDEN void memo__unpublish_waiting(struct memo_thread *t);
/* Waits until e leaves COMPUTING, or the deadline passes (deadline_ns 0: none; UINT64_MAX:
 * already passed). Returns the state seen, MEMO_EDEADLK or MEMO_ETIMEDOUT. The caller is inside
 * l's read-side section, which a cancellation during the sleep ends. */
MEMO__HIDDEN int  memo__wait(struct memo_thread *self, struct memo_local *l, struct memo_marker *e,
                             uint64_t deadline_ns);
MEMO__HIDDEN void memo__wake(struct memo_marker *e);
/* Sets a marker's final state (the DETACHED flag kept), waking its sleepers; returns the old word. */
MEMO__HIDDEN uint32_t memo__marker_finish(struct memo_marker *marker, uint32_t state);
MEMO__HIDDEN uint64_t memo__now_ns(void);

/* memo.c: what dense.c shares with the hash table's get */
/* A key being asked for: its space, hash, and what ck_hs compares it by. */
struct memo_key {
    unsigned         kind;   /* MEMO__KIND_U64 or MEMO__KIND_BYTES */
    unsigned long    hash;
    uint64_t         u64;    /* u64: the key (ck_hs's probe points here) */
    struct memo_probe probe; /* bytes: ck_hs's probe */
};

/* One get, through the steps after its first look (memo.c, and dense.c for dense keys). */
struct memo_call {
    struct memo       *memo;
    struct memo_local *local;
    struct memo_shard *shard;
    struct memo_key    key;
    uint64_t           deadline;   /* 0: none */
    memo_fn           *fn;
    memo_fn_u64       *fn_u64;
    void              *ctx;
    memo_ref_t        *ref;        /* bytes */
    uint64_t          *value;      /* u64 */
};

/* One computation run by the calling thread: what the cleanup handler needs if it dies. */
struct memo_flight_run {
    struct memo        *memo;
    struct memo_shard  *shard;      /* hash keys */
    ck_hs_t            *table;
    struct memo_dense  *dense;      /* dense keys: the slot (shard and table NULL) */
    struct memo_marker *marker;
    struct memo_flight *flight;
    struct memo_thread *self;
};


MEMO__HIDDEN bool memo__take_marker(struct memo_call *c, struct memo_marker *e, int *rc);
MEMO__HIDDEN int  memo__get_dense_slow(struct memo *m, uint64_t key, memo_fn_u64 *fn, void *ctx,
                                       uint64_t deadline, uint64_t *value, struct memo_local *l);
MEMO__HIDDEN void memo__section_end(struct memo_local *l);

/* dense.c */
MEMO__HIDDEN int  memo__dense_init(struct memo *m, uint64_t n);
MEMO__HIDDEN void memo__dense_destroy(struct memo *m);
/* The miss: claims the slot and runs fn (*again: another thread claimed it first; look again). */
MEMO__HIDDEN int  memo__dense_compute(struct memo *m, struct memo_local *l, uint64_t key, memo_fn_u64 *fn,
                                      void *ctx, uint64_t *value, bool *again);
MEMO__HIDDEN int  memo__dense_forget(struct memo *m, uint64_t key, struct memo_local *l);
MEMO__HIDDEN void memo__dense_clear(struct memo *m, struct memo_local *l);
MEMO__HIDDEN void memo__dense_fork_child(struct memo *m, struct memo_thread *self);
MEMO__HIDDEN void memo__dense_wait_slot(unsigned *spins);
/* fn failed (code != 0) or its owner died (0): the slot is let go, then the marker settles. */
MEMO__HIDDEN void memo__dense_flight_fail(struct memo_flight_run *run, struct memo_local *l, int code);

/* policy.c (memo_policy above). Under the policy lock: the _locked calls. */
MEMO__HIDDEN int  memo__policy_init(struct memo *m, const memo_config_t *c);
MEMO__HIDDEN void memo__policy_destroy(struct memo *m);
MEMO__HIDDEN uint64_t memo__policy_now(const struct memo_policy *p);
MEMO__HIDDEN void memo__policy_unlink_locked(struct memo *m, struct memo_pol *e);
MEMO__HIDDEN void memo__policy_remove_locked(struct memo *m, struct memo_local *l, struct memo_pol *e,
                                             unsigned reason);
MEMO__HIDDEN void memo__policy_expire_locked(struct memo *m, struct memo_local *l, struct memo_pol *e,
                                             struct memo_shard *held);
MEMO__HIDDEN void memo__policy_replace_locked(struct memo *m, struct memo_pol *old, struct memo_pol *fresh);
/* fresh was just put in its table (held: the shard whose lock the caller also holds). */
MEMO__HIDDEN void memo__policy_stored_locked(struct memo *m, struct memo_local *l, struct memo_pol *fresh,
                                             struct memo_shard *held);
MEMO__HIDDEN void memo__policy_replaced_locked(struct memo *m, struct memo_local *l, struct memo_pol *old,
                                               struct memo_pol *fresh, struct memo_shard *held);
MEMO__HIDDEN void memo__removals_run(struct memo_local *l);
MEMO__HIDDEN void memo__policy_keep_bounds_locked(struct memo *m, struct memo_local *l, struct memo_shard *held);
MEMO__HIDDEN void memo__policy_set_limits_locked(struct memo *m, struct memo_local *l, uint64_t max_entries,
                                                 uint64_t max_bytes);
/* entry.c: a policy record leaves (its reason set): counted out now, freed after its grace. */
MEMO__HIDDEN void memo__pol_retire(struct memo_local *l, struct memo_pol *e);

/* A writer's locks: the policy's first, if the memo has one, then the shard's; and the allocator
 * local that ck_hs's callbacks use. */
static inline void memo__lock(struct memo *m, struct memo_shard *s, struct memo_local *l)
{
    if (m->pol != NULL)
        memo__mutex_lock(&m->pol->lock);
    memo__mutex_lock(&s->lock);
    memo__alloc_local = l;
}

static inline void memo__unlock_shard(struct memo_shard *s)
{
    memo__alloc_local = NULL;
    memo__mutex_unlock(&s->lock);
}

static inline void memo__unlock(struct memo *m, struct memo_shard *s)
{
    memo__unlock_shard(s);
    if (m->pol != NULL)
        memo__mutex_unlock(&m->pol->lock);
}

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
