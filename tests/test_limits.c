/*
 * test_limits: no per-memo or per-(thread, memo) resource caps what a program can do, and the
 * limits that remain (memo.h, "Limits") are enforced with clear codes.
 *
 *  - 6000 memos alive at once, each used; then all destroyed. Catches one allocator arena per
 *    memo from a process-wide pool of about 4095 (memo_create failed after 4086).
 *  - 64 threads x 72 memos, every thread using every memo at once (4608 thread states). Catches
 *    one allocator thread cache per (thread, memo) from a pool of about 4093 (586 MEMO_ENOMEM).
 *  - 80 MEMO_DEFINE_U64 functions called from 56 threads. Catches the same through the decorator
 *    (which aborts on MEMO_ENOMEM: "out of memory").
 *  - expected_entries: a hint past what the tables can hold is MEMO_EINVAL; a large one that fits
 *    presizes a bounded amount (about 300 MiB of tables) and the memo works. Catches a hint truncated to 32 bits (a tiny
 *    table) and 2^30 entries on one shard zeroing ~18 GB up front.
 * All the threads start on a barrier; a watchdog turns a hang into a failure.
 */
#include "tap.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

static int twice(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = 2 * key;
    return 0;
}

/* Starts n threads running fn((void *)i), with 256 KiB stacks (many threads, little recursion). */
static void start_threads(pthread_t *t, unsigned n, void *(*fn)(void *))
{
    for (unsigned i = 0; i < n; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t[i], &attr, fn, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
        pthread_attr_destroy(&attr);
    }
}

/* ---- many memos ---- */

static void test_many_memos(void)
{
    enum { MEMOS = 6000 };
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 1; /* the count is the point, not the size */
    memo_t **ms = calloc(MEMOS, sizeof *ms);
    int created = 0, bad = 0, first_rc = 0;
    for (int i = 0; i < MEMOS; i++) {
        int rc = memo_create(&ms[i], &cfg);
        if (rc != 0) {
            if (first_rc == 0)
                first_rc = rc;
            ms[i] = NULL;
            continue;
        }
        created++;
        uint64_t v = 0;
        if (memo_get_u64(ms[i], (uint64_t)i, twice, NULL, &v) != 0 || v != 2 * (uint64_t)i)
            bad++;
    }
    is_int(created, MEMOS, "%d memos alive at once (first failure: %s)", MEMOS, memo_err_name(first_rc));
    is_int(bad, 0, "each of them computes and stores a value");
    int found = 0;
    for (int i = 0; i < MEMOS; i++) {
        uint64_t v = 0;
        if (ms[i] != NULL && memo_lookup_u64(ms[i], (uint64_t)i, &v) == 0 && v == 2 * (uint64_t)i)
            found++;
    }
    is_int(found, MEMOS, "every memo still holds its value with all of them alive");
    for (int i = 0; i < MEMOS; i++)
        memo_destroy(ms[i]);
    free(ms);
}

/* ---- many threads x many memos ---- */

enum { GRID_THREADS = 64, GRID_MEMOS = 72 };
static memo_t           *grid[GRID_MEMOS];
static pthread_barrier_t grid_start;
static atomic_int        grid_enomem, grid_other;

static void *grid_thread(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    tap_barrier_wait(&grid_start);
    for (unsigned i = 0; i < GRID_MEMOS; i++) {
        uint64_t v = 0, key = t * 1000 + i;
        int rc = memo_get_u64(grid[i], key, twice, NULL, &v);
        if (rc == MEMO_ENOMEM)
            atomic_fetch_add(&grid_enomem, 1);
        else if (rc != 0 || v != 2 * key)
            atomic_fetch_add(&grid_other, 1);
    }
    /* Stay alive until every thread has used every memo: all states exist at once. */
    tap_barrier_wait(&grid_start);
    return NULL;
}

static void test_threads_by_memos(void)
{
    for (unsigned i = 0; i < GRID_MEMOS; i++)
        if (memo_create(&grid[i], NULL) != 0)
            bail_out("memo_create");
    pthread_t t[GRID_THREADS];
    tap_barrier_init(&grid_start, GRID_THREADS);
    start_threads(t, GRID_THREADS, grid_thread);
    tap_join_threads(t, GRID_THREADS);
    tap_barrier_destroy(&grid_start);
    is_int(atomic_load(&grid_enomem), 0, "%d threads x %d memos: no MEMO_ENOMEM", GRID_THREADS, GRID_MEMOS);
    is_int(atomic_load(&grid_other), 0, "%d threads x %d memos: every call returns its value", GRID_THREADS, GRID_MEMOS);
    uint64_t entries = 0;
    for (unsigned i = 0; i < GRID_MEMOS; i++) {
        memo_stats_t s;
        memo_stats(grid[i], &s);
        entries += s.entries;
        memo_destroy(grid[i]);
    }
    is_u64(entries, (uint64_t)GRID_THREADS * GRID_MEMOS, "every (thread, memo) pair stored its value");
}

/* ---- many decorated functions ---- */

