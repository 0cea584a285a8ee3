/*
 * test_misbehave: a compute function that misbehaves, and waiters that misbehave. Whatever they
 * do: no leak, no stranded thread, no wrong answer. Both key spaces wherever it applies.
 *
 * (a) fn stores nothing and returns 0: a byte key stores an empty value (len 0), a u64 key stores
 *     0 (fn is called with *value 0, as the header says), and the caller and every waiter get
 *     exactly that. Catches: a NULL or garbage value handed out, a waiter that sees "no value"
 *     and recomputes or fails, a u64 value that is whatever the caller's variable held.
 * (b) fn stores twice (memo_result_set, memo_result_alloc, memo_result_set with other lengths, or
 *     set then alloc last), or stores and then fails: the last store wins for the caller and all
 *     waiters; a failure stores nothing and hands its code to every waiter; memo_stats.bytes goes
 *     back to its level after forget and clear. Catches: an earlier store that wins or is mixed
 *     with a later one (wrong length or bytes), a replaced or failed value that is never freed
 *     (bytes grow by 65 KiB a key; LSan reports it in the ASan build), waiters of a failed run
 *     that are not woken (planted bug M3: they sleep until the join gives up).
 * (c) fn forgets its own key (memo_forget -> MEMO_ENOENT: nothing was stored, the in-flight key
 *     is detached), or clears the memo: the caller and its waiters still get fn's value, nothing
 *     is stored, the next get recomputes exactly once. fn that forgets its key and then calls
 *     memo_get on it: the key is free, so the nested call computes it afresh on the same thread
 *     (no MEMO_EDEADLK: after the forget, no new call waits on the computation that began
 *     before it) and stores that inner value; the outer call and its waiters get the outer value.
 *     Catches: a detached computation that stores anyway, strands or misleads its waiters, a
 *     self-forget that deadlocks on the shard lock, a nested computation of a forgotten key that
 *     reports a false cycle, hangs, or is overwritten by the outer, detached value.
 * (d) thousands of waiters pile up on one slow key per key space (2000 threads with 64 KiB
 *     stacks; 200 under sanitizers): all get the value, fn ran once per key, stats.waits ==
 *     threads - 2, and they sleep rather than spin: the process's CPU time while
 *     they all wait is a small fraction of what the cores could burn (busy-waiting waiters
 *     would use every core for the whole wait; the bound is against wall time x cores, since on
 *     this 2-core machine wall time x threads could not tell a spinning waiter from a sleeping
 *     one). Catches: waiters that spin or poll, a lost wake among thousands of sleepers, one
 *     recomputation too many, a thread-state setup that does not scale (the watchdog).
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
 * too). A watchdog turns a hang into a failure. Part (e) runs under ThreadSanitizer too: unlike
 * a thread that dies inside fn (test_death), a waiter cancelled in its sleep unwinds fine there.
 *
 * Verified against mutated copies of src/: the sleep as a raw futex call, not a cancellation
 * point -> (e) fails (no cleanup handler runs in 5 s; the cancelled computing thread does not end
 * while B runs); the sleep cancellable but without its cleanup handler -> (e)'s reclamation check
 * fails (7.5 MB held instead of 0.6 MB); waiters that spin instead of sleeping -> (d) fails (1365
 * ms CPU in a 756 ms window), and so does every "asleep" check; memo_result_alloc that drops the
 * value it replaces -> (b) fails (bytes, and LSan); planted bugs M3 -> (b) (the waiters of a
 * failed run stay asleep: bail-out), M4 -> (e) (A's waiters stranded: bail-out), M8 -> (f).
 */
#include "tap.h"
#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>

#include <memo.h>

#ifdef TAP_SANITIZED
enum { PILE_THREADS = 200 };
#define TIMED_SLACK_MS 1500u
#else
enum { PILE_THREADS = 2000 };
#define TIMED_SLACK_MS 500u
#endif
#define PILE_STACK ((size_t)64 * 1024)

enum { WAITERS = 6, FAIL_CODE = 7 };
enum { BIG_VALUE = 65 * 1024 }; /* beyond jemalloc's thread cache: freed to the arena at once */

