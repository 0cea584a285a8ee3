/*
 * The process-wide pieces, below every other file: the registry lock, the list of live memos (the
 * fork handlers walk it), and memo ids. The lock also guards what links threads and memos
 * (thread.c: the threads' slots of locals, the pool of exited threads' structs); it is the first
 * lock taken whenever it is taken (CONTRIBUTING.md, "Locks"). Depends on nothing but internal.h.
 */
#include "internal.h"

static pthread_mutex_t memo__registry = PTHREAD_MUTEX_INITIALIZER;
static struct memo *memo__live; /* live memos, under the registry lock */
static _Atomic uint64_t memo__ids = 1;

uint64_t memo__next_id(void)
{
    /* Only uniqueness matters. */
    return atomic_fetch_add_explicit(&memo__ids, 1, memory_order_relaxed);
}

void memo__registry_lock(void)
{
    memo__mutex_lock(&memo__registry);
}

void memo__registry_unlock(void)
{
    memo__mutex_unlock(&memo__registry);
}

struct memo *memo__registry_first(void)
{
    return memo__live;
}

void memo__registry_add(struct memo *m)
{
    memo__registry_lock();
    m->next_live = memo__live;
    memo__live = m;
    memo__registry_unlock();
}

/* Under the registry lock. */
void memo__registry_unlink(struct memo *m)
{
    for (struct memo **p = &memo__live; *p != NULL; p = &(*p)->next_live) {
        if (*p == m) {
            *p = m->next_live;
            return;
        }
    }
}
