/*
 * memo: thread-safe concurrent memoization.
 *
 * One header, the whole public API. It includes only the C standard library, so it compiles as
 * C11 and as C++ (no dependency's header leaks through).
 *
 * Concurrency contract, in brief (each function repeats what applies to it):
 *  - Any thread may call any function on any memo at any time, with no registration; per-thread
 *    state is made on first use and released when the thread exits.
 *  - No function may be called from a signal handler.
 *  - fork(): memo's atfork handlers hold every memo lock across the fork, so none is left held
 *    in the child. The child may use every memo it inherited, from the forking thread and from
 *    threads it starts, and may destroy it. In the child: values stored before the fork are
 *    there; a computation that another thread of the parent was running is gone (its marker and
 *    the value its fn had made so far are freed; a call for its key computes it afresh); refs
 *    that the forking thread held stay valid and must be released as usual; refs that other
 *    threads held are gone with those threads (their memory is reclaimed). What the child
 *    cannot free: a computation of another thread that a forget or clear had detached before
 *    the fork, and a value such a thread's fn was allocating at the very instant of the fork
 *    (one marker and one value at most per thread computing then). memo_destroy in the parent
 *    and in the child are independent.
 *  - "May block" means the call may sleep waiting for another thread's computation or take a
 *    short internal lock; "never blocks" means neither.
 *
 * Limits (what remains; nothing else in memo is capped by a per-process resource):
 *  - threads: any number; each thread that uses a memo holds a small state for it (an epoch
 *    record and counters, ~200 bytes) until it exits; states are reused by later threads.
 *  - memos: any number alive at once (memory is the only bound).
 *  - entries: at most 2^30 per shard (stored values and computations in flight), so a memo
 *    holds at most shards x 2^30; past that a miss returns MEMO_ENOMEM. Dense keys: at most
 *    2^40 (memo_config_t.dense_keys), in address space that memo_create reserves.
 *  - keys and values: any length that malloc can give, less memo's header (~80 bytes).
 *  - a chain of threads waiting on each other's computations is followed 4096 links deep to
 *    detect a cycle; a longer chain is not reported by the thread at its end (the others are).
 *  - memory comes from malloc: slabs of packed values, larger values, tables and markers are
 *    malloc'd blocks counted against their memo (memo_stats.bytes); linking memo does not
 *    replace or configure the process malloc.
 *  - libmemo.so can be loaded with dlopen (ctypes, plugin hosts): its only thread-local storage
 *    of the initial-exec model is 16 bytes, within what glibc keeps for dlopen. dlclose does
 *    not unload it (it is linked with -z nodelete): threads that used memo run its thread-exit
 *    destructor whenever they exit.
 *
 * ABI: within one major version, structs only grow at their end (memo_config_t carries its size)
 * and functions are only added. The library's SOVERSION is the major version.
 */
#ifndef MEMO_H
#define MEMO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h> /* MEMO_DEFINE copies keys and results with memcpy */

