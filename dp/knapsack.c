/*
 * knapsack: 0/1 knapsack, the best total value of items whose weights sum to at most W.
 *
 *   K(i, c) = max(K(i-1, c), v[i-1] + K(i-1, c - w[i-1]) if w[i-1] <= c),   K(0, c) = 0
 *
 * over the first i items with capacity c; the answer is K(n, W). The recursion from (n, W) only
 * meets capacities W minus a subset sum of the last items, so with W up to 10^9 the states are
 * sparse: level i holds the set R(i) of such capacities, R(n) = {W},
 * R(i-1) = R(i) U {c - w[i-1] : c in R(i), c >= w[i-1]}. Before the run, knapsack_count counts them
 * exactly (sorted arrays while a level is small, a bitset of W + 1 bits once it is dense), and
 * stops as soon as the count passes what could fit in memory.
 *
 * Threads: thread t first solves the sub-instance over the first n - L items (L = log2 of the
 * thread count, rounded up) with the capacity left after taking the last L items that the bits of
 * t select (when that capacity is not negative); so the threads start in different subtrees of
 * the recursion, and meet (sharing, or waiting on each other's computations) where the subtrees
 * overlap. Then all ask for (n, W).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define KNAPSACK_MAX_W 1000000000u     /* the bitset of a level is W / 8 bytes */
#define KNAPSACK_MAX_ITEMS 0xFFFFFFFEu /* i is packed into 32 bits */

struct knapsack {
    uint64_t *weight, *value;
    uint64_t  n, capacity;
};

struct knapsack_run {
    memo_t                *memo;
    const struct knapsack *k;
};

static inline uint64_t knapsack_key(uint64_t i, uint64_t c)
{
    return i << 32 | c;
}

static int knapsack_fn(void *ctx, uint64_t key, uint64_t *value);

static inline int knapsack_cell(const struct knapsack_run *r, uint64_t i, uint64_t c, uint64_t *v)
{
    if (i == 0) {
        *v = 0;
        return 0;
    }
    return memo_get_u64(r->memo, knapsack_key(i, c), knapsack_fn, (void *)r, v);
}

static int knapsack_fn(void *ctx, uint64_t key, uint64_t *value)
{
    const struct knapsack_run *r = ctx;
    uint64_t i = key >> 32, c = key & 0xFFFFFFFFu;
    uint64_t w = r->k->weight[i - 1], skip, take = 0;
    int rc = knapsack_cell(r, i - 1, c, &skip);
    if (rc == 0 && w <= c && (rc = knapsack_cell(r, i - 1, c - w, &take)) == 0)
        take += r->k->value[i - 1]; /* cannot overflow: load checked that all values sum in 64 bits */
    *value = take > skip ? take : skip;
    return rc;
}

/* ---- counting the states ---- */

/* Sum of |R(i)| for i = n down to 1, or a number above limit as soon as it passes limit;
 * UINT64_MAX when memory runs out. */
static uint64_t knapsack_count(const struct knapsack *k, uint64_t limit)
{
    uint64_t words = k->capacity / 64 + 1, total = 0;
    uint64_t *set = malloc(sizeof *set), *next = NULL, *bits = NULL, *shifted = NULL;
    size_t size = 1, cap = 1;
    if (set == NULL)
        return UINT64_MAX;
    set[0] = k->capacity; /* R(n), ascending */
    for (uint64_t i = k->n; i >= 1; i--) {
        uint64_t w = k->weight[i - 1];
        total += bits != NULL ? 0 : size;
        if (bits != NULL) {
            for (uint64_t x = 0; x < words; x++)
                total += (uint64_t)__builtin_popcountll(bits[x]);
        }
        if (total > limit || i == 1)
            break;
        if (bits == NULL && size > words) { /* dense now: a bitset is smaller and faster */
            bits = calloc(words, sizeof *bits);
            shifted = malloc(words * sizeof *shifted);
            if (bits == NULL || shifted == NULL) {
                total = UINT64_MAX;
                break;
            }
            for (size_t x = 0; x < size; x++)
                bits[set[x] / 64] |= 1ull << (set[x] % 64);
        }
        if (bits != NULL) {
            if (w > k->capacity)
                continue;
            /* bits |= bits >> w: every capacity c >= w also gives c - w. */
            uint64_t q = w / 64, s = w % 64;
            for (uint64_t x = 0; x < words; x++) {
                uint64_t lo = x + q < words ? bits[x + q] >> s : 0;
                uint64_t hi = s != 0 && x + q + 1 < words ? bits[x + q + 1] << (64 - s) : 0;
                shifted[x] = lo | hi;
            }
            for (uint64_t x = 0; x < words; x++)
                bits[x] |= shifted[x];
            continue;
        }
        /* Merge set with {c - w : c in set, c >= w}, both ascending, without duplicates. */
        if (2 * size > cap) {
            free(next);
            cap = 2 * size;
            next = malloc(cap * sizeof *next);
            uint64_t *grown = realloc(set, cap * sizeof *set);
            if (next == NULL || grown == NULL) {
                free(grown != NULL ? grown : set);
                set = NULL;
                total = UINT64_MAX;
                break;
            }
            set = grown;
        }
        size_t a = 0, b = 0, out = 0;
        while (b < size && set[b] < w)
            b++;
        while (a < size || b < size) {
            uint64_t x = a < size ? set[a] : UINT64_MAX, y = b < size ? set[b] - w : UINT64_MAX;
            uint64_t least = x < y ? x : y;
            if (out == 0 || next[out - 1] != least)
                next[out++] = least;
            a += x == least;
            b += y == least;
        }
        uint64_t *t = set;
        set = next;
        next = t;
        size = out;
    }
    free(set);
    free(next);
    free(bits);
    free(shifted);
    return total;
}

