/*
 * test_alloc_fail: running out of memory anywhere is an error code, never a crash, a leak or a
 * wrong answer. SQLite's way: a scenario (create; u64 and byte-key gets that grow the tables past
 * several resizes, nested gets, failing fns; forget; clear; a second thread) runs once with each
 * allocation in turn made to fail, once and then from that allocation on (memo_testing's hook,
 * src/testing.h). In every run every call returns 0, MEMO_ENOMEM or fn's own code (forget and
 * lookup exactly the model's 0 or MEMO_ENOENT, as the API says, even when the thread's state
 * cannot be made: the second thread's lookups then go through the memo's spare); afterwards,
 * with the hook off, the memo agrees with a reference model of what was stored, answers every
 * key right and is destroyed (under ASan, LeakSanitizer checks that nothing leaked).
 *
 * Then table growth alone fails, from one point on: inserts that need a bigger table return
 * MEMO_ENOMEM and store nothing, and a clear that cannot have a fresh table still clears.
 *
 * Catches: an ignored allocation failure (a crash: NULL dereferenced); an insert that failed for
 * want of a bigger table taken as done (mutant M9: fn runs and its value is never stored, so the
 * model disagrees); error paths that leak (LSan) or leave a marker behind (a later call waits).
 */
#include "tap.h"

#include <stdbool.h>

#include <memo.h>

#include "../src/testing.h"

enum {
    U64_KEYS = 600,    /* main thread: 0..599; 500..599 nest a get of key - 500 */
    BYTE_KEYS = 300,
    THREAD_BASE = 10000,
    THREAD_KEYS = 150, /* second thread: 10000..10149 */
    FAIL_U64 = 5,      /* fn's own code for u64 keys with k % 97 == 13 */
    FAIL_BYTES = 7,    /* ... and byte keys with k % 89 == 3 */
};

enum { ABSENT = 0, STORED = 1 };

typedef struct {
    memo_t       *m;
    unsigned char u64[THREAD_BASE + THREAD_KEYS];
    unsigned char bytes[BYTE_KEYS];
    int           bad;   /* unexpected return codes or values */
    char          what[160];
} run_t;

static run_t R;

static void bad(const char *fmt, unsigned long long a, long long b)
{
    if (R.bad++ == 0)
        snprintf(R.what, sizeof R.what, fmt, a, b);
}

static uint64_t u64_value(uint64_t k)
{
    return k * 2654435761u + 7;
}

static int u64_fn(void *ctx, uint64_t k, uint64_t *value)
{
    (void)ctx;
    if (k % 97 == 13)
        return FAIL_U64;
    if (k >= 500 && k < U64_KEYS) {
        uint64_t inner = 0;
        int rc = memo_get_u64(R.m, k - 500, u64_fn, NULL, &inner);
        if (rc == 0) {
            if (inner != u64_value(k - 500))
                bad("nested get of %llu: wrong value (rc %lld)", k - 500, rc);
            R.u64[k - 500] = STORED;
        } else if (rc != MEMO_ENOMEM && rc != FAIL_U64) {
            bad("nested get of %llu: rc %lld", k - 500, rc);
        }
        if (rc != 0)
            return rc;
    }
    *value = u64_value(k);
    return 0;
}

static size_t bytes_key(uint64_t k, char *buf)
{
    return (size_t)snprintf(buf, 32, "key-%llu", (unsigned long long)k);
}

static size_t bytes_len(uint64_t k)
{
    return 1 + (size_t)(k * 37 % 300);
}

static int bytes_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx;
    char buf[32];
    memcpy(buf, key, key_len);
    buf[key_len] = 0;
    uint64_t k = strtoull(buf + 4, NULL, 10);
    if (k % 89 == 3)
        return FAIL_BYTES;
    size_t len = bytes_len(k);
    unsigned char *p = memo_result_alloc(out, len);
    if (p == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(k + i * 13);
    return 0;
}

static bool bytes_ok(const memo_ref_t *r, uint64_t k)
{
    const unsigned char *p = r->data;
    if (r->len != bytes_len(k))
        return false;
    for (size_t i = 0; i < r->len; i++)
        if (p[i] != (unsigned char)(k + i * 13))
            return false;
    return true;
}

/* The code fn returns for k, 0 if it succeeds. */
static int u64_code(uint64_t k)
{
    return k % 97 == 13 || (k >= 500 && k < U64_KEYS && (k - 500) % 97 == 13) ? FAIL_U64 : 0;
}