#ifdef __cplusplus
extern "C" {
#endif

#define MEMO_VERSION_MAJOR 0
#define MEMO_VERSION_MINOR 2
#define MEMO_VERSION_PATCH 0
/* 0xMMmmpp: compare with #if MEMO_VERSION_HEX >= 0x000200 */
#define MEMO_VERSION_HEX ((MEMO_VERSION_MAJOR << 16) | (MEMO_VERSION_MINOR << 8) | MEMO_VERSION_PATCH)

#if defined(MEMO_STATIC)
#define MEMO_EXPORT
#elif defined(__GNUC__)
#define MEMO_EXPORT __attribute__((visibility("default")))
#else
#define MEMO_EXPORT
#endif

/* ---------------------------------------------------------------------------------------------
 * Errors. Every call that can fail returns int: MEMO_OK, a negative MEMO_E* code, or the positive
 * code that a compute function returned.
 */
#define MEMO_OK         0
#define MEMO_ENOMEM     (-1)  /* memory could not be had */
#define MEMO_EINVAL     (-2)  /* a bad argument */
#define MEMO_EDEADLK    (-3)  /* the value depends on itself (this thread or a cycle of threads) */
#define MEMO_ETIMEDOUT  (-4)  /* a timed call gave up waiting for another thread's computation */
#define MEMO_ENOENT     (-5)  /* memo_lookup / memo_forget: nothing stored under that key */

/* Every code of memo's own with its text: the one list that memo_strerror and memo_err_name are
 * made from (so that they cannot drift apart), for a caller's own tables too:
 *   #define CASE(code, text) case code: ...
 *   MEMO_ERRNO_MAP(CASE) */
#define MEMO_ERRNO_MAP(XX)                                                             \
    XX(MEMO_OK, "success")                                                             \
    XX(MEMO_ENOMEM, "out of memory")                                                   \
    XX(MEMO_EINVAL, "invalid argument")                                                \
    XX(MEMO_EDEADLK, "the value depends on itself (a computation cycle)")              \
    XX(MEMO_ETIMEDOUT, "timed out waiting for another thread's computation")           \
    XX(MEMO_ENOENT, "no value stored under that key")

/* A string naming any code: memo's own codes and unknown negative ones get a static string; a
 * positive code gets "compute function failed with code N", written into a per-thread buffer that
 * stays valid until this thread's next memo_strerror of a positive code. Never blocks;
 * thread-safe; never returns NULL. */
MEMO_EXPORT const char *memo_strerror(int code);
/* The short name of a code ("MEMO_ENOMEM"), or "MEMO_E?" for an unknown one. Never blocks. */
MEMO_EXPORT const char *memo_err_name(int code);
/* The library's version, "MAJOR.MINOR.PATCH". Never blocks. */
MEMO_EXPORT const char *memo_version(void);

/* ---------------------------------------------------------------------------------------------
 * Creating and destroying.
 */
typedef struct memo memo_t; /* opaque */

/* 0.2: bounds, expiry, the removal callback and the clock: see "Bounds and expiry" below. */
typedef uint64_t memo_clock_fn(void *ctx);            /* nanoseconds; never goes backwards */

typedef struct memo_removal {
    const void *key;     size_t key_len;    /* u64 key space: points to the uint64_t key, key_len 8 */
    const void *value;   size_t value_len;  /* u64 key space: points to the uint64_t value, value_len 8 */
    int         reason;                     /* MEMO_REMOVED_* */
    int         key_space;                  /* MEMO_KEYS_BYTES or MEMO_KEYS_U64 */
} memo_removal_t;
typedef void memo_removal_fn(void *ctx, const memo_removal_t *removal);

#define MEMO_KEYS_BYTES 1
#define MEMO_KEYS_U64   2
#define MEMO_REMOVED_EVICTED   1   /* dropped to keep max_entries / max_bytes */
#define MEMO_REMOVED_EXPIRED   2   /* older than its time to live */
#define MEMO_REMOVED_REPLACED  3   /* a refresh stored a newer value for its key */
#define MEMO_REMOVED_FORGOTTEN 4   /* memo_forget, memo_forget_u64, memo_clear */
#define MEMO_REMOVED_DESTROYED 5   /* memo_destroy */

typedef struct memo_config {
    size_t   struct_size;      /* sizeof(memo_config_t); lets later versions append fields */
    size_t   expected_entries; /* sizing hint; 0 = start small and grow (see memo_create) */
    unsigned shards;           /* 0 = 32 per CPU (16 to 1024); else a power of two, <= 4096 */
    unsigned flags;            /* MEMO_F_* */
    uint64_t seed;             /* hash seed; 0 = a fresh random seed for this memo */
    /* 0.2 */
    uint64_t         max_entries;     /* 0 = no bound on the number of stored values */
    uint64_t         max_bytes;       /* 0 = no bound on memo_stats.bytes */
    uint64_t         ttl_ns;          /* 0 = values never expire */
    uint64_t         refresh_ns;      /* 0 = no refresh */
    uint64_t         failure_ttl_ns;  /* 0 = failures are not stored */
    memo_removal_fn *on_removal;      /* NULL = none */
    void            *removal_ctx;
    memo_clock_fn   *clock;           /* NULL = CLOCK_MONOTONIC */
    void            *clock_ctx;
    uint64_t         dense_keys;      /* 0 = none; N: the u64 keys 0 .. N-1 in a flat table (below) */
} memo_config_t;
/* Every field named, so that -Wmissing-field-initializers (in -Wextra) stays quiet in C and C++. */
#define MEMO_CONFIG_INIT { sizeof(memo_config_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/* Every stored value (its key and value) in a malloc'd block of its own, freed with free, so that
 * sanitizers and valgrind see each one, and memo_stats.bytes comes back exactly to its level
 * after forget. Without it, values of up to 512 bytes with their keys are packed into 1 to 16 KiB
 * slabs per shard (a u64 value takes 16 bytes), which a forget reuses but does not give back and
 * a memo_clear gives back whole. memo_stats.bytes counts the bytes memo asked malloc for (exact
 * and independent of malloc's layout; malloc's own overhead is not counted). */
#define MEMO_F_SYSTEM_ALLOC (1u << 0)

/*
 * Dense keys (dense_keys = N): the u64 keys 0 .. N-1 live in a flat table indexed by the key: no
 * hashing, no probing, no allocation per key, and a hit reads one 16-byte slot and nothing else.
 * Other u64 keys, and byte keys, use the hash table. Every rule of this header holds the same for
 * dense keys (single flight, failures, MEMO_EDEADLK, dying computers, timed waits, lookup, forget,
 * clear, stats). memo_create reserves address space for the N slots (16 bytes each) and memory is
 * committed a chunk of 4096 keys (64 KiB) at a time, when a key of the chunk is first computed:
 * memo_stats.bytes counts the chunks committed and a bitmap of one bit per chunk. A forget frees
 * nothing (the slot stays); memo_clear and memo_destroy give the chunks back to the system. With
 * dense_keys, memo_create returns MEMO_EINVAL if any bound, expiry or removal setting is given,
 * and MEMO_ENOMEM if the space cannot be reserved (N past 2^40, or past what the address space
 * or the process's limits allow).
 */

/*
 * Bounds and expiry (API.md "0.2"). max_entries bounds the stored values of both key spaces
 * together (stored failures count; computations in flight do not); max_bytes bounds
 * memo_stats.bytes. Once no call is in progress, entries <= max_entries and bytes <= max_bytes
 * (or entries == 0); while calls run, a bound may be passed by what the storing threads add. A
 * value that alone would not fit in max_bytes is returned to its caller and waiters, not stored.
 *
 * Eviction is W-TinyLFU on second-chance lists (src/policy.c): a window for new values, a main
 * part split in probation and protected, a frequency sketch that admits a value leaving the window
 * only if its key is asked for more often than the main part's victim, and a window share that
 * hill climbing moves with the hit ratio. On the public traces of bench/policies it beats exact
 * LRU (lru_cache's policy) on average and loses no more than a point to it on any trace and size
 * (README, "Bounds and expiry"). A hit takes no lock: it sets its value's visited bit if it is
 * clear, and writes nothing else. Evicting never makes a hit wait or fail, and a ref taken before
 * an eviction stays valid until released. memo_stats.evictions counts values removed for a bound
 * or for expiry.
 *
 * ttl_ns: a value stored at s (the clock's reading) is returned only to calls that start before
 * s + ttl_ns; later calls compute afresh (memo_get*) or find nothing (memo_lookup*). refresh_ns:
 * the first call that finds a value at least refresh_ns old (and not expired) runs fn and returns
 * the new value, which replaces the old (MEMO_REMOVED_REPLACED); every other call meanwhile gets
 * the old value at once, as a hit. A failed refresh returns fn's code to its caller and leaves
 * the old value. failure_ttl_ns: a positive code of fn is stored for that long and returned by
 * calls for its key without running fn (hits); lookups do not see it, forget removes it (0).
 * Expired values are removed as calls store others (two looked at per store), so a memo with a
 * ttl and no bound does not keep them. A memo with no expiry setting never reads the clock; one
 * with a ttl reads it once per hit. The clock (default CLOCK_MONOTONIC) is called from any
 * thread, concurrently, and must not call memo.
 *
 * on_removal(removal_ctx, r) is called exactly once for every value memo stored (not for stored
 * failures) when it frees it: after it left the memo for r->reason and every ref and lookup that
 * could see it has ended (the callback may free what the value points to). It runs on a thread
 * inside a call of this memo (or in memo_destroy, for every value left: MEMO_REMOVED_DESTROYED),
 * with no memo lock held; it may call memo on other memos, not on this one. r's pointers are
 * valid during the call only.
 *
 * Storage: a memo with any of these settings keeps, before each stored value, 48 bytes for its
 * policy (list links, deadlines, the visited bit), and each value is malloc'd alone (as with
 * MEMO_F_SYSTEM_ALLOC); a memo without keeps the lean layout (16 bytes per u64 value). Memory
 * outside memo_stats.bytes: the frequency sketch, 2 bytes per max_entries (at least 2 KiB, at
 * most 2 MiB), and the ghosts of evicted keys, 16 bytes per max_entries (at most 2 MiB) and their
 * map (twice that, at most 4 MiB), made at create and by memo_set_limits. A memo bounded by bytes
 * alone, or by more than 2^32 entries, sizes them for 4096 entries. Dense keys take no policy: dense_keys with
 * any bound, expiry setting, on_removal or clock is MEMO_EINVAL.
 */

/*
 * Makes a memo. cfg NULL means all defaults. A cfg whose struct_size is that of an older, shorter
 * memo_config_t is accepted (missing fields take their defaults). A struct_size larger than this
 * version's (a program built against a later header) is accepted when the bytes this version does
 * not know are all zero, as with Linux's extensible structs; otherwise, or past 1024 bytes, or
 * smaller than the first version's (0.1: up to seed, 40 bytes), or between two versions' sizes,
 * it is MEMO_EINVAL, and so are shards that are not a power of
 * two, more than 4096 shards, unknown flags, and an expected_entries past what the shards can
 * hold (shards x 2^30). expected_entries presizes the tables for at most 2^24 entries (about
 * 300 MiB of tables); a larger memo grows past that as entries come; it sizes the hash table
 * only (dense keys need no hint). A memo with a bound, an expiry setting or on_removal has one
 * shard unless shards says otherwise (its stores all take one policy lock; see "Bounds and
 * expiry"). *out is set only on success.
 * Returns 0, MEMO_EINVAL or MEMO_ENOMEM. May block (briefly, on a process-wide lock).
 * May be called inside a compute function.
 */
MEMO_EXPORT int memo_create(memo_t **out, const memo_config_t *cfg);

/*
 * Changes both bounds of m while it is in use (0 = no bound). Lowering them evicts before it
 * returns. A memo made with none of the settings of "Bounds and expiry" has no room for a policy
 * in its records (the lean layout): MEMO_EINVAL, as for m NULL; make a memo that may be bounded
 * later with max_entries = UINT64_MAX. Returns 0 or MEMO_EINVAL. May block briefly (the policy
 * lock); may be called inside a compute function.
 */
MEMO_EXPORT int memo_set_limits(memo_t *m, uint64_t max_entries, uint64_t max_bytes);

/*
 * Destroys m and gives all of its memory back.
 * NULL is a no-op. Requires that no other thread is using m (no call in progress, no memo_ref_t
 * of m still held, m's own compute functions finished); threads that used m earlier may live on
 * and go on to use other memos: their per-thread state for m is dropped here. May block briefly.
 * Must not be called from inside one of m's own compute functions.
 */
MEMO_EXPORT void memo_destroy(memo_t *m);

/* ---------------------------------------------------------------------------------------------
 * Get or compute, byte keys.
 */
typedef struct memo_result memo_result_t; /* opaque: where a compute function puts its value */

/*
 * A compute function: computes the value for key, stores it into out, returns 0; or returns a
 * non-zero code (positive for its own errors; memo's negative codes travel unchanged). It runs in
 * the thread of the caller that missed, with no memo lock held and outside memo's read-side
 * sections; it may call any memo function, on this memo or another, except memo_destroy of a memo
 * in use. A fn that returns 0 without storing anything stores an empty value (len 0).
 */
typedef int memo_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out);

