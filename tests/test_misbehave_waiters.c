/*
 * test_misbehave_waiters: waiters by the thousand, and waiters that give up. Whatever they do: no
 * leak, no stranded thread, no wrong answer. Both key spaces. (The parts keep the letters they had
 * in test_misbehave, which has (a) to (c), fn's own misdeeds; (e), cancelled waiters, is
 * test_misbehave_cancel.)
 *
 * (d) thousands of waiters pile up on one slow key per key space (2000 threads with 64 KiB
 *     stacks; 200 under sanitizers): all get the value, fn ran once per key, stats.waits ==
 *     threads - 2, and they sleep rather than spin: the process's CPU time while
 *     they all wait is a small fraction of what the cores could burn (busy-waiting waiters
 *     would use every core for the whole wait; the bound is against wall time x cores, since on
 *     this 2-core machine wall time x threads could not tell a spinning waiter from a sleeping
 *     one). Catches: waiters that spin or poll, a lost wake among thousands of sleepers, one
 *     recomputation too many, a thread-state setup that does not scale (the watchdog).
 * (f) waiters timing out: 12 threads x 6 memo_get_timed / memo_get_u64_timed calls with timeouts
 *     of 0 to 50 ms on a computation that lasts until they are all done: each returns
 *     MEMO_ETIMEDOUT after at least its timeout and within timeout + a generous slack, runs no
 *     fn; the computation stores its value; later calls hit; bytes go back to their level.
 *     Catches: a timeout that is ignored or cut short, a timed-out waiter that disturbs the
 *     computation (planted bug M8: the value is not stored, later callers compute), a leak.
 *
 * Every concurrency part runs more threads than the machine's cores, starts them on a barrier,
 * and checks with /proc that they are all asleep in memo before the computation proceeds (so a
 * late thread cannot turn a wait into a hit or a recomputation; a spinning waiter fails there
 * too). A watchdog turns a hang into a failure.
 *
 * Verified against mutated copies of src/: waiters that spin instead of sleeping -> (d) fails
 * (1365 ms CPU in a 756 ms window), and so does every "asleep" check; planted bug M8 -> (f).
 */
#include "tap.h"
#include "helpers.h"
#include "misbehave.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

#ifdef TAP_SANITIZED
enum { PILE_THREADS = 200 };
#define TIMED_SLACK_MS 1500u
#else
enum { PILE_THREADS = 2000 };
#define TIMED_SLACK_MS 500u
#endif
#define PILE_STACK ((size_t)64 * 1024)

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- (d) thousands of waiters on one slow key per key space ---- */

static const uint64_t PILE_KEY = 77, V_PILE = 0x9111e;
enum { PILE_MIN_MS = 1500, PILE_WINDOW_MS = 500 };

typedef struct pile {
    memo_t           *m;
    pthread_barrier_t start;
    atomic_int        arrived, done, gate;
    atomic_int        tids[2], calls[2];
    atomic_uint_fast64_t started_ns;
    got_t            *got;
} pile_t;

static pile_t PI;

static void pile_enter(int space)
{
    atomic_fetch_add(&PI.calls[space], 1);
    atomic_store(&PI.tids[space], tid_now());
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&PI.started_ns, &zero, tap_now_ns());
    wait_flag(&PI.gate, 60000);
}

static int pile_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    pile_enter(0);
    *value = V_PILE;
    return 0;
}

static int pile_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    pile_enter(1);
    return set_u64_value(out, V_PILE);
}

static void *pile_thread(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    tap_barrier_wait(&PI.start);
    atomic_fetch_add(&PI.arrived, 1);
    PI.got[i] = get_any(PI.m, i % 2, PILE_KEY, pile_fn_bytes, pile_fn_u64, NULL);
    atomic_fetch_add(&PI.done, 1);
    return NULL;
}

static void start_small_threads(pthread_t *tids, unsigned n, void *(*fn)(void *), size_t stack)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (pthread_attr_setstacksize(&attr, stack) != 0)
        bail_out("pthread_attr_setstacksize(%zu)", stack);
    for (unsigned i = 0; i < n; i++) {
        void *arg = (void *)(uintptr_t)i;
        int   rc;
        for (int tries = 0; (rc = pthread_create(&tids[i], &attr, fn, arg)) == EAGAIN; tries++) {
            if (tries == 100)
                break;
            tap_sleep_ms(10); /* a transient shortage: try again */
        }
        if (rc != 0)
            bail_out("pthread_create of thread %u of %u (stack %zu KiB): %s", i, n, stack / 1024,
                     strerror(rc));
    }
    pthread_attr_destroy(&attr);
}

