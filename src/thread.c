/*
 * Per-thread state: the thread's struct memo_thread (flight stack, waiting publication, refs to
 * locals), its struct memo_local for each memo it used (epoch record, counters, thread cache),
 * made on first use and parked when the thread exits. The registry lock (registry.c) guards the
 * links between threads and memos; CONTRIBUTING.md has the lock order.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Before its first call and after it exits, a thread's memo__self is memo__nobody: a thread
 * struct that is never used, whose cache matches no memo. The hit path then needs no NULL test. */
struct memo_thread memo__nobody = { .cache_memo = MEMO__NO_MEMO };
__attribute__((tls_model("initial-exec"))) _Thread_local struct memo_thread *memo__self = &memo__nobody;

static struct memo_thread *memo__thread_pool; /* exited threads' structs, for reuse */
static struct memo_thread *memo__threads;     /* every thread struct ever made (never freed) */
static pthread_key_t memo__thread_key;
static pthread_once_t memo__thread_key_once = PTHREAD_ONCE_INIT;

/* Unlinks m from the registry and from every living thread that used it. After this, no thread
 * can reach m's locals through its local refs; their (pointer, id) caches fail on the id. */
void memo__registry_remove_locals(struct memo *m)
{
    memo__registry_lock();
    memo__registry_unlink(m);
    for (struct memo_local *l = m->locals; l != NULL; l = l->next) {
        struct memo_thread *t = atomic_load_explicit(&l->thread, memory_order_relaxed);
        if (t != NULL) {
            /* Relaxed: the owner only ever compares the ids it reads with the id of a memo it
             * is using, which cannot be m (m is being destroyed); nothing else is published. */
            atomic_store_explicit(&t->local_refs[l->ref_index].id, 0, memory_order_relaxed);
            t->local_refs[l->ref_index].local = NULL;
            atomic_store_explicit(&l->thread, NULL, memory_order_relaxed);
            /* t is not using m (memo_destroy's contract); if its last call was on m, its cache
             * must not match a later memo made at m's address. */
            struct memo *cached = m;
            atomic_compare_exchange_strong_explicit(&t->cache_memo, &cached, MEMO__NO_MEMO, memory_order_relaxed,
                                                    memory_order_relaxed);
        }
    }
    memo__registry_unlock();
}

/* ---- flights ------------------------------------------------------------------------------- */

static struct memo_flight_block *memo__flight_block_new(struct memo_thread *t,
                                                        struct memo_flight_block *prev)
{
    struct memo_flight_block *b = MEMO__TEST_ALLOC_FAILS(false) ? NULL : calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    for (unsigned i = 0; i < MEMO__FLIGHTS_PER_BLOCK; i++) {
        atomic_init(&b->flights[i].seq, 0);
        b->flights[i].thread = t;
    }
    b->prev = prev;
    if (prev != NULL)
        prev->next = b;
    return b;
}

/* The flight for a computation this thread starts; its seq becomes odd. Flights nest strictly
 * (a computation's fn finishes before its own), so they form a stack. */
struct memo_flight *memo__flight_push(struct memo_thread *t)
{
    if (t->flight_block == NULL) {
        if (t->flight_first == NULL && (t->flight_first = memo__flight_block_new(t, NULL)) == NULL)
            return NULL;
        t->flight_block = t->flight_first;
        t->flight_index = 0;
    }
    if (t->flight_index == MEMO__FLIGHTS_PER_BLOCK) {
        struct memo_flight_block *next = t->flight_block->next;
        if (next == NULL && (next = memo__flight_block_new(t, t->flight_block)) == NULL)
            return NULL;
        t->flight_block = next;
        t->flight_index = 0;
    }
    struct memo_flight *f = &t->flight_block->flights[t->flight_index++];
    /* seq_cst: a deadlock walk that reads this odd seq after finding the marker must see the
     * computation as live; pairs with the loads in memo__deadlock_walk. */
    atomic_fetch_add_explicit(&f->seq, 1, memory_order_seq_cst);
    return f;
}

void memo__flight_pop(struct memo_thread *t, struct memo_flight *f)
{
    /* seq_cst: once even, every walk that reads it sees the computation as over. */
    atomic_fetch_add_explicit(&f->seq, 1, memory_order_seq_cst);
    if (t->flight_index == 0) {
        t->flight_block = t->flight_block->prev;
        t->flight_index = MEMO__FLIGHTS_PER_BLOCK;
    }
    t->flight_index--;
}

/* ---- threads ------------------------------------------------------------------------------- */

/* Parks l, whose thread has exited; the caller holds l->memo->locals_lock. */
static void memo__local_park_locked(struct memo_local *l)
{
    struct memo *m = l->memo;
    /* Refs that the dead thread still held can never be released: end their sections so the
     * memo's epoch can advance. (ck_epoch_end is not usable: it needs the section objects.)
     * memo_release of such a ref later on is a no-op (it is not this thread's local any more). */
    if (l->record.active != 0)
        ck_pr_store_uint(&l->record.active, 0);
    memo__epoch_poll(l);
    atomic_store_explicit(&l->thread, NULL, memory_order_relaxed);
    l->next_parked = m->parked;
    m->parked = l;
    if (l->record.n_pending != 0)
        atomic_store_explicit(&m->parked_pending, true, memory_order_relaxed);
}