static const uint64_t V_OWNER = 1111, V_INNER = 2222, V_FRESH = 3333, V_TWICE = 4444;
static const char     LAST[] = "the last store wins: all 37 bytes, ok";
static const char     SEVEN[] = "seven!!";
static unsigned char  big_source[BIG_VALUE];

/* ---- small helpers ---- */

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t             h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* What one call got: its code, and for 0 the value's length and a hash of its bytes (a u64
 * value: len 8 and the value itself). */
typedef struct got {
    int      rc;
    size_t   len;
    uint64_t sum;
} got_t;

static got_t want(bool bytes, int rc, uint64_t v)
{
    got_t g = { rc, 0, 0 };
    if (rc == 0) {
        g.len = sizeof v;
        g.sum = bytes ? fnv(&v, sizeof v) : v;
    }
    return g;
}

static bool same(got_t a, got_t b)
{
    return a.rc == b.rc && a.len == b.len && a.sum == b.sum;
}

static const char *show(got_t g, char *buf, size_t size)
{
    snprintf(buf, size, "rc %d (%s) len %zu sum %" PRIu64, g.rc, memo_err_name(g.rc), g.len, g.sum);
    return buf;
}

/* memo_get_u64 or memo_get (over the key's 8 bytes); a u64 result starts as garbage, so a
 * value memo did not write shows. */
static got_t get_any(memo_t *m, bool bytes, uint64_t key, memo_fn *fb, memo_fn_u64 *fu, void *ctx)
{
    got_t g = { -100, 0, 0 };
    if (!bytes) {
        uint64_t v = 0xdeadbeefull;
        g.rc = memo_get_u64(m, key, fu, ctx, &v);
        if (g.rc == 0)
            g.len = sizeof v, g.sum = v;
        return g;
    }
    memo_ref_t r = MEMO_REF_INIT;
    g.rc = memo_get(m, &key, sizeof key, fb, ctx, &r);
    if (g.rc == 0) {
        g.len = r.len;
        g.sum = fnv(r.data, r.len);
        memo_release(&r);
    } else if (r.data != NULL) {
        g.rc = 4444; /* a failed call must leave the ref empty */
    }
    return g;
}

static got_t lookup_any(memo_t *m, bool bytes, uint64_t key)
{
    got_t g = { -100, 0, 0 };
    if (!bytes) {
        uint64_t v = 0xdeadbeefull;
        g.rc = memo_lookup_u64(m, key, &v);
        if (g.rc == 0)
            g.len = sizeof v, g.sum = v;
        return g;
    }
    memo_ref_t r = MEMO_REF_INIT;
    g.rc = memo_lookup(m, &key, sizeof key, &r);
    if (g.rc == 0) {
        g.len = r.len;
        g.sum = fnv(r.data, r.len);
        memo_release(&r);
    }
    return g;
}

static int forget_any(memo_t *m, bool bytes, uint64_t key)
{
    return bytes ? memo_forget(m, &key, sizeof key) : memo_forget_u64(m, key);
}

static int set_u64_value(memo_result_t *out, uint64_t v)
{
    return memo_result_set(out, &v, sizeof v);
}

static memo_stats_t stats_of(memo_t *m)
{
    memo_stats_t s;
    memo_stats(m, &s);
    return s;
}

static int tid_now(void)
{
    return (int)syscall(SYS_gettid);
}

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

/* Waits (polling) until *flag is set; false after ms. */
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

static bool wait_count(atomic_int *counter, int n, unsigned ms)
{
    uint64_t deadline = tap_now_ns() + (uint64_t)ms * 1000000u;
    while (atomic_load(counter) < n) {
        if (tap_now_ns() >= deadline)
            return false;
        tap_sleep_ms(1);
    }
    return true;
}

/* Threads of this process that are running or runnable (state R in /proc), not counting the
 * caller and the threads whose ids are in skip[]; -1 if /proc cannot be read. */
