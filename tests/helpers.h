/*
 * Helpers that memo's tests share.
 *
 * test_memo_create: the suites run twice under CTest, the second time (as <test>_dense) with
 * MEMO_TEST_DENSE_KEYS=N in the environment: every memo a test makes then has dense_keys = N, so
 * that its u64 keys below N take the dense path and larger ones the hash table, under the same
 * assertions. Tests of memo_create's own arguments call memo_create directly.
 */
#ifndef MEMO_TESTS_HELPERS_H
#define MEMO_TESTS_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <memo.h>

/* N from MEMO_TEST_DENSE_KEYS, or 0 when the suite runs on the hash table alone. */
static inline uint64_t test_dense_keys(void)
{
    const char *env = getenv("MEMO_TEST_DENSE_KEYS");
    return env != NULL && *env != '\0' ? strtoull(env, NULL, 0) : 0;
}

/* memo_create, with dense_keys added when the suite runs dense (a cfg of an older size, or one
 * that chose its own dense_keys, is passed as it is). */
static inline int test_memo_create(memo_t **m, const memo_config_t *cfg)
{
    uint64_t dense = test_dense_keys();
    if (dense == 0 || (cfg != NULL && (cfg->struct_size != sizeof(memo_config_t) || cfg->dense_keys != 0)))
        return memo_create(m, cfg);
    memo_config_t c = MEMO_CONFIG_INIT;
    if (cfg != NULL)
        c = *cfg;
    c.dense_keys = dense;
    return memo_create(m, &c);
}

/* The process's resident set in KiB, from /proc/self/statm; -1 if it cannot be read. */
static inline long test_resident_kib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#ifdef MEMO_TESTS_TAP_H
/* A memo return code by name, into buf: "MEMO_OK (0)", "MEMO_ENOENT (-5)", "MEMO_E? (-9)" for an
 * unknown negative one, and "fn code 7" for a compute function's own positive code. */
static inline const char *test_code_name(int code, char *buf, size_t size)
{
    if (code > 0)
        snprintf(buf, size, "fn code %d", code);
    else
        snprintf(buf, size, "%s (%d)", memo_err_name(code), code);
    return buf;
}

static inline TAP__PRINTF(5, 6) int tap__is_code(int got, int expected, const char *file, int line,
                                                 const char *fmt, ...)
{
    char    detail[160], g[48], e[48];
    va_list ap;
    snprintf(detail, sizeof detail, "got: %s expected: %s", test_code_name(got, g, sizeof g),
             test_code_name(expected, e, sizeof e));
    va_start(ap, fmt);
    int r = tap__result(got == expected, file, line, detail, fmt, ap);
    va_end(ap);
    return r;
}

/* is_code(got, expected, fmt, ...): is_int for memo return codes (MEMO_OK, MEMO_E*, or fn's
 * positive code); a failure prints both by name, e.g.
 *   got: MEMO_EINVAL (-2) expected: MEMO_ENOENT (-5)
 * Include tap.h before this header. */
#define is_code(got, expected, ...) \
    tap__is_code((int)(got), (int)(expected), __FILE__, __LINE__, __VA_ARGS__)
#endif /* MEMO_TESTS_TAP_H */

#ifndef __cplusplus
/* ---- 0.2 (API.md "bounds, expiry, removal callback, clock"): C tests only ---- */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* A clock the test moves by hand, for memo_config_t.clock / clock_ctx: no test sleeps for a ttl.
 * It counts its reads (a memo with no expiry setting must never read its clock). */
typedef struct test_clock {
    _Atomic uint64_t now;   /* nanoseconds */
    _Atomic uint64_t reads;
} test_clock_t;

static inline uint64_t test_clock_read(void *ctx)
{
    test_clock_t *c = (test_clock_t *)ctx;
    atomic_fetch_add(&c->reads, 1);
    return atomic_load(&c->now);
}

static inline void test_clock_init(test_clock_t *c, uint64_t now)
{
    atomic_store(&c->now, now);
    atomic_store(&c->reads, 0);
}

