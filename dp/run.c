/*
 * Running a job: one memo, N solver threads whose stacks are sized for the recursion's depth, and
 * a progress bar on stderr for runs that pass one second.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"

double dp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

unsigned dp_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

uint64_t dp_available_memory(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f != NULL) {
        char line[256];
        unsigned long long kib;
        while (fgets(line, sizeof line, f) != NULL) {
            if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
                fclose(f);
                return (uint64_t)kib * 1024;
            }
        }
        fclose(f);
    }
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : UINT64_MAX;
}

/* ---- stack per level --------------------------------------------------------------------- */

/* The calibration's recursion: a chain of PROBE_LEVELS nested memo_get_u64 calls whose compute
 * function has a frame like the solvers' (a few locals, one call). Frame addresses, not the
 * addresses of locals: under ASan locals may live on a heap "fake stack". */
#define PROBE_LEVELS 64

struct dp_probe {
    memo_t   *memo;
    uintptr_t top, bottom;
};

static int dp_probe_fn(void *ctx, uint64_t key, uint64_t *value)
{
    struct dp_probe *p = ctx;
    uintptr_t here = (uintptr_t)__builtin_frame_address(0);
    if (key == PROBE_LEVELS)
        p->top = here;
    if (key == 0) {
        p->bottom = here;
        *value = 0;
        return 0;
    }
    uint64_t below = 0, beside = 0;
    int rc = memo_get_u64(p->memo, key - 1, dp_probe_fn, ctx, &below);
    if (rc == 0 && key > 1)
        rc = memo_get_u64(p->memo, key - 2, dp_probe_fn, ctx, &beside);
    *value = below + beside;
    return rc;
}

static size_t dp_stack_level;
static pthread_once_t dp_stack_once = PTHREAD_ONCE_INIT;

static void dp_measure_stack(void)
{
    struct dp_probe p = { NULL, 0, 0 };
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 4;
    size_t measured = 0;
    uint64_t v;
    if (memo_create(&p.memo, &cfg) == 0) {
        if (memo_get_u64(p.memo, PROBE_LEVELS, dp_probe_fn, &p, &v) == 0 && p.top > p.bottom)
            measured = (p.top - p.bottom) / PROBE_LEVELS;
        memo_destroy(p.memo);
    }
    if (measured == 0)
        measured = 1024; /* the stack grows up or the probe failed: assume a generous frame */
    /* The solvers' compute functions keep a few more locals than the probe's (matrixchain's
     * loop, partitions' refs): 256 bytes more per level, then a quarter more for safety. */
    dp_stack_level = (measured + 256) * 5 / 4;
}

size_t dp_stack_per_level(void)
{
    pthread_once(&dp_stack_once, dp_measure_stack);
    return dp_stack_level;
}

/* ---- progress ---------------------------------------------------------------------------- */

struct dp_progress {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    bool            done;
    memo_t         *memo;
    const struct dp_instance *instance;
    double          start;
};