static int runnable_threads(atomic_int *skip, int nskip)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    int            me = tid_now(), n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int tid = atoi(de->d_name);
        if (tid <= 0 || tid == me)
            continue;
        bool skipped = false;
        for (int i = 0; i < nskip; i++)
            skipped |= atomic_load(&skip[i]) == tid;
        if (skipped)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue; /* exited meanwhile */
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        const char *p = strrchr(buf, ')'); /* "tid (comm) S ...": comm may hold anything */
        if (p != NULL && p[1] == ' ' && p[2] == 'R')
            n++;
    }
    closedir(d);
    return n;
}

/*
 * Waits until *arrived reaches n and then until no thread but the caller and skip[] (the
 * computing threads, which poll their gates) has been running or runnable for 3 samples in a
 * row: every thread that arrived is then asleep in memo (a thread on its way, or blocked on a
 * lock whose holder runs, would show as R; so would a waiter that spins). False after 10 s, or
 * after 1 s once it has failed (spinning waiters would otherwise add 10 s to every part).
 */
static bool settle(atomic_int *arrived, int n, atomic_int *skip, int nskip)
{
    static unsigned limit_ms = 10000;
    uint64_t        deadline = tap_now_ns() + (uint64_t)limit_ms * 1000000u;
    while (atomic_load(arrived) < n) {
        if (tap_now_ns() >= deadline)
            return limit_ms = 1000, false;
        tap_sleep_ms(1);
    }
    for (int quiet = 0; quiet < 3;) {
        if (tap_now_ns() >= deadline)
            return limit_ms = 1000, false;
        tap_sleep_ms(5);
        int busy = runnable_threads(skip, nskip);
        if (busy < 0) { /* no /proc: nothing to check with, which must not pass */
            diag("settle: cannot read /proc/self/task: cannot tell sleeping threads from running ones");
            return false;
        }
        quiet = busy == 0 ? quiet + 1 : 0;
    }
    return true;
}

static void must_join(pthread_t *tids, unsigned n, unsigned seconds, const char *what)
{
    unsigned stuck = tap_join_threads_timed(tids, n, seconds);
    if (stuck != 0) {
        ok(0, "%s: %u of %u threads still stuck %u s later", what, stuck, n, seconds);
        bail_out("%s: threads stranded", what);
    }
}

/* Whether memo_stats.bytes counts malloc'd bytes exactly (MEMO_F_SYSTEM_ALLOC, forced in the
 * sanitizer builds) rather than jemalloc arena statistics, which also count what the threads'
 * caches hold. */
/* MEMO_F_SYSTEM_ALLOC counts each record's own block: bytes come back exactly. The default
 * allocator carves records from its stores' slabs, which a forget does not give back. */
static bool exact_bytes(unsigned flags)
{
    return (flags & MEMO_F_SYSTEM_ALLOC) != 0;
}

/* ---- (a) (b) (c): one misbehaving computation, WAITERS callers asleep on it ---- */

typedef enum {
    STORE_NOTHING,          /* (a) returns 0 and stores nothing */
    STORE_TWICE,            /* (b) set 5 bytes, alloc BIG_VALUE, set LAST: LAST wins (u64: two
                               writes of *value, the second wins) */
    STORE_TWICE_ALLOC_LAST, /* (b) set BIG_VALUE bytes, then alloc 7 filled in place: they win */
    STORE_THEN_FAIL,        /* (b) set, alloc BIG_VALUE, then return FAIL_CODE: nothing stored */
    FORGET_OWN_KEY,         /* (c) memo_forget of its own key, then V_OWNER */
    CLEAR_INSIDE,           /* (c) memo_clear, then V_OWNER */
    FORGET_THEN_GET,        /* (c) forget its key, memo_get it (nested), then V_OWNER */
} misdeed_t;

static const char *const misdeed_name[] = {
    "fn stores nothing",
    "fn stores twice",
    "fn stores twice, alloc last",
    "fn stores, then fails",
    "fn forgets its own key",
    "fn clears the memo",
    "fn forgets its own key, then gets it",
};

static const uint64_t SCENE_KEY = 0x5eed, BYSTANDER_KEY = 0xb1;

