/*
 * test_thread_exit: what a thread leaves behind when it exits.
 *
 *  - a ref released from a later thread-key destructor: a thread makes its first memo call, then
 *    creates a pthread key of its own and releases a ref in that key's destructor. glibc runs
 *    memo's destructor first. The value must still be readable in the later destructor (while
 *    the main thread forgets its key and reclaims), the release must end the section exactly
 *    once, and reclamation must go on afterwards, for the main thread and for the thread that
 *    reuses the exited one's state. Catches a destructor that ends a section a ref still holds (the value is freed
 *    under the ref: wrong bytes, ASan heap-use-after-free) and a late release that drives the
 *    nesting count below zero (the epoch is pinned for good: the bytes of 100k forgotten values
 *    never come back).
 *  - entries retired by exited threads: 4 threads churn get+forget while another thread holds a
 *    ref (nothing can be reclaimed meanwhile), then exit; once the ref is released, the main
 *    thread's own retires and a memo_clear must reclaim what the exited threads retired.
 *    Catches pending frees that stay with a parked thread state until memo_destroy.
 */
#include "tap.h"
#include "helpers.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

enum { VALUE_LEN = 4096 };

static int fill(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    (void)ctx, (void)key_len;
    unsigned char *p = memo_result_alloc(out, VALUE_LEN);
    if (p == NULL)
        return MEMO_ENOMEM;
    memset(p, *(const unsigned char *)key, VALUE_LEN);
    return 0;
}

static uint64_t bytes_of(memo_t *m)
{
    memo_stats_t s;
    memo_stats(m, &s);
    return s.bytes;
}

/* Stores and forgets n values of VALUE_LEN bytes under keys from base on, then clears if asked
 * (retires and clears poll the epoch). Returns the number of calls that failed. */
static int churn(memo_t *m, uint32_t base, uint32_t n, bool clear)
{
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = base + i;
        memo_ref_t r = MEMO_REF_INIT;
        if (memo_get(m, &k, sizeof k, fill, NULL, &r) != 0)
            bad++;
        memo_release(&r);
        if (memo_forget(m, &k, sizeof k) != 0)
            bad++;
    }
    if (clear)
        memo_clear(m);
    return bad;
}

/* ---- a ref released from a later thread-key destructor ---- */

static memo_t       *M;
static pthread_key_t late_key;
static atomic_int    in_destructor, reclaimed, late_ok;

static void late_destructor(void *arg)
{
    memo_ref_t *r = arg;
    atomic_store(&in_destructor, 1);
    /* The main thread now forgets the key and reclaims as much as it can. */
    while (!atomic_load(&reclaimed))
        tap_sleep_ms(1);
    bool good = r->len == VALUE_LEN;
    for (size_t i = 0; good && i < VALUE_LEN; i++)
        good = ((const unsigned char *)r->data)[i] == 'L';
    memo_release(r);
    free(r);
    atomic_store(&late_ok, good ? 1 : -1);
}

static void *late_thread(void *arg)
{
    (void)arg;
    memo_ref_t warm = MEMO_REF_INIT;
    /* The first memo call: memo's own thread key exists from here on. */
    if (memo_get(M, "w", 1, fill, NULL, &warm) == 0)
        memo_release(&warm);
    if (pthread_key_create(&late_key, late_destructor) != 0)
        return NULL;
    memo_ref_t *r = malloc(sizeof *r);
    *r = (memo_ref_t)MEMO_REF_INIT;
    if (memo_get(M, "L", 1, fill, NULL, r) != 0) {
        free(r);
        return NULL;
    }
    pthread_setspecific(late_key, r);
    return NULL; /* memo's destructor runs, then late_destructor */
}

static void *reuser(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)churn(M, 1000000, 100000, true);
}

