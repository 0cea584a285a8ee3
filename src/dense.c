/*
 * Dense keys: the u64 keys below memo->dense_n live in an array of 16-byte slots indexed by the
 * key (struct memo_dense, internal.h), reserved with mmap at memo_create and committed by the
 * kernel page by page as slots are first written. No hashing, no probing, no lock, no allocation
 * per key: a computation in flight is the same u64 marker as in the hash table (entry.c), so
 * waiting, the deadlock walk, a dying owner and fork work on it unchanged.
 *
 * A slot's word changes by compare-and-swap only:
 *
 *   0 --a miss claims it--> marker|COMPUTING --owner: fn returned 0--> marker|PUBLISHING
 *     --value written--> gen|READY
 *   marker|COMPUTING --fn failed, owner died--> 0        (then the marker settles: waiters see it)
 *   marker|COMPUTING --forget--> 0 ; READY --forget--> 0 (the owner's CAS to PUBLISHING then
 *                                                          fails: it stores nothing, as DETACHED)
 *   anything --clear--> CLEARING --madvise--> 0          (the whole chunk at once)
 *
 * Who may write the value word: only the owner, between its two CASes; so a value is never
 * written into a slot that another computation owns. PUBLISHING lasts a few instructions; forget
 * and clear wait it out (spinning, then yielding).
 *
 * Readers take no section to read a stored value (memo__dense_hit): a value word is only ever
 * overwritten by a newer computation of the same key (after a forget), and the word is read again
 * after the value, so a value is returned only if the slot held it all along. The only thing that
 * changes a slot without a CAS is a clear's madvise, which turns a whole chunk into zero pages:
 * the gen in a READY word (clears begun) makes a slot refilled after a clear differ from the word
 * read before it.
 *
 * Commit and memo_stats.bytes: the slots of a chunk (4096 keys, 64 KiB) are counted as committed
 * from the first claim in it; a bit per chunk says so. A claim sets the bit before its CAS (under
 * dense_lock, the first time), and a clear clears it, under the same lock, after every slot of
 * the chunk is CLEARING and before the madvise, so no claim can land between its scan and its
 * madvise. A claim whose CAS raced with a clear (the gen moved between the bit check and the CAS)
 * lets its slot go and starts over, so a clear never misses a claim in a chunk it skipped.
 */
#include <errno.h>
#include <immintrin.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

_Static_assert(sizeof(struct memo_dense) == 16, "a dense slot is 16 bytes");
_Static_assert(alignof(struct memo_marker) >= 4, "a marker's address has its two low bits free for the tag");

#define MEMO__DENSE_CHUNK_KEYS ((uint64_t)1 << MEMO__DENSE_CHUNK_SHIFT)
#define MEMO__DENSE_CHUNK_BYTES (MEMO__DENSE_CHUNK_KEYS * sizeof(struct memo_dense))

static inline struct memo_marker *memo__dense_marker(uint64_t w)
{
    return (struct memo_marker *)(uintptr_t)(w & ~(uint64_t)MEMO__DENSE_TAG);
}

static inline bool memo__dense_is_marker(uint64_t w)
{
    return (w & 1u) != 0; /* COMPUTING or PUBLISHING */
}

/* Waiting for a slot that is PUBLISHING (a few instructions) or CLEARING (a clear's scan and
 * madvise of one chunk): a short spin, then yields, since the thread it waits for may be
 * preempted on a machine with fewer cores than threads. */
void memo__dense_wait_slot(unsigned *spins)
{
    if (++*spins < 64)
        _mm_pause();
    else
        sched_yield();
}

/* ---- create, destroy ----------------------------------------------------------------------- */

int memo__dense_init(struct memo *m, uint64_t n)
{
    if (n > MEMO__DENSE_MAX)
        return MEMO_ENOMEM;
    struct memo_local *l = memo__local(m);
    if (l == NULL)
        return MEMO_ENOMEM;
    uint64_t chunks = (n + MEMO__DENSE_CHUNK_KEYS - 1) >> MEMO__DENSE_CHUNK_SHIFT;
    size_t words = (size_t)((chunks + 63) / 64);
    m->dense_chunks = memo__mem_alloc(l, words * sizeof *m->dense_chunks);
    if (m->dense_chunks == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < words; i++)
        atomic_init(&m->dense_chunks[i], 0);
    m->dense_words = words;
    /* Address space only: untouched pages cost nothing and read as zeros (empty slots). */
    size_t size = (size_t)n * sizeof(struct memo_dense);
    void *p = MEMO__TEST_ALLOC_FAILS(true) ? MAP_FAILED :
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return MEMO_ENOMEM;
    m->dense = p;
    m->dense_size = size;
    atomic_init(&m->dense_gen, 0);
    m->dense_n = n; /* last: memo_create publishes m after this */
    return 0;
}

