/* Test hooks (src/testing.h): only in memo_testing, never in libmemo. */
#ifndef MEMO_TESTING
#error "testing.c is compiled only into memo_testing (MEMO_TESTING)"
#endif

#include "hash.h"
#include "internal.h"
#include "testing.h"

/* Relaxed throughout: tests set the hook while no other thread allocates through memo, and the
 * thread creation or join that follows orders it; the counters only need to be exact. */
static _Atomic long memo__test_nth;
static _Atomic int  memo__test_mode;
static _Atomic long memo__test_count;
static _Atomic long memo__test_failures;

void memo__test_fail_alloc(long nth, int mode)
{
    atomic_store_explicit(&memo__test_nth, nth < 0 ? 0 : nth, memory_order_relaxed);
    atomic_store_explicit(&memo__test_mode, mode, memory_order_relaxed);
    atomic_store_explicit(&memo__test_count, 0, memory_order_relaxed);
}

long memo__test_alloc_count(void)
{
    return atomic_load_explicit(&memo__test_count, memory_order_relaxed);
}

long memo__test_alloc_failures(void)
{
    return atomic_load_explicit(&memo__test_failures, memory_order_relaxed);
}

bool memo__test_alloc_fails(bool table)
{
    int mode = atomic_load_explicit(&memo__test_mode, memory_order_relaxed);
    if (mode == MEMO__TEST_FAIL_TABLES && !table)
        return false;
    long n = atomic_fetch_add_explicit(&memo__test_count, 1, memory_order_relaxed) + 1;
    long nth = atomic_load_explicit(&memo__test_nth, memory_order_relaxed);
    if (nth == 0 || n < nth || (n > nth && mode == MEMO__TEST_FAIL_ONCE))
        return false;
    atomic_fetch_add_explicit(&memo__test_failures, 1, memory_order_relaxed);
    return true;
}

uint64_t memo__test_seed(memo_t *m)
{
    return m->seed;
}

unsigned long memo__test_hash_u64(memo_t *m, uint64_t key)
{
    return memo__hash_u64(m, key);
}

unsigned long memo__test_probe_max(memo_t *m)
{
    unsigned long max = 0;
    for (unsigned i = 0; i < m->nshards; i++) {
        struct ck_hs_stat st, sb;
        memo__mutex_lock(&m->shards[i].lock);
        ck_hs_stat(&m->shards[i].u64, &st);
        ck_hs_stat(&m->shards[i].bytes, &sb);
        memo__mutex_unlock(&m->shards[i].lock);
        if (st.probe_maximum > max)
            max = st.probe_maximum;
        if (sb.probe_maximum > max)
            max = sb.probe_maximum;
    }
    return max;
}
