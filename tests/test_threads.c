/*
 * test_threads: memo and thread lifetimes.
 *
 *  - generations: 250 times, a memo is made, used by 8 long-lived workers and destroyed; the
 *    workers go on to the next memo. A new memo is often at a reused address. Each generation's
 *    values carry the generation, and each starts with lookups that must all miss. Catches a
 *    per-thread cache keyed by the memo's address only (a stale local of a destroyed memo is
 *    reused for the new one at the same address: stale values, wrong counters, use-after-free),
 *    per-thread state of destroyed memos leaking or freed twice.
 *  - destroy racing thread exit: 8 threads use a memo, say they are done, and exit while the main
 *    thread destroys the memo at that same moment (200 times). Catches a thread-exit destructor
 *    and memo_destroy both releasing the thread's state for that memo without a common lock
 *    (double free, use-after-free under ASan, TSan race).
 *  - 520 short-lived threads, in batches of 8, on one memo: counters are exact after they exit.
 *    Catches counters that live only in the exited thread's state and are lost with it (hits +
 *    waits + misses < calls), or are counted twice when the state is recycled to a new thread.
 *  - MEMO_DEFINE_U64(fib) shared by 8 threads: one memo made once (misses == 91), values right.
 *    Catches an unsafe lazy creation (two memos made: fewer misses per memo, a leak).
 * Verified against a mutated copy of src/: a per-thread cache keyed by address only -> crash
 * (SIGSEGV) in this binary.
 */
#include "tap.h"
#include "helpers.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

uint64_t fib(uint64_t n); /* MEMO_DEFINE_U64's two functions, declared first */
memo_t  *fib_memo(void);

MEMO_DEFINE_U64(fib, n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/* ---- generations ---- */

enum { WORKERS = 8, GENERATIONS = 250, GEN_KEYS = 64 };

typedef struct gen {
    memo_t *volatile  m;
    uint64_t          gen;
    volatile bool     stop;
    pthread_barrier_t a, b, c;
    atomic_int        stale, wrong, bad_rc;
    atomic_int        calls;
} gen_t;

static gen_t G;

static uint64_t gen_value(uint64_t gen, uint64_t key)
{
    return gen * 1000003u + key;
}

static int gen_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    *value = gen_value(*(const uint64_t *)ctx, key);
    return 0;
}

static int gen_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    if (key_len != sizeof k)
        return 1;
    memcpy(&k, key, sizeof k);
    uint64_t v = gen_value(*(const uint64_t *)ctx, k) ^ 0xFFFF;
    return memo_result_set(out, &v, sizeof v);
}

static void *gen_worker(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    for (;;) {
        tap_barrier_wait(&G.a);
        if (G.stop)
            break;
        memo_t  *m = G.m;
        uint64_t gen = G.gen;
        /* a new memo holds nothing, whatever address it has */
        for (uint64_t k = 0; k < GEN_KEYS; k += 4) {
            uint64_t   v;
            memo_ref_t r = MEMO_REF_INIT;
            if (memo_lookup_u64(m, k, &v) != MEMO_ENOENT)
                atomic_fetch_add(&G.stale, 1);
            if (memo_lookup(m, &k, sizeof k, &r) != MEMO_ENOENT) {
                atomic_fetch_add(&G.stale, 1);
                memo_release(&r);
            }
        }
        tap_barrier_wait(&G.b);
        int calls = 0;
        for (uint64_t i = 0; i < GEN_KEYS; i++) {
            uint64_t k = (i * (2 * idx + 1) + idx) % GEN_KEYS; /* each worker its own order */
            uint64_t v = 0;
            int      rc = memo_get_u64(m, k, gen_fn_u64, &gen, &v);
            calls++;
            if (rc != 0)
                atomic_fetch_add(&G.bad_rc, 1);
            else if (v != gen_value(gen, k))
                atomic_fetch_add(&G.wrong, 1);
            memo_ref_t r = MEMO_REF_INIT;
            rc = memo_get(m, &k, sizeof k, gen_fn_bytes, &gen, &r);
            calls++;
            if (rc != 0) {
                atomic_fetch_add(&G.bad_rc, 1);
            } else {
                if (r.len != 8 || memcmp(r.data, &(uint64_t){ gen_value(gen, k) ^ 0xFFFF }, 8) != 0)
                    atomic_fetch_add(&G.wrong, 1);
                memo_release(&r);
            }
        }
        atomic_fetch_add(&G.calls, calls);
        tap_barrier_wait(&G.c);
    }
    return NULL;
}