static void get_u64(uint64_t k)
{
    uint64_t v = 0;
    int rc = memo_get_u64(R.m, k, u64_fn, NULL, &v);
    if (rc == 0) {
        if (v != u64_value(k))
            bad("get_u64(%llu): wrong value (rc %lld)", k, rc);
        R.u64[k] = STORED;
    } else if (rc != MEMO_ENOMEM && rc != u64_code(k)) {
        bad("get_u64(%llu): rc %lld", k, rc);
    }
}

static void get_bytes(uint64_t k)
{
    char key[32];
    size_t n = bytes_key(k, key);
    memo_ref_t r = MEMO_REF_INIT;
    int rc = memo_get(R.m, key, n, bytes_fn, NULL, &r);
    if (rc == 0) {
        if (!bytes_ok(&r, k))
            bad("get(key-%llu): wrong value (rc %lld)", k, rc);
        R.bytes[k] = STORED;
        memo_release(&r);
    } else if (!(rc == MEMO_ENOMEM || (rc == FAIL_BYTES && k % 89 == 3))) {
        bad("get(key-%llu): rc %lld", k, rc);
    }
}

static void forget_u64(uint64_t k)
{
    int rc = memo_forget_u64(R.m, k);
    /* Never MEMO_ENOMEM, even when this thread's state cannot be made (the memo's spare). */
    if (rc != (R.u64[k] == STORED ? 0 : MEMO_ENOENT))
        bad("forget_u64(%llu): rc %lld", k, rc);
    if (rc == 0)
        R.u64[k] = ABSENT;
}

static void forget_bytes(uint64_t k)
{
    char key[32];
    size_t n = bytes_key(k, key);
    int rc = memo_forget(R.m, key, n);
    if (rc != (R.bytes[k] == STORED ? 0 : MEMO_ENOENT))
        bad("forget(key-%llu): rc %lld", k, rc);
    if (rc == 0)
        R.bytes[k] = ABSENT;
}

/* Lookups never fail for want of memory either: the model's answer, exactly. */
static void lookup_u64(uint64_t k)
{
    uint64_t v = 0;
    int rc = memo_lookup_u64(R.m, k, &v);
    if (rc != (R.u64[k] == STORED ? 0 : MEMO_ENOENT) || (rc == 0 && v != u64_value(k)))
        bad("lookup_u64(%llu): rc %lld, or a wrong value", k, rc);
}

static void lookup_bytes(uint64_t k)
{
    char key[32];
    size_t n = bytes_key(k, key);
    memo_ref_t r = MEMO_REF_INIT;
    int rc = memo_lookup(R.m, key, n, &r);
    if (rc != (R.bytes[k] == STORED ? 0 : MEMO_ENOENT) || (rc == 0 && !bytes_ok(&r, k)))
        bad("lookup(key-%llu): rc %lld, or a wrong value", k, rc);
    memo_release(&r);
}

static void *second_thread(void *arg)
{
    (void)arg;
    for (uint64_t k = THREAD_BASE; k < THREAD_BASE + THREAD_KEYS; k++)
        get_u64(k); /* its own keys: no nesting, so its model entries are its own */
    for (uint64_t k = THREAD_BASE; k < THREAD_BASE + THREAD_KEYS; k += 3)
        forget_u64(k);
    /* Its own keys, and the main thread's byte keys (the main thread waits meanwhile). */
    for (uint64_t k = THREAD_BASE; k < THREAD_BASE + THREAD_KEYS; k += 2)
        lookup_u64(k);
    for (uint64_t k = 0; k < BYTE_KEYS; k += 5)
        lookup_bytes(k);
    return NULL;
}

/* The scenario, with the hook as set by the caller. Returns false if the memo could not be
 * made (then nothing else is checked). */
