/*
 * partitions: p(N), the number of partitions of N, exact.
 *
 *   P(n, k) = P(n, k-1) + P(n-k, min(k, n-k)),   the partitions of n into parts of at most k,
 *   P(0, k) = 1,  P(n, 1) = 1,  P(n, k) = P(n, n) for k > n;   p(N) = P(N, N).
 *
 * States are the (n, k) with 2 <= k <= n that the recursion from (N, N) reaches: row N whole, rows
 * n <= N/2 whole (k up to n), and rows N/2 < n < N up to k = N - n (partitions_count says why).
 * Each step lowers n + k by at least one, so the recursion is at most 2N deep.
 *
 * Values: p(N) fits in 64 bits up to N = 416 (p(416) = 17873792969689876004, p(417) > 2^64 - 1).
 * Up to there the states are u64 keys and values (memo_get_u64). Past it they are GMP naturals,
 * stored as their limbs in byte values under 8-byte keys (memo_get), added with mpn_add: exact
 * for any N whose memo fits in memory.
 *
 * Threads: thread t first solves rows 2 + t, 2 + t + T, ... in ascending order, asking for each
 * row's widest state in the recursion, (m, min(m, N - m)); a row needs the rows below it, which
 * the other threads are computing or have stored. Then all ask for (N, N). The bottom-up
 * reference is Euler's pentagonal-number recurrence, a different method altogether.
 */
#include <gmp.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define PARTITIONS_MAX_U64 416
#define PARTITIONS_MAX_N 2000000000u

struct partitions {
    uint64_t n;
};

struct partitions_run {
    memo_t  *memo;
    uint64_t n;
};

/* Row-major over the (N + 1) x (N + 1) square of (n, k): a dense range (memo's dense_keys) for
 * the u64 states. */
static inline uint64_t partitions_key(const struct partitions_run *r, uint64_t n, uint64_t k)
{
    return n * (r->n + 1) + k;
}

/* ---- u64 values ---- */

static int partitions_fn(void *ctx, uint64_t key, uint64_t *value);

static inline int partitions_cell(const struct partitions_run *r, uint64_t n, uint64_t k, uint64_t *v)
{
    k = k < n ? k : n;
    if (n == 0 || k == 1) {
        *v = 1;
        return 0;
    }
    return memo_get_u64(r->memo, partitions_key(r, n, k), partitions_fn, (void *)r, v);
}

static int partitions_fn(void *ctx, uint64_t key, uint64_t *value)
{
    const struct partitions_run *r = ctx;
    uint64_t n = key / (r->n + 1), k = key % (r->n + 1), fewer, rest;
    int rc;
    if ((rc = partitions_cell(r, n, k - 1, &fewer)) != 0 || (rc = partitions_cell(r, n - k, k, &rest)) != 0)
        return rc;
    if (__builtin_add_overflow(fewer, rest, value))
        return DP_EOVERFLOW; /* cannot happen for n <= 416 */
    return 0;
}

/* ---- GMP values ---- */

/* A value being read: its limbs, viewed through a ref (or the constant 1). */
struct partitions_big {
    memo_ref_t       ref;
    const mp_limb_t *limbs;
    mp_size_t        size;
};

static const mp_limb_t partitions_one = 1;

static int partitions_big_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out);

static int partitions_big_cell(const struct partitions_run *r, uint64_t n, uint64_t k, struct partitions_big *v)
{
    memo_ref_t empty = MEMO_REF_INIT;
    v->ref = empty;
    k = k < n ? k : n;
    if (n == 0 || k == 1) {
        v->limbs = &partitions_one;
        v->size = 1;
        return 0;
    }
    uint64_t key = partitions_key(r, n, k);
    int rc = memo_get(r->memo, &key, sizeof key, partitions_big_fn, (void *)r, &v->ref);
    if (rc != 0)
        return rc;
    v->limbs = v->ref.data;
    v->size = (mp_size_t)(v->ref.len / sizeof(mp_limb_t));
    return 0;
}