/*
 * Stores a copy of len bytes (value may be NULL when len is 0) as the value being computed.
 * Calling it again replaces the earlier value. Only from inside the compute function that was
 * handed out, while it runs (any thread may call it, one at a time). Returns 0, MEMO_EINVAL (out
 * or value NULL) or MEMO_ENOMEM. Never blocks on other computations.
 */
MEMO_EXPORT int memo_result_set(memo_result_t *out, const void *value, size_t len);

/*
 * Room for len bytes of value, aligned for any type (max_align_t), to fill in place before the
 * compute function returns; replaces any earlier value. NULL on MEMO_ENOMEM or a NULL out.
 * Same rules as memo_result_set.
 */
MEMO_EXPORT void *memo_result_alloc(memo_result_t *out, size_t len);

/*
 * Gives the value being computed its own time to live instead of the memo's ttl_ns: UINT64_MAX,
 * it never expires; 0, it is returned to its caller and waiters but not stored (HTTP's no-store).
 * Same rules as memo_result_set. Returns 0, or MEMO_EINVAL for out NULL or a memo made with none
 * of the settings of "Bounds and expiry" (its records keep no deadline). Never blocks.
 */
MEMO_EXPORT int memo_result_ttl(memo_result_t *out, uint64_t ttl_ns);

