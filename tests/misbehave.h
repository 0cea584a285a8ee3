/*
 * What the test_misbehave suites share (test_misbehave.c: a compute function that misbehaves;
 * test_misbehave_waiters.c and test_misbehave_cancel.c: waiters that misbehave): one call in
 * either key space and what it got (got_t), memo_stats as a value, and settle(), which waits
 * until the threads of a scene are all asleep in memo, read from /proc.
 *
 * Every concurrency part runs more threads than the machine's cores, starts them on a barrier,
 * and checks with /proc that they are all asleep in memo before the computation proceeds (so a
 * late thread cannot turn a wait into a hit or a recomputation; a spinning waiter fails there
 * too). A watchdog turns a hang into a failure.
 *
 * Include it after tap.h and helpers.h.
 */
#ifndef MEMO_TESTS_MISBEHAVE_H
#define MEMO_TESTS_MISBEHAVE_H

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/syscall.h>

#include <memo.h>

static inline uint64_t fnv(const void *p, size_t n)
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

static inline got_t want(bool bytes, int rc, uint64_t v)
{
    got_t g = { rc, 0, 0 };
    if (rc == 0) {
        g.len = sizeof v;
        g.sum = bytes ? fnv(&v, sizeof v) : v;
    }
    return g;
}

static inline bool same(got_t a, got_t b)
{
    return a.rc == b.rc && a.len == b.len && a.sum == b.sum;
}

static inline const char *show(got_t g, char *buf, size_t size)
{
    snprintf(buf, size, "rc %d (%s) len %zu sum %" PRIu64, g.rc, memo_err_name(g.rc), g.len, g.sum);
    return buf;
}

/* memo_get_u64 or memo_get (over the key's 8 bytes); a u64 result starts as garbage, so a
 * value memo did not write shows. */
static inline got_t get_any(memo_t *m, bool bytes, uint64_t key, memo_fn *fb, memo_fn_u64 *fu,
                            void *ctx)
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

static inline got_t lookup_any(memo_t *m, bool bytes, uint64_t key)
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

static inline int forget_any(memo_t *m, bool bytes, uint64_t key)
{
    return bytes ? memo_forget(m, &key, sizeof key) : memo_forget_u64(m, key);
}

static inline int set_u64_value(memo_result_t *out, uint64_t v)
{
    return memo_result_set(out, &v, sizeof v);
}

static inline memo_stats_t stats_of(memo_t *m)
{
    memo_stats_t s;
    memo_stats(m, &s);
    return s;
}

static inline int tid_now(void)
{
    return (int)syscall(SYS_gettid);
}


/* Waits (polling) until *flag is set; false after ms. */
static inline bool wait_flag(atomic_int *flag, unsigned ms)
{
    uint64_t deadline = tap_now_ns() + (uint64_t)ms * 1000000u;
    while (!atomic_load(flag)) {
        if (tap_now_ns() >= deadline)
            return false;
        tap_sleep_ms(1);
    }
    return true;
}

static inline bool wait_count(atomic_int *counter, int n, unsigned ms)
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
static inline int runnable_threads(atomic_int *skip, int nskip)
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
static inline bool settle(atomic_int *arrived, int n, atomic_int *skip, int nskip)
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

static inline void must_join(pthread_t *tids, unsigned n, unsigned seconds, const char *what)
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
static inline bool exact_bytes(unsigned flags)
{
    return (flags & MEMO_F_SYSTEM_ALLOC) != 0;
}

#endif /* MEMO_TESTS_MISBEHAVE_H */