/* memo_destroy: nobody uses m any more. */
void memo__dense_destroy(struct memo *m)
{
    if (m->dense != NULL)
        (void)munmap(m->dense, m->dense_size);
    if (m->dense_chunks != NULL) /* its count goes with the locals */
        free(m->dense_chunks);
    m->dense = NULL;
    m->dense_chunks = NULL;
    m->dense_n = 0;
}

/* The bytes chunk c's slots take (the last chunk may be short). */
static size_t memo__dense_chunk_bytes(const struct memo *m, uint64_t c)
{
    size_t start = (size_t)(c << MEMO__DENSE_CHUNK_SHIFT) * sizeof(struct memo_dense);
    size_t left = m->dense_size - start;
    return left < MEMO__DENSE_CHUNK_BYTES ? left : MEMO__DENSE_CHUNK_BYTES;
}

/*
 * Commits chunk c's pages for writing, all at once. Left to the first touches, a page is first
 * read (a get looks before it claims), which maps the kernel's shared zero page, then written,
 * which replaces that mapping and makes the kernel flush the other CPUs' TLBs with an
 * inter-processor interrupt: measured with memo-dp editdist on 2 threads, those flushes and the
 * double faults took a quarter of the run, and 2 threads ran no faster than one. Populated here,
 * a chunk costs at most one such flush (its one page a get may have read first). Linux 5.14 and
 * later have MADV_POPULATE_WRITE; before, one atomic write per page that changes nothing.
 */
static void memo__dense_populate(struct memo *m, uint64_t c)
{
    struct memo_dense *first = &m->dense[c << MEMO__DENSE_CHUNK_SHIFT];
    size_t bytes = memo__dense_chunk_bytes(m, c);
#ifdef MADV_POPULATE_WRITE
    if (madvise(first, bytes, MADV_POPULATE_WRITE) == 0)
        return;
#endif
    for (size_t off = 0; off < bytes; off += 4096)
        atomic_fetch_or_explicit(&first[off / sizeof *first].word, 0, memory_order_relaxed);
}

/* Before a claim writes into chunk c: counts the chunk as committed if it is not yet. */
static void memo__dense_commit(struct memo *m, struct memo_local *l, uint64_t c)
{
    if (memo__likely(memo__dense_committed(m->dense_chunks, c)))
        return;
    /* Outside the lock: the page faults take tens of microseconds, and two threads that each
     * start a chunk of their own would otherwise wait for each other's (measured: memo-dp
     * editdist on 2 threads spent a tenth of its time waking from dense_lock). Populating a chunk
     * twice, or one that a clear is giving back, only commits pages that the claim about to follow
     * commits anyway; the bit and the count change under the lock. */
    memo__dense_populate(m, c);
    memo__mutex_lock(&m->dense_lock);
    if (!memo__dense_committed(m->dense_chunks, c)) {
        atomic_fetch_or_explicit(&m->dense_chunks[c / 64], (uint64_t)1 << (c % 64), memory_order_release);
        memo__mem_account(l, (int64_t)memo__dense_chunk_bytes(m, c));
    }
    memo__mutex_unlock(&m->dense_lock);
}

/* ---- computing ----------------------------------------------------------------------------- */

/* pthread_cleanup_push's handler around fn: the computing thread is unwinding (pthread_exit,
 * cancellation, a C++ exception through fn). The slot is let go; waiters wake and retry. */
static void memo__dense_abandon(void *arg)
{
    struct memo_flight_run *run = arg;
    struct memo_local *l = memo__local(run->memo);
    MEMO__CHECK(l != NULL, "a computing thread's state for its memo exists since its miss");
    memo__dense_flight_fail(run, l, 0);
}

/* Stores fn's value: the slot goes to PUBLISHING (if it still holds this computation), takes the
 * value, and turns READY; then the marker settles, READY for its waiters either way, DETACHED if
 * a forget or clear took the slot first (nothing stored). */