typedef struct memo_ref {
    const void *data;  /* the value: aligned for any type, valid until memo_release */
    size_t      len;
    /* private: */
    void       *memo__local;
    uintptr_t   memo__pad;
} memo_ref_t;
#define MEMO_REF_INIT { NULL, 0, NULL, 0 }

/*
 * Returns the value stored under key, computing it with fn(ctx, ...) if there is none.
 *  - At most once: for one key, at most one call of fn runs at a time in the whole process; other
 *    callers of that key sleep (after a short spin) and then take the same result.
 *  - If fn returns non-zero, nothing is stored; the caller that ran it and every caller that
 *    waited on that run get the same code; the next call runs fn again.
 *  - If the key is being computed by the calling thread itself, or by a thread that is
 *    (transitively) waiting on the calling thread, returns MEMO_EDEADLK at once.
 *  - If the computing thread dies (pthread_exit, cancellation, a C++ exception thrown through fn),
 *    its waiters wake and one of them computes afresh. The exception goes on to the caller.
 * On success (0) *ref views the value until memo_release(ref), even if the entry is forgotten or
 * cleared meanwhile. A held ref delays the reclamation of m's removed entries: release it soon.
 * A ref must be released by the thread that got it, and before m is destroyed.
 * key may be NULL when key_len is 0. Returns 0, MEMO_EINVAL (m, fn or ref NULL), MEMO_ENOMEM,
 * MEMO_EDEADLK, or fn's code. May block: waits for another thread's computation without bound,
 * and runs fn. May be called inside fn and while holding refs.
 * Waiting for another thread's computation is a cancellation point, as pthread_cond_wait is: a
 * waiter that pthread_cancel ends leaves that computation running and holds nothing of memo's
 * (refs it got earlier are its own to release, in its own cleanup handlers).
 */
