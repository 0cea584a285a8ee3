/*
 * test_forget: memo_forget / memo_clear while other threads compute, wait, read and hold refs.
 *
 *  - forget (or clear) during a flight: thread A computes k and blocks on a gate the test holds;
 *    W waits on A. After memo_forget(k) returns, a new call for k must not wait on A (it runs its
 *    own fn and returns while A is still blocked); A and W still get A's value; A's value is
 *    never stored (afterwards the new call's value, or nothing). Catches: forget that only
 *    removes READY entries (the new call waits on A: it does not return while A is blocked);
 *    an owner that stores over the newer value or into a table it was forgotten from; waiters
 *    of a detached computation stranded or handed the wrong value.
 *  - forget of a u64 key in flight, then its owner frees the detached marker with nothing else
 *    ordering the two: under TSan, catches a forget that touches the marker after detaching it.
 *  - clear and forget concurrent with 8 threads of get / lookup churn: every value returned is
 *    f(key), counters add up. Catches: use-after-free of entries removed under readers (ASan),
 *    a clear that races with ck_hs writers or grows (lost or duplicated entries: wrong
 *    values, crashes), counters that go wrong across clears. Under TSan it also reports an
 *    owner that touches its entry after publishing it (then forget/clear may free it).
 *  - refs that outlive forget, clear and churn: held refs read the same bytes after their
 *    entries were forgotten, the memo cleared and the tables grown. Catches: entries freed
 *    while a ref still points into them (ASan report or changed bytes).
 * Verified against a mutated copy of src/: forget that leaves in-flight keys alone -> the new
 * call does not return while A is blocked, and A's value ends up stored.
 */
#include "tap.h"
#include "helpers.h"
#include "keyspace.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

/* ---- forget / clear during a flight ---- */

typedef enum { BY_FORGET, BY_CLEAR } removal_t;

typedef struct flight {
    memo_t    *m;
    bool       bytes;
    atomic_int a_inside, gate_open, w_arrived, n_done;
    atomic_int a_calls, w_calls, n_calls;
    int        a_rc, w_rc, n_rc;
    uint64_t   a_val, w_val, n_val;
} flight_t;

static flight_t FL;

enum { VAL_A = 111, VAL_W = 222, VAL_N = 333 };
static const uint64_t FLIGHT_KEY = 42;

static int store(flight_t *f, memo_result_t *out, uint64_t *value, uint64_t v)
{
    if (f->bytes)
        return memo_result_set(out, &v, sizeof v);
    *value = v;
    return 0;
}