static void test_late_release(void)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = MEMO_F_SYSTEM_ALLOC; /* exact byte counts; every free visible to ASan */
    if (test_memo_create(&M, &cfg) != 0)
        bail_out("memo_create");
    atomic_store(&in_destructor, 0);
    atomic_store(&reclaimed, 0);
    atomic_store(&late_ok, 0);
    pthread_t t;
    pthread_create(&t, NULL, late_thread, NULL);
    uint64_t deadline = tap_now_ns() + 20000000000ull;
    while (!atomic_load(&in_destructor) && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    ok(atomic_load(&in_destructor), "late release: the thread's own key destructor runs");
    /* Forget the held key and poll the epoch many times over: a held ref must keep it alive. */
    is_code(memo_forget(M, "L", 1), 0, "late release: the held key is forgotten meanwhile");
    is_int(churn(M, 0, 2000, true), 0, "late release: 2000 more values stored and forgotten meanwhile");
    atomic_store(&reclaimed, 1);
    pthread_join(t, NULL);
    is_int(atomic_load(&late_ok), 1, "late release: the ref still reads its value in the later destructor");
    pthread_key_delete(late_key);

    /* Reclamation goes on: for the main thread, whose polls scan the exited thread's record, */
    uint64_t base = bytes_of(M);
    is_int(churn(M, 5000000, 20000, true), 0, "late release: the main thread stores and forgets 20000 values");
    uint64_t main_after = bytes_of(M);
    diag("late release: bytes %llu before, %llu after the main thread forgot 20000 values of %d bytes",
         (unsigned long long)base, (unsigned long long)main_after, VALUE_LEN);
    cmp_u64(main_after, <, base + 64ull * 200 * VALUE_LEN,
            "late release: the main thread's forgotten values come back (the exited thread's record does not pin the epoch)");
    /* and for the thread that reuses the exited one's state. */
    base = bytes_of(M);
    pthread_t r;
    void *bad = NULL;
    pthread_create(&r, NULL, reuser, NULL);
    pthread_join(r, &bad);
    is_int((int)(intptr_t)bad, 0, "late release: a new thread stores and forgets 100000 values");
    uint64_t after = bytes_of(M);
    is_int(churn(M, 3000000, 64, true), 0, "late release: the main thread forgets 64 more");
    uint64_t settled = bytes_of(M);
    diag("late release: bytes %llu before, %llu after 100000 values of %d bytes were forgotten, %llu after 64 more",
         (unsigned long long)base, (unsigned long long)after, VALUE_LEN, (unsigned long long)settled);
    /* 100000 values of 4 KiB are 400 MB: what is left must be a few polls' worth of pending frees */
    cmp_u64(settled, <, base + 64ull * 200 * VALUE_LEN,
            "late release: the values forgotten by the thread that reuses its state come back");
    memo_destroy(M);
}

/* ---- entries retired by exited threads ---- */

enum { CHURNERS = 4, CHURN_KEYS = 5000 };
static atomic_int holder_has_ref, holder_may_release;

static void *holder(void *arg)
{
    (void)arg;
    memo_ref_t r = MEMO_REF_INIT;
    int rc = memo_get(M, "held", 4, fill, NULL, &r);
    atomic_store(&holder_has_ref, rc == 0 ? 1 : -1);
    while (!atomic_load(&holder_may_release))
        tap_sleep_ms(1);
    memo_release(&r);
    return NULL;
}

static pthread_barrier_t start;

static void *churner(void *arg)
{
    tap_barrier_wait(&start);
    return (void *)(intptr_t)churn(M, (uint32_t)(uintptr_t)arg * CHURN_KEYS, CHURN_KEYS, false);
}

static void test_exited_retires(unsigned flags, const char *label)
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.flags = flags;
    if (test_memo_create(&M, &cfg) != 0)
        bail_out("memo_create");
    uint64_t empty = bytes_of(M);
    atomic_store(&holder_has_ref, 0);
    atomic_store(&holder_may_release, 0);
    pthread_t h;
    pthread_create(&h, NULL, holder, NULL);
    while (atomic_load(&holder_has_ref) == 0)
        tap_sleep_ms(1);
    pthread_t t[CHURNERS];
    tap_barrier_init(&start, CHURNERS);
    for (unsigned i = 0; i < CHURNERS; i++)
        pthread_create(&t[i], NULL, churner, (void *)(uintptr_t)(i + 1));
    int bad = 0;
    for (unsigned i = 0; i < CHURNERS; i++) {
        void *b = NULL;
        pthread_join(t[i], &b);
        bad += (int)(intptr_t)b;
    }
    tap_barrier_destroy(&start);
    is_int(bad, 0, "%s: %d threads stored and forgot %d values each while a ref was held, and exited",
           label, CHURNERS, CHURN_KEYS);
    uint64_t pinned = bytes_of(M);
    atomic_store(&holder_may_release, 1);
    pthread_join(h, NULL);
    is_int(churn(M, 100, 2000, true), 0, "%s: the main thread stores and forgets 2000 values", label);
    uint64_t after = bytes_of(M);
    diag("%s: bytes %llu empty, %llu while the ref pinned %d forgotten values, %llu after the main thread's retires and clear",
         label, (unsigned long long)empty, (unsigned long long)pinned, CHURNERS * CHURN_KEYS, (unsigned long long)after);
    cmp_u64(pinned, >, empty + (uint64_t)CHURNERS * CHURN_KEYS * VALUE_LEN / 2,
            "%s: the held ref kept the forgotten values (the check below means something)", label);
    cmp_u64(after, <, empty + (pinned - empty) / 10,
            "%s: what the exited threads retired is reclaimed by the others' polls", label);
    memo_destroy(M);
}

int main(void)
{
    tap_watchdog(100);
    test_late_release();
    test_exited_retires(0, "default allocator");
    test_exited_retires(MEMO_F_SYSTEM_ALLOC, "MEMO_F_SYSTEM_ALLOC");
    return done_testing();
}