MEMO_EXPORT int memo_get(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx,
                         memo_ref_t *ref);

/*
 * memo_get that waits at most timeout_ns for another thread's computation, then returns
 * MEMO_ETIMEDOUT; that computation goes on and stores its value. The caller's own fn, if this
 * call runs it, is never bounded. timeout_ns 0 means "do not wait at all".
 */
MEMO_EXPORT int memo_get_timed(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *ctx,
                               uint64_t timeout_ns, memo_ref_t *ref);

/*
 * The stored value under key, or MEMO_ENOENT (also while the key is being computed). Never
 * computes, never waits, never blocks. Returns 0, MEMO_ENOENT or MEMO_EINVAL.
 */
MEMO_EXPORT int memo_lookup(memo_t *m, const void *key, size_t key_len, memo_ref_t *ref);

/*
 * Ends the view that *ref holds and empties it. A ref that holds nothing (zeroed, MEMO_REF_INIT,
 * already released, or NULL) is a no-op. Never blocks. Must run on the thread that got the ref.
 * While a thread exits, refs it still holds may be released from its thread-key destructors
 * (a program's own keys, made after the thread's first memo call or before): memo keeps the
 * thread's state until glibc's last round of destructors. A ref still held after that round is
 * ended for the thread (its memory may then be reclaimed), and releasing it later is a no-op.
 */
MEMO_EXPORT void memo_release(memo_ref_t *ref);

/* ---------------------------------------------------------------------------------------------
 * Get or compute, u64 keys and values: the fast path for DP solvers. The same semantics as
 * memo_get, with the value copied out (no ref to release). u64 keys and byte keys are separate
 * key spaces in the same memo. A hit takes no lock and writes no shared memory.
 * A memo_fn_u64 is called with *value 0: one that returns 0 without writing it stores 0.
 */
typedef int memo_fn_u64(void *ctx, uint64_t key, uint64_t *value);

/* Returns 0 (and *value), MEMO_EINVAL (m, fn or value NULL), MEMO_ENOMEM, MEMO_EDEADLK or fn's
 * code. May block; may be called inside fn and while holding refs. */
MEMO_EXPORT int memo_get_u64(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx, uint64_t *value);

/* memo_get_u64 with a bound on waiting, as memo_get_timed. */
MEMO_EXPORT int memo_get_u64_timed(memo_t *m, uint64_t key, memo_fn_u64 *fn, void *ctx,
                                   uint64_t timeout_ns, uint64_t *value);

/* The stored value, or MEMO_ENOENT; never computes, never blocks. */
MEMO_EXPORT int memo_lookup_u64(memo_t *m, uint64_t key, uint64_t *value);

/* As memo_forget, for a u64 key. */
MEMO_EXPORT int memo_forget_u64(memo_t *m, uint64_t key);