static int partitions_big_fn(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    const struct partitions_run *r = ctx;
    uint64_t packed;
    (void)key_len;
    memcpy(&packed, key, sizeof packed);
    uint64_t n = packed / (r->n + 1), k = packed % (r->n + 1);
    struct partitions_big a, b;
    int rc = partitions_big_cell(r, n, k - 1, &a);
    if (rc != 0)
        return rc;
    /* a's ref stays held across b's recursion: memo allows it, and nothing is ever forgotten
     * here, so the ref delays no reclamation. */
    if ((rc = partitions_big_cell(r, n - k, k, &b)) != 0) {
        memo_release(&a.ref);
        return rc;
    }
    const struct partitions_big *big = a.size >= b.size ? &a : &b, *small = big == &a ? &b : &a;
    /* Most sums need no more limbs than the larger term; the rare carry makes room and adds again. */
    mp_limb_t *sum = memo_result_alloc(out, (size_t)big->size * sizeof(mp_limb_t));
    if (sum != NULL && mpn_add(sum, big->limbs, big->size, small->limbs, small->size) != 0) {
        sum = memo_result_alloc(out, (size_t)(big->size + 1) * sizeof(mp_limb_t));
        if (sum != NULL)
            sum[big->size] = mpn_add(sum, big->limbs, big->size, small->limbs, small->size);
    }
    memo_release(&b.ref);
    memo_release(&a.ref);
    return sum != NULL ? 0 : MEMO_ENOMEM;
}

/* ---- counting the states ---- */

static uint64_t partitions_count(uint64_t n)
{
    if (n < 2)
        return 0;
    /* Row N: (N, N) down to (N, 2). A row m < N is entered from row N as (m, min(N - m, m)), and
     * from a row m' between them as (m, min(m' - m, m)) by a state (m', m' - m) of that row; by
     * induction from the top, row m' holds k <= N - m' only, so m' - m <= N - m' < N - m. So row m
     * holds k = 2 .. min(m, N - m), each reached down the chain (m, k) -> (m, k - 1). */
    uint64_t half = n / 2, total = n - 1;
    total += half * (half - 1) / 2;           /* rows 2 .. N/2: m - 1 states each */
    if (n - half >= 2)                          /* rows N/2 + 1 .. N - 1: N - m - 1 each */
        total += (n - half - 2) * (n - half - 1) / 2;
    return total;
}

/* Limbs of p(n), from the Hardy-Ramanujan estimate, plus one. */
static uint64_t partitions_limbs(uint64_t n)
{
    if (n < 2)
        return 1;
    double bits = M_PI * sqrt(2.0 * (double)n / 3.0) / log(2.0) - log2(4.0 * sqrt(3.0) * (double)n);
    return (uint64_t)(bits / GMP_NUMB_BITS) + 2;
}

/* ---- loading ---- */

static int partitions_load(const struct dp_args *args, struct dp_instance *inst)
{
    struct partitions *p = calloc(1, sizeof *p);
    if (p == NULL)
        return DP_EXIT_INPUT;
    if (args->n == NULL) {
        p->n = 1000;
        snprintf(inst->what, sizeof inst->what, "N = 1000 (built-in; past 416, so GMP values)");
    } else {
        int rc = dp_parse_u64("partitions", "--n", args->n, 0, PARTITIONS_MAX_N, &p->n);
        if (rc != 0) {
            free(p);
            return rc;
        }
        snprintf(inst->what, sizeof inst->what, "N = %" PRIu64 " (%s values)", p->n,
                 p->n <= PARTITIONS_MAX_U64 ? "u64" : "GMP");
    }
    inst->data = p;
    inst->states = partitions_count(p->n);
    if (p->n <= PARTITIONS_MAX_U64) /* past it, byte keys: the hash table */
        inst->key_space = (p->n + 1) * (p->n + 1);
    inst->states_exact = true;
    inst->depth = 2 * p->n + 2;
    /* A byte entry: an 80-byte head and the key, rounded to 16, then the limbs; an in-flight
     * marker of the same head while computing; table slots. Measured: about 150 bytes at N = 1000. */
    inst->bytes_per_state = p->n <= PARTITIONS_MAX_U64 ? 0 : 128 + 8 * partitions_limbs(p->n);
    inst->reference_bytes = (p->n + 1) * (sizeof(mpz_t) + 8 * partitions_limbs(p->n));
    return 0;
}

static void partitions_unload(struct dp_instance *inst)
{
    free(inst->data);
}

/* ---- running ---- */