/* ---- loading ---- */

/* The built-in instance: 200 items whose weights are multiples of 1000 between 1000 and 500000,
 * values around weight / 1000 times 50-150, W = 10^7: at most 10^4 + 1 capacities per level. */
static int knapsack_builtin(struct knapsack *k)
{
    uint64_t s = 0x5eed0003;
    k->n = 200;
    k->capacity = 10000000;
    k->weight = malloc(k->n * sizeof *k->weight);
    k->value = malloc(k->n * sizeof *k->value);
    if (k->weight == NULL || k->value == NULL)
        return DP_EXIT_INPUT;
    for (uint64_t i = 0; i < k->n; i++) {
        k->weight[i] = (1 + dp_random(&s) % 500) * 1000;
        k->value[i] = k->weight[i] / 1000 * (50 + dp_random(&s) % 101);
    }
    return 0;
}

static int knapsack_read(const char *path, struct knapsack *k)
{
    uint64_t *numbers;
    size_t count, *lines;
    int rc = dp_read_numbers("knapsack", "--items", path, UINT64_MAX, &numbers, &count, &lines);
    if (rc != 0)
        return rc;
    for (size_t x = 0; x < count && rc == 0; x++) {
        bool pair_start = x % 2 == 0;
        if ((pair_start && x > 0 && lines[x] == lines[x - 1]) || (!pair_start && lines[x] != lines[x - 1]) ||
            (pair_start && x + 1 == count)) {
            dp_error("knapsack", "--items '%s', line %zu: expected one 'weight value' pair per line", path,
                     lines[x]);
            rc = DP_EXIT_INPUT;
        }
    }
    if (rc == 0 && count == 0) {
        dp_error("knapsack", "--items '%s': no items", path);
        rc = DP_EXIT_INPUT;
    }
    if (rc == 0 && count / 2 > KNAPSACK_MAX_ITEMS) {
        dp_error("knapsack", "--items '%s': more than %u items", path, KNAPSACK_MAX_ITEMS);
        rc = DP_EXIT_INPUT;
    }
    k->n = count / 2;
    if (rc == 0) {
        k->weight = malloc(k->n * sizeof *k->weight);
        k->value = malloc(k->n * sizeof *k->value);
        if (k->weight == NULL || k->value == NULL) {
            dp_error("knapsack", "--items '%s': out of memory", path);
            rc = DP_EXIT_INPUT;
        }
    }
    uint64_t sum = 0;
    for (uint64_t i = 0; rc == 0 && i < k->n; i++) {
        k->weight[i] = numbers[2 * i];
        k->value[i] = numbers[2 * i + 1];
        if (__builtin_add_overflow(sum, k->value[i], &sum)) {
            dp_error("knapsack", "--items '%s', line %zu: the values add up to more than 2^64 - 1", path,
                     lines[2 * i + 1]);
            rc = DP_EXIT_INPUT;
        }
    }
    free(numbers);
    free(lines);
    return rc;
}