static void dp_deadline(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    long long ns = ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

/* Waits until done or `seconds` pass; returns done. Called with the lock held. */
static bool dp_progress_wait(struct dp_progress *p, double seconds)
{
    struct timespec ts;
    dp_deadline(&ts, seconds);
    while (!p->done)
        if (pthread_cond_timedwait(&p->cond, &p->lock, &ts) == ETIMEDOUT)
            break;
    return p->done;
}

static void *dp_progress_main(void *arg)
{
    struct dp_progress *p = arg;
    bool drawn = false;
    pthread_mutex_lock(&p->lock);
    if (!dp_progress_wait(p, 1.0)) {
        do {
            memo_stats_t st;
            memo_stats(p->memo, &st);
            uint64_t total = p->instance->states ? p->instance->states : 1;
            double frac = (double)st.misses / (double)total;
            frac = frac > 1 ? 1 : frac;
            char bar[31];
            int filled = (int)(frac * 30);
            for (int i = 0; i < 30; i++)
                bar[i] = i < filled ? '#' : '.';
            bar[30] = '\0';
            fprintf(stderr, "\r\033[K%s [%s] %3.0f%%  %" PRIu64 " of %s%" PRIu64 " states  %.1f s",
                    p->instance->problem->name, bar, frac * 100, st.misses,
                    p->instance->states_exact ? "" : "at most ", p->instance->states, dp_now() - p->start);
            fflush(stderr);
            drawn = true;
        } while (!dp_progress_wait(p, 0.2));
    }
    pthread_mutex_unlock(&p->lock);
    if (drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    return NULL;
}

const char *dp_strerror(int code)
{
    switch (code) {
    case DP_EOVERFLOW:
        return "a value does not fit in 64 bits";
    case DP_ETHREAD:
        return "the solver threads could not be started";
    case DP_EDEPTH:
        return "the recursion is deeper than the stacks were sized for";
    default:
        return memo_strerror(code);
    }
}

/* ---- solving ----------------------------------------------------------------------------- */

struct dp_worker {
    struct dp_job *job;
    unsigned       index;
    int            rc;
    pthread_t      thread;
};

static void *dp_worker_main(void *arg)
{
    struct dp_worker *w = arg;
    w->rc = w->job->instance->problem->work(w->job, w->index);
    return NULL;
}

/* Stack bytes for a solver thread: the recursion, plus room for the thread's own frames. */
static size_t dp_stack_size(const struct dp_instance *inst)
{
    uint64_t per_level = dp_stack_per_level();
    uint64_t want = inst->depth + 16 > UINT64_MAX / per_level ? UINT64_MAX : (inst->depth + 16) * per_level;
    want = want > UINT64_MAX - (1u << 20) ? UINT64_MAX : want + (1u << 20);
    long page = sysconf(_SC_PAGESIZE);
    uint64_t pg = page > 0 ? (uint64_t)page : 4096;
    if (want > SIZE_MAX - pg)
        return SIZE_MAX;
    want = (want + pg - 1) / pg * pg;
    return want < (uint64_t)PTHREAD_STACK_MIN ? (size_t)PTHREAD_STACK_MIN : (size_t)want;
}

/*
 * The memo's tables, sized for the run up front (memo gives each shard room for its share of
 * expected_entries below ck_hs's half-full growth point, so no table grows during the run), and
 * more shards than memo's default for large instances: two threads that both miss all the time
 * then rarely meet on a shard lock (fewer for small instances, whose shards would be mostly empty).
 * Dense: the states' key range in memo's flat table (dense_keys), and no hint for the hash table,
 * which then holds only the keys past the range (collatz's chains), if any.
 */
static void dp_memo_config(const struct dp_instance *inst, bool dense, memo_config_t *cfg)
{
    if (dense) {
        cfg->dense_keys = inst->key_space;
        return;
    }
    cfg->expected_entries = inst->states > SIZE_MAX ? SIZE_MAX : (size_t)inst->states;
    unsigned shards = 16;
    while (shards < 1024 && (uint64_t)shards * 64 < inst->states)
        shards *= 2;
    cfg->shards = shards;
}

uint64_t dp_bytes_per_state_estimate(const struct dp_instance *inst, bool dense)
{
    if (dense && inst->states > 0) /* 16 bytes per key of the range, and a little for the rest */
        return (inst->key_space * 16 + inst->states - 1) / inst->states + 1;
    return inst->bytes_per_state ? inst->bytes_per_state : DP_BYTES_PER_U64_STATE;
}

int dp_solve(const struct dp_instance *inst, unsigned threads, bool split, bool dense, bool progress,
             struct dp_result *out)
{
    const struct dp_problem *problem = inst->problem;
    memset(out, 0, sizeof *out);
    memo_config_t cfg = MEMO_CONFIG_INIT;
    dp_memo_config(inst, dense, &cfg);
    struct dp_job job = { inst, NULL, threads, split, dense, NULL };
    int rc = memo_create(&job.memo, &cfg);
    if (rc != 0) {
        dp_error(problem->name, "memo_create: %s", memo_strerror(rc));
        return out->rc = rc;
    }
    if (problem->begin != NULL && (rc = problem->begin(&job)) != 0) {
        dp_error(problem->name, "%s", dp_strerror(rc));
        memo_destroy(job.memo);
        return out->rc = rc;
    }

    struct dp_worker *workers = calloc(threads, sizeof *workers);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack = dp_stack_size(inst);
    int err = pthread_attr_setstacksize(&attr, stack);
    struct dp_progress bar = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, job.memo, inst, 0 };
    pthread_t bar_thread;
    bool bar_running = false;
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&bar.cond, &cattr);
    pthread_condattr_destroy(&cattr);

    unsigned started = 0;
    double start = dp_now();
    bar.start = start;
    if (workers == NULL) {
        err = ENOMEM;
    } else if (err == 0) {
        for (; started < threads; started++) {
            workers[started].job = &job;
            workers[started].index = started;
            err = pthread_create(&workers[started].thread, &attr, dp_worker_main, &workers[started]);
            if (err != 0)
                break;
        }
    }
    if (started > 0 && progress)
        bar_running = pthread_create(&bar_thread, NULL, dp_progress_main, &bar) == 0;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        if (rc == 0)
            rc = workers[i].rc;
    }
    out->seconds = dp_now() - start;
    if (bar_running) {
        pthread_mutex_lock(&bar.lock);
        bar.done = true;
        pthread_cond_signal(&bar.cond);
        pthread_mutex_unlock(&bar.lock);
        pthread_join(bar_thread, NULL);
    }
    pthread_attr_destroy(&attr);
    pthread_cond_destroy(&bar.cond);

    if (err != 0) {
        char size[32];
        dp_format_bytes(size, sizeof size, (double)stack);
        dp_error(problem->name, "cannot start %u solver threads with %s stacks (for %" PRIu64
                 " levels of recursion): %s", threads, size, inst->depth, strerror(err));
    } else if (rc != 0) {
        dp_error(problem->name, "%s", dp_strerror(rc));
    }
    memo_stats(job.memo, &out->stats);
    if (rc == 0 && err == 0 && (rc = problem->finish(&job, &out->answer)) != 0)
        dp_error(problem->name, "%s", dp_strerror(rc));
    if (problem->end != NULL)
        problem->end(&job);
    memo_destroy(job.memo);
    free(workers);
    if (err != 0)
        rc = DP_ETHREAD;
    return out->rc = rc;
}