/* ---------------------------------------------------------------------------------------------
 * Forgetting, clearing, statistics. Safe while other threads use m; may be called inside fn and
 * while holding refs (refs stay valid). They take shard locks briefly and never wait for a
 * computation.
 *
 * memo_forget returns 0 when it removed a stored value, and MEMO_ENOENT when nothing was stored,
 * including when k was being computed: that computation is then detached. After memo_forget(k)
 * returns, a new call for k never waits on a computation that began before it, and nothing such
 * a computation returns is stored (its own caller and waiters still get its result; if that
 * caller computes k again from inside fn, the new computation is an independent one). memo_clear
 * does the same for every key, shard by shard (not one atomic step across keys): each shard's
 * tables are swapped for empty ones and its packed values dropped with their slabs, in one step,
 * and given back once no reader can see them (cost: a scan of the shard's slots, no work per
 * value but for values over 512 bytes); dense keys' committed chunks are emptied and given back
 * to the system (a scan of their slots and one madvise per chunk). Neither needs memory: they work even when the calling
 * thread's state for m cannot be made.
 */
MEMO_EXPORT int  memo_forget(memo_t *m, const void *key, size_t key_len); /* 0, MEMO_ENOENT, MEMO_EINVAL */
MEMO_EXPORT void memo_clear(memo_t *m);                                   /* forget every key */

typedef struct memo_stats {
    uint64_t hits;       /* calls answered from a stored value */
    uint64_t misses;     /* calls that ran fn (one per computation) */
    uint64_t waits;      /* calls that waited for another thread's computation and took its
                            result (a failure code included) */
    uint64_t errors;     /* computations whose fn returned non-zero */
    uint64_t evictions;  /* values dropped to keep a bound */
    uint64_t entries;    /* values stored now */
    uint64_t bytes;      /* memory that m holds now: entries, keys, values, tables */
} memo_stats_t;

/*
 * Sums the per-thread counters of m (threads that have exited included). Exact once the threads
 * that used m are quiescent; while calls run, each counter is a recent value. memo_lookup counts
 * as a hit when it finds a value and counts nothing otherwise. May block briefly (it takes the
 * lock of m's list of per-thread states, not the shard locks).
 */
MEMO_EXPORT void memo_stats(memo_t *m, memo_stats_t *out);

/* ---------------------------------------------------------------------------------------------
 * The decorator: memoizing a function of one uint64_t in one line.
 *
 *   MEMO_DEFINE_U64(fib, n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
 *
 * defines  uint64_t fib(uint64_t n);  and  memo_t *fib_memo(void);
 * The memo is created on first use, thread-safely, and shared by all threads. A memo error inside
 * (a cycle, no memory) prints memo_strerror and aborts, like a failed assert.
 */
MEMO_EXPORT memo_t *memo__define_memo(memo_t *volatile *slot);
/* The same with a config (NULL: the defaults), or with max_entries (0: no bound). */
MEMO_EXPORT memo_t *memo__define_memo_config(memo_t *volatile *slot, const memo_config_t *cfg);
MEMO_EXPORT memo_t *memo__define_memo_bounded(memo_t *volatile *slot, uint64_t max_entries);
MEMO_EXPORT uint64_t memo__define_call(memo_t *m, uint64_t key, memo_fn_u64 *fn, const char *name);