static int knapsack_load(const struct dp_args *args, struct dp_instance *inst)
{
    struct knapsack *k = calloc(1, sizeof *k);
    int rc = 0;
    if (k == NULL)
        return DP_EXIT_INPUT;
    if (args->items == NULL && args->capacity == NULL) {
        rc = knapsack_builtin(k);
        snprintf(inst->what, sizeof inst->what,
                 "%" PRIu64 " items, W = %" PRIu64 " (built-in: weights are multiples of 1000 up to 500000)", k->n,
                 k->capacity);
    } else if (args->items == NULL || args->capacity == NULL) {
        dp_error("knapsack", "give both --items FILE and --capacity W, or neither for the built-in instance");
        rc = DP_EXIT_INPUT;
    } else {
        rc = dp_parse_u64("knapsack", "--capacity", args->capacity, 0, KNAPSACK_MAX_W, &k->capacity);
        if (rc == 0)
            rc = knapsack_read(args->items, k);
        snprintf(inst->what, sizeof inst->what, "%" PRIu64 " items (%s), W = %" PRIu64, k->n, args->items,
                 k->capacity);
    }
    if (rc == 0) {
        /* Count until the states could not fit in all of this machine's memory. */
        uint64_t limit = dp_available_memory() / 64;
        uint64_t states = knapsack_count(k, limit);
        if (states == UINT64_MAX) {
            dp_error("knapsack", "out of memory while counting the states");
            rc = DP_EXIT_INPUT;
        }
        inst->states = states;
        inst->states_exact = states <= limit; /* else: at least this many */
    }
    if (rc != 0) {
        free(k->weight);
        free(k->value);
        free(k);
        return rc;
    }
    inst->data = k;
    inst->depth = k->n;
    inst->bytes_per_state = 0;
    inst->reference_bytes = (k->capacity + 1) * sizeof(uint64_t);
    return 0;
}

static void knapsack_unload(struct dp_instance *inst)
{
    struct knapsack *k = inst->data;
    if (k != NULL) {
        free(k->weight);
        free(k->value);
        free(k);
    }
}

/* ---- running ---- */

static int knapsack_begin(struct dp_job *job)
{
    struct knapsack_run *r = malloc(sizeof *r);
    if (r == NULL)
        return MEMO_ENOMEM;
    r->memo = job->memo;
    r->k = job->instance->data;
    job->run = r;
    return 0;
}

static void knapsack_end(struct dp_job *job)
{
    free(job->run);
}

static int knapsack_work(struct dp_job *job, unsigned thread)
{
    const struct knapsack_run *r = job->run;
    const struct knapsack *k = r->k;
    uint64_t levels = 0, v;
    while (job->split && (1ull << levels) < job->threads && levels < k->n && levels < 63)
        levels++;
    if (levels > 0) {
        uint64_t c = k->capacity;
        bool reachable = true;
        for (uint64_t b = 0; b < levels; b++) {
            if (!(thread >> b & 1))
                continue;
            uint64_t w = k->weight[k->n - 1 - b];
            reachable = reachable && w <= c;
            c = reachable ? c - w : c;
        }
        int rc;
        if (reachable && (rc = knapsack_cell(r, k->n - levels, c, &v)) != 0)
            return rc;
    }
    return knapsack_cell(r, k->n, k->capacity, &v);
}

static int knapsack_finish(struct dp_job *job, struct dp_answer *out)
{
    const struct knapsack *k = job->instance->data;
    uint64_t v;
    int rc = memo_lookup_u64(job->memo, knapsack_key(k->n, k->capacity), &v);
    if (rc != 0)
        return rc;
    out->number = dp_u64_string(v);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

/* ---- bottom-up reference: one dense array over the capacities, in units of the weights' gcd ---- */

static uint64_t knapsack_gcd(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int knapsack_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    const struct knapsack *k = inst->data;
    /* Only multiples of g are ever subtracted from W, so capacities W - g*x map to W/g - x. */
    uint64_t g = 0;
    for (uint64_t i = 0; i < k->n; i++)
        if (k->weight[i] <= k->capacity)
            g = knapsack_gcd(g, k->weight[i]);
    g = g == 0 ? 1 : g; /* no item fits, or only weightless ones do */
    uint64_t cap = k->capacity / g;
    uint64_t *best = calloc(cap + 1, sizeof *best);
    if (best == NULL)
        return MEMO_ENOMEM;
    for (uint64_t i = 0; i < k->n; i++) {
        if (k->weight[i] > k->capacity)
            continue;
        uint64_t w = k->weight[i] / g, v = k->value[i];
        for (uint64_t c = cap; c + 1 > w; c--) {
            if (best[c - w] + v > best[c])
                best[c] = best[c - w] + v;
            if (c == 0)
                break;
        }
    }
    out->number = dp_u64_string(best[cap]);
    free(best);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

const struct dp_problem dp_knapsack = {
    .name = "knapsack",
    .summary = "0/1 knapsack: the best total value within capacity W (one 'weight value' pair per line)",
    .usage = "--items FILE --capacity W",
    .builtin = "200 items with weights that are multiples of 1000 up to 500000, W = 10^7",
    .options = { "--items", "--capacity" },
    .load = knapsack_load,
    .unload = knapsack_unload,
    .begin = knapsack_begin,
    .end = knapsack_end,
    .work = knapsack_work,
    .finish = knapsack_finish,
    .reference = knapsack_reference,
};