static void test_generations(void)
{
    memset(&G, 0, sizeof G);
    tap_barrier_init(&G.a, WORKERS + 1);
    tap_barrier_init(&G.b, WORKERS);
    tap_barrier_init(&G.c, WORKERS + 1);
    pthread_t tids[WORKERS];
    for (unsigned i = 0; i < WORKERS; i++)
        pthread_create(&tids[i], NULL, gen_worker, (void *)(uintptr_t)i);

    static memo_t *seen[GENERATIONS];
    int            reused = 0, bad_stats = 0;
    for (uint64_t g = 0; g < GENERATIONS; g++) {
        memo_config_t cfg = MEMO_CONFIG_INIT;
        cfg.flags = (g % 3 == 0) ? MEMO_F_SYSTEM_ALLOC : 0;
        cfg.shards = (unsigned)(1u << (g % 4));
        memo_t *m = NULL;
        if (test_memo_create(&m, &cfg) != 0)
            bail_out("memo_create in generation %" PRIu64, g);
        for (uint64_t j = 0; j < g; j++)
            if (seen[j] == m) {
                reused++;
                break;
            }
        seen[g] = m;
        G.m = m;
        G.gen = g;
        atomic_store(&G.calls, 0);
        tap_barrier_wait(&G.a);
        tap_barrier_wait(&G.c);
        memo_stats_t s;
        memo_stats(m, &s);
        if (s.misses != 2 * GEN_KEYS || s.hits + s.waits + s.misses != (uint64_t)atomic_load(&G.calls) ||
            s.entries != 2 * GEN_KEYS) {
            if (bad_stats++ < 5)
                diag("generation %" PRIu64 ": misses %" PRIu64 " hits %" PRIu64 " waits %" PRIu64
                     " entries %" PRIu64 " calls %d",
                     g, s.misses, s.hits, s.waits, s.entries, atomic_load(&G.calls));
        }
        memo_destroy(m);
    }
    G.stop = true;
    tap_barrier_wait(&G.a);
    tap_join_threads(tids, WORKERS);
    diag("generations: %d of %d memos were made at an address an earlier memo had", reused,
         GENERATIONS);
    is_int(atomic_load(&G.stale), 0,
           "%d generations of memos used by 8 long-lived threads: a new memo never shows an old value",
           GENERATIONS);
    is_int(atomic_load(&G.bad_rc), 0, "generations: every call returned 0");
    is_int(atomic_load(&G.wrong), 0, "generations: every value is this generation's");
    is_int(bad_stats, 0, "generations: stats exact in every generation (misses 128, hits+waits+misses == calls)");
    tap_barrier_destroy(&G.a);
    tap_barrier_destroy(&G.b);
    tap_barrier_destroy(&G.c);
}

/* ---- destroy racing thread exit ---- */

enum { EXITERS = 8, EXIT_ROUNDS = 200 };

typedef struct exit_race {
    memo_t           *m;
    pthread_barrier_t done;
    atomic_int        bad;
} exit_race_t;

static exit_race_t ER;

static int sq_fn(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * key;
    return 0;
}

static void *exiter(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    for (uint64_t k = 0; k < 32; k++) {
        uint64_t v = 0;
        if (memo_get_u64(ER.m, (k + idx) % 32, sq_fn, NULL, &v) != 0 || v != ((k + idx) % 32) * ((k + idx) % 32))
            atomic_fetch_add(&ER.bad, 1);
    }
    tap_barrier_wait(&ER.done); /* no call in progress from here on: the memo may be destroyed */
    return NULL;                /* ... while this thread's exit releases its state */
}

static void test_destroy_racing_exit(void)
{
    memset(&ER, 0, sizeof ER);
    tap_barrier_init(&ER.done, EXITERS + 1);
    for (int round = 0; round < EXIT_ROUNDS; round++) {
        memo_config_t cfg = MEMO_CONFIG_INIT;
        cfg.flags = (round % 2) ? MEMO_F_SYSTEM_ALLOC : 0;
        if (test_memo_create(&ER.m, &cfg) != 0)
            bail_out("memo_create");
        pthread_t tids[EXITERS];
        for (unsigned i = 0; i < EXITERS; i++)
            pthread_create(&tids[i], NULL, exiter, (void *)(uintptr_t)i);
        tap_barrier_wait(&ER.done);
        memo_destroy(ER.m);
        tap_join_threads(tids, EXITERS);
    }
    is_int(atomic_load(&ER.bad), 0,
           "%d rounds: 8 threads use a memo, then exit while it is destroyed: values right, no crash",
           EXIT_ROUNDS);
    tap_barrier_destroy(&ER.done);
}

/* ---- many short-lived threads ---- */

enum { SHORT_THREADS = 520, BATCH = 8, SHORT_CALLS = 200, SHORT_KEYS = 64 };

typedef struct shorts {
    memo_t           *m;
    pthread_barrier_t start;
    atomic_int        bad, computations;
} shorts_t;

