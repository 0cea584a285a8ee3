/*
 * test_misbehave_cancel: waiters cancelled while they sleep. Whatever happens to them: no leak, no
 * stranded thread, no wrong answer. Both key spaces. (The part keeps the letter it had in
 * test_misbehave, which has (a) to (c), fn's own misdeeds; (d) and (f) are
 * test_misbehave_waiters.)
 *
 * (e) waiters cancelled while they sleep (pthread_cancel): they unwind promptly, running their
 *     own cleanup handlers, while the computation goes on; it stores, the other waiters get the
 *     value; and reclamation still works while the cancelled threads are alive (they stay in
 *     their cleanup handlers): 10000 forgotten byte entries must be freed. Also a cancelled
 *     waiter that was itself computing key A (inside A's fn it waits for B): A is abandoned, its
 *     waiters wake and one of them recomputes A, all while B still runs. Catches: a sleep that
 *     is not a cancellation point (the cancelled waiters sleep on until the computation ends),
 *     a cancelled waiter that leaves its read-side section open (the epoch is pinned: forgotten
 *     entries are never freed), a cancelled computing thread that strands its own waiters
 *     (planted bug M4).
 *
 * Each scene runs more threads than the machine's cores, starts them on a barrier, and checks
 * with /proc that they are all asleep in memo before the computation proceeds (so a late thread
 * cannot turn a wait into a hit or a recomputation; a spinning waiter fails there too). A
 * watchdog turns a hang into a failure. This suite runs under ThreadSanitizer too: unlike a
 * thread that dies inside fn (test_death), a waiter cancelled in its sleep unwinds fine there.
 *
 * Verified against mutated copies of src/: the sleep as a raw futex call, not a cancellation
 * point -> (e) fails (no cleanup handler runs in 5 s; the cancelled computing thread does not end
 * while B runs); the sleep cancellable but without its cleanup handler -> (e)'s reclamation check
 * fails (7.5 MB held instead of 0.6 MB); planted bug M4 -> (e) (A's waiters stranded: bail-out).
 */
#include "tap.h"
#include "helpers.h"
#include "misbehave.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

/* ---- (e) waiters cancelled while they sleep ---- */

enum { CANCEL_WAITERS = 8, RECLAIM_KEYS = 10000, RECLAIM_VALUE = 400, DRIVERS = 3 };
static const uint64_t CANCEL_KEY = 0xca, V_CANCEL = 5555;

typedef struct cancel_scene {
    memo_t           *m;
    bool              bytes;
    pthread_barrier_t start;
    atomic_int        owner_tid, inside, gate, arrived, owner_done;
    atomic_int        owner_calls, waiter_calls;
    atomic_int        cleanups, release_cleanups;
    atomic_int        cleaned[CANCEL_WAITERS];
    atomic_int        drivers_stop;
    got_t             owner, got[CANCEL_WAITERS];
} cancel_scene_t;

static cancel_scene_t CS;

static int cancel_owner_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&CS.owner_calls, 1);
    atomic_store(&CS.owner_tid, tid_now());
    atomic_store(&CS.inside, 1);
    wait_flag(&CS.gate, 60000);
    *value = V_CANCEL;
    return 0;
}

static int cancel_owner_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t v;
    int      rc = cancel_owner_fn_u64(ctx, 0, &v);
    (void)key, (void)key_len;
    return rc != 0 ? rc : set_u64_value(out, v);
}

static int cancel_waiter_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&CS.waiter_calls, 1);
    *value = 999;
    return 0;
}

static int cancel_waiter_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    atomic_fetch_add(&CS.waiter_calls, 1);
    return set_u64_value(out, 999);
}

static void *cancel_owner(void *arg)
{
    (void)arg;
    CS.owner =
        get_any(CS.m, CS.bytes, CANCEL_KEY, cancel_owner_fn_bytes, cancel_owner_fn_u64, NULL);
    atomic_store(&CS.owner_done, 1);
    return NULL;
}

/* The cancelled waiter's own cleanup handler. It stays until the test has checked reclamation:
 * the thread is alive meanwhile, so a read-side section it left open would still pin the epoch
 * (a thread that exits has its sections closed for it). */
