/*
 * Waiting for another thread's computation: a short spin, then a futex sleep on the entry's
 * state word; waking costs a system call only when the MEMO__WAITERS bit says someone sleeps.
 *
 * Before sleeping, a waiter publishes which computation it waits for (a flight slot and its seq)
 * and walks the chain "computation -> its owner -> the computation that owner waits for -> ...".
 * Reaching itself means a cycle: MEMO_EDEADLK. The walk reads only flight slots and thread
 * structs, which are never freed, and checks each link for liveness by the slot's seq, so it
 * never dereferences an entry that may have been reclaimed.
 *
 * The sleep is a cancellation point, like pthread_cond_wait: a waiter that is pthread_cancel-ed
 * while it sleeps unpublishes its wait and leaves the read-side section that kept the entry
 * alive, then unwinds (running the cleanup handlers of any computation it was running itself).
 * The computation it waited for goes on. A raw futex syscall is not a cancellation point, so
 * the sleep runs with asynchronous cancellation enabled around the syscall alone, as glibc does
 * for its own cancellable syscalls; nothing else happens in that window.
 *
 * This file is compiled with -fno-exceptions (CMakeLists.txt), so that pthread_cleanup_push is
 * glibc's setjmp-buffer form, which the cancellation unwinder finds by frame address wherever
 * the signal lands, even between two instructions. The -fexceptions form relies on landing pads
 * at call sites, and glibc declares syscall() as never throwing: a cancellation inside it would
 * skip the handler. No C++ exception passes through this file (it never calls fn).
 */
#include <errno.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "annotate.h"
#include "internal.h"

#define MEMO__SPINS 128     /* pause loops before the first sleep */
#define MEMO__WALK_MAX 4096 /* links followed at most: a chain longer than this is not a cycle
                               that involves us within reach; the threads in it detect it */

uint64_t memo__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void memo__wake(struct memo_marker *e)
{
    (void)syscall(SYS_futex, (uint32_t *)&e->state, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Seqlock writer: only the thread itself writes its waiting fields. */
static void memo__publish_waiting(struct memo_thread *self, struct memo_flight *f, uint64_t seq)
{
    uint32_t g = atomic_load_explicit(&self->wait_gen, memory_order_relaxed);
    atomic_store_explicit(&self->wait_gen, g + 1, memory_order_seq_cst);
    atomic_store_explicit(&self->wait_flight, f, memory_order_seq_cst);
    atomic_store_explicit(&self->wait_seq, seq, memory_order_seq_cst);
    atomic_store_explicit(&self->wait_gen, g + 2, memory_order_seq_cst);
}

void memo__unpublish_waiting(struct memo_thread *self)
{
    memo__publish_waiting(self, NULL, 0);
}

/* Seqlock reader: a consistent (flight, seq) pair of another thread. */
static struct memo_flight *memo__read_waiting(struct memo_thread *t, uint64_t *seq)
{
    for (;;) {
        uint32_t g1 = atomic_load_explicit(&t->wait_gen, memory_order_seq_cst);
        if (g1 & 1u) {
            _mm_pause();
            continue;
        }
        struct memo_flight *f = atomic_load_explicit(&t->wait_flight, memory_order_seq_cst);
        uint64_t s = atomic_load_explicit(&t->wait_seq, memory_order_seq_cst);
        if (atomic_load_explicit(&t->wait_gen, memory_order_seq_cst) == g1) {
            *seq = s;
            return f;
        }
    }
}

/*
 * Whether waiting for computation (f, seq) would close a cycle through self. self has published
 * its own waiting before calling this, with seq_cst stores; the loads here are seq_cst too, so of
 * two threads closing a cycle at once, at least one sees the other's publication (as in Dekker's
 * algorithm) and reports it.
 */
static bool memo__deadlock_walk(struct memo_thread *self, struct memo_flight *f, uint64_t seq)
{
    for (unsigned i = 0; i < MEMO__WALK_MAX && f != NULL; i++) {
        if (atomic_load_explicit(&f->seq, memory_order_seq_cst) != seq)
            return false; /* that computation is over: the chain is broken */
        struct memo_thread *owner = f->thread;
        if (owner == self)
            return true;
        uint64_t next_seq;
        struct memo_flight *next = memo__read_waiting(owner, &next_seq);
        /* Only a wait that the owner began while still computing f links f to the next
         * computation: if f ended meanwhile, owner may have moved on and waits for something
         * else, and following that would report a cycle that never was. */
        if (atomic_load_explicit(&f->seq, memory_order_seq_cst) != seq)
            return false;
        f = next;
        seq = next_seq;
    }
    return false;
}

struct memo_wait_cancel {
    struct memo_thread *self;
    struct memo_local  *local;
};

/* Cleanup handler: the waiter is cancelled while it sleeps. */
static void memo__wait_cancelled(void *arg)
{
    struct memo_wait_cancel *w = arg;
    memo__publish_waiting(w->self, NULL, 0);
    MEMO_ANN_SECTION_END(w->local->memo);
    ck_epoch_end(&w->local->record, NULL);
}

/* One futex sleep that a pthread_cancel can end (see the top of this file). */
static void memo__sleep(struct memo_wait_cancel *w, _Atomic uint32_t *word, uint32_t expected,
                        const struct timespec *rel)
{
    int oldtype;
    pthread_cleanup_push(memo__wait_cancelled, w);
    (void)pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &oldtype);
    /* EAGAIN, EINTR, ETIMEDOUT: the caller re-checks */
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, rel, NULL, 0);
    (void)pthread_setcanceltype(oldtype, NULL);
    pthread_cleanup_pop(0);
}