static shorts_t SH;

static int short_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    atomic_fetch_add(&SH.computations, 1);
    *value = key * 3;
    return 0;
}

static int short_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    atomic_fetch_add(&SH.computations, 1);
    return memo_result_set(out, key, key_len);
}

static void *short_thread(void *arg)
{
    unsigned n = (unsigned)(uintptr_t)arg;
    tap_barrier_wait(&SH.start);
    for (unsigned i = 0; i < SHORT_CALLS; i++) {
        uint64_t k = (i * 7 + n) % SHORT_KEYS;
        if (i % 2) {
            uint64_t v = 0;
            if (memo_get_u64(SH.m, k, short_u64, NULL, &v) != 0 || v != k * 3)
                atomic_fetch_add(&SH.bad, 1);
        } else {
            memo_ref_t r = MEMO_REF_INIT;
            if (memo_get(SH.m, &k, sizeof k, short_bytes, NULL, &r) != 0 || r.len != 8 ||
                memcmp(r.data, &k, 8) != 0)
                atomic_fetch_add(&SH.bad, 1);
            memo_release(&r);
        }
    }
    return NULL;
}

static void test_short_lived_threads(void)
{
    memset(&SH, 0, sizeof SH);
    test_memo_create(&SH.m, NULL);
    tap_barrier_init(&SH.start, BATCH);
    for (unsigned done = 0; done < SHORT_THREADS; done += BATCH) {
        pthread_t tids[BATCH];
        for (unsigned i = 0; i < BATCH; i++)
            pthread_create(&tids[i], NULL, short_thread, (void *)(uintptr_t)(done + i));
        tap_join_threads(tids, BATCH);
        if (done + BATCH == 256) {
            /* midway, with half the threads gone: the exited threads' counts are kept */
            memo_stats_t s;
            memo_stats(SH.m, &s);
            is_u64(s.hits + s.waits + s.misses, (uint64_t)(done + BATCH) * SHORT_CALLS,
                   "short-lived threads, midway: hits + waits + misses == calls of exited threads");
        }
    }
    memo_stats_t s;
    memo_stats(SH.m, &s);
    is_int(atomic_load(&SH.bad), 0, "%d short-lived threads (batches of %d): every value right",
           SHORT_THREADS, BATCH);
    is_int(atomic_load(&SH.computations), 2 * SHORT_KEYS, "short-lived threads: each key computed once");
    is_u64(s.misses, 2 * SHORT_KEYS, "short-lived threads: stats.misses == 128");
    is_u64(s.hits + s.waits + s.misses, (uint64_t)SHORT_THREADS * SHORT_CALLS,
           "short-lived threads: hits + waits + misses == %d calls after they all exited",
           SHORT_THREADS * SHORT_CALLS);
    is_u64(s.entries, 2 * SHORT_KEYS, "short-lived threads: entries == 128");
    tap_barrier_destroy(&SH.start);
    memo_destroy(SH.m);
}

/* ---- MEMO_DEFINE_U64 shared by 8 threads ---- */

static pthread_barrier_t fib_start;
static atomic_int        fib_wrong;

static void *fib_thread(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    uint64_t table[91];
    table[0] = 0, table[1] = 1;
    for (int i = 2; i <= 90; i++)
        table[i] = table[i - 1] + table[i - 2];
    tap_barrier_wait(&fib_start); /* first use of fib_memo() from 8 threads at once */
    for (unsigned i = 0; i <= 90; i++) {
        unsigned n = (idx % 2) ? 90 - i : (i * (idx + 1)) % 91;
        if (fib(n) != table[n])
            atomic_fetch_add(&fib_wrong, 1);
    }
    return NULL;
}

static void test_define(void)
{
    tap_barrier_init(&fib_start, 8);
    pthread_t tids[8];
    for (unsigned i = 0; i < 8; i++)
        pthread_create(&tids[i], NULL, fib_thread, (void *)(uintptr_t)i);
    tap_join_threads(tids, 8);
    is_int(atomic_load(&fib_wrong), 0, "MEMO_DEFINE_U64 fib from 8 threads: every value right");
    is_u64(fib(90), 2880067194370816120ull, "fib(90) == 2880067194370816120");
    ok(fib_memo() != NULL && fib_memo() == fib_memo(), "fib_memo() is one memo");
    memo_stats_t s;
    memo_stats(fib_memo(), &s);
    is_u64(s.misses, 91, "fib_memo(): stats.misses == 91");
    is_u64(s.entries, 91, "fib_memo(): stats.entries == 91");
    tap_barrier_destroy(&fib_start);
}

int main(void)
{
    tap_watchdog(100);
    test_define();
    test_generations();
    test_destroy_racing_exit();
    test_short_lived_threads();
    return done_testing();
}
