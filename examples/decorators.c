/*
 * decorators: Python's memoizing decorators, one line each in C.
 *
 *   @functools.cache                        MEMO_DEFINE(uint64_t, paths, (uint32_t, r), (uint32_t, c))
 *   def paths(r, c): ...
 *
 *   @functools.lru_cache(maxsize=128)       MEMO_DEFINE_BOUNDED(double, quote, 128, (int32_t, item),
 *   def quote(item, qty): ...                                   (double, qty))
 *
 * paths(r, c) counts the lattice paths from (0, 0) to (r, c), a two-argument recursion that is
 * exponential without memoization; four threads share its memo and each state is computed once.
 * quote(item, qty) is a slow price lookup (50 us) behind a 128-entry bound: a stream of requests in
 * which a few hot items come back often and a long tail of others comes once keeps the hot ones
 * (the memo's policy admits a new key only if it is asked for more often than what it would evict).
 */
#define _POSIX_C_SOURCE 200809L

#include <memo.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

MEMO_DEFINE(uint64_t, paths, (uint32_t, r), (uint32_t, c))
{
    if (r == 0 || c == 0)
        return 1;
    return paths(r - 1, c) + paths(r, c - 1);
}

static atomic_long quote_calls;

MEMO_DEFINE_BOUNDED(double, quote, 128, (int32_t, item), (double, qty))
{
    struct timespec pause = { 0, 50 * 1000 }; /* the expensive part: 50 us */
    atomic_fetch_add(&quote_calls, 1);
    nanosleep(&pause, NULL);
    return qty * (10.0 + item % 7) * (qty >= 100 ? 0.9 : 1.0);
}

enum { THREADS = 4, REQUESTS = 20000 };

static void *paths_thread(void *arg)
{
    uint32_t n = *(const uint32_t *)arg;
    uint64_t v = paths(n, n);
    return (void *)(uintptr_t)(v != 0);
}

/* Requests: half for 64 hot items, half for items seen once (a scan). */
static void *quote_thread(void *arg)
{
    uint64_t x = 0x9e3779b97f4a7c15u * (1 + *(const unsigned *)arg);
    unsigned scan = *(const unsigned *)arg * REQUESTS;
    for (int i = 0; i < REQUESTS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int32_t item = (x & 1) ? (int32_t)(x >> 8) % 64 : (int32_t)(1000 + scan++);
        (void)quote(item, 3.0);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS];
    static uint32_t sizes[THREADS] = { 30, 31, 32, 33 };
    static unsigned ids[THREADS] = { 0, 1, 2, 3 };
    memo_stats_t s;

    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, paths_thread, &sizes[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    memo_stats(paths_memo(), &s);
    printf("paths(33, 33) = %" PRIu64 " (%" PRIu64 " states computed once each, %" PRIu64 " hits)\n",
           paths(33, 33), s.misses, s.hits);

    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, quote_thread, &ids[i]);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    memo_stats(quote_memo(), &s);
    long calls = atomic_load(&quote_calls);
    printf("quote: %d requests, %ld computed (64 hot items, %d items asked once), hit ratio %.1f%%\n",
           THREADS * REQUESTS, calls, THREADS * REQUESTS / 2, 100.0 * s.hits / (THREADS * REQUESTS));
    printf("quote memo: %" PRIu64 " entries (bound 128), %" PRIu64 " evictions\n", s.entries, s.evictions);
    return s.entries <= 128 && paths(33, 33) == UINT64_C(7219428434016265740) ? EXIT_SUCCESS : EXIT_FAILURE;
}