static bool scenario(bool system_alloc)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 2; /* few shards: 300 keys per table, past several resizes from 16 */
    cfg.flags = system_alloc ? MEMO_F_SYSTEM_ALLOC : 0;
    memset(&R, 0, sizeof R);
    int rc = memo_create(&R.m, &cfg);
    if (rc != 0) {
        if (rc != MEMO_ENOMEM || R.m != NULL)
            bad("memo_create: %llu, rc %lld", 0, rc);
        return false;
    }
    for (uint64_t k = 0; k < U64_KEYS; k++)
        get_u64(k);
    for (uint64_t k = 0; k < BYTE_KEYS; k++)
        get_bytes(k);
    for (uint64_t k = 0; k < U64_KEYS; k += 5)
        forget_u64(k);
    for (uint64_t k = 0; k < BYTE_KEYS; k += 7)
        forget_bytes(k);
    pthread_t t;
    if (pthread_create(&t, NULL, second_thread, NULL) != 0)
        bail_out("pthread_create");
    pthread_join(t, NULL);
    memo_clear(R.m);
    /* A clear cannot fail (it is void): it clears even without a fresh table or this thread's
     * state (the memo's spare). */
    memset(R.u64, ABSENT, sizeof R.u64);
    memset(R.bytes, ABSENT, sizeof R.bytes);
    for (uint64_t k = 0; k < U64_KEYS; k += 2)
        get_u64(k);
    for (uint64_t k = 0; k < BYTE_KEYS; k += 3)
        get_bytes(k);
    return true;
}

/* With the hook off: the memo holds exactly what the model says, then answers everything. */
static void verify(void)
{
    uint64_t stored = 0;
    for (uint64_t k = 0; k < THREAD_BASE + THREAD_KEYS; k++) {
        if (k == U64_KEYS)
            k = THREAD_BASE;
        uint64_t v = 0;
        int rc = memo_lookup_u64(R.m, k, &v);
        if (rc != (R.u64[k] == STORED ? 0 : MEMO_ENOENT) || (rc == 0 && v != u64_value(k)))
            bad("after: lookup_u64(%llu) disagrees with the model: rc %lld", k, rc);
        stored += R.u64[k] == STORED;
    }
    for (uint64_t k = 0; k < BYTE_KEYS; k++) {
        char key[32];
        size_t n = bytes_key(k, key);
        memo_ref_t r = MEMO_REF_INIT;
        int rc = memo_lookup(R.m, key, n, &r);
        if (rc != (R.bytes[k] == STORED ? 0 : MEMO_ENOENT) || (rc == 0 && !bytes_ok(&r, k)))
            bad("after: lookup(key-%llu) disagrees with the model: rc %lld", k, rc);
        memo_release(&r);
        stored += R.bytes[k] == STORED;
    }
    memo_stats_t st;
    memo_stats(R.m, &st);
    if (st.entries != stored)
        bad("after: stats.entries %llu, model %lld", (unsigned long long)st.entries, (long long)stored);
    for (uint64_t k = 0; k < U64_KEYS; k++)
        get_u64(k);
    for (uint64_t k = 0; k < BYTE_KEYS; k++)
        get_bytes(k);
    for (uint64_t k = 0; k < U64_KEYS; k++)
        if (R.u64[k] != STORED && u64_code(k) == 0)
            bad("after: get_u64(%llu) did not store (%lld)", k, 0);
    for (uint64_t k = 0; k < BYTE_KEYS; k++)
        if (R.bytes[k] != STORED && k % 89 != 3)
            bad("after: get(key-%llu) did not store (%lld)", k, 0);
}

/* Runs the scenario failing the nth allocation (mode as in src/testing.h). Returns how many
 * allocations the run made (with the hook counting), or -1 if none failed. */
static long run_once(long nth, int mode, bool system_alloc, int *failures)
{
    long failed_before = memo__test_alloc_failures();
    memo__test_fail_alloc(nth, mode);
    bool made = scenario(system_alloc);
    long count = memo__test_alloc_count();
    memo__test_fail_alloc(0, MEMO__TEST_FAIL_ONCE);
    long injected = memo__test_alloc_failures() - failed_before;
    if (made) {
        verify();
        memo_destroy(R.m);
        R.m = NULL;
    }
    if (R.bad != 0 && ++*failures <= 5)
        diag("nth %ld, mode %d, %s: %d wrong: %s", nth, mode, system_alloc ? "malloc" : "arena", R.bad, R.what);
    return injected > 0 ? count : -1;
}