static void cancel_cleanup(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    atomic_store(&CS.cleaned[i], 1);
    atomic_fetch_add(&CS.cleanups, 1);
    wait_flag(&CS.release_cleanups, 60000);
}

static void *cancel_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    pthread_cleanup_push(cancel_cleanup, arg);
    tap_barrier_wait(&CS.start);
    atomic_fetch_add(&CS.arrived, 1);
    /* No cancellation point before memo's sleep: a cancel that comes early waits for it. */
    CS.got[i] =
        get_any(CS.m, CS.bytes, CANCEL_KEY, cancel_waiter_fn_bytes, cancel_waiter_fn_u64, NULL);
    pthread_testcancel(); /* a cancel memo did not act on ends the thread here, late */
    pthread_cleanup_pop(0);
    return NULL;
}

static int reclaim_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key_len;
    unsigned char *p = (unsigned char *)memo_result_alloc(out, RECLAIM_VALUE);
    if (p == NULL)
        return MEMO_ENOMEM;
    memset(p, ((const unsigned char *)key)[0], RECLAIM_VALUE);
    return 0;
}

static int driver_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx;
    *value = key * 3;
    return 0;
}

/* Other threads' traffic while the main thread forgets: sections begin and end, the epoch moves. */
static void *reclaim_driver(void *arg)
{
    uint64_t base = 1000000 * ((uint64_t)(uintptr_t)arg + 1);
    int      bad = 0;
    for (unsigned i = 0; !atomic_load(&CS.drivers_stop) || i < 2000; i++) {
        uint64_t v = 0, k = base + i % 16;
        if (memo_get_u64(CS.m, k, driver_fn_u64, NULL, &v) != 0 || v != k * 3)
            bad++;
        if (i % 64 == 63)
            sched_yield();
    }
    return (void *)(uintptr_t)bad;
}