static int gate_fn(flight_t *f, memo_result_t *out, uint64_t *value)
{
    atomic_fetch_add(&f->a_calls, 1);
    atomic_store(&f->a_inside, 1);
    uint64_t deadline = tap_now_ns() + 30000000000ull;
    while (!atomic_load(&f->gate_open) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    return store(f, out, value, VAL_A);
}
static int a_fn_u64(void *ctx, uint64_t k, uint64_t *v) { (void)k; return gate_fn(ctx, NULL, v); }
static int a_fn_bytes(void *ctx, const void *k, size_t n, memo_result_t *out)
{
    (void)k, (void)n;
    return gate_fn(ctx, out, NULL);
}
static int w_fn_u64(void *ctx, uint64_t k, uint64_t *v)
{
    (void)k;
    atomic_fetch_add(&((flight_t *)ctx)->w_calls, 1);
    return store(ctx, NULL, v, VAL_W);
}
static int w_fn_bytes(void *ctx, const void *k, size_t n, memo_result_t *out)
{
    (void)k, (void)n;
    atomic_fetch_add(&((flight_t *)ctx)->w_calls, 1);
    return store(ctx, out, NULL, VAL_W);
}
static int n_fn_u64(void *ctx, uint64_t k, uint64_t *v)
{
    (void)k;
    atomic_fetch_add(&((flight_t *)ctx)->n_calls, 1);
    return store(ctx, NULL, v, VAL_N);
}
static int n_fn_bytes(void *ctx, const void *k, size_t n, memo_result_t *out)
{
    (void)k, (void)n;
    atomic_fetch_add(&((flight_t *)ctx)->n_calls, 1);
    return store(ctx, out, NULL, VAL_N);
}

static int flight_get(flight_t *f, memo_fn *fb, memo_fn_u64 *fu, uint64_t *v)
{
    return keyspace_get(f->m, f->bytes, FLIGHT_KEY, fb, fu, f, v);
}

static int flight_lookup(flight_t *f, uint64_t *v)
{
    if (!f->bytes)
        return memo_lookup_u64(f->m, FLIGHT_KEY, v);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_lookup(f->m, &FLIGHT_KEY, sizeof FLIGHT_KEY, &r);
    if (rc == 0 && r.len == sizeof *v)
        memcpy(v, r.data, sizeof *v);
    memo_release(&r);
    return rc;
}

static void *a_thread(void *arg)
{
    flight_t *f = (flight_t *)arg;
    f->a_rc = flight_get(f, a_fn_bytes, a_fn_u64, &f->a_val);
    return NULL;
}

static void *w_thread(void *arg)
{
    flight_t *f = (flight_t *)arg;
    atomic_store(&f->w_arrived, 1);
    f->w_rc = flight_get(f, w_fn_bytes, w_fn_u64, &f->w_val);
    return NULL;
}

static void *n_thread(void *arg)
{
    flight_t *f = (flight_t *)arg;
    f->n_rc = flight_get(f, n_fn_bytes, n_fn_u64, &f->n_val);
    atomic_store(&f->n_done, 1);
    return NULL;
}

static bool wait_flag(atomic_int *flag, unsigned ms)
{
    uint64_t deadline = tap_now_ns() + (uint64_t)ms * 1000000u;
    while (!atomic_load(flag)) {
        if (tap_now_ns() >= deadline)
            return false;
        tap_sleep_ms(1);
    }
    return true;
}

static void test_removal_during_flight(bool bytes, removal_t how, bool new_call)
{
    char label[96];
    snprintf(label, sizeof label, "%s during a flight, %s keys%s",
             how == BY_FORGET ? "memo_forget" : "memo_clear", bytes ? "byte" : "u64",
             new_call ? ", then a new call" : "");
    flight_t *f = &FL;
    memset(f, 0, sizeof *f);
    f->bytes = bytes;
    f->a_rc = f->w_rc = f->n_rc = -100;
    test_memo_create(&f->m, NULL);
    pthread_t a, w, n;
    pthread_create(&a, NULL, a_thread, f);
    wait_flag(&f->a_inside, 10000);
    pthread_create(&w, NULL, w_thread, f);
    wait_flag(&f->w_arrived, 10000);
    tap_sleep_ms(50); /* W is asleep on A's marker */

    if (how == BY_FORGET) {
        /* The header defines MEMO_ENOENT as "nothing stored under that key" and says lookup
         * answers ENOENT while a key is computed: an in-flight key holds nothing stored, so
         * ENOENT is as right as 0 here. What matters is what follows. */
        int rc = bytes ? memo_forget(f->m, &FLIGHT_KEY, sizeof FLIGHT_KEY)
                       : memo_forget_u64(f->m, FLIGHT_KEY);
        ok(rc == 0 || rc == MEMO_ENOENT, "%s: forget of the in-flight key: 0 or ENOENT (%s)", label,
           memo_err_name(rc));
    } else
        memo_clear(f->m);
    uint64_t v = 0;
    is_code(flight_lookup(f, &v), MEMO_ENOENT, "%s: lookup right after: ENOENT", label);

    if (new_call) {
        uint64_t t0 = tap_now_ns();
        pthread_create(&n, NULL, n_thread, f);
        bool done = wait_flag(&f->n_done, 3000);
        ok(done, "%s: the new call returned while A is still blocked (%.0f ms)", label,
           (double)(tap_now_ns() - t0) / 1e6);
        if (!done)
            diag("%s: the new call waits on the computation that began before the forget", label);
        ok(!atomic_load(&f->gate_open), "%s: ... (A was still blocked then)", label);
        if (done) {
            is_code(f->n_rc, 0, "%s: the new call: 0", label);
            is_u64(f->n_val, VAL_N, "%s: ... with its own fn's value", label);
            is_int(atomic_load(&f->n_calls), 1, "%s: ... its fn ran once", label);
            v = 0;
            is_code(flight_lookup(f, &v), 0, "%s: lookup while A is blocked finds the new value", label);
            is_u64(v, VAL_N, "%s: ... VAL_N", label);
        } else {
            skip(5, "the new call did not return");
        }
    }

    atomic_store(&f->gate_open, 1);
    pthread_join(a, NULL);
    pthread_join(w, NULL);
    if (new_call)
        pthread_join(n, NULL);
    is_code(f->a_rc, 0, "%s: A's caller: 0", label);
    is_u64(f->a_val, VAL_A, "%s: A's caller gets A's value", label);
    is_code(f->w_rc, 0, "%s: A's waiter W: 0", label);
    is_u64(f->w_val, VAL_A, "%s: W gets A's value", label);
    is_int(atomic_load(&f->w_calls), 0, "%s: W never ran its fn", label);
    v = 0;
    int rc = flight_lookup(f, &v);
    if (new_call) {
        is_code(rc, 0, "%s: afterwards lookup finds a value", label);
        is_u64(v, VAL_N, "%s: ... the new call's, not A's", label);
    } else {
        is_code(rc, MEMO_ENOENT, "%s: afterwards A's value is not stored (ENOENT)", label);
    }
    memo_stats_t s;
    memo_stats(f->m, &s);
    is_u64(s.entries, new_call ? 1 : 0, "%s: stats.entries", label);
    memo_destroy(f->m);
}

/* ---- churn: clear and forget under concurrent get / lookup ---- */

enum { CHURN_THREADS = 8, CHURN_KEYS = 1024, CHURN_ITERS = 60000 };

typedef struct churn {
    memo_t           *m;
    pthread_barrier_t start;
    atomic_int        running;
    atomic_int        wrong, bad_rc;
    atomic_uint_fast64_t computations, gets, found_lookups;
} churn_t;

static churn_t CC;

static uint64_t f_of(uint64_t k)
{
    return k * 2654435761u + 17;
}

static int churn_u64(void *ctx, uint64_t k, uint64_t *v)
{
    (void)ctx;
    atomic_fetch_add(&CC.computations, 1);
    *v = f_of(k);
    return 0;
}

static int churn_bytes(void *ctx, const void *key, size_t n, memo_result_t *out)
{
    (void)ctx;
    uint64_t k;
    if (n != sizeof k + 3)
        return 1;
    memcpy(&k, key, sizeof k);
    atomic_fetch_add(&CC.computations, 1);
    /* a value whose size varies with the key: 8..263 bytes, f(k) then a pattern */
    size_t         len = 8 + (size_t)(k % 256);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, len);
    if (!p)
        return MEMO_ENOMEM;
    uint64_t v = f_of(k);
    memcpy(p, &v, 8);
    for (size_t i = 8; i < len; i++)
        p[i] = (unsigned char)(k + i);
    return 0;
}