/* Each declared first (-Wmissing-prototypes): MEMO_DEFINE_U64's functions have external linkage. */
#define DEFINE_TIMES(n)                                  \
    uint64_t times##n(uint64_t x);                       \
    memo_t  *times##n##_memo(void);                      \
    MEMO_DEFINE_U64(times##n, x) { return x * n; }
#define TEN(d) DEFINE_TIMES(d##0) DEFINE_TIMES(d##1) DEFINE_TIMES(d##2) DEFINE_TIMES(d##3) \
    DEFINE_TIMES(d##4) DEFINE_TIMES(d##5) DEFINE_TIMES(d##6) DEFINE_TIMES(d##7) DEFINE_TIMES(d##8) DEFINE_TIMES(d##9)
TEN(1) TEN(2) TEN(3) TEN(4) TEN(5) TEN(6) TEN(7) TEN(8)
#define LIST_TIMES(d) times##d##0, times##d##1, times##d##2, times##d##3, times##d##4, times##d##5, \
    times##d##6, times##d##7, times##d##8, times##d##9

enum { DECORATED = 80, DECORATED_THREADS = 56 };
static uint64_t (*const decorated[DECORATED])(uint64_t) = {
    LIST_TIMES(1), LIST_TIMES(2), LIST_TIMES(3), LIST_TIMES(4),
    LIST_TIMES(5), LIST_TIMES(6), LIST_TIMES(7), LIST_TIMES(8),
};
static pthread_barrier_t dec_start;
static atomic_int        dec_wrong;

static void *dec_thread(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    tap_barrier_wait(&dec_start);
    for (unsigned i = 0; i < DECORATED; i++) {
        uint64_t factor = 10 + i; /* times10 .. times89 */
        if (decorated[i](t) != t * factor || decorated[i](t + 1000) != (t + 1000) * factor)
            atomic_fetch_add(&dec_wrong, 1);
    }
    tap_barrier_wait(&dec_start);
    return NULL;
}

static void test_decorated(void)
{
    pthread_t t[DECORATED_THREADS];
    tap_barrier_init(&dec_start, DECORATED_THREADS);
    start_threads(t, DECORATED_THREADS, dec_thread);
    tap_join_threads(t, DECORATED_THREADS);
    tap_barrier_destroy(&dec_start);
    is_int(atomic_load(&dec_wrong), 0, "%d MEMO_DEFINE_U64 functions on %d threads: every value right, no abort",
           DECORATED, DECORATED_THREADS);
    memo_stats_t s;
    memo_stats(times47_memo(), &s);
    is_u64(s.misses, 2 * DECORATED_THREADS, "times47 computed each of its %d keys once", 2 * DECORATED_THREADS);
}

/* ---- expected_entries ---- */

static void test_expected_entries(void)
{
    struct {
        size_t   expected;
        unsigned shards;
        int      rc;
    } cases[] = {
        { SIZE_MAX, 0, MEMO_EINVAL },
        { (size_t)1 << 32, 1, MEMO_EINVAL },             /* a shard holds at most 2^30 */
        { ((size_t)1 << 30) + 1, 1, MEMO_EINVAL },
        { (size_t)1 << 40, 64, MEMO_EINVAL },            /* 64 x 2^30 = 2^36 */
        { (size_t)1 << 30, 1, 0 },                       /* presized in part, grows on demand */
        { (size_t)1 << 36, 0, 0 },                       /* the default shard count is >= 64 */
        { 1000000, 4, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memo_config_t cfg = MEMO_CONFIG_INIT;
        cfg.expected_entries = cases[i].expected;
        cfg.shards = cases[i].shards;
        memo_t *m = NULL;
        uint64_t t0 = tap_now_ns();
        int rc = memo_create(&m, &cfg);
        uint64_t ms = (tap_now_ns() - t0) / 1000000;
        is_str(memo_err_name(rc), memo_err_name(cases[i].rc), "expected_entries %zu, shards %u: memo_create",
               cases[i].expected, cases[i].shards);
        if (rc != 0)
            continue;
        memo_stats_t s;
        memo_stats(m, &s);
        int bad = 0;
        for (uint64_t k = 0; k < 100000; k++) {
            uint64_t v = 0;
            if (memo_get_u64(m, k, twice, NULL, &v) != 0 || v != 2 * k)
                bad++;
        }
        memo_stats_t s2;
        memo_stats(m, &s2);
        diag("expected_entries %zu, shards %u: made in %llu ms, %llu bytes empty, %llu with 100000 values",
             cases[i].expected, cases[i].shards, (unsigned long long)ms, (unsigned long long)s.bytes,
             (unsigned long long)s2.bytes);
        ok(bad == 0 && s2.entries == 100000, "... 100000 values stored and read back");
        /* Presizing (done at a key space's first insert) is bounded (memo.h): 2^24 entries at
         * most, about 300 MiB of tables, beside the 100000 values. */
        cmp_u64(s2.bytes, <=, (320ull << 20) + (uint64_t)(cfg.shards ? cfg.shards : 4096) * 4096 + 100000ull * 64,
                "... the memo holds at most 320 MiB of tables besides its values");
        memo_destroy(m);
    }
}

int main(void)
{
    tap_watchdog(240);
    test_expected_entries();
    test_many_memos();
    test_threads_by_memos();
    test_decorated();
    return done_testing();
}