typedef struct scene {
    memo_t           *m;
    bool              bytes;
    misdeed_t         misdeed;
    pthread_barrier_t start;
    atomic_int        owner_tid, inside, gate, arrived;
    atomic_int        owner_calls;  /* the misbehaving fn */
    atomic_int        waiter_calls; /* the waiters' own fn: must not run while they wait */
    atomic_int        fresh_calls;  /* the well-behaved fn of later calls */
    atomic_int        inner_calls;  /* the nested computation's fn */
    uint64_t          value_on_entry;
    int               step_rc;    /* the first memo_result_* call in fn that failed */
    int               removal_rc; /* memo_forget inside fn */
    got_t             nested;     /* memo_get inside fn */
    got_t             owner, waiter[WAITERS];
} scene_t;

static scene_t SC;

static void step(scene_t *s, int rc)
{
    if (rc != 0 && s->step_rc == 0)
        s->step_rc = rc;
}

static int inner_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->inner_calls, 1);
    return set_u64_value(out, V_INNER);
}

static int inner_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->inner_calls, 1);
    *value = V_INNER;
    return 0;
}

static int misbehave_bytes(scene_t *s, misdeed_t d, const void *key, size_t key_len,
                           memo_result_t *out)
{
    unsigned char *p;
    switch (d) {
    case STORE_NOTHING:
        return 0;
    case STORE_TWICE:
        step(s, memo_result_set(out, "first", 5));
        if ((p = (unsigned char *)memo_result_alloc(out, BIG_VALUE)) != NULL)
            memset(p, 'x', BIG_VALUE);
        else
            step(s, MEMO_ENOMEM);
        step(s, memo_result_set(out, LAST, sizeof LAST - 1));
        return 0;
    case STORE_TWICE_ALLOC_LAST:
        step(s, memo_result_set(out, big_source, BIG_VALUE));
        if ((p = (unsigned char *)memo_result_alloc(out, sizeof SEVEN - 1)) != NULL)
            memcpy(p, SEVEN, sizeof SEVEN - 1);
        else
            step(s, MEMO_ENOMEM);
        return 0;
    case STORE_THEN_FAIL:
        step(s, memo_result_set(out, "doomed", 6));
        if ((p = (unsigned char *)memo_result_alloc(out, BIG_VALUE)) != NULL)
            memset(p, 'y', BIG_VALUE);
        else
            step(s, MEMO_ENOMEM);
        return FAIL_CODE;
    case FORGET_OWN_KEY:
        s->removal_rc = memo_forget(s->m, key, key_len);
        break;
    case CLEAR_INSIDE:
        memo_clear(s->m);
        break;
    case FORGET_THEN_GET:
        s->removal_rc = memo_forget(s->m, key, key_len);
        s->nested = get_any(s->m, true, SCENE_KEY, inner_bytes, inner_u64, s);
        break;
    }
    return set_u64_value(out, V_OWNER);
}

static int misbehave_u64(scene_t *s, misdeed_t d, uint64_t key, uint64_t *value)
{
    volatile uint64_t *v = value; /* both stores happen */
    switch (d) {
    case STORE_NOTHING:
        return 0;
    case STORE_TWICE:
    case STORE_TWICE_ALLOC_LAST:
        *v = 1;
        *v = V_TWICE;
        return 0;
    case STORE_THEN_FAIL:
        *v = 99;
        return FAIL_CODE;
    case FORGET_OWN_KEY:
        s->removal_rc = memo_forget_u64(s->m, key);
        break;
    case CLEAR_INSIDE:
        memo_clear(s->m);
        break;
    case FORGET_THEN_GET:
        s->removal_rc = memo_forget_u64(s->m, key);
        s->nested = get_any(s->m, false, SCENE_KEY, inner_bytes, inner_u64, s);
        break;
    }
    *v = V_OWNER;
    return 0;
}

/* The owner's fn: holds until every waiter sleeps on it, then misbehaves. */
static void owner_enter(scene_t *s)
{
    atomic_fetch_add(&s->owner_calls, 1);
    atomic_store(&s->owner_tid, tid_now());
    atomic_store(&s->inside, 1);
    wait_flag(&s->gate, 30000);
}

static int owner_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    scene_t *s = (scene_t *)ctx;
    owner_enter(s);
    return misbehave_bytes(s, s->misdeed, key, key_len, out);
}