static bool bytes_value_ok(const memo_ref_t *r, uint64_t k)
{
    const unsigned char *p = (const unsigned char *)r->data;
    uint64_t             v;
    if (r->len != 8 + (size_t)(k % 256))
        return false;
    memcpy(&v, p, 8);
    if (v != f_of(k))
        return false;
    for (size_t i = 8; i < r->len; i++)
        if (p[i] != (unsigned char)(k + i))
            return false;
    return true;
}

static void *churn_thread(void *arg)
{
    unsigned idx = (unsigned)(uintptr_t)arg;
    uint64_t x = 0xDEADBEEFCAFEull * (idx + 1);
    uint64_t gets = 0, found = 0;
    tap_barrier_wait(&CC.start);
    for (int i = 0; i < CHURN_ITERS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t k = x % CHURN_KEYS;
        unsigned char key[11];
        memcpy(key, &k, 8);
        memcpy(key + 8, "key", 3);
        memo_ref_t r = MEMO_REF_INIT;
        uint64_t   v = 0;
        int        rc;
        switch ((x >> 20) % 8) {
        case 0: case 1: case 2:
            gets++;
            rc = memo_get_u64(CC.m, k, churn_u64, NULL, &v);
            if (rc != 0)
                atomic_fetch_add(&CC.bad_rc, 1);
            else if (v != f_of(k))
                atomic_fetch_add(&CC.wrong, 1);
            break;
        case 3: case 4: case 5:
            gets++;
            rc = memo_get(CC.m, key, sizeof key, churn_bytes, NULL, &r);
            if (rc != 0)
                atomic_fetch_add(&CC.bad_rc, 1);
            else if (!bytes_value_ok(&r, k))
                atomic_fetch_add(&CC.wrong, 1);
            memo_release(&r);
            break;
        case 6:
            rc = memo_lookup_u64(CC.m, k, &v);
            if (rc == 0) {
                found++;
                if (v != f_of(k))
                    atomic_fetch_add(&CC.wrong, 1);
            } else if (rc != MEMO_ENOENT) {
                atomic_fetch_add(&CC.bad_rc, 1);
            }
            rc = memo_lookup(CC.m, key, sizeof key, &r);
            if (rc == 0) {
                found++;
                if (!bytes_value_ok(&r, k))
                    atomic_fetch_add(&CC.wrong, 1);
                memo_release(&r);
            } else if (rc != MEMO_ENOENT) {
                atomic_fetch_add(&CC.bad_rc, 1);
            }
            break;
        default:
            rc = (x & 1) ? memo_forget_u64(CC.m, k) : memo_forget(CC.m, key, sizeof key);
            if (rc != 0 && rc != MEMO_ENOENT)
                atomic_fetch_add(&CC.bad_rc, 1);
            break;
        }
    }
    atomic_fetch_add(&CC.gets, gets);
    atomic_fetch_add(&CC.found_lookups, found);
    atomic_fetch_sub(&CC.running, 1);
    return NULL;
}