static void test_cancel_waiters(bool bytes)
{
    char label[64];
    snprintf(label, sizeof label, "(e) %s keys", bytes ? "byte" : "u64");
    cancel_scene_t *c = &CS;
    memset(c, 0, sizeof *c);
    c->bytes = bytes;
    if (test_memo_create(&c->m, NULL) != 0)
        bail_out("memo_create");
    pthread_t owner, tids[CANCEL_WAITERS];
    pthread_create(&owner, NULL, cancel_owner, NULL);
    if (!wait_flag(&c->inside, 10000))
        bail_out("%s: the owner never entered fn", label);
    tap_barrier_init(&c->start, CANCEL_WAITERS + 1);
    for (unsigned i = 0; i < CANCEL_WAITERS; i++)
        pthread_create(&tids[i], NULL, cancel_waiter, (void *)(uintptr_t)i);
    tap_barrier_wait(&c->start);
    ok(settle(&c->arrived, CANCEL_WAITERS, &c->owner_tid, 1), "%s: %d waiters asleep on fn", label,
       CANCEL_WAITERS);

    /* cancel the even-numbered half while they sleep on the computation */
    uint64_t t0 = tap_now_ns();
    for (unsigned i = 0; i < CANCEL_WAITERS; i += 2)
        pthread_cancel(tids[i]);
    bool prompt = wait_count(&c->cleanups, CANCEL_WAITERS / 2, 5000);
    uint64_t ms = (tap_now_ns() - t0) / 1000000;
    ok(prompt,
       "%s: %d waiters cancelled in their sleep unwound and ran their cleanup handlers (%" PRIu64
       " ms)", label, CANCEL_WAITERS / 2, ms);
    if (!prompt)
        diag("%s: only %d cleanup handlers ran in 5 s: the sleep is not a cancellation point?",
             label, atomic_load(&c->cleanups));

    atomic_store(&c->gate, 1);
    must_join(&owner, 1, 10, label);
    pthread_t kept[CANCEL_WAITERS / 2];
    for (unsigned i = 1, k = 0; i < CANCEL_WAITERS; i += 2)
        kept[k++] = tids[i];
    must_join(kept, CANCEL_WAITERS / 2, 10, label);

    got_t expect = want(bytes, 0, V_CANCEL);
    ok(same(c->owner, expect), "%s: the computation finished and its caller got the value", label);
    int bad = 0;
    for (unsigned i = 1; i < CANCEL_WAITERS; i += 2)
        bad += !same(c->got[i], expect);
    is_int(bad, 0, "%s: the %d waiters not cancelled got the value", label, CANCEL_WAITERS / 2);
    int wrong_cleanup = 0;
    for (unsigned i = 1; i < CANCEL_WAITERS; i += 2)
        wrong_cleanup += atomic_load(&c->cleaned[i]);
    is_int(wrong_cleanup, 0, "%s: ... and ran no cleanup handler", label);
    is_int(atomic_load(&c->owner_calls), 1, "%s: fn ran once", label);
    is_int(atomic_load(&c->waiter_calls), 0, "%s: no waiter ran its own fn", label);
    ok(same(lookup_any(c->m, bytes, CANCEL_KEY), expect), "%s: the value is stored (lookup)",
       label);
    memo_stats_t st = stats_of(c->m);
    is_u64(st.waits, CANCEL_WAITERS / 2, "%s: stats.waits counts only the waiters that returned",
           label);
    is_u64(st.misses, 1, "%s: stats.misses == 1", label);

    /* Reclamation, with the cancelled threads still alive in their cleanup handlers. */
    uint64_t base = stats_of(c->m).bytes;
    for (uint64_t k = 0; k < RECLAIM_KEYS; k++) {
        unsigned char key[9];
        memcpy(key, &k, 8);
        key[8] = 'r';
        memo_ref_t r = MEMO_REF_INIT;
        if (memo_get(c->m, key, sizeof key, reclaim_fn_bytes, NULL, &r) != 0)
            bail_out("%s: memo_get of reclaim key %" PRIu64, label, k);
        memo_release(&r);
    }
    uint64_t  peak = stats_of(c->m).bytes;
    pthread_t drivers[DRIVERS];
    for (unsigned i = 0; i < DRIVERS; i++)
        pthread_create(&drivers[i], NULL, reclaim_driver, (void *)(uintptr_t)i);
    int forgot = 0;
    for (uint64_t k = 0; k < RECLAIM_KEYS; k++) {
        unsigned char key[9];
        memcpy(key, &k, 8);
        key[8] = 'r';
        forgot += memo_forget(c->m, key, sizeof key) == 0;
    }
    atomic_store(&c->drivers_stop, 1);
    int driver_bad = 0;
    for (unsigned i = 0; i < DRIVERS; i++) {
        void *ret = NULL;
        pthread_join(drivers[i], &ret);
        driver_bad += (int)(uintptr_t)ret;
    }
    memo_clear(c->m); /* each clear also polls the epoch once */
    memo_clear(c->m);
    uint64_t after = stats_of(c->m).bytes;
    is_int(forgot, RECLAIM_KEYS, "%s: %d byte entries stored and forgotten", label, RECLAIM_KEYS);
    is_int(driver_bad, 0, "%s: ... while %d other threads' gets returned right values", label,
           DRIVERS);
    diag("%s: bytes %" PRIu64 " before, %" PRIu64 " with %d entries, %" PRIu64 " after forget",
         label, base, peak, RECLAIM_KEYS, after);
    cmp_u64(after, <, base + (peak - base) / 3,
            "%s: the forgotten entries were freed while the cancelled threads live (bytes)", label);

    atomic_store(&c->release_cleanups, 1);
    pthread_t gone[CANCEL_WAITERS / 2];
    for (unsigned i = 0, k = 0; i < CANCEL_WAITERS; i += 2)
        gone[k++] = tids[i];
    int not_cancelled = 0;
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 10;
    for (unsigned k = 0; k < CANCEL_WAITERS / 2; k++) {
        void *ret = NULL;
        if (pthread_timedjoin_np(gone[k], &ret, &limit) != 0) {
            ok(0, "%s: cancelled waiter alive 10 s after its cleanup handler was released",
               label);
            bail_out("%s: a cancelled waiter never ended", label);
        }
        not_cancelled += ret != PTHREAD_CANCELED;
    }
    is_int(not_cancelled, 0, "%s: the cancelled threads ended as cancelled (PTHREAD_CANCELED)",
           label);
    is_int(atomic_load(&c->cleanups), CANCEL_WAITERS / 2,
           "%s: one cleanup handler run per cancelled thread", label);
    tap_barrier_destroy(&c->start);
    memo_destroy(c->m);
}