static void test_pile_up(void)
{
    const unsigned n = PILE_THREADS;
    int            cpus = usable_cpus();
    memset(&PI, 0, sizeof PI);
    if (test_memo_create(&PI.m, NULL) != 0)
        bail_out("memo_create");
    PI.got = (got_t *)calloc(n, sizeof *PI.got);
    pthread_t *tids = (pthread_t *)calloc(n, sizeof *tids);
    if (PI.got == NULL || tids == NULL)
        bail_out("calloc");
    diag("(d) %u waiter threads with %zu KiB stacks%s, %d usable CPUs", n, PILE_STACK / 1024,
#ifdef TAP_SANITIZED
         " (200, not 2000, under sanitizers)",
#else
         "",
#endif
         cpus);
    tap_barrier_init(&PI.start, n + 1);
    start_small_threads(tids, n, pile_thread, PILE_STACK);
    tap_barrier_wait(&PI.start);
    uint64_t t0 = tap_now_ns(), c0 = cpu_ns();

    bool asleep = settle(&PI.arrived, (int)n, PI.tids, 2);
    ok(asleep, "(d) all %u threads arrived and sleep (none runnable in /proc) while fn runs", n);
    /* A window in which every waiter sleeps and fn still runs: busy-waiting waiters would burn
     * every core for all of it. */
    uint64_t w0 = tap_now_ns(), wc0 = cpu_ns();
    tap_sleep_ms(PILE_WINDOW_MS);
    uint64_t w1 = tap_now_ns(), wc1 = cpu_ns();
    ok(atomic_load(&PI.done) == 0, "(d) ... and nobody returned during the measured window");
    uint64_t started = atomic_load(&PI.started_ns);
    while (tap_now_ns() < started + (uint64_t)PILE_MIN_MS * 1000000u)
        tap_sleep_ms(5);
    atomic_store(&PI.gate, 1);
    bool     all_done = wait_count(&PI.done, (int)n, 60000);
    uint64_t t1 = tap_now_ns(), c1 = cpu_ns();
    ok(all_done, "(d) all %u threads returned once fn finished", n);
    must_join(tids, n, 60, "(d) pile-up");

    double window_ms = (double)(w1 - w0) / 1e6, window_cpu_ms = (double)(wc1 - wc0) / 1e6;
    double wall_ms = (double)(t1 - t0) / 1e6, cpu_ms = (double)(c1 - c0) / 1e6;
    double fn_ms = (double)(t1 - started) / 1e6;
    diag("(d) window with every waiter asleep: %.1f ms CPU in %.0f ms wall "
         "(spinning would use up to %.0f ms)", window_cpu_ms, window_ms, window_ms * cpus);
    diag("(d) whole wait, barrier to last return: %.1f ms CPU in %.0f ms wall, %u threads "
         "(fn ran %.0f ms): %.2f%% of wall x CPUs, %.4f%% of wall x threads", cpu_ms, wall_ms, n,
         fn_ms, 100 * cpu_ms / (wall_ms * cpus), 100 * cpu_ms / (wall_ms * n));
    cmp_u64((uint64_t)window_cpu_ms, <, (uint64_t)(window_ms * cpus / 4),
            "(d) CPU while all waiters sleep < 1/4 of window x %d CPUs (ms)", cpus);
    cmp_u64((uint64_t)cpu_ms, <, (uint64_t)(wall_ms * cpus / 2),
            "(d) CPU over the whole wait < 1/2 of wall x %d CPUs (ms)", cpus);

    int bad = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!same(PI.got[i], want(i % 2, 0, V_PILE)) && bad++ < 3) {
            char b[96];
            diag("(d) thread %u got %s", i, show(PI.got[i], b, sizeof b));
        }
    }
    is_int(bad, 0, "(d) all %u threads got the value", n);
    is_int(atomic_load(&PI.calls[0]), 1, "(d) the u64 key's fn ran once");
    is_int(atomic_load(&PI.calls[1]), 1, "(d) the byte key's fn ran once");
    memo_stats_t st = stats_of(PI.m);
    is_u64(st.waits, n - 2, "(d) stats.waits == threads - 2 (one computing thread per key space)");
    is_u64(st.misses, 2, "(d) stats.misses == 2");
    is_u64(st.hits, 0, "(d) stats.hits == 0");
    tap_barrier_destroy(&PI.start);
    free(tids);
    free(PI.got);
    memo_destroy(PI.m);
}