static int owner_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    scene_t *s = (scene_t *)ctx;
    s->value_on_entry = *value;
    owner_enter(s);
    return misbehave_u64(s, s->misdeed, key, value);
}

static int waiter_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->waiter_calls, 1);
    return set_u64_value(out, 999);
}

static int waiter_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->waiter_calls, 1);
    *value = 999;
    return 0;
}

static int fresh_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)key, (void)key_len;
    atomic_fetch_add(&((scene_t *)ctx)->fresh_calls, 1);
    return set_u64_value(out, V_FRESH);
}

static int fresh_fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    (void)key;
    atomic_fetch_add(&((scene_t *)ctx)->fresh_calls, 1);
    *value = V_FRESH;
    return 0;
}

static void *scene_owner(void *arg)
{
    scene_t *s = (scene_t *)arg;
    s->owner = get_any(s->m, s->bytes, SCENE_KEY, owner_fn_bytes, owner_fn_u64, s);
    return NULL;
}

static void *scene_waiter(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    scene_t *s = &SC;
    tap_barrier_wait(&s->start);
    atomic_fetch_add(&s->arrived, 1);
    s->waiter[i] = get_any(s->m, s->bytes, SCENE_KEY, waiter_fn_bytes, waiter_fn_u64, s);
    return NULL;
}

/* What fn's misdeed hands to its caller and waiters. */
static got_t scene_result(bool bytes, misdeed_t d)
{
    got_t g = { 0, 0, 0 };
    switch (d) {
    case STORE_NOTHING:
        if (bytes)
            g.sum = fnv("", 0);
        else
            g.len = 8; /* the value 0 */
        return g;
    case STORE_TWICE:
        if (bytes)
            g.len = sizeof LAST - 1, g.sum = fnv(LAST, sizeof LAST - 1);
        else
            g = want(false, 0, V_TWICE);
        return g;
    case STORE_TWICE_ALLOC_LAST:
        if (bytes)
            g.len = sizeof SEVEN - 1, g.sum = fnv(SEVEN, sizeof SEVEN - 1);
        else
            g = want(false, 0, V_TWICE);
        return g;
    case STORE_THEN_FAIL:
        return want(bytes, FAIL_CODE, 0);
    default:
        return want(bytes, 0, V_OWNER);
    }
}

