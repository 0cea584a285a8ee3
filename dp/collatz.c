/*
 * collatz: the start below N with the longest Collatz chain (the smallest such start on ties),
 * and that chain's length in terms (27 -> 82 -> 41 -> ... -> 1 has 112 terms; 1 alone has 1).
 *
 *   L(1) = 1,   L(x) = s + L(y)   where y is the first value below N after x, s steps later
 *
 * Only values below N are memoized; the stretches of a chain above N (values reach about 5.7e10
 * for N = 10^6) are walked inline. So the states are exactly the x with 2 <= x < N, N - 2 of
 * them, whatever the threads do: every one is a start, asked for directly.
 *
 * Threads: the starts are cut into blocks of 1024; thread t takes blocks t, t + T, ... and keeps
 * its best start. A chain leaves its block at once, so the threads keep meeting on values that
 * another thread's chains have stored (hits) or are computing (waits).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define COLLATZ_BLOCK 1024
#define COLLATZ_MAX_BELOW (1ull << 40)
/* Memoized values along one chain: below 2^40 no chain has more than about 1500 terms. The
 * recursion counts its depth and fails cleanly past this rather than run off its stack. */
#define COLLATZ_MAX_DEPTH 4096

struct collatz {
    uint64_t below;
};

struct collatz_best {
    uint64_t start, terms;
};

struct collatz_run {
    memo_t              *memo;
    uint64_t             below;
    struct collatz_best *best; /* one per thread */
};

static _Thread_local unsigned collatz_depth;

static int collatz_fn(void *ctx, uint64_t x, uint64_t *terms)
{
    const struct collatz_run *r = ctx;
    uint64_t y = x, steps = 0;
    do {
        if (y % 2 == 0) {
            y /= 2;
        } else {
            if (y > (UINT64_MAX - 1) / 3)
                return DP_EOVERFLOW;
            y = 3 * y + 1;
        }
        steps++;
    } while (y >= r->below);
    if (y == 1) {
        *terms = steps + 1;
        return 0;
    }
    if (++collatz_depth > COLLATZ_MAX_DEPTH) {
        collatz_depth--;
        return DP_EDEPTH;
    }
    uint64_t rest;
    int rc = memo_get_u64(r->memo, y, collatz_fn, ctx, &rest);
    collatz_depth--;
    *terms = steps + rest;
    return rc;
}

static int collatz_load(const struct dp_args *args, struct dp_instance *inst)
{
    struct collatz *c = calloc(1, sizeof *c);
    if (c == NULL)
        return DP_EXIT_INPUT;
    if (args->below == NULL) {
        c->below = 1000000;
        snprintf(inst->what, sizeof inst->what, "starts below 1000000 (built-in)");
    } else {
        int rc = dp_parse_u64("collatz", "--below", args->below, 2, COLLATZ_MAX_BELOW, &c->below);
        if (rc != 0) {
            free(c);
            return rc;
        }
        snprintf(inst->what, sizeof inst->what, "starts below %" PRIu64, c->below);
    }
    inst->data = c;
    inst->states = c->below > 2 ? c->below - 2 : 0;
    inst->key_space = c->below; /* the values met above it go to the hash table */
    inst->states_exact = true;
    inst->depth = COLLATZ_MAX_DEPTH;
    inst->bytes_per_state = 0;
    inst->reference_bytes = c->below * sizeof(uint32_t);
    return 0;
}

static void collatz_unload(struct dp_instance *inst)
{
    free(inst->data);
}

static int collatz_begin(struct dp_job *job)
{
    struct collatz_run *r = malloc(sizeof *r);
    if (r == NULL)
        return MEMO_ENOMEM;
    r->best = calloc(job->threads, sizeof *r->best);
    if (r->best == NULL) {
        free(r);
        return MEMO_ENOMEM;
    }
    r->memo = job->memo;
    r->below = ((const struct collatz *)job->instance->data)->below;
    job->run = r;
    return 0;
}

static void collatz_end(struct dp_job *job)
{
    struct collatz_run *r = job->run;
    free(r->best);
    free(r);
}

static int collatz_work(struct dp_job *job, unsigned thread)
{
    struct collatz_run *r = job->run;
    struct collatz_best best = { 1, 1 }; /* start 1: one term */
    /* Without the split, the root is every start: each thread asks for all of them. */
    uint64_t first = job->split ? thread : 0, step = job->split ? job->threads : 1;
    for (uint64_t block = first; block * COLLATZ_BLOCK < r->below; block += step) {
        uint64_t end = (block + 1) * COLLATZ_BLOCK < r->below ? (block + 1) * COLLATZ_BLOCK : r->below;
        for (uint64_t s = block == 0 ? 2 : block * COLLATZ_BLOCK; s < end; s++) {
            uint64_t terms;
            int rc = memo_get_u64(r->memo, s, collatz_fn, r, &terms);
            if (rc != 0)
                return rc;
            if (terms > best.terms) { /* ascending starts: a tie keeps the smaller */
                best.terms = terms;
                best.start = s;
            }
        }
    }
    r->best[thread] = best;
    return 0;
}

static int collatz_finish(struct dp_job *job, struct dp_answer *out)
{
    const struct collatz_run *r = job->run;
    struct collatz_best best = r->best[0];
    for (unsigned t = 1; t < job->threads; t++)
        if (r->best[t].terms > best.terms || (r->best[t].terms == best.terms && r->best[t].start < best.start))
            best = r->best[t];
    out->number = dp_u64_string(best.start);
    out->extra_name = "terms";
    out->extra = best.terms;
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

/* Bottom-up reference: ascending starts, each walked until it drops below itself. */
static int collatz_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    uint64_t below = ((const struct collatz *)inst->data)->below;
    uint32_t *terms = malloc(below * sizeof *terms);
    if (terms == NULL)
        return MEMO_ENOMEM;
    uint64_t best = 1;
    terms[1] = 1;
    for (uint64_t s = 2; s < below; s++) {
        uint64_t x = s, steps = 0;
        while (x >= s) {
            if (x % 2 == 0) {
                x /= 2;
            } else {
                if (x > (UINT64_MAX - 1) / 3) {
                    free(terms);
                    return DP_EOVERFLOW;
                }
                x = 3 * x + 1;
            }
            steps++;
        }
        terms[s] = (uint32_t)(steps + terms[x]);
        if (terms[s] > terms[best])
            best = s;
    }
    out->number = dp_u64_string(best);
    out->extra_name = "terms";
    out->extra = terms[best];
    free(terms);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

const struct dp_problem dp_collatz = {
    .name = "collatz",
    .summary = "the start below N with the longest Collatz chain (smallest on ties), and its terms",
    .usage = "--below N",
    .builtin = "N = 10^6 (837799, 525 terms)",
    .options = { "--below" },
    .load = collatz_load,
    .unload = collatz_unload,
    .begin = collatz_begin,
    .end = collatz_end,
    .work = collatz_work,
    .finish = collatz_finish,
    .reference = collatz_reference,
};