/* name##_memo(): the decorator's memo, made on first use (memo__define_memo). */
#define MEMO__DEFINE_ACCESSOR(name)                                                       \
    memo_t *name##_memo(void)                                                             \
    {                                                                                     \
        static memo_t *volatile name##_memo__slot;                                        \
        return memo__define_memo(&name##_memo__slot);                                     \
    }

#define MEMO__DEFINE_ACCESSOR_BOUNDED(name, max_entries)                                  \
    memo_t *name##_memo(void)                                                             \
    {                                                                                     \
        static memo_t *volatile name##_memo__slot;                                        \
        return memo__define_memo_bounded(&name##_memo__slot, (max_entries));              \
    }

/* The config is made only until the memo exists (the acquire load pairs with the release of
 * memo__define_memo_config's exchange). */
#define MEMO__DEFINE_ACCESSOR_CONFIG(name, ...)                                           \
    memo_t *name##_memo(void)                                                             \
    {                                                                                     \
        static memo_t *volatile name##_memo__slot;                                        \
        memo_t *memo__m = __atomic_load_n(&name##_memo__slot, __ATOMIC_ACQUIRE);          \
        if (memo__m != NULL)                                                              \
            return memo__m;                                                               \
        {                                                                                 \
            const memo_config_t memo__c = { .struct_size = sizeof(memo_config_t),         \
                                             __VA_ARGS__ };                               \
            return memo__define_memo_config(&name##_memo__slot, &memo__c);                \
        }                                                                                 \
    }

#define MEMO__DEFINE_U64_WITH(name, arg, accessor)                                        \
    static uint64_t name##_memo__body(uint64_t arg);                                      \
    static int name##_memo__fn(void *ctx, uint64_t key, uint64_t *value)                  \
    {                                                                                     \
        (void)ctx;                                                                        \
        *value = name##_memo__body(key);                                                  \
        return 0;                                                                         \
    }                                                                                     \
    accessor                                                                              \
    uint64_t name(uint64_t arg)                                                           \
    {                                                                                     \
        return memo__define_call(name##_memo(), arg, name##_memo__fn, #name);             \
    }                                                                                     \
    static uint64_t name##_memo__body(uint64_t arg)

#define MEMO_DEFINE_U64(name, arg) MEMO__DEFINE_U64_WITH(name, arg, MEMO__DEFINE_ACCESSOR(name))

/*
 * The decorator with a configuration: designated initializers of memo_config_t after the argument
 * (C, or C++20, in the fields' order):
 *
 *   MEMO_DEFINE_U64_CONFIG(fib, n, .max_entries = 128) { ... }
 */
#define MEMO_DEFINE_U64_CONFIG(name, arg, ...)                                            \
    MEMO__DEFINE_U64_WITH(name, arg, MEMO__DEFINE_ACCESSOR_CONFIG(name, __VA_ARGS__))

/* ---------------------------------------------------------------------------------------------
 * The decorator for any signature: one to four arguments of any types that can be copied with =.
 *
 *   MEMO_DEFINE(uint64_t, binom, (uint32_t, n), (uint32_t, k))
 *   {
 *       return k == 0 || k == n ? 1 : binom(n - 1, k - 1) + binom(n - 1, k);
 *   }
 *
 * defines  uint64_t binom(uint32_t n, uint32_t k);  and  memo_t *binom_memo(void);
 * The key is the arguments' bytes, copied into a struct that is zeroed first (so its padding is
 * zero): two calls share a value exactly when their arguments are bitwise equal (0.0 and -0.0 are
 * different keys; a pointer is keyed by its address; a struct argument's own padding is whatever
 * the compiler copies with it: gcc copies it, clang may not). The result is stored by value, its bytes.
 * When the key and the result fit in 8 bytes each, the memo's u64 key space is used (no ref, no
 * allocation per hit); otherwise its byte keys. The memo is made on first use, thread-safely, and
 * shared by every thread; a memo error inside (a cycle, no memory) prints memo_strerror and
 * aborts, as MEMO_DEFINE_U64 does. Each argument is written (type, name); a malformed one is a
 * compiler error that names MEMO__ARG_TYPE or MEMO__ARG_NAME.
 */
MEMO_EXPORT void memo__define_get(memo_t *m, const void *key, size_t key_len, memo_fn *fn, void *result,
                                  size_t result_len, const char *name);

#define MEMO__CAT(a, b) MEMO__CAT_(a, b)
#define MEMO__CAT_(a, b) a##b
#define MEMO__NARGS(...) MEMO__NARGS_(__VA_ARGS__, 4, 3, 2, 1, 0)
#define MEMO__NARGS_(a1, a2, a3, a4, n, ...) n
#define MEMO__ARG_TYPE(t, n) t
#define MEMO__ARG_NAME(t, n) n
#define MEMO__TYPE(p) MEMO__ARG_TYPE p
#define MEMO__NAME(p) MEMO__ARG_NAME p
#define MEMO__PARAM(p) MEMO__TYPE(p) MEMO__NAME(p)
#define MEMO__FIELD(p) MEMO__TYPE(p) MEMO__NAME(p);
#define MEMO__SET(k, p) (k).MEMO__NAME(p) = MEMO__NAME(p);
#define MEMO__GET(k, p) (k).MEMO__NAME(p)

#define MEMO__EACH_1(m, x, a) m(x, a)
#define MEMO__EACH_2(m, x, a, ...) m(x, a) MEMO__EACH_1(m, x, __VA_ARGS__)
#define MEMO__EACH_3(m, x, a, ...) m(x, a) MEMO__EACH_2(m, x, __VA_ARGS__)
#define MEMO__EACH_4(m, x, a, ...) m(x, a) MEMO__EACH_3(m, x, __VA_ARGS__)
#define MEMO__EACH(m, x, ...) MEMO__CAT(MEMO__EACH_, MEMO__NARGS(__VA_ARGS__))(m, x, __VA_ARGS__)
#define MEMO__LIST_1(m, x, a) m(x, a)
#define MEMO__LIST_2(m, x, a, ...) m(x, a), MEMO__LIST_1(m, x, __VA_ARGS__)
#define MEMO__LIST_3(m, x, a, ...) m(x, a), MEMO__LIST_2(m, x, __VA_ARGS__)
#define MEMO__LIST_4(m, x, a, ...) m(x, a), MEMO__LIST_3(m, x, __VA_ARGS__)
#define MEMO__LIST(m, x, ...) MEMO__CAT(MEMO__LIST_, MEMO__NARGS(__VA_ARGS__))(m, x, __VA_ARGS__)
#define MEMO__FIELD_X(x, p) MEMO__FIELD(p)
#define MEMO__PARAM_X(x, p) MEMO__PARAM(p)
#define MEMO__SET_X(k, p) MEMO__SET(k, p)
#define MEMO__GET_X(k, p) MEMO__GET(k, p)

#define MEMO_DEFINE(ret, name, ...) MEMO__DEFINE_ANY(ret, name, 0, __VA_ARGS__)

/* lru_cache(maxsize=max_entries): the same, with a memo bounded to max_entries values. */
#define MEMO_DEFINE_BOUNDED(ret, name, max_entries, ...) MEMO__DEFINE_ANY(ret, name, max_entries, __VA_ARGS__)

#define MEMO__DEFINE_ANY(ret, name, max_entries, ...)                                               \
    struct name##_memo__key { MEMO__EACH(MEMO__FIELD_X, _, __VA_ARGS__) };                          \
    static ret name##_memo__body(MEMO__LIST(MEMO__PARAM_X, _, __VA_ARGS__));                       \
    static ret name##_memo__run(const void *key)                                                    \
    {                                                                                               \
        struct name##_memo__key k;                                                                  \
        memcpy(&k, key, sizeof k);                                                                  \
        return name##_memo__body(MEMO__LIST(MEMO__GET_X, k, __VA_ARGS__));                          \
    }                                                                                               \
    static int name##_memo__fn_u64(void *ctx, uint64_t key, uint64_t *value)                        \
    {                                                                                               \
        ret r = name##_memo__run(&key);                                                             \
        uint64_t v = 0;                                                                             \
        (void)ctx;                                                                                  \
        memcpy(&v, &r, sizeof r < sizeof v ? sizeof r : sizeof v);                                  \
        *value = v;                                                                                 \
        return 0;                                                                                   \
    }                                                                                               \
    static int name##_memo__fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)      \
    {                                                                                               \
        ret r = name##_memo__run(key);                                                              \
        (void)ctx;                                                                                  \
        (void)key_len;                                                                              \
        return memo_result_set(out, &r, sizeof r);                                                  \
    }                                                                                               \
    MEMO__DEFINE_ACCESSOR_BOUNDED(name, max_entries)                                                \
    ret name(MEMO__LIST(MEMO__PARAM_X, _, __VA_ARGS__))                                             \
    {                                                                                               \
        /* memo__ names: the arguments' own names are in scope here */                              \
        struct name##_memo__key memo__k;                                                            \
        ret memo__r;                                                                                \
        memset(&memo__k, 0, sizeof memo__k);                                                        \
        MEMO__EACH(MEMO__SET_X, memo__k, __VA_ARGS__)                                               \
        if (sizeof memo__k <= sizeof(uint64_t) && sizeof memo__r <= sizeof(uint64_t)) {             \
            uint64_t memo__key = 0, memo__v;                                                        \
            memcpy(&memo__key, &memo__k, sizeof memo__k < 8 ? sizeof memo__k : 8);                  \
            memo__v = memo__define_call(name##_memo(), memo__key, name##_memo__fn_u64, #name);      \
            memcpy(&memo__r, &memo__v, sizeof memo__r < 8 ? sizeof memo__r : 8);                    \
        } else {                                                                                    \
            memo__define_get(name##_memo(), &memo__k, sizeof memo__k, name##_memo__fn, &memo__r,    \
                             sizeof memo__r, #name);                                                \
        }                                                                                           \
        return memo__r;                                                                             \
    }                                                                                               \
    static ret name##_memo__body(MEMO__LIST(MEMO__PARAM_X, _, __VA_ARGS__))

#ifdef __cplusplus
}
#endif

#endif /* MEMO_H */
