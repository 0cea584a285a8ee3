/*
 * matrixchain: the fewest scalar multiplications to multiply a chain of matrices A0 A1 ... A(k-1),
 * where Ai is d[i] x d[i+1] and the file lists d0 d1 ... dk.
 *
 *   M(i, j) = min over i <= s < j of M(i, s) + M(s+1, j) + d[i] d[s+1] d[j+1],   M(i, i) = 0
 *
 * The recursion from (0, k-1) splits at every s, so it reaches every interval i < j: k(k-1)/2
 * states (single matrices are not memoized), at most k deep. Costs are checked at load time to
 * fit in 64 bits: every bracketing costs at most (k - 1) * max(d)^3.
 *
 * Threads: in rounds of interval lengths STRIDE, 2 STRIDE, ..., thread t asks for the intervals
 * of that length whose start lies in its t-th share of the chain. Each such recursion computes
 * the shorter intervals inside it that earlier rounds left out; neighbours share them, so
 * threads meet (hits, waits) where their shares touch. Then all ask for (0, k-1).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define MATRIXCHAIN_STRIDE 8
#define MATRIXCHAIN_MAX_K 0xFFFFFFFEu

struct matrixchain {
    uint64_t *dims; /* k + 1 of them */
    uint64_t  k;    /* matrices */
};

struct matrixchain_run {
    memo_t         *memo;
    const uint64_t *dims;
    uint64_t        k;
};

/* Row-major over the k x k (i, j) square: a dense range (memo's dense_keys). */
static inline uint64_t matrixchain_key(const struct matrixchain_run *r, uint64_t i, uint64_t j)
{
    return i * r->k + j;
}

static int matrixchain_fn(void *ctx, uint64_t key, uint64_t *value);

static inline int matrixchain_cell(const struct matrixchain_run *r, uint64_t i, uint64_t j, uint64_t *v)
{
    if (i == j) {
        *v = 0;
        return 0;
    }
    return memo_get_u64(r->memo, matrixchain_key(r, i, j), matrixchain_fn, (void *)r, v);
}

static int matrixchain_fn(void *ctx, uint64_t key, uint64_t *value)
{
    const struct matrixchain_run *r = ctx;
    uint64_t i = key / r->k, j = key % r->k, best = UINT64_MAX;
    for (uint64_t s = i; s < j; s++) {
        uint64_t left, right;
        int rc;
        if ((rc = matrixchain_cell(r, i, s, &left)) != 0 || (rc = matrixchain_cell(r, s + 1, j, &right)) != 0)
            return rc;
        uint64_t cost = left + right + r->dims[i] * r->dims[s + 1] * r->dims[j + 1];
        best = cost < best ? cost : best;
    }
    *value = best;
    return 0;
}

/* The built-in instance: 400 matrices with dimensions from 10 to 1000. */
static int matrixchain_builtin(struct matrixchain *c)
{
    uint64_t s = 0x5eed0004;
    c->k = 400;
    c->dims = malloc((c->k + 1) * sizeof *c->dims);
    if (c->dims == NULL)
        return DP_EXIT_INPUT;
    for (uint64_t i = 0; i <= c->k; i++)
        c->dims[i] = 10 + dp_random(&s) % 991;
    return 0;
}

static int matrixchain_read(const char *path, struct matrixchain *c)
{
    size_t count, *lines;
    int rc = dp_read_numbers("matrixchain", "--dims", path, UINT64_MAX, &c->dims, &count, &lines);
    if (rc != 0)
        return rc;
    if (count < 2) {
        dp_error("matrixchain", "--dims '%s': %s (at least two dimensions, d0 d1, make one matrix)", path,
                 count == 0 ? "no dimensions" : "only one dimension");
        rc = DP_EXIT_INPUT;
    }
    for (size_t x = 0; rc == 0 && x < count; x++) {
        if (c->dims[x] == 0) {
            dp_error("matrixchain", "--dims '%s', line %zu: a dimension of 0", path, lines[x]);
            rc = DP_EXIT_INPUT;
        }
    }
    if (rc == 0 && count - 1 > MATRIXCHAIN_MAX_K) {
        dp_error("matrixchain", "--dims '%s': more than %u matrices", path, MATRIXCHAIN_MAX_K);
        rc = DP_EXIT_INPUT;
    }
    c->k = count - 1;
    free(lines);
    if (rc == 0) {
        uint64_t most = 0;
        for (size_t x = 0; x < count; x++)
            most = c->dims[x] > most ? c->dims[x] : most;
        unsigned __int128 cube = (unsigned __int128)most * most * most;
        if (most > (1u << 21) || cube * (c->k > 1 ? c->k - 1 : 1) > UINT64_MAX) {
            dp_error("matrixchain", "--dims '%s': with dimensions up to %" PRIu64 " and %" PRIu64
                     " matrices, costs could pass 2^64 - 1", path, most, c->k);
            rc = DP_EXIT_INPUT;
        }
    }
    return rc;
}