static int partitions_begin(struct dp_job *job)
{
    struct partitions_run *r = malloc(sizeof *r);
    if (r == NULL)
        return MEMO_ENOMEM;
    r->memo = job->memo;
    r->n = ((const struct partitions *)job->instance->data)->n;
    job->run = r;
    return 0;
}

static void partitions_end(struct dp_job *job)
{
    free(job->run);
}

/* Asks for (n, k); a big value's ref is released at once. */
static int partitions_ask(const struct partitions_run *r, uint64_t n, uint64_t k)
{
    if (r->n <= PARTITIONS_MAX_U64) {
        uint64_t v;
        return partitions_cell(r, n, k, &v);
    }
    struct partitions_big v;
    int rc = partitions_big_cell(r, n, k, &v);
    memo_release(&v.ref);
    return rc;
}

static int partitions_work(struct dp_job *job, unsigned thread)
{
    const struct partitions_run *r = job->run;
    int rc;
    for (uint64_t m = 2 + (uint64_t)thread; job->split && m < r->n; m += job->threads) {
        uint64_t k = m < r->n - m ? m : r->n - m;
        if (k >= 2 && (rc = partitions_ask(r, m, k)) != 0)
            return rc;
    }
    return partitions_ask(r, r->n, r->n);
}

static char *partitions_string(const mp_limb_t *limbs, mp_size_t size)
{
    mpz_t z;
    mpz_roinit_n(z, limbs, size);
    char *s = malloc(mpz_sizeinbase(z, 10) + 2);
    if (s != NULL)
        mpz_get_str(s, 10, z);
    return s;
}

static int partitions_finish(struct dp_job *job, struct dp_answer *out)
{
    const struct partitions_run *r = job->run;
    int rc = 0;
    if (r->n < 2) {
        out->number = dp_u64_string(1);
    } else if (r->n <= PARTITIONS_MAX_U64) {
        uint64_t v;
        if ((rc = memo_lookup_u64(job->memo, partitions_key(r, r->n, r->n), &v)) != 0)
            return rc;
        out->number = dp_u64_string(v);
    } else {
        uint64_t key = partitions_key(r, r->n, r->n);
        memo_ref_t ref = MEMO_REF_INIT;
        if ((rc = memo_lookup(job->memo, &key, sizeof key, &ref)) != 0)
            return rc;
        out->number = partitions_string(ref.data, (mp_size_t)(ref.len / sizeof(mp_limb_t)));
        memo_release(&ref);
    }
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

/* ---- bottom-up reference: Euler's pentagonal number theorem ---- */

static int partitions_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    uint64_t n = ((const struct partitions *)inst->data)->n;
    mpz_t *p = malloc((n + 1) * sizeof *p);
    if (p == NULL)
        return MEMO_ENOMEM;
    mpz_init_set_ui(p[0], 1);
    for (uint64_t m = 1; m <= n; m++) {
        mpz_init(p[m]);
        /* p(m) = sum over k >= 1 of (-1)^(k+1) (p(m - k(3k-1)/2) + p(m - k(3k+1)/2)) */
        for (uint64_t k = 1;; k++) {
            uint64_t g1 = k * (3 * k - 1) / 2, g2 = k * (3 * k + 1) / 2;
            if (g1 > m)
                break;
            if (k % 2 == 1)
                mpz_add(p[m], p[m], p[m - g1]);
            else
                mpz_sub(p[m], p[m], p[m - g1]);
            if (g2 <= m) {
                if (k % 2 == 1)
                    mpz_add(p[m], p[m], p[m - g2]);
                else
                    mpz_sub(p[m], p[m], p[m - g2]);
            }
        }
    }
    out->number = malloc(mpz_sizeinbase(p[n], 10) + 2);
    if (out->number != NULL)
        mpz_get_str(out->number, 10, p[n]);
    for (uint64_t m = 0; m <= n; m++)
        mpz_clear(p[m]);
    free(p);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

const struct dp_problem dp_partitions = {
    .name = "partitions",
    .summary = "p(N), the number of partitions of N, exact (u64 up to N = 416, GMP past it)",
    .usage = "--n N",
    .builtin = "N = 1000 (p(1000) = 24061467864032622473692149727991)",
    .options = { "--n" },
    .load = partitions_load,
    .unload = partitions_unload,
    .begin = partitions_begin,
    .end = partitions_end,
    .work = partitions_work,
    .finish = partitions_finish,
    .reference = partitions_reference,
};