static inline void test_clock_set(test_clock_t *c, uint64_t now)
{
    atomic_store(&c->now, now);
}

/* Every on_removal call, recorded: memo_config_t.on_removal = test_removals_cb and removal_ctx =
 * a test_removals_t (test_removals_init first, test_removals_free after memo_destroy), or a
 * test's own callback that calls test_removals_record. A record keeps the first
 * TEST_REMOVAL_BYTES bytes of the key and of the value; counts_only keeps the counters alone
 * (long stress runs). A call whose removal is malformed (NULL pointers, a u64 removal whose
 * lengths are not 8, an unknown key space or reason) is counted in `malformed`. */
enum { TEST_REMOVAL_BYTES = 48 };

typedef struct test_removal {
    int           reason;
    int           key_space;
    size_t        key_len, value_len;
    unsigned char key[TEST_REMOVAL_BYTES];
    unsigned char value[TEST_REMOVAL_BYTES];
} test_removal_t;

typedef struct test_removals {
    pthread_mutex_t      lock;
    test_removal_t      *log;
    size_t               n, cap;
    bool                 counts_only;
    atomic_uint_fast64_t total;
    atomic_uint_fast64_t by_reason[8]; /* [MEMO_REMOVED_*]; [0] and [6] unknown reasons */
    atomic_uint_fast64_t malformed;
} test_removals_t;

static inline void test_removals_init(test_removals_t *l, bool counts_only)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
    l->counts_only = counts_only;
}

static inline void test_removals_free(test_removals_t *l)
{
    free(l->log);
    l->log = NULL;
    l->n = l->cap = 0;
    pthread_mutex_destroy(&l->lock);
}

static inline void test_removals_record(test_removals_t *l, const memo_removal_t *r)
{
    bool bad = r == NULL || r->reason < MEMO_REMOVED_EVICTED || r->reason > MEMO_REMOVED_DESTROYED ||
               (r->key_space != MEMO_KEYS_BYTES && r->key_space != MEMO_KEYS_U64) ||
               (r->key == NULL && r->key_len != 0) || (r->value == NULL && r->value_len != 0) ||
               (r->key_space == MEMO_KEYS_U64 &&
                (r->key == NULL || r->value == NULL || r->key_len != 8 || r->value_len != 8));
    atomic_fetch_add(&l->total, 1);
    if (bad)
        atomic_fetch_add(&l->malformed, 1);
    if (r == NULL)
        return;
    atomic_fetch_add(&l->by_reason[r->reason >= 1 && r->reason <= 5 ? r->reason : 6], 1);
    if (l->counts_only)
        return;
    test_removal_t rec;
    memset(&rec, 0, sizeof rec);
    rec.reason = r->reason;
    rec.key_space = r->key_space;
    rec.key_len = r->key_len;
    rec.value_len = r->value_len;
    if (r->key != NULL)
        memcpy(rec.key, r->key, r->key_len < TEST_REMOVAL_BYTES ? r->key_len : TEST_REMOVAL_BYTES);
    if (r->value != NULL)
        memcpy(rec.value, r->value, r->value_len < TEST_REMOVAL_BYTES ? r->value_len : TEST_REMOVAL_BYTES);
    pthread_mutex_lock(&l->lock);
    if (l->n == l->cap) {
        size_t          cap = l->cap ? 2 * l->cap : 256;
        test_removal_t *log = (test_removal_t *)realloc(l->log, cap * sizeof *log);
        if (log == NULL) {
            pthread_mutex_unlock(&l->lock);
            atomic_fetch_add(&l->malformed, 1); /* cannot record: fail the test */
            return;
        }
        l->log = log;
        l->cap = cap;
    }
    l->log[l->n++] = rec;
    pthread_mutex_unlock(&l->lock);
}

static inline void test_removals_cb(void *ctx, const memo_removal_t *r)
{
    test_removals_record((test_removals_t *)ctx, r);
}

