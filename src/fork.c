/*
 * fork(): the child must find every memo usable. Before fork, the forking thread takes the
 * registry lock and every lock of every live memo, so no lock is copied in a held state by a
 * thread that does not exist in the child. In the child, in-flight markers owned by other threads
 * are removed and freed with the values their fn had made so far (their owners do not exist
 * there), and the epoch records of those threads are marked inactive, so reclamation goes on.
 *
 * What the child cannot free: a computation of another thread that a forget or clear had
 * detached before the fork (its marker is in no table; only its owner, absent here, held it),
 * and a value that fn had just allocated but not yet hung on its marker at the instant of the
 * fork. Each is one marker and one value per thread that was computing at that instant; they
 * go when the memo is destroyed only if reachable, so they stay allocated in the child.
 */
#include "internal.h"

static pthread_once_t memo__fork_once = PTHREAD_ONCE_INIT;

static void memo__fork_prepare(void)
{
    memo__registry_lock();
    for (struct memo *m = memo__registry_first(); m != NULL; m = m->next_live) {
        memo__mutex_lock(&m->spare_lock); /* before the shard locks, as forget takes them */
        if (m->pol != NULL)
            memo__mutex_lock(&m->pol->lock); /* after spare_lock, before the shard locks (policy.c) */
        memo__mutex_lock(&m->locals_lock);
        for (unsigned i = 0; i < m->nshards; i++)
            memo__mutex_lock(&m->shards[i].lock);
        memo__mutex_lock(&m->dense_lock); /* no clear of dense keys is halfway at the fork */
    }
}

static void memo__fork_parent(void)
{
    for (struct memo *m = memo__registry_first(); m != NULL; m = m->next_live) {
        memo__mutex_unlock(&m->dense_lock);
        for (unsigned i = 0; i < m->nshards; i++)
            memo__mutex_unlock(&m->shards[i].lock);
        memo__mutex_unlock(&m->locals_lock);
        if (m->pol != NULL)
            memo__mutex_unlock(&m->pol->lock);
        memo__mutex_unlock(&m->spare_lock);
    }
    memo__registry_unlock();
}

/* Frees the markers in table whose owners are other threads of the parent. Removal leaves a
 * tombstone in place and moves nothing, so one pass sees every slot. */
static void memo__fork_child_table(struct memo *m, ck_hs_t *table, struct memo_thread *self)
{
    ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
    void *obj;
    while (ck_hs_next(table, &it, &obj)) {
        if (!memo__is_marker(obj))
            continue;
        struct memo_marker *e = memo__slot_marker(obj);
        uint32_t st = atomic_load_explicit(&e->state, memory_order_relaxed);
        if ((st & MEMO__STATE) == MEMO__COMPUTING && e->flight->thread != self) {
            /* Its owner and waiters do not exist here, and no thread of the child can have
             * reached it: freed at once, with the value its fn had made so far. The spare
             * local is free to use: its lock is held. */
            (void)ck_hs_remove(table, e->hash, obj);
            if (e->value_rec != NULL)
                memo__rec_big_free_now(m->spare, e->value_rec);
            memo__marker_free_now(m->spare, e);
        }
    }
}

static void memo__fork_child(void)
{
    struct memo_thread *self = memo__self;
    memo__threads_fork_child(self); /* every memo's locals_lock is still held */
    for (struct memo *m = memo__registry_first(); m != NULL; m = m->next_live) {
        for (unsigned i = 0; i < m->nshards; i++) {
            struct memo_shard *s = &m->shards[i];
            memo__fork_child_table(m, &s->u64, self);
            memo__fork_child_table(m, &s->bytes, self);
            memo__mutex_unlock(&s->lock);
        }
        memo__dense_fork_child(m, self);
        memo__mutex_unlock(&m->dense_lock);
        memo__mutex_unlock(&m->locals_lock);
        if (m->pol != NULL)
            memo__mutex_unlock(&m->pol->lock);
        memo__mutex_unlock(&m->spare_lock);
    }
    memo__registry_unlock();
}

static void memo__fork_handlers_install_once(void)
{
    (void)pthread_atfork(memo__fork_prepare, memo__fork_parent, memo__fork_child);
}

void memo__fork_handlers_install(void)
{
    pthread_once(&memo__fork_once, memo__fork_handlers_install_once);
}