static void memo__dense_flight_done(struct memo_flight_run *run, struct memo_local *l, uint64_t value)
{
    struct memo_marker *e = run->marker;
    struct memo_dense *d = run->dense;
    uint64_t w = (uint64_t)(uintptr_t)e | MEMO__DENSE_COMPUTING;
    e->value = value; /* for the waiters; ordered before READY by memo__marker_finish's release */
    bool stored = atomic_compare_exchange_strong_explicit(&d->word, &w, (uint64_t)(uintptr_t)e | MEMO__DENSE_PUBLISHING,
                                                          memory_order_acquire, memory_order_relaxed);
    if (stored) {
        atomic_store_explicit(&d->value, value, memory_order_relaxed);
        uint64_t gen = atomic_load_explicit(&run->memo->dense_gen, memory_order_relaxed);
        /* Release: a reader that sees READY sees the value. No CAS needed: while PUBLISHING,
         * forget and clear wait, and nothing else writes the word. */
        atomic_store_explicit(&d->word, gen << MEMO__DENSE_GEN_SHIFT | MEMO__DENSE_READY, memory_order_release);
        atomic_store_explicit(&l->counters.entries,
                              atomic_load_explicit(&l->counters.entries, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    }
    (void)memo__marker_finish(e, MEMO__READY | (stored ? 0u : MEMO__DETACHED));
    memo__flight_pop(run->self, run->flight);
    memo__marker_retire(l, e); /* waiters that read the slot before hold sections */
    memo__retire_poll(l);
}

void memo__dense_flight_fail(struct memo_flight_run *run, struct memo_local *l, int code)
{
    struct memo_marker *e = run->marker;
    uint64_t w = (uint64_t)(uintptr_t)e | MEMO__DENSE_COMPUTING;
    /* Fails if a forget or clear let the slot go already. */
    (void)atomic_compare_exchange_strong_explicit(&run->dense->word, &w, 0, memory_order_release,
                                                  memory_order_relaxed);
    if (code != 0)
        e->code = code;
    (void)memo__marker_finish(e, code != 0 ? MEMO__FAILED : MEMO__ABANDONED);
    memo__flight_pop(run->self, run->flight);
    memo__marker_retire(l, e);
    memo__retire_poll(l);
}

int memo__dense_compute(struct memo *m, struct memo_local *l, uint64_t key, memo_fn_u64 *fn, void *ctx,
                        uint64_t *value, bool *again)
{
    struct memo_thread *self = memo__self;
    struct memo_dense *d = &m->dense[key];
    uint64_t chunk = key >> MEMO__DENSE_CHUNK_SHIFT;
    uint64_t gen = atomic_load_explicit(&m->dense_gen, memory_order_seq_cst);
    memo__dense_commit(m, l, chunk);
    struct memo_marker *e = memo__marker_new(l, MEMO__KIND_U64, 0, key, NULL, 0);
    if (e == NULL)
        return MEMO_ENOMEM;
    struct memo_flight *f = memo__flight_push(self);
    if (f == NULL) {
        memo__marker_free_now(l, e);
        return MEMO_ENOMEM;
    }
    e->flight = f;
    e->flight_seq = atomic_load_explicit(&f->seq, memory_order_relaxed);
    uint64_t expected = 0, mine = (uint64_t)(uintptr_t)e | MEMO__DENSE_COMPUTING;
    /* Release: a waiter that reads the word sees the marker's fields. */
    bool claimed = atomic_compare_exchange_strong_explicit(&d->word, &expected, mine, memory_order_seq_cst,
                                                           memory_order_acquire);
    if (!claimed) {
        memo__flight_pop(self, f);
        memo__marker_free_now(l, e); /* never reachable: no slot ever pointed to it */
        *again = true;
        return 0;
    }
    struct memo_flight_run run = { .memo = m, .dense = d, .marker = e, .flight = f, .self = self };
    if (atomic_load_explicit(&m->dense_gen, memory_order_seq_cst) != gen) {
        /* A clear began since the chunk's bit was checked: it may have skipped this chunk, or
         * given it back before this claim landed. Let the slot go and start over; a thread that
         * found the marker meanwhile waits on it, so it is abandoned as by a dying owner. */
        memo__dense_flight_fail(&run, l, 0);
        *again = true;
        return 0;
    }
    memo__count(&l->counters.misses);

    uint64_t v = 0;
    int rc;
    pthread_cleanup_push(memo__dense_abandon, &run);
    rc = fn(ctx, key, &v);
    pthread_cleanup_pop(0);
    if (rc != 0) {
        memo__count(&l->counters.errors);
        memo__dense_flight_fail(&run, l, rc);
        return rc;
    }
    memo__dense_flight_done(&run, l, v);
    *value = v;
    return 0;
}

/* ---- lookups, forget, clear ---------------------------------------------------------------- */

int memo__dense_forget(struct memo *m, uint64_t key, struct memo_local *l)
{
    struct memo_dense *d = &m->dense[key];
    unsigned spins = 0;
    for (;;) {
        uint64_t w = atomic_load_explicit(&d->word, memory_order_acquire);
        if (w == 0 || w == MEMO__DENSE_CLEARING) /* a clear is taking it: nothing to forget */
            return MEMO_ENOENT;
        if ((w & MEMO__DENSE_TAG) == MEMO__DENSE_PUBLISHING) {
            memo__dense_wait_slot(&spins);
            continue;
        }
        /* COMPUTING: detached (the owner's CAS to PUBLISHING fails); READY: removed. */
        if (!atomic_compare_exchange_weak_explicit(&d->word, &w, 0, memory_order_acq_rel, memory_order_relaxed))
            continue;
        if ((w & MEMO__DENSE_TAG) != MEMO__DENSE_READY)
            return MEMO_ENOENT;
        atomic_fetch_sub_explicit(&l->counters.entries, 1, memory_order_relaxed);
        return 0;
    }
}

/* Empties one chunk: every slot CLEARING (a computation in flight is detached, as a forget
 * does), then its pages are given back. Under dense_lock. Returns the values removed. */
static int64_t memo__dense_clear_chunk(struct memo *m, struct memo_local *l, uint64_t c)
{
    struct memo_dense *first = &m->dense[c << MEMO__DENSE_CHUNK_SHIFT];
    size_t bytes = memo__dense_chunk_bytes(m, c);
    size_t n = bytes / sizeof *first;
    int64_t removed = 0;
    for (size_t i = 0; i < n; i++) {
        struct memo_dense *d = &first[i];
        unsigned spins = 0;
        uint64_t w = atomic_load_explicit(&d->word, memory_order_relaxed);
        for (;;) {
            if ((w & MEMO__DENSE_TAG) == MEMO__DENSE_PUBLISHING) {
                memo__dense_wait_slot(&spins);
                w = atomic_load_explicit(&d->word, memory_order_relaxed);
                continue;
            }
            if (atomic_compare_exchange_weak_explicit(&d->word, &w, MEMO__DENSE_CLEARING, memory_order_acq_rel,
                                                      memory_order_relaxed))
                break;
        }
        if ((w & MEMO__DENSE_TAG) == MEMO__DENSE_READY)
            removed++;
    }
    /* No claim can land in the chunk now (every slot is CLEARING), and none waits on the bit
     * (dense_lock is held). */
    atomic_fetch_and_explicit(&m->dense_chunks[c / 64], ~((uint64_t)1 << (c % 64)), memory_order_release);
    if (madvise(first, bytes, MADV_DONTNEED) != 0) {
        /* Cannot fail on a private anonymous mapping; if it did, the pages stay committed
         * (still counted) and the slots are emptied by hand. */
        for (size_t i = 0; i < n; i++) {
            atomic_store_explicit(&first[i].value, 0, memory_order_relaxed);
            atomic_store_explicit(&first[i].word, 0, memory_order_release);
        }
        atomic_fetch_or_explicit(&m->dense_chunks[c / 64], (uint64_t)1 << (c % 64), memory_order_release);
        return removed;
    }
    memo__mem_account(l, -(int64_t)bytes);
    return removed;
}

void memo__dense_clear(struct memo *m, struct memo_local *l)
{
    int64_t removed = 0;
    memo__mutex_lock(&m->dense_lock);
    /* Before any slot changes: a claim that read the old gen and lands after this lets its slot
     * go (memo__dense_compute), and a value stored from now on is told apart by its new gen. */
    atomic_fetch_add_explicit(&m->dense_gen, 1, memory_order_seq_cst);
    for (size_t i = 0; i < m->dense_words; i++) {
        uint64_t bits = atomic_load_explicit(&m->dense_chunks[i], memory_order_acquire);
        while (bits != 0) {
            unsigned b = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            removed += memo__dense_clear_chunk(m, l, (uint64_t)i * 64 + b);
        }
    }
    memo__mutex_unlock(&m->dense_lock);
    atomic_fetch_sub_explicit(&l->counters.entries, removed, memory_order_relaxed);
}

/* ---- fork ---------------------------------------------------------------------------------- */

/* In the child (every memo lock held, dense_lock included, so no clear is halfway): slots of
 * computations that other threads of the parent were running are emptied, and their markers freed
 * with the spare local (its lock is held), as fork.c does for the hash tables. */
void memo__dense_fork_child(struct memo *m, struct memo_thread *self)
{
    for (size_t i = 0; i < m->dense_words; i++) {
        uint64_t bits = atomic_load_explicit(&m->dense_chunks[i], memory_order_relaxed);
        while (bits != 0) {
            uint64_t c = (uint64_t)i * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            struct memo_dense *first = &m->dense[c << MEMO__DENSE_CHUNK_SHIFT];
            size_t n = memo__dense_chunk_bytes(m, c) / sizeof *first;
            for (size_t k = 0; k < n; k++) {
                uint64_t w = atomic_load_explicit(&first[k].word, memory_order_relaxed);
                if (!memo__dense_is_marker(w))
                    continue;
                struct memo_marker *e = memo__dense_marker(w);
                if (e->flight->thread == self)
                    continue; /* the forking thread's own, from inside its fn */
                atomic_store_explicit(&first[k].word, 0, memory_order_relaxed);
                memo__marker_free_now(m->spare, e);
            }
        }
    }
}