static void run_scene(bool bytes, misdeed_t d)
{
    char label[128], b1[96], b2[96];
    snprintf(label, sizeof label, "%s, %s keys", misdeed_name[d], bytes ? "byte" : "u64");
    scene_t *s = &SC;
    memset(s, 0, sizeof *s);
    s->bytes = bytes;
    s->misdeed = d;
    s->value_on_entry = 0xdeadbeefull;
    if (test_memo_create(&s->m, NULL) != 0)
        bail_out("memo_create");
    /* a bystander key, stored before: clear must take it, forget must not */
    got_t by = get_any(s->m, bytes, BYSTANDER_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    atomic_store(&s->fresh_calls, 0);

    pthread_t owner, tids[WAITERS];
    pthread_create(&owner, NULL, scene_owner, s);
    if (!wait_flag(&s->inside, 10000))
        bail_out("%s: the owner never entered fn", label);
    tap_barrier_init(&s->start, WAITERS + 1);
    for (unsigned i = 0; i < WAITERS; i++)
        pthread_create(&tids[i], NULL, scene_waiter, (void *)(uintptr_t)i);
    tap_barrier_wait(&s->start);
    ok(settle(&s->arrived, WAITERS, &s->owner_tid, 1), "%s: %d waiters asleep on fn", label,
       WAITERS);
    atomic_store(&s->gate, 1);
    must_join(&owner, 1, 10, label);
    must_join(tids, WAITERS, 10, label);
    tap_barrier_destroy(&s->start);

    got_t expect = scene_result(bytes, d);
    ok(same(s->owner, expect), "%s: the caller that ran fn gets %s", label,
       show(expect, b1, sizeof b1));
    if (!same(s->owner, expect))
        diag("%s: the caller got %s", label, show(s->owner, b2, sizeof b2));
    int bad = 0;
    for (unsigned i = 0; i < WAITERS; i++) {
        if (!same(s->waiter[i], expect) && bad++ == 0)
            diag("%s: waiter %u got %s", label, i, show(s->waiter[i], b2, sizeof b2));
    }
    is_int(bad, 0, "%s: all %d waiters get the same", label, WAITERS);
    is_int(atomic_load(&s->owner_calls), 1, "%s: fn ran once", label);
    is_int(atomic_load(&s->waiter_calls), 0, "%s: no waiter ran its own fn", label);
    is_int(s->step_rc, 0, "%s: every memo_result_* call inside fn succeeded", label);
    if (!bytes)
        is_u64(s->value_on_entry, 0, "%s: fn was called with *value 0", label);

    memo_stats_t st = stats_of(s->m);
    is_u64(st.waits, WAITERS,
           "%s: stats.waits == %d (every waiter slept on fn and took its result)", label, WAITERS);
    is_u64(st.misses, 2 + (d == FORGET_THEN_GET), "%s: stats.misses (bystander, fn%s)", label,
           d == FORGET_THEN_GET ? ", the nested computation" : "");
    is_u64(st.errors, d == STORE_THEN_FAIL, "%s: stats.errors", label);
    bool stored = d == STORE_NOTHING || d == STORE_TWICE || d == STORE_TWICE_ALLOC_LAST;
    is_u64(st.entries, (d != CLEAR_INSIDE) + (stored || d == FORGET_THEN_GET),
           "%s: stats.entries (the bystander unless cleared, the key if stored)", label);

    got_t after = lookup_any(s->m, bytes, SCENE_KEY);
    if (stored)
        ok(same(after, expect), "%s: the value is stored (lookup: %s)", label,
           show(after, b2, sizeof b2));
    else if (d == FORGET_THEN_GET)
        ok(same(after, want(bytes, 0, V_INNER)),
           "%s: the nested computation's value is stored, not the outer one's (lookup: %s)", label,
           show(after, b2, sizeof b2));
    else
        is_int(after.rc, MEMO_ENOENT, "%s: nothing is stored (lookup)", label);

    if (d == FORGET_OWN_KEY || d == FORGET_THEN_GET)
        is_int(s->removal_rc, MEMO_ENOENT,
               "%s: memo_forget of the key in flight: MEMO_ENOENT (nothing was stored)", label);
    if (d == FORGET_THEN_GET) {
        ok(same(s->nested, want(bytes, 0, V_INNER)),
           "%s: the nested memo_get computes the freed key afresh on the same thread: %s", label,
           show(s->nested, b2, sizeof b2));
        is_int(atomic_load(&s->inner_calls), 1, "%s: ... its fn ran once", label);
    }
    got_t by_after = lookup_any(s->m, bytes, BYSTANDER_KEY);
    if (d == CLEAR_INSIDE)
        is_int(by_after.rc, MEMO_ENOENT, "%s: the clear took the bystander key too", label);
    else
        ok(same(by_after, by) && by.rc == 0, "%s: the bystander key is untouched", label);

    /* the next calls: a stored value is a hit; otherwise one fresh computation, then hits */
    got_t next1 = get_any(s->m, bytes, SCENE_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    got_t next2 = get_any(s->m, bytes, SCENE_KEY, fresh_fn_bytes, fresh_fn_u64, s);
    got_t next_expect = stored ? expect : want(bytes, 0, d == FORGET_THEN_GET ? V_INNER : V_FRESH);
    ok(same(next1, next_expect) && same(next2, next_expect), "%s: the next two gets: %s", label,
       show(next_expect, b1, sizeof b1));
    is_int(atomic_load(&s->fresh_calls), !stored && d != FORGET_THEN_GET,
           "%s: ... %s", label,
           !stored && d != FORGET_THEN_GET ? "recomputed exactly once" : "without computing");
    memo_destroy(s->m);
}

/* (b) with many keys: replaced and failed values are freed (memo_stats.bytes, and LSan). */
enum { MEM_KEYS = 64 };

static misdeed_t mem_misdeed(uint64_t key)
{
    static const misdeed_t cycle[] = { STORE_TWICE, STORE_TWICE_ALLOC_LAST, STORE_THEN_FAIL };
    return cycle[key % 3];
}

static int mem_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    uint64_t k;
    memcpy(&k, key, sizeof k);
    return misbehave_bytes((scene_t *)ctx, mem_misdeed(k), key, key_len, out);
}

static int well_fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key, (void)key_len;
    return memo_result_set(out, LAST, sizeof LAST - 1);
}