/* ---- forget's last touch of a detached marker ---- */

/* Thread A computes u64 key K; thread B forgets K while A is inside fn, so the marker is detached
 * and A frees it itself: fn returns, A's publish finds DETACHED and retires the marker, and A's
 * thread-exit poll, with no reader in a section, frees it. B tells A that its forget returned only
 * through a relaxed store and stays alive until A has exited (a thread's exit takes memo's
 * registry lock, as A's does), so the only order between B's forget and the free is the one memo
 * makes: B's detach, which A's publish reads. Whatever B's forget does to the marker after
 * setting DETACHED is unordered with the free. Catches, under TSan, a forget that reads the
 * marker after detaching it (ck_hs_remove's compare after the fetch_or: once DETACHED is set the
 * owner may free it at once, and a forget holds no read-side section to hold that free back).
 * Elsewhere it checks the results only. */
static struct {
    memo_t    *m;
    atomic_int inside, forgot, b_may_exit;
    int        a_rc, b_rc;
    uint64_t   a_val;
} DF;

enum { DF_KEY = 7, DF_VAL = 777 };

static int df_fn(void *ctx, uint64_t k, uint64_t *v)
{
    (void)ctx, (void)k;
    atomic_store(&DF.inside, 1);
    uint64_t deadline = tap_now_ns() + 30000000000ull;
    while (!atomic_load_explicit(&DF.forgot, memory_order_relaxed) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    *v = DF_VAL;
    return 0;
}

static void *df_owner(void *arg)
{
    (void)arg;
    DF.a_rc = memo_get_u64(DF.m, DF_KEY, df_fn, NULL, &DF.a_val);
    return NULL;
}

static void *df_forgetter(void *arg)
{
    (void)arg;
    while (!atomic_load(&DF.inside))
        tap_sleep_ms(1);
    DF.b_rc = memo_forget_u64(DF.m, DF_KEY);
    atomic_store_explicit(&DF.forgot, 1, memory_order_relaxed); /* no happens-before */
    /* Alive until A has exited and freed the marker (see above). */
    uint64_t deadline = tap_now_ns() + 30000000000ull;
    while (!atomic_load_explicit(&DF.b_may_exit, memory_order_relaxed) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    return NULL;
}

static void test_forget_then_owner_frees(void)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = MEMO_F_SYSTEM_ALLOC; /* the free is a free() that the sanitizers see */
    memset(&DF, 0, sizeof DF);
    if (!ok(test_memo_create(&DF.m, &cfg) == 0, "forget then owner frees: memo made"))
        return;
    pthread_t a, b;
    pthread_create(&b, NULL, df_forgetter, NULL);
    pthread_create(&a, NULL, df_owner, NULL);
    pthread_join(a, NULL); /* A's exit frees the detached marker (no section is open then) */
    atomic_store_explicit(&DF.b_may_exit, 1, memory_order_relaxed);
    pthread_join(b, NULL);
    is_code(DF.a_rc, 0, "forget then owner frees: the owner's get succeeds");
    is_u64(DF.a_val, DF_VAL, "forget then owner frees: the owner gets its value");
    uint64_t v = 0;
    is_code(memo_lookup_u64(DF.m, DF_KEY, &v), MEMO_ENOENT, "forget then owner frees: nothing stored");
    memo_destroy(DF.m);
    is_code(DF.b_rc, MEMO_ENOENT, "forget then owner frees: forget of the key in flight is ENOENT");
}

static void test_churn(void)
{
    memset(&CC, 0, sizeof CC);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 4;
    test_memo_create(&CC.m, &cfg);
    tap_barrier_init(&CC.start, CHURN_THREADS + 1);
    atomic_store(&CC.running, CHURN_THREADS);
    pthread_t tids[CHURN_THREADS];
    for (unsigned i = 0; i < CHURN_THREADS; i++)
        pthread_create(&tids[i], NULL, churn_thread, (void *)(uintptr_t)i);
    tap_barrier_wait(&CC.start);
    unsigned clears = 0;
    while (atomic_load(&CC.running) > 0) {
        memo_clear(CC.m);
        clears++;
        tap_sleep_ns(500000);
    }
    tap_join_threads(tids, CHURN_THREADS);

    is_int(atomic_load(&CC.bad_rc), 0, "churn: 8 threads x %d calls, %u clears: no unexpected code",
           CHURN_ITERS, clears);
    is_int(atomic_load(&CC.wrong), 0, "churn: every value read is f(key)");
    ok(clears >= 10, "churn: the main thread cleared %u times meanwhile", clears);

    /* quiescent now: counters exact */
    memo_stats_t s;
    memo_stats(CC.m, &s);
    is_u64(s.misses, atomic_load(&CC.computations), "churn: stats.misses == computations");
    is_u64(s.hits + s.waits + s.misses, atomic_load(&CC.gets) + atomic_load(&CC.found_lookups),
           "churn: hits + waits + misses == gets + lookups that found a value");
    is_u64(s.errors, 0, "churn: stats.errors == 0");
    uint64_t present = 0;
    for (uint64_t k = 0; k < CHURN_KEYS; k++) {
        unsigned char key[11];
        memcpy(key, &k, 8);
        memcpy(key + 8, "key", 3);
        uint64_t   v;
        memo_ref_t r = MEMO_REF_INIT;
        present += memo_lookup_u64(CC.m, k, &v) == 0;
        if (memo_lookup(CC.m, key, sizeof key, &r) == 0) {
            present++;
            memo_release(&r);
        }
    }
    is_u64(s.entries, present, "churn: stats.entries == keys that lookup finds");
    memo_clear(CC.m);
    memo_stats(CC.m, &s);
    is_u64(s.entries, 0, "churn: a final clear leaves 0 entries");
    tap_barrier_destroy(&CC.start);
    memo_destroy(CC.m);
}

/* ---- refs that outlive forget, clear and churn ---- */

enum { HELD = 64 };

typedef struct holder {
    memo_t    *m;
    atomic_int phase;      /* 0: getting refs, 1: refs held, 2: churn done */
    atomic_int corrupted;
    atomic_int checks;
} holder_t;

static holder_t HO;

static int pattern_fn(void *ctx, const void *key, size_t n, memo_result_t *out)
{
    (void)ctx;
    uint64_t k;
    memcpy(&k, key, sizeof k < n ? sizeof k : n);
    size_t         len = 16 + (size_t)(k * 37 % 500);
    unsigned char *p = (unsigned char *)memo_result_alloc(out, len);
    if (!p)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(k * 31 + i * 7);
    return 0;
}

static bool pattern_ok(const memo_ref_t *r, uint64_t k)
{
    const unsigned char *p = (const unsigned char *)r->data;
    if (r->len != 16 + (size_t)(k * 37 % 500))
        return false;
    for (size_t i = 0; i < r->len; i++)
        if (p[i] != (unsigned char)(k * 31 + i * 7))
            return false;
    return true;
}

/* Holds refs to HELD keys (on this thread: refs are released by the thread that got them) and
 * keeps checking their bytes while other threads forget, clear and grow the memo. */
static void *holder_thread(void *arg)
{
    (void)arg;
    memo_ref_t refs[HELD];
    for (uint64_t k = 0; k < HELD; k++) {
        refs[k] = (memo_ref_t)MEMO_REF_INIT;
        if (memo_get(HO.m, &k, sizeof k, pattern_fn, NULL, &refs[k]) != 0)
            atomic_fetch_add(&HO.corrupted, 1);
    }
    atomic_store(&HO.phase, 1);
    do {
        for (uint64_t k = 0; k < HELD; k++)
            if (!pattern_ok(&refs[k], k))
                atomic_fetch_add(&HO.corrupted, 1);
        atomic_fetch_add(&HO.checks, 1);
        tap_sleep_ms(1);
    } while (atomic_load(&HO.phase) < 2);
    for (uint64_t k = 0; k < HELD; k++) {
        if (!pattern_ok(&refs[k], k))
            atomic_fetch_add(&HO.corrupted, 1);
        memo_release(&refs[k]);
    }
    return NULL;
}

enum { GROWERS = 4, GROW_KEYS = 30000 };

static void *grower_thread(void *arg)
{
    uint64_t base = 1000000 * ((uint64_t)(uintptr_t)arg + 1);
    for (uint64_t i = 0; i < GROW_KEYS; i++) {
        uint64_t   k = base + i;
        memo_ref_t r = MEMO_REF_INIT;
        if (memo_get(HO.m, &k, sizeof k, pattern_fn, NULL, &r) == 0)
            memo_release(&r);
        if (i % 1000 == 999)
            memo_clear(HO.m);
        if (i % 7 == 0) {
            uint64_t held = i % HELD;
            memo_forget(HO.m, &held, sizeof held);
        }
    }
    return NULL;
}

static void test_refs_outlive(void)
{
    memset(&HO, 0, sizeof HO);
    test_memo_create(&HO.m, NULL);
    pthread_t holder, growers[GROWERS];
    pthread_create(&holder, NULL, holder_thread, NULL);
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (atomic_load(&HO.phase) < 1 && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    for (unsigned i = 0; i < GROWERS; i++)
        pthread_create(&growers[i], NULL, grower_thread, (void *)(uintptr_t)i);
    tap_join_threads(growers, GROWERS);
    atomic_store(&HO.phase, 2);
    pthread_join(holder, NULL);
    is_int(atomic_load(&HO.corrupted), 0,
           "64 refs held by one thread while 4 threads forget them, clear and insert 120000 keys: bytes unchanged (%d checks)",
           atomic_load(&HO.checks));
    /* the main thread holds refs too, across clear and growth done by itself */
    memo_clear(HO.m);
    memo_ref_t mine[8];
    int        bad = 0;
    for (uint64_t k = 0; k < 8; k++) {
        mine[k] = (memo_ref_t)MEMO_REF_INIT;
        bad += memo_get(HO.m, &k, sizeof k, pattern_fn, NULL, &mine[k]) != 0;
    }
    for (uint64_t k = 0; k < 8; k++)
        bad += memo_forget(HO.m, &k, sizeof k) != 0;
    memo_clear(HO.m);
    for (uint64_t k = 100; k < 50000; k++) {
        memo_ref_t r = MEMO_REF_INIT;
        if (memo_get(HO.m, &k, sizeof k, pattern_fn, NULL, &r) == 0)
            memo_release(&r);
    }
    for (uint64_t k = 0; k < 8; k++) {
        bad += !pattern_ok(&mine[k], k);
        memo_release(&mine[k]);
    }
    is_int(bad, 0, "refs held across forget, clear and 50000 new keys by the same thread: bytes unchanged");
    memo_destroy(HO.m);
}

int main(void)
{
    tap_watchdog(100);
    for (int bytes = 0; bytes < 2; bytes++) {
        test_removal_during_flight(bytes, BY_FORGET, true);
        test_removal_during_flight(bytes, BY_FORGET, false);
        test_removal_during_flight(bytes, BY_CLEAR, true);
        test_removal_during_flight(bytes, BY_CLEAR, false);
    }
    memo_t *m = NULL;
    test_memo_create(&m, NULL);
    is_code(memo_forget(m, "absent", 6), MEMO_ENOENT, "forget of an absent byte key: ENOENT");
    is_code(memo_forget_u64(m, 12345), MEMO_ENOENT, "forget of an absent u64 key: ENOENT");
    memo_destroy(m);
    test_forget_then_owner_frees();
    test_churn();
    test_refs_outlive();
    return done_testing();
}