/* A cancelled waiter that was itself computing: X computes A; inside A's fn it waits for B
 * (computed by T_B, held on a gate); X is cancelled. */
enum { A_WAITERS = 6 };
static const uint64_t KEY_A = 0xa, KEY_B = 0xb, V_A = 6001, V_A_VIA_B = 6002, V_B = 6003;

typedef struct nested_cancel {
    memo_t           *m;
    bool              bytes;
    pthread_barrier_t start;
    atomic_int        b_tid, b_inside, b_gate, b_done, x_inside, x_cleanups, arrived;
    atomic_int        a_plain_calls, a_via_b_calls, b_calls, b_other_calls;
    got_t             b_owner, x_inner, a[A_WAITERS];
} nested_cancel_t;

static nested_cancel_t NC;

static int b_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&NC.b_calls, 1);
    atomic_store(&NC.b_tid, tid_now());
    atomic_store(&NC.b_inside, 1);
    wait_flag(&NC.b_gate, 60000);
    *value = V_B;
    return 0;
}

static int b_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t v;
    (void)key, (void)key_len;
    b_fn_u64(ctx, 0, &v);
    return set_u64_value(out, v);
}

static int b_other_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&NC.b_other_calls, 1);
    *value = 999;
    return 0;
}

static int b_other_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    atomic_fetch_add(&NC.b_other_calls, 1);
    return set_u64_value(out, 999);
}

/* X's fn for A: waits for B; the cancel comes while it sleeps there. */
static int a_via_b_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&NC.a_via_b_calls, 1);
    atomic_store(&NC.x_inside, 1);
    NC.x_inner = get_any(NC.m, NC.bytes, KEY_B, b_other_fn_bytes, b_other_fn_u64, NULL);
    *value = V_A_VIA_B;
    return 0;
}

static int a_via_b_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t v;
    (void)key, (void)key_len;
    a_via_b_u64(ctx, 0, &v);
    return set_u64_value(out, v);
}

/* A's waiters' fn: what one of them runs once X abandoned A. */
static int a_plain_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&NC.a_plain_calls, 1);
    *value = V_A;
    return 0;
}

static int a_plain_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    atomic_fetch_add(&NC.a_plain_calls, 1);
    return set_u64_value(out, V_A);
}

static void *b_owner(void *arg)
{
    (void)arg;
    NC.b_owner = get_any(NC.m, NC.bytes, KEY_B, b_fn_bytes, b_fn_u64, NULL);
    atomic_store(&NC.b_done, 1);
    return NULL;
}

static void x_cleanup(void *arg)
{
    (void)arg;
    atomic_fetch_add(&NC.x_cleanups, 1);
}

static void *x_thread(void *arg)
{
    (void)arg;
    pthread_cleanup_push(x_cleanup, NULL);
    got_t g = get_any(NC.m, NC.bytes, KEY_A, a_via_b_bytes, a_via_b_u64, NULL);
    (void)g;
    pthread_testcancel();
    pthread_cleanup_pop(0);
    return NULL;
}

static void *a_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    tap_barrier_wait(&NC.start);
    atomic_fetch_add(&NC.arrived, 1);
    NC.a[i] = get_any(NC.m, NC.bytes, KEY_A, a_plain_bytes, a_plain_u64, NULL);
    return NULL;
}