static int matrixchain_load(const struct dp_args *args, struct dp_instance *inst)
{
    struct matrixchain *c = calloc(1, sizeof *c);
    int rc;
    if (c == NULL)
        return DP_EXIT_INPUT;
    if (args->dims == NULL) {
        rc = matrixchain_builtin(c);
        snprintf(inst->what, sizeof inst->what, "%" PRIu64 " matrices (built-in: dimensions from 10 to 1000)", c->k);
    } else {
        rc = matrixchain_read(args->dims, c);
        snprintf(inst->what, sizeof inst->what, "%" PRIu64 " matrices (%s)", c->k, args->dims);
    }
    if (rc != 0) {
        free(c->dims);
        free(c);
        return rc;
    }
    inst->data = c;
    inst->states = c->k * (c->k - 1) / 2;
    inst->key_space = c->k * c->k;
    inst->states_exact = true;
    inst->depth = c->k;
    inst->bytes_per_state = 0;
    inst->reference_bytes = c->k * c->k * sizeof(uint64_t);
    return 0;
}

static void matrixchain_unload(struct dp_instance *inst)
{
    struct matrixchain *c = inst->data;
    if (c != NULL) {
        free(c->dims);
        free(c);
    }
}

static int matrixchain_begin(struct dp_job *job)
{
    const struct matrixchain *c = job->instance->data;
    struct matrixchain_run *r = malloc(sizeof *r);
    if (r == NULL)
        return MEMO_ENOMEM;
    r->memo = job->memo;
    r->dims = c->dims;
    r->k = c->k;
    job->run = r;
    return 0;
}

static void matrixchain_end(struct dp_job *job)
{
    free(job->run);
}

static int matrixchain_work(struct dp_job *job, unsigned thread)
{
    const struct matrixchain_run *r = job->run;
    uint64_t v;
    int rc;
    /* Intervals (i, i + span), span = j - i. */
    for (uint64_t span = MATRIXCHAIN_STRIDE; job->split && span < r->k; span += MATRIXCHAIN_STRIDE) {
        uint64_t starts = r->k - span;
        uint64_t from = starts * thread / job->threads, to = starts * (thread + 1) / job->threads;
        for (uint64_t i = from; i < to; i++)
            if ((rc = matrixchain_cell(r, i, i + span, &v)) != 0)
                return rc;
    }
    return matrixchain_cell(r, 0, r->k - 1, &v);
}

static int matrixchain_finish(struct dp_job *job, struct dp_answer *out)
{
    const struct matrixchain_run *r = job->run;
    uint64_t v = 0;
    int rc = r->k < 2 ? 0 : memo_lookup_u64(job->memo, matrixchain_key(r, 0, r->k - 1), &v);
    if (rc != 0)
        return rc;
    out->number = dp_u64_string(v);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

/* Bottom-up reference: the textbook O(k^3) over interval lengths. */
static int matrixchain_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    const struct matrixchain *c = inst->data;
    uint64_t k = c->k, *m = calloc(k * k, sizeof *m);
    if (m == NULL)
        return MEMO_ENOMEM;
    for (uint64_t span = 1; span < k; span++) {
        for (uint64_t i = 0; i + span < k; i++) {
            uint64_t j = i + span, best = UINT64_MAX;
            for (uint64_t s = i; s < j; s++) {
                uint64_t cost = m[i * k + s] + m[(s + 1) * k + j] + c->dims[i] * c->dims[s + 1] * c->dims[j + 1];
                best = cost < best ? cost : best;
            }
            m[i * k + j] = best;
        }
    }
    out->number = dp_u64_string(m[k - 1]);
    free(m);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

const struct dp_problem dp_matrixchain = {
    .name = "matrixchain",
    .summary = "the fewest scalar multiplications for a matrix chain with dimensions d0 d1 ... dk",
    .usage = "--dims FILE",
    .builtin = "400 matrices with dimensions from 10 to 1000",
    .options = { "--dims" },
    .load = matrixchain_load,
    .unload = matrixchain_unload,
    .begin = matrixchain_begin,
    .end = matrixchain_end,
    .work = matrixchain_work,
    .finish = matrixchain_finish,
    .reference = matrixchain_reference,
};