int memo__wait(struct memo_thread *self, struct memo_local *l, struct memo_marker *e,
               uint64_t deadline_ns)
{
    struct memo_wait_cancel cancel = { self, l };
    /* The marker's flight fields were written before the marker was published, and the caller
     * saw it COMPUTING after that. */
    struct memo_flight *f = e->flight;
    uint64_t seq = e->flight_seq;
    uint32_t s = atomic_load_explicit(&e->state, memory_order_acquire);
    if ((s & MEMO__STATE) != MEMO__COMPUTING)
        return (int)(s & MEMO__STATE);

    memo__publish_waiting(self, f, seq);
    if (memo__deadlock_walk(self, f, seq)) {
        memo__publish_waiting(self, NULL, 0);
        return MEMO_EDEADLK;
    }

    for (unsigned i = 0; i < MEMO__SPINS; i++) {
        s = atomic_load_explicit(&e->state, memory_order_acquire);
        if ((s & MEMO__STATE) != MEMO__COMPUTING)
            goto done;
        if (deadline_ns == UINT64_MAX)
            break;
        _mm_pause();
    }

    for (;;) {
        s = atomic_load_explicit(&e->state, memory_order_acquire);
        if ((s & MEMO__STATE) != MEMO__COMPUTING)
            break;
        struct timespec rel, *relp = NULL;
        if (deadline_ns != 0) {
            uint64_t now = deadline_ns == UINT64_MAX ? UINT64_MAX : memo__now_ns();
            if (now >= deadline_ns) {
                memo__publish_waiting(self, NULL, 0);
                return MEMO_ETIMEDOUT;
            }
            uint64_t left = deadline_ns - now;
            rel.tv_sec = (time_t)(left / 1000000000u);
            rel.tv_nsec = (long)(left % 1000000000u);
            relp = &rel;
        }
        if (!(s & MEMO__WAITERS)) {
            /* Acquire on failure: we re-read the state anyway. Relaxed would do for the flag
             * itself; the owner's exchange of the whole word sees it either way. */
            if (!atomic_compare_exchange_weak_explicit(&e->state, &s, s | MEMO__WAITERS,
                                                       memory_order_acq_rel, memory_order_acquire))
                continue;
            s |= MEMO__WAITERS;
        }
        memo__sleep(&cancel, &e->state, s, relp);
    }
done:
    memo__publish_waiting(self, NULL, 0);
    return (int)(s & MEMO__STATE);
}

/* Sets a marker's final state; wakes sleepers if the old word said there were any. Returns the
 * old word. The release pairs with the acquire loads of waiters (memo__wait, memo__get_slow). */
uint32_t memo__marker_finish(struct memo_marker *marker, uint32_t state)
{
    uint32_t old = atomic_load_explicit(&marker->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&marker->state, &old,
                                                  state | (old & MEMO__DETACHED),
                                                  memory_order_acq_rel, memory_order_relaxed))
        ;
    if (old & MEMO__WAITERS)
        memo__wake(marker);
    return old;
}
