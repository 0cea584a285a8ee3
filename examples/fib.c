/*
 * fib: memoization in C, shared by threads.
 *
 * Part 1 is the classic example: naive recursive Fibonacci becomes linear once memoized. Four
 * threads, released together by a barrier, share one memoized fib. Whichever thread first asks
 * for a number computes it; the others wait for that result instead of computing it again.
 *
 * Part 2 memoizes a slow function of a string with byte keys (memo_get / memo_release): four
 * threads ask for the same key at once, and the function runs once.
 */
#define _POSIX_C_SOURCE 200809L

#include <memo.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One line turns the recursive definition into a memoized, thread-safe one. */
MEMO_DEFINE_U64(fib, n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

enum { THREADS = 4 };

static pthread_barrier_t start_line;

struct fib_job {
    uint64_t n;
    uint64_t result;
};

static void *fib_thread(void *arg)
{
    struct fib_job *job = arg;

    pthread_barrier_wait(&start_line);
    job->result = fib(job->n);
    return NULL;
}

static void print_stats(const char *what, memo_t *m)
{
    memo_stats_t s;

    memo_stats(m, &s);
    printf("%s: hits %" PRIu64 ", misses %" PRIu64 ", waits %" PRIu64 ", entries %" PRIu64
           ", bytes %" PRIu64 "\n",
           what, s.hits, s.misses, s.waits, s.entries, s.bytes);
}

static int run_fib(void)
{
    struct fib_job jobs[THREADS] = { { 90, 0 }, { 75, 0 }, { 60, 0 }, { 45, 0 } };
    pthread_t threads[THREADS];

    pthread_barrier_init(&start_line, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, fib_thread, &jobs[i]) != 0) {
            fprintf(stderr, "fib: pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start_line);

    for (int i = 0; i < THREADS; i++)
        printf("fib(%" PRIu64 ") = %" PRIu64 "\n", jobs[i].n, jobs[i].result);
    print_stats("fib memo", fib_memo());

    /* fib(90) is the largest Fibonacci number below 2^63. */
    if (jobs[0].result != UINT64_C(2880067194370816120)) {
        fprintf(stderr, "fib: wrong result for fib(90)\n");
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------- */

static atomic_int shout_calls;

/* The "expensive" function: the key in capitals with an exclamation mark, after a pause. */
static int slow_shout(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    const char *text = key;
    struct timespec pause = { 0, 100 * 1000 * 1000 }; /* 100 ms */
    char *value;

    (void)ctx;
    atomic_fetch_add(&shout_calls, 1);
    nanosleep(&pause, NULL);

    value = memo_result_alloc(out, key_len + 2); /* text, '!', '\0' */
    if (value == NULL)
        return MEMO_ENOMEM;
    for (size_t i = 0; i < key_len; i++)
        value[i] = text[i] >= 'a' && text[i] <= 'z' ? (char)(text[i] - 'a' + 'A') : text[i];
    value[key_len] = '!';
    value[key_len + 1] = '\0';
    return 0;
}

static memo_t *shouts;
static const char greeting[] = "hello, memo";

static void *shout_thread(void *arg)
{
    memo_ref_t ref = MEMO_REF_INIT;
    int rc;

    (void)arg;
    pthread_barrier_wait(&start_line);
    rc = memo_get(shouts, greeting, strlen(greeting), slow_shout, NULL, &ref);
    if (rc != 0) {
        fprintf(stderr, "shout: memo_get: %s\n", memo_strerror(rc));
        return NULL;
    }
    printf("shout(\"%s\") = \"%s\"\n", greeting, (const char *)ref.data);
    memo_release(&ref);
    return NULL;
}

static int run_shout(void)
{
    pthread_t threads[THREADS];
    memo_ref_t ref = MEMO_REF_INIT;
    int rc;

    rc = memo_create(&shouts, NULL);
    if (rc != 0) {
        fprintf(stderr, "shout: memo_create: %s\n", memo_strerror(rc));
        return 1;
    }

    pthread_barrier_init(&start_line, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, shout_thread, NULL) != 0) {
            fprintf(stderr, "shout: pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start_line);

    /* Already stored: no call, no pause. */
    rc = memo_get(shouts, greeting, strlen(greeting), slow_shout, NULL, &ref);
    if (rc == 0)
        memo_release(&ref);
    printf("slow_shout ran %d time(s) for %d threads and one more call\n",
           atomic_load(&shout_calls), THREADS);
    print_stats("shout memo", shouts);

    /* Forgotten: the next lookup finds nothing, the next get would compute again. */
    memo_forget(shouts, greeting, strlen(greeting));
    rc = memo_lookup(shouts, greeting, strlen(greeting), &ref);
    printf("after memo_forget, memo_lookup: %s\n", memo_err_name(rc));
    if (rc == 0)
        memo_release(&ref);

    memo_destroy(shouts);
    return atomic_load(&shout_calls) == 1 && rc == MEMO_ENOENT ? 0 : 1;
}

int main(void)
{
    printf("memo %s\n", memo_version());
    if (run_fib() != 0)
        return EXIT_FAILURE;
    if (run_shout() != 0)
        return EXIT_FAILURE;
    return EXIT_SUCCESS;
}