static inline uint64_t test_removals_count(test_removals_t *l, int reason)
{
    return atomic_load(&l->by_reason[reason >= 1 && reason <= 5 ? reason : 6]);
}

/* How many records name this key (in its key space); *last gets the last of them (or NULL).
 * Byte keys longer than TEST_REMOVAL_BYTES are compared on their first bytes and length. */
static inline size_t test_removals_find(test_removals_t *l, int key_space, const void *key, size_t key_len,
                                        const test_removal_t **last)
{
    size_t found = 0, cmp = key_len < TEST_REMOVAL_BYTES ? key_len : TEST_REMOVAL_BYTES;
    if (last)
        *last = NULL;
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < l->n; i++)
        if (l->log[i].key_space == key_space && l->log[i].key_len == key_len &&
            (cmp == 0 || memcmp(l->log[i].key, key, cmp) == 0)) {
            found++;
            if (last)
                *last = &l->log[i];
        }
    pthread_mutex_unlock(&l->lock);
    return found;
}

static inline size_t test_removals_find_u64(test_removals_t *l, uint64_t key, const test_removal_t **last)
{
    return test_removals_find(l, MEMO_KEYS_U64, &key, sizeof key, last);
}

/* The u64 value a record holds (u64 key space, or an 8-byte byte value). */
static inline uint64_t test_removal_u64(const test_removal_t *rec)
{
    uint64_t v = 0;
    memcpy(&v, rec->value, sizeof v);
    return v;
}
/* memo_stats as a value (poisoned first, so that a field memo_stats leaves unset shows). */
static inline memo_stats_t test_stats(memo_t *m)
{
    memo_stats_t s;
    memset(&s, 0xab, sizeof s);
    memo_stats(m, &s);
    return s;
}

/* xorshift64: a reproducible stream from a non-zero seed. */
static inline uint64_t test_rng(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

#ifdef MEMO_TESTS_TAP_H
/* A herd: n threads (at most TEST_HERD_MAX) start on a barrier and each calls
 * test_herd_arrive before its memo call; a compute function calls test_herd_hold(h, key) first,
 * which, for the herd's key while the herd runs, counts the computation and holds it until all n
 * have arrived, and 30 ms more, so that the others are asleep on it. */
enum { TEST_HERD_MAX = 64 };

typedef struct test_herd {
    atomic_int        active, arrived, held;
    uint64_t          key;
    unsigned          n;
    pthread_barrier_t start;
} test_herd_t;

static inline void test_herd_hold(test_herd_t *h, uint64_t key)
{
    if (!atomic_load(&h->active) || key != h->key)
        return;
    atomic_fetch_add(&h->held, 1);
    uint64_t deadline = tap_now_ns() + 5000000000ull;
    while (atomic_load(&h->arrived) < (int)h->n && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    tap_sleep_ms(30);
}

static inline void test_herd_arrive(test_herd_t *h)
{
    tap_barrier_wait(&h->start);
    atomic_fetch_add(&h->arrived, 1);
}

/* Runs thread((void *)i) for i in 0 .. n-1 as a herd on key; bails out if they hang for 60 s. */
static inline void test_herd_run(test_herd_t *h, uint64_t key, unsigned n, void *(*thread)(void *), const char *what)
{
    pthread_t tids[TEST_HERD_MAX];
    if (n > TEST_HERD_MAX)
        bail_out("%s: a herd of %u", what, n);
    h->key = key, h->n = n;
    atomic_store(&h->arrived, 0), atomic_store(&h->held, 0), atomic_store(&h->active, 1);
    tap_barrier_init(&h->start, n);
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&tids[i], NULL, thread, (void *)(uintptr_t)i) != 0)
            bail_out("pthread_create");
    if (tap_join_threads_timed(tids, n, 60) != 0)
        bail_out("%s: the herd hung", what);
    atomic_store(&h->active, 0);
    tap_barrier_destroy(&h->start);
}
#endif /* MEMO_TESTS_TAP_H */
#endif /* !__cplusplus */

#endif /* MEMO_TESTS_HELPERS_H */