static void test_cancel_nested(bool bytes)
{
    char label[96];
    snprintf(label, sizeof label, "(e) nested, %s keys", bytes ? "byte" : "u64");
    nested_cancel_t *c = &NC;
    memset(c, 0, sizeof *c);
    c->bytes = bytes;
    if (test_memo_create(&c->m, NULL) != 0)
        bail_out("memo_create");
    pthread_t tb, x, tids[A_WAITERS];
    pthread_create(&tb, NULL, b_owner, NULL);
    if (!wait_flag(&c->b_inside, 10000))
        bail_out("%s: B's owner never entered fn", label);
    pthread_create(&x, NULL, x_thread, NULL);
    if (!wait_flag(&c->x_inside, 10000))
        bail_out("%s: X never entered A's fn", label);
    tap_barrier_init(&c->start, A_WAITERS + 1);
    for (unsigned i = 0; i < A_WAITERS; i++)
        pthread_create(&tids[i], NULL, a_waiter, (void *)(uintptr_t)i);
    tap_barrier_wait(&c->start);
    ok(settle(&c->arrived, A_WAITERS, &c->b_tid, 1), "%s: X asleep on B, %d waiters asleep on A",
       label, A_WAITERS);

    uint64_t t0 = tap_now_ns();
    pthread_cancel(x);
    struct timespec limit;
    clock_gettime(CLOCK_REALTIME, &limit);
    limit.tv_sec += 5;
    void *ret = NULL;
    bool  x_ended = pthread_timedjoin_np(x, &ret, &limit) == 0;
    ok(x_ended && ret == PTHREAD_CANCELED,
       "%s: X, cancelled while it waits for B inside A's fn, ended as cancelled (%" PRIu64 " ms)",
       label, (tap_now_ns() - t0) / 1000000);
    is_int(atomic_load(&c->x_cleanups), x_ended ? 1 : 0, "%s: ... and ran its cleanup handler",
           label);
    if (x_ended) {
        unsigned stuck = tap_join_threads_timed(tids, A_WAITERS, 10);
        ok(stuck == 0, "%s: A's %d waiters woke and returned while B still runs", label, A_WAITERS);
        if (stuck != 0) {
            atomic_store(&c->b_gate, 1);
            bail_out("%s: A's waiters stranded by its cancelled owner", label);
        }
        atomic_store(&c->b_gate, 1);
    } else {
        diag("%s: X did not end within 5 s of pthread_cancel: opening B", label);
        atomic_store(&c->b_gate, 1);
        must_join(&x, 1, 10, label);
        must_join(tids, A_WAITERS, 10, label);
        skip(1, "X did not end in time");
    }
    must_join(&tb, 1, 10, label);

    int bad = 0;
    for (unsigned i = 0; i < A_WAITERS; i++)
        bad += !same(c->a[i], want(bytes, 0, V_A));
    is_int(bad, 0, "%s: every A waiter got A's value, computed afresh", label);
    is_int(atomic_load(&c->a_plain_calls), 1, "%s: one of A's waiters recomputed A, once", label);
    is_int(atomic_load(&c->a_via_b_calls), 1, "%s: X's fn for A never ran again", label);
    ok(same(c->b_owner, want(bytes, 0, V_B)), "%s: B's computation finished with its value", label);
    is_int(atomic_load(&c->b_calls), 1, "%s: B computed once", label);
    is_int(atomic_load(&c->b_other_calls), 0, "%s: X never ran B's fn", label);
    ok(same(lookup_any(c->m, bytes, KEY_A), want(bytes, 0, V_A)) &&
           same(lookup_any(c->m, bytes, KEY_B), want(bytes, 0, V_B)),
       "%s: A and B are stored", label);
    memo_stats_t st = stats_of(c->m);
    is_u64(st.misses, 3, "%s: stats.misses == 3 (B, X's A, the fresh A)", label);
    is_u64(st.hits + st.waits, A_WAITERS - 1 + 2 /* the two lookups above */,
           "%s: stats.hits + waits: the other A waiters, and the lookups", label);
    tap_barrier_destroy(&c->start);
    memo_destroy(c->m);
}


int main(void)
{
    tap_watchdog(100);
    uint64_t t0 = tap_now_ns();

    /* (e) */
    test_cancel_waiters(false);
    test_cancel_waiters(true);
    test_cancel_nested(false);
    test_cancel_nested(true);
    diag("times: (e) %.2f s", (double)(tap_now_ns() - t0) / 1e9);
    return done_testing();
}