/* ---- (f) waiters timing out ---- */

enum { TIMED_THREADS = 12, TIMED_CALLS = 6 };
static const uint64_t TIMED_KEY = 0x71, V_TIMED = 7007;
static const uint64_t timed_timeouts_ns[TIMED_CALLS] = { 0,        1000000,  5000000,
                                                          20000000, 50000000, 1000 };

typedef struct timed {
    memo_t           *m;
    pthread_barrier_t start;
    atomic_int        tids[2], inside[2], gate, slow_calls[2], other_calls;
    atomic_int        bad_rc, too_early, too_late;
    atomic_uint_fast64_t worst_over_ns;
    got_t             owner[2];
} timed_t;

static timed_t TI;

static int timed_slow_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&TI.slow_calls[0], 1);
    atomic_store(&TI.tids[0], tid_now());
    atomic_store(&TI.inside[0], 1);
    wait_flag(&TI.gate, 60000);
    *value = V_TIMED;
    return 0;
}

static int timed_slow_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    atomic_fetch_add(&TI.slow_calls[1], 1);
    atomic_store(&TI.tids[1], tid_now());
    atomic_store(&TI.inside[1], 1);
    wait_flag(&TI.gate, 60000);
    return set_u64_value(out, V_TIMED);
}

static int timed_other_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)ctx, (void)key;
    atomic_fetch_add(&TI.other_calls, 1);
    *value = 999;
    return 0;
}

static int timed_other_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    atomic_fetch_add(&TI.other_calls, 1);
    return set_u64_value(out, 999);
}

static void *timed_owner(void *arg)
{
    int space = (int)(uintptr_t)arg;
    TI.owner[space] = get_any(TI.m, space == 1, TIMED_KEY, timed_slow_bytes, timed_slow_u64, NULL);
    return NULL;
}

static void *timed_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    tap_barrier_wait(&TI.start);
    for (unsigned j = 0; j < TIMED_CALLS; j++) {
        bool     bytes = (i + j) % 2;
        uint64_t timeout = timed_timeouts_ns[(i + j) % TIMED_CALLS];
        uint64_t t0 = tap_now_ns();
        int      rc;
        if (bytes) {
            memo_ref_t r = MEMO_REF_INIT;
            rc = memo_get_timed(TI.m, &TIMED_KEY, sizeof TIMED_KEY, timed_other_bytes, NULL,
                                timeout, &r);
            if (rc == 0)
                memo_release(&r);
            else if (r.data != NULL)
                rc = 4444;
        } else {
            uint64_t v = 0;
            rc = memo_get_u64_timed(TI.m, TIMED_KEY, timed_other_u64, NULL, timeout, &v);
        }
        uint64_t took = tap_now_ns() - t0;
        if (rc != MEMO_ETIMEDOUT)
            atomic_fetch_add(&TI.bad_rc, 1);
        if (took < timeout)
            atomic_fetch_add(&TI.too_early, 1);
        uint64_t over = took > timeout ? took - timeout : 0;
        if (over > (uint64_t)TIMED_SLACK_MS * 1000000u)
            atomic_fetch_add(&TI.too_late, 1);
        uint64_t worst = atomic_load(&TI.worst_over_ns);
        while (over > worst && !atomic_compare_exchange_weak(&TI.worst_over_ns, &worst, over))
            ;
    }
    return NULL;
}