/* Parks every local of t, whose thread has exited, and empties its local refs; the caller holds the
 * registry lock, and every memo's locals_lock too when `locked` (the fork child handler). */
static void memo__thread_park_locals(struct memo_thread *t, bool locked)
{
    for (unsigned i = 0; i < t->nlocal_refs; i++) {
        if (atomic_load_explicit(&t->local_refs[i].id, memory_order_relaxed) == 0)
            continue;
        struct memo_local *l = t->local_refs[i].local;
        if (!locked)
            memo__mutex_lock(&l->memo->locals_lock);
        memo__local_park_locked(l);
        if (!locked)
            memo__mutex_unlock(&l->memo->locals_lock);
        atomic_store_explicit(&t->local_refs[i].id, 0, memory_order_relaxed);
        t->local_refs[i].local = NULL;
    }
}

/* Puts t, whose thread has exited, into the pool; the caller holds the registry lock. */
static void memo__thread_pool_put(struct memo_thread *t)
{
    atomic_store_explicit(&t->cache_memo, MEMO__NO_MEMO, memory_order_relaxed);
    t->cache_local = NULL;
    t->exit_rounds = 0;
    t->pooled = true;
    /* Other threads may still read t's flights and waiting fields (stale pointers in
     * entries and walks), so t is recycled, never freed. */
    t->next_free = memo__thread_pool;
    memo__thread_pool = t;
}

/*
 * fork() child, from the atfork handler (registry lock and every memo's locals_lock held): the
 * threads of the parent other than the forking one do not exist here. Their states are parked
 * and their structs pooled, as if they had exited; the flights they were running are ended (an
 * odd seq left behind would make the flight's next owner look idle to deadlock walks).
 */
void memo__threads_fork_child(struct memo_thread *self)
{
    for (struct memo_thread *t = memo__threads; t != NULL; t = t->next_all) {
        if (t == self || t->pooled)
            continue;
        memo__thread_park_locals(t, true);
        for (struct memo_flight_block *b = t->flight_first; b != NULL; b = b->next)
            for (unsigned i = 0; i < MEMO__FLIGHTS_PER_BLOCK; i++)
                if (atomic_load_explicit(&b->flights[i].seq, memory_order_relaxed) & 1)
                    atomic_fetch_add_explicit(&b->flights[i].seq, 1, memory_order_relaxed);
        t->flight_block = NULL;
        memo__thread_pool_put(t);
    }
}

/* Whether t still holds a ref of some memo (a read-side section is open). Under the registry
 * lock. */
static bool memo__thread_holds_refs(const struct memo_thread *t)
{
    for (unsigned i = 0; i < t->nlocal_refs; i++)
        if (atomic_load_explicit(&t->local_refs[i].id, memory_order_relaxed) != 0 &&
            t->local_refs[i].local->record.active != 0)
            return true;
    return false;
}

/*
 * The thread-exit destructor of memo's key. glibc runs the destructors of a thread's keys in key
 * order, round after round while any of them set a value again, up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds. A program's own key made after memo's first use has a
 * later destructor, which may still release refs (memo.h allows it: same thread): while the
 * thread holds any, parking would end a section that a ref still reads under. So the destructor
 * sets its value again and waits for the next round; only in the last round does it park a
 * thread whose refs were never released.
 */
static void memo__thread_exit(void *arg)
{
    struct memo_thread *t = arg;
    /* Under the registry lock: memo_destroy unlinks t's local refs (and frees the locals) under it. */
    memo__registry_lock();
    if (t->exit_rounds + 1 < PTHREAD_DESTRUCTOR_ITERATIONS && memo__thread_holds_refs(t) &&
        pthread_setspecific(memo__thread_key, t) == 0) {
        t->exit_rounds++;
        memo__registry_unlock();
        return;
    }
    memo__thread_park_locals(t, false);
    memo__thread_pool_put(t);
    memo__registry_unlock();
    memo__self = &memo__nobody;
}

static void memo__thread_key_create(void)
{
    (void)pthread_key_create(&memo__thread_key, memo__thread_exit);
}