static void test_store_twice_memory(unsigned flags)
{
    const char *label = flags & MEMO_F_SYSTEM_ALLOC ? "MEMO_F_SYSTEM_ALLOC" : "default allocator";
    scene_t     s;
    memset(&s, 0, sizeof s);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    if (test_memo_create(&s.m, &cfg) != 0)
        bail_out("memo_create");
    /* warm-up: the tables grow to hold MEM_KEYS keys, and keep that size through forget/clear */
    for (uint64_t k = 0; k < MEM_KEYS; k++) {
        got_t g = get_any(s.m, true, k, well_fn_bytes, NULL, &s);
        (void)g;
    }
    for (uint64_t k = 0; k < MEM_KEYS; k++)
        forget_any(s.m, true, k);
    memo_clear(s.m);
    uint64_t base = stats_of(s.m).bytes;

    int bad = 0;
    for (uint64_t k = 0; k < MEM_KEYS; k++) {
        got_t g = get_any(s.m, true, k, mem_fn_bytes, NULL, &s);
        if (!same(g, scene_result(true, mem_misdeed(k))))
            bad++;
    }
    is_int(bad, 0,
           "(b) %s: %d keys whose fn stores twice or stores then fails: each got the last store "
           "or the code", label, MEM_KEYS);
    is_int(s.step_rc, 0, "(b) %s: ... every memo_result_* call succeeded", label);
    uint64_t peak = stats_of(s.m).bytes;
    for (uint64_t k = 0; k < MEM_KEYS; k++)
        forget_any(s.m, true, k);
    memo_clear(s.m);
    uint64_t after = stats_of(s.m).bytes;
    diag("(b) %s: bytes %" PRIu64 " before, %" PRIu64 " with the values, %" PRIu64
         " after forget and clear (a leaked %d KiB value a key would add %d KiB)",
         label, base, peak, after, BIG_VALUE / 1024, MEM_KEYS * 2 / 3 * BIG_VALUE / 1024);
    if (exact_bytes(flags))
        is_u64(after, base, "(b) %s: memo_stats.bytes back to its level exactly", label);
    else
        cmp_u64(after, <=, base + 512 * 1024,
                "(b) %s: memo_stats.bytes back to its level (within the thread caches' 512 KiB)",
                label);
    memo_destroy(s.m);
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
    for (size_t i = 0; i < sizeof big_source; i++)
        big_source[i] = (unsigned char)(i * 7);

    /* (a), (b), (c) */
    for (int bytes = 0; bytes < 2; bytes++) {
        for (misdeed_t d = STORE_NOTHING; d <= FORGET_THEN_GET; d++) {
            if (d == STORE_TWICE_ALLOC_LAST && !bytes)
                continue; /* a u64 fn has nothing to allocate */
            run_scene(bytes, d);
        }
    }
    test_store_twice_memory(0);
    test_store_twice_memory(MEMO_F_SYSTEM_ALLOC);
    uint64_t t1 = tap_now_ns();

    /* (d) */
    test_pile_up();
    uint64_t t2 = tap_now_ns();

    /* (e) */
    test_cancel_waiters(false);
    test_cancel_waiters(true);
    test_cancel_nested(false);
    test_cancel_nested(true);
    uint64_t t3 = tap_now_ns();

    /* (f) */
    test_timeouts(0);
    test_timeouts(MEMO_F_SYSTEM_ALLOC);
    uint64_t t4 = tap_now_ns();
    diag("times: (a-c) %.2f s, (d) %.2f s, (e) %.2f s, (f) %.2f s", (double)(t1 - t0) / 1e9,
         (double)(t2 - t1) / 1e9, (double)(t3 - t2) / 1e9, (double)(t4 - t3) / 1e9);
    return done_testing();
}