static void sweep(int mode, bool system_alloc)
{
    const char *label = system_alloc ? "MEMO_F_SYSTEM_ALLOC" : "arena";
    int failures = 0;
    memo__test_fail_alloc(0, mode);
    bool made = scenario(system_alloc);
    long total = memo__test_alloc_count(), runs = 0;
    memo__test_fail_alloc(0, MEMO__TEST_FAIL_ONCE);
    if (made) {
        verify();
        memo_destroy(R.m);
        R.m = NULL;
    }
    if (!made || R.bad != 0)
        failures++;
    long injected_before = memo__test_alloc_failures();
    /* Every allocation of the scenario in turn; a run in which nothing failed ends the sweep
     * (the count varies a little between runs: the second thread). */
    for (long nth = 1;; nth++, runs++)
        if (run_once(nth, mode, system_alloc, &failures) < 0)
            break;
    is_int(failures, 0, "%s, %s: %ld runs, each failing one allocation of ~%ld%s: right codes, model agrees, no crash",
           label, mode == MEMO__TEST_FAIL_ONCE ? "once" : "from then on", runs, total,
           mode == MEMO__TEST_FAIL_ONCE ? "" : " and all after it");
    diag("%s, mode %d: %ld allocation failures injected", label, mode,
         memo__test_alloc_failures() - injected_before);
}

/* Table growth fails from the first slot array on: a single-shard memo fills its initial table
 * and then refuses new keys with MEMO_ENOMEM; what it accepted it keeps. */
static void test_growth_fails(void)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 1;
    memset(&R, 0, sizeof R);
    if (memo_create(&R.m, &cfg) != 0)
        bail_out("memo_create");
    memo__test_fail_alloc(1, MEMO__TEST_FAIL_TABLES);
    int ok_count = 0, enomem = 0, other = 0;
    for (uint64_t k = 0; k < 200; k++) {
        if (u64_code(k) != 0)
            continue;
        uint64_t v = 0;
        int rc = memo_get_u64(R.m, k, u64_fn, NULL, &v);
        if (rc == 0 && v == u64_value(k)) {
            R.u64[k] = STORED;
            ok_count++;
        } else if (rc == MEMO_ENOMEM) {
            enomem++;
        } else {
            other++;
        }
    }
    long injected = memo__test_alloc_failures();
    memo__test_fail_alloc(0, MEMO__TEST_FAIL_ONCE);
    diag("table growth failing: %d stored, %d MEMO_ENOMEM, %ld failures so far", ok_count, enomem, injected);
    ok(ok_count > 0 && enomem > 0 && other == 0,
       "table growth fails: the first keys are stored, later ones get MEMO_ENOMEM (%d, %d, %d other)",
       ok_count, enomem, other);
    int disagree = 0;
    for (uint64_t k = 0; k < 200; k++) {
        uint64_t v = 0;
        int rc = memo_lookup_u64(R.m, k, &v);
        disagree += rc != (R.u64[k] == STORED ? 0 : MEMO_ENOENT);
    }
    memo_stats_t st;
    memo_stats(R.m, &st);
    is_int(disagree, 0, "... every key that got 0 is stored, no other (lookups)");
    is_u64(st.entries, (uint64_t)ok_count, "... stats.entries counts what was stored");

    /* Clear without a fresh table: entries are removed one by one. */
    memo__test_fail_alloc(1, MEMO__TEST_FAIL_TABLES);
    memo_clear(R.m);
    memo__test_fail_alloc(0, MEMO__TEST_FAIL_ONCE);
    memo_stats(R.m, &st);
    int left = 0;
    for (uint64_t k = 0; k < 200; k++) {
        uint64_t v = 0;
        left += memo_lookup_u64(R.m, k, &v) == 0;
    }
    ok(left == 0 && st.entries == 0, "a clear that cannot have a fresh table still clears (%d left)", left);

    int wrong = 0;
    for (uint64_t k = 0; k < 2000; k++) {
        uint64_t v = 0;
        int rc = memo_get_u64(R.m, k, u64_fn, NULL, &v);
        wrong += u64_code(k) != 0 ? rc != FAIL_U64 : (rc != 0 || v != u64_value(k));
    }
    is_int(wrong, 0, "with memory back, the same memo grows and stores 2000 keys");
    memo_destroy(R.m);
    R.m = NULL;
}

int main(void)
{
    tap_watchdog(300);
    plan(9);
    sweep(MEMO__TEST_FAIL_ONCE, false);
    sweep(MEMO__TEST_FAIL_PERSISTENT, false);
#ifdef TAP_SANITIZED
    skip(2, "sanitizer builds always use malloc: the two sweeps above were MEMO_F_SYSTEM_ALLOC's");
#else
    sweep(MEMO__TEST_FAIL_ONCE, true);
    sweep(MEMO__TEST_FAIL_PERSISTENT, true);
#endif
    test_growth_fails();
    diag("allocation failures injected in all: %ld", memo__test_alloc_failures());
    return done_testing();
}