static struct memo_thread *memo__thread_new(void)
{
    pthread_once(&memo__thread_key_once, memo__thread_key_create);
    memo__registry_lock();
    struct memo_thread *t = memo__thread_pool;
    if (t != NULL) {
        memo__thread_pool = t->next_free;
        t->pooled = false;
    }
    memo__registry_unlock();
    if (t == NULL) {
        t = MEMO__TEST_ALLOC_FAILS(false) ? NULL :
            aligned_alloc(MEMO__CACHELINE, (sizeof *t + MEMO__CACHELINE - 1) & ~(size_t)(MEMO__CACHELINE - 1));
        if (t == NULL)
            return NULL;
        memset(t, 0, sizeof *t);
        atomic_init(&t->cache_memo, MEMO__NO_MEMO);
        atomic_init(&t->wait_gen, 0);
        atomic_init(&t->wait_flight, NULL);
        atomic_init(&t->wait_seq, 0);
        memo__registry_lock();
        t->next_all = memo__threads;
        memo__threads = t;
        memo__registry_unlock();
    } else {
        memo__unpublish_waiting(t);
    }
    t->next_free = NULL;
    t->flight_block = NULL;
    if (pthread_setspecific(memo__thread_key, t) != 0) {
        memo__registry_lock();
        memo__thread_pool_put(t);
        memo__registry_unlock();
        return NULL;
    }
    memo__self = t;
    return t;
}

static struct memo_local *memo__local_new(struct memo *m)
{
    struct memo_local *l = m->parked;
    if (l != NULL) {
        m->parked = l->next_parked;
        return l;
    }
    size_t size = (sizeof *l + MEMO__CACHELINE - 1) & ~(size_t)(MEMO__CACHELINE - 1);
    l = MEMO__TEST_ALLOC_FAILS(false) ? NULL : aligned_alloc(MEMO__CACHELINE, size);
    if (l == NULL)
        return NULL;
    memset(l, 0, size);
    l->memo = m;
    ck_epoch_register(&m->epoch, &l->record, l);
    l->next = m->locals;
    m->locals = l;
    return l;
}

/* memo_create: m's spare local (struct memo), made like any other but owned by no thread. */
int memo__spare_init(struct memo *m)
{
    size_t size = (sizeof *m->spare + MEMO__CACHELINE - 1) & ~(size_t)(MEMO__CACHELINE - 1);
    struct memo_local *l = MEMO__TEST_ALLOC_FAILS(false) ? NULL : aligned_alloc(MEMO__CACHELINE, size);
    if (l == NULL)
        return MEMO_ENOMEM;
    memset(l, 0, size);
    l->memo = m;
    l->is_spare = true;
    memo__mutex_lock(&m->locals_lock);
    ck_epoch_register(&m->epoch, &l->record, l);
    l->next = m->locals;
    m->locals = l;
    memo__mutex_unlock(&m->locals_lock);
    m->spare = l;
    return 0;
}

struct memo_local *memo__local_slow(struct memo *m)
{
    struct memo_thread *t = memo__self;
    if (t == &memo__nobody && (t = memo__thread_new()) == NULL)
        return NULL;
    uint64_t id = m->id;
    for (unsigned i = 0; i < t->nlocal_refs; i++) {
        if (atomic_load_explicit(&t->local_refs[i].id, memory_order_acquire) == id) {
            t->cache_local = t->local_refs[i].local;
            atomic_store_explicit(&t->cache_memo, m, memory_order_relaxed);
            return t->cache_local;
        }
    }

    memo__registry_lock();
    unsigned ref = t->nlocal_refs;
    for (unsigned i = 0; i < t->nlocal_refs; i++) {
        if (atomic_load_explicit(&t->local_refs[i].id, memory_order_relaxed) == 0) {
            ref = i;
            break;
        }
    }
    if (ref == t->nlocal_refs) {
        unsigned n = t->nlocal_refs ? t->nlocal_refs * 2 : 4;
        struct memo_local_ref *refs = MEMO__TEST_ALLOC_FAILS(false) ? NULL : calloc(n, sizeof *refs);
        if (refs == NULL) {
            memo__registry_unlock();
            return NULL;
        }
        for (unsigned i = 0; i < t->nlocal_refs; i++) {
            atomic_init(&refs[i].id, atomic_load_explicit(&t->local_refs[i].id, memory_order_relaxed));
            refs[i].local = t->local_refs[i].local;
        }
        /* Other threads touch t->local_refs only under the registry lock, which we hold. */
        free(t->local_refs);
        t->local_refs = refs;
        t->nlocal_refs = n;
    }
    memo__mutex_lock(&m->locals_lock);
    struct memo_local *l = memo__local_new(m);
    if (l != NULL) {
        atomic_store_explicit(&l->thread, t, memory_order_relaxed);
        l->ref_index = ref;
    }
    memo__mutex_unlock(&m->locals_lock);
    if (l != NULL) {
        t->local_refs[ref].local = l;
        /* Release: the local is set before the id that finds it; pairs with the acquire load
         * of the id in the search above (this thread's own, on a later call: the order
         * matters only to a reader that runs after a fork or through a signal handler of this
         * thread, but it costs nothing on the slow path). */
        atomic_store_explicit(&t->local_refs[ref].id, id, memory_order_release);
        t->cache_local = l;
        atomic_store_explicit(&t->cache_memo, m, memory_order_relaxed);
    }
    memo__registry_unlock();
    return l;
}