static void test_timeouts(unsigned flags)
{
    const char *label =
        flags & MEMO_F_SYSTEM_ALLOC ? "(f) MEMO_F_SYSTEM_ALLOC" : "(f) default allocator";
    timed_t    *t = &TI;
    memset(t, 0, sizeof *t);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    if (test_memo_create(&t->m, &cfg) != 0)
        bail_out("memo_create");
    uint64_t  base = stats_of(t->m).bytes;
    pthread_t owners[2], tids[TIMED_THREADS];
    for (unsigned s = 0; s < 2; s++)
        pthread_create(&owners[s], NULL, timed_owner, (void *)(uintptr_t)s);
    if (!wait_flag(&t->inside[0], 10000) || !wait_flag(&t->inside[1], 10000))
        bail_out("%s: the owners never entered fn", label);
    tap_barrier_init(&t->start, TIMED_THREADS + 1);
    for (unsigned i = 0; i < TIMED_THREADS; i++)
        pthread_create(&tids[i], NULL, timed_waiter, (void *)(uintptr_t)i);
    tap_barrier_wait(&t->start);
    must_join(tids, TIMED_THREADS, 30, label); /* the computations run until every call is done */
    atomic_store(&t->gate, 1);
    must_join(owners, 2, 10, label);

    const int calls = TIMED_THREADS * TIMED_CALLS;
    is_int(atomic_load(&t->bad_rc), 0, "%s: %d timed calls on the slow keys: all MEMO_ETIMEDOUT",
           label, calls);
    is_int(atomic_load(&t->too_early), 0, "%s: ... none before its timeout", label);
    is_int(atomic_load(&t->too_late), 0, "%s: ... each within timeout + %u ms (worst %.1f ms over)",
           label, TIMED_SLACK_MS, (double)atomic_load(&t->worst_over_ns) / 1e6);
    is_int(atomic_load(&t->other_calls), 0, "%s: ... and none ran its own fn", label);
    ok(same(t->owner[0], want(false, 0, V_TIMED)) && same(t->owner[1], want(true, 0, V_TIMED)),
       "%s: both computations went on and returned their values", label);
    is_int(atomic_load(&t->slow_calls[0]) + atomic_load(&t->slow_calls[1]), 2,
           "%s: ... computed once each", label);

    got_t later[2];
    for (unsigned s = 0; s < 2; s++) {
        later[s] = (got_t){ -100, 0, 0 };
        if (s == 1) {
            memo_ref_t r = MEMO_REF_INIT;
            later[s].rc =
                memo_get_timed(t->m, &TIMED_KEY, sizeof TIMED_KEY, timed_other_bytes, NULL, 0, &r);
            if (later[s].rc == 0) {
                later[s].len = r.len, later[s].sum = fnv(r.data, r.len);
                memo_release(&r);
            }
        } else {
            uint64_t v = 0;
            later[s].rc = memo_get_u64_timed(t->m, TIMED_KEY, timed_other_u64, NULL, 0, &v);
            if (later[s].rc == 0)
                later[s].len = 8, later[s].sum = v;
        }
    }
    ok(same(later[0], want(false, 0, V_TIMED)) && same(later[1], want(true, 0, V_TIMED)),
       "%s: later timed calls (timeout 0) get the stored values", label);
    is_int(atomic_load(&t->other_calls), 0, "%s: ... without computing", label);
    memo_stats_t st = stats_of(t->m);
    is_u64(st.misses, 2, "%s: stats.misses == 2", label);
    is_u64(st.hits, 2, "%s: stats.hits == 2 (the later calls)", label);
    is_u64(st.waits, 0, "%s: stats.waits == 0 (a timed-out call took no result)", label);
    forget_any(t->m, false, TIMED_KEY);
    forget_any(t->m, true, TIMED_KEY);
    memo_clear(t->m);
    uint64_t after = stats_of(t->m).bytes;
    if (exact_bytes(flags))
        is_u64(after, base, "%s: memo_stats.bytes back to its level after forget and clear", label);
    else
        cmp_u64(after, <=, base + 64 * 1024,
                "%s: memo_stats.bytes back to its level after forget and clear (within 64 KiB)",
                label);
    tap_barrier_destroy(&t->start);
    memo_destroy(t->m);
}


int main(void)
{
    tap_watchdog(100);
    uint64_t t0 = tap_now_ns();

    /* (d) */
    test_pile_up();
    uint64_t t1 = tap_now_ns();

    /* (f) */
    test_timeouts(0);
    test_timeouts(MEMO_F_SYSTEM_ALLOC);
    uint64_t t2 = tap_now_ns();
    diag("times: (d) %.2f s, (f) %.2f s", (double)(t1 - t0) / 1e9, (double)(t2 - t1) / 1e9);
    return done_testing();
}
