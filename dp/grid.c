/*
 * editdist and lcs: recursions over the (i, j) grid of two sequences' prefixes.
 *
 *   editdist  D(i, j) = min(D(i-1, j) + 1, D(i, j-1) + 1, D(i-1, j-1) + [a[i-1] != b[j-1]]),
 *             D(i, 0) = i, D(0, j) = j
 *   lcs       L(i, j) = max(L(i-1, j), L(i, j-1), L(i-1, j-1) + [a[i-1] == b[j-1]]),
 *             L(i, 0) = L(0, j) = 0
 *
 * Both always ask for all three neighbours (lcs without the usual "if equal, only the diagonal"
 * shortcut), so the recursion from (n, m) reaches every (i, j) with 1 <= i <= n, 1 <= j <= m:
 * exactly n * m states whatever the threads do. The border (i or j = 0) is not memoized.
 *
 * Threads: the grid is cut into 32 x 32 blocks (GRID_BLOCK); thread t takes block rows t, t + T,
 * ... and walks each from left to right, asking for each block's bottom-right corner. The
 * recursion from a corner stops at the blocks above and to the left, already stored, so it
 * computes just its block, at most 64 deep. Thread t + 1 follows one block behind thread t, as in
 * a pipelined wavefront: the row of states between them is where they share. A thread that has
 * caught up with the one above it first lets that block finish (grid_await), rather than sleep on
 * its last states in flight. Then all ask for (n, m). (Blocks of 16 to 128 measured alike at
 * 3000 x 3000 on the hash table; 32 was a little faster alone, and 128 slower on dense keys.)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define GRID_BLOCK 32
#define GRID_MAX_LEN 0xFFFFFFFEu /* i and j are 32-bit indices */

struct grid {
    unsigned char *a, *b;
    uint64_t       n, m;
};

/* What the compute function sees: the sequences and the memo, one pointer away. */
struct grid_run {
    memo_t              *memo;
    const unsigned char *a, *b;
    uint32_t             n, m;
};

/* Row-major over the (n + 1) x (m + 1) grid: the keys are a dense range (memo's dense_keys). */
static inline uint64_t grid_key(const struct grid_run *r, uint32_t i, uint32_t j)
{
    return (uint64_t)i * ((uint64_t)r->m + 1) + j;
}

static inline void grid_cell_of(const struct grid_run *r, uint64_t key, uint32_t *i, uint32_t *j)
{
    uint64_t stride = (uint64_t)r->m + 1;
    *i = (uint32_t)(key / stride);
    *j = (uint32_t)(key % stride);
}

/* ---- the recursions ---- */

static int editdist_fn(void *ctx, uint64_t key, uint64_t *value);
static int lcs_fn(void *ctx, uint64_t key, uint64_t *value);

static inline int editdist_cell(const struct grid_run *r, uint32_t i, uint32_t j, uint64_t *v)
{
    if (i == 0 || j == 0) {
        *v = (uint64_t)i + j;
        return 0;
    }
    return memo_get_u64(r->memo, grid_key(r, i, j), editdist_fn, (void *)r, v);
}

static int editdist_fn(void *ctx, uint64_t key, uint64_t *value)
{
    const struct grid_run *r = ctx;
    uint32_t i, j;
    grid_cell_of(r, key, &i, &j);
    uint64_t up, left, diag;
    int rc;
    /* Up first: the recursion runs up a column, then along rows; the diagonal is then stored. */
    if ((rc = editdist_cell(r, i - 1, j, &up)) != 0 || (rc = editdist_cell(r, i, j - 1, &left)) != 0 ||
        (rc = editdist_cell(r, i - 1, j - 1, &diag)) != 0)
        return rc;
    uint64_t best = diag + (r->a[i - 1] != r->b[j - 1]);
    if (up + 1 < best)
        best = up + 1;
    if (left + 1 < best)
        best = left + 1;
    *value = best;
    return 0;
}

static inline int lcs_cell(const struct grid_run *r, uint32_t i, uint32_t j, uint64_t *v)
{
    if (i == 0 || j == 0) {
        *v = 0;
        return 0;
    }
    return memo_get_u64(r->memo, grid_key(r, i, j), lcs_fn, (void *)r, v);
}

static int lcs_fn(void *ctx, uint64_t key, uint64_t *value)
{
    const struct grid_run *r = ctx;
    uint32_t i, j;
    grid_cell_of(r, key, &i, &j);
    uint64_t up, left, diag;
    int rc;
    if ((rc = lcs_cell(r, i - 1, j, &up)) != 0 || (rc = lcs_cell(r, i, j - 1, &left)) != 0 ||
        (rc = lcs_cell(r, i - 1, j - 1, &diag)) != 0)
        return rc;
    uint64_t best = diag + (r->a[i - 1] == r->b[j - 1]);
    if (up > best)
        best = up;
    if (left > best)
        best = left;
    *value = best;
    return 0;
}

/* ---- loading ---- */

/* The built-in instances: a random DNA string and a copy of it with about 15% of its letters
 * substituted, deleted or followed by an insertion. */
static int grid_builtin(struct grid *g, uint64_t n, uint64_t seed)
{
    static const char dna[4] = { 'A', 'C', 'G', 'T' };
    uint64_t s = seed;
    g->a = malloc(n + 1);
    g->b = malloc(2 * n + 1);
    if (g->a == NULL || g->b == NULL)
        return DP_EXIT_INPUT;
    for (uint64_t i = 0; i < n; i++)
        g->a[i] = (unsigned char)dna[dp_random(&s) & 3];
    uint64_t m = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t roll = dp_random(&s) % 100;
        if (roll < 5) /* deleted */
            continue;
        g->b[m++] = roll < 10 ? (unsigned char)dna[dp_random(&s) & 3] : g->a[i];
        if (roll >= 95) /* followed by an insertion */
            g->b[m++] = (unsigned char)dna[dp_random(&s) & 3];
    }
    g->a[n] = '\0';
    g->b[m] = '\0';
    g->n = n;
    g->m = m;
    return 0;
}

static int grid_load(const char *name, uint64_t builtin_seed, const struct dp_args *args,
                     struct dp_instance *inst)
{
    struct grid *g = calloc(1, sizeof *g);
    int rc = 0;
    if (g == NULL)
        return DP_EXIT_INPUT;
    if (args->a == NULL && args->b == NULL) {
        rc = grid_builtin(g, 3000, builtin_seed);
        snprintf(inst->what, sizeof inst->what,
                 "a: %" PRIu64 " bytes, b: %" PRIu64 " bytes (built-in: a random DNA string and a mutated copy)",
                 g->n, g->m);
    } else if (args->a == NULL || args->b == NULL) {
        dp_error(name, "give both --a FILE and --b FILE, or neither for the built-in instance");
        rc = DP_EXIT_INPUT;
    } else {
        size_t n = 0, m = 0;
        rc = dp_read_sequence(name, "--a", args->a, &g->a, &n);
        if (rc == 0)
            rc = dp_read_sequence(name, "--b", args->b, &g->b, &m);
        if (rc == 0 && (n > GRID_MAX_LEN || m > GRID_MAX_LEN)) {
            dp_error(name, "a sequence is longer than %u bytes", GRID_MAX_LEN);
            rc = DP_EXIT_INPUT;
        }
        g->n = n;
        g->m = m;
        snprintf(inst->what, sizeof inst->what, "a: %zu bytes (%s), b: %zu bytes (%s)", n, args->a, m, args->b);
    }
    if (rc != 0) {
        free(g->a);
        free(g->b);
        free(g);
        return rc;
    }
    inst->data = g;
    inst->states = g->n * g->m;
    inst->key_space = (g->n + 1) * (g->m + 1);
    inst->states_exact = true;
    /* A thread that gets ahead of the others may recurse along a whole row and column. */
    inst->depth = g->n + g->m;
    inst->bytes_per_state = 0; /* the default for u64 values */
    inst->reference_bytes = 2 * (g->m + 1) * sizeof(uint64_t);
    return 0;
}

static int editdist_load(const struct dp_args *args, struct dp_instance *inst)
{
    return grid_load("editdist", 0x5eed0001, args, inst);
}

static int lcs_load(const struct dp_args *args, struct dp_instance *inst)
{
    return grid_load("lcs", 0x5eed0002, args, inst);
}

static void grid_unload(struct dp_instance *inst)
{
    struct grid *g = inst->data;
    if (g != NULL) {
        free(g->a);
        free(g->b);
        free(g);
    }
}

/* ---- running ---- */

static int grid_begin(struct dp_job *job)
{
    const struct grid *g = job->instance->data;
    struct grid_run *r = malloc(sizeof *r);
    if (r == NULL)
        return MEMO_ENOMEM;
    r->memo = job->memo;
    r->a = g->a;
    r->b = g->b;
    r->n = (uint32_t)g->n;
    r->m = (uint32_t)g->m;
    job->run = r;
    return 0;
}

static void grid_end(struct dp_job *job)
{
    free(job->run);
}

typedef int grid_cell_fn(const struct grid_run *r, uint32_t i, uint32_t j, uint64_t *v);

/*
 * Before thread t + 1 asks for a block's corner, it lets the block above it (thread t's) finish,
 * spinning on memo_lookup_u64 of that block's corner for up to GRID_SPIN_NS, instead of finding
 * the block's last states in flight and sleeping on them in memo. States cost ~70 ns on dense
 * keys, so a block is ~70 us of work: a follower that catches up would otherwise go to sleep
 * (a futex wait) and cost the thread it waits for a futex wake, on the pipeline's critical path,
 * every time. Measured with editdist 3000x3000 on 2 threads, dense keys: 2-thread runs took
 * 0.41 to 0.62 s, in step with their 200 to 2900 waits. Only on dense keys (on the hash table a
 * state costs ~0.9 us and a block ~1 ms, against which a sleep and a wake-up are small; spinning
 * there measured no better), and only when every thread has a CPU of its own: otherwise the spin
 * would take the CPU from the thread it waits for. Past the bound the
 * call goes on and memo's own waiting takes over (a thread that fails never blocks the others).
 */
#define GRID_SPIN_NS 2000000

static void grid_await(const struct grid_run *r, uint32_t i, uint32_t j)
{
    uint64_t v, start = 0;
    for (unsigned k = 0; memo_lookup_u64(r->memo, grid_key(r, i, j), &v) != 0; k++) {
        if (k % 64 == 0) {
            uint64_t now = (uint64_t)(dp_now() * 1e9);
            if (start == 0)
                start = now;
            else if (now - start > GRID_SPIN_NS)
                return;
        }
        for (int p = 0; p < 16; p++)
            __builtin_ia32_pause();
    }
}

static int grid_work(struct dp_job *job, unsigned thread, grid_cell_fn *cell)
{
    const struct grid_run *r = job->run;
    uint32_t rows = (r->n + GRID_BLOCK - 1) / GRID_BLOCK, cols = (r->m + GRID_BLOCK - 1) / GRID_BLOCK;
    bool spin = job->dense && job->threads <= dp_cpu_count();
    uint64_t v;
    int rc;
    for (uint32_t bi = thread; job->split && bi < rows; bi += job->threads) {
        uint32_t i = bi + 1 < rows ? (bi + 1) * GRID_BLOCK : r->n;
        for (uint32_t bj = 0; bj < cols; bj++) {
            uint32_t j = bj + 1 < cols ? (bj + 1) * GRID_BLOCK : r->m;
            if (spin && bi > 0)
                grid_await(r, bi * GRID_BLOCK, j);
            if ((rc = cell(r, i, j, &v)) != 0)
                return rc;
        }
    }
    return cell(r, r->n, r->m, &v);
}

static int editdist_work(struct dp_job *job, unsigned thread)
{
    return grid_work(job, thread, editdist_cell);
}

static int lcs_work(struct dp_job *job, unsigned thread)
{
    return grid_work(job, thread, lcs_cell);
}

static int grid_finish(struct dp_job *job, struct dp_answer *out)
{
    const struct grid_run *r = job->run;
    uint64_t v;
    int rc = memo_lookup_u64(job->memo, grid_key(r, r->n, r->m), &v);
    if (rc != 0)
        return rc;
    out->number = dp_u64_string(v);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

/* ---- bottom-up references: two rows ---- */

static int grid_reference(const struct dp_instance *inst, struct dp_answer *out, bool lcs)
{
    const struct grid *g = inst->data;
    uint64_t *prev = malloc((g->m + 1) * sizeof *prev), *row = malloc((g->m + 1) * sizeof *row);
    if (prev == NULL || row == NULL) {
        free(prev);
        free(row);
        return MEMO_ENOMEM;
    }
    for (uint64_t j = 0; j <= g->m; j++)
        prev[j] = lcs ? 0 : j;
    for (uint64_t i = 1; i <= g->n; i++) {
        row[0] = lcs ? 0 : i;
        unsigned char ai = g->a[i - 1];
        for (uint64_t j = 1; j <= g->m; j++) {
            uint64_t best;
            if (lcs) {
                best = prev[j - 1] + (ai == g->b[j - 1]);
                best = prev[j] > best ? prev[j] : best;
                best = row[j - 1] > best ? row[j - 1] : best;
            } else {
                best = prev[j - 1] + (ai != g->b[j - 1]);
                best = prev[j] + 1 < best ? prev[j] + 1 : best;
                best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
            }
            row[j] = best;
        }
        uint64_t *t = prev;
        prev = row;
        row = t;
    }
    out->number = dp_u64_string(prev[g->m]);
    free(prev);
    free(row);
    return out->number == NULL ? MEMO_ENOMEM : 0;
}

static int editdist_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    return grid_reference(inst, out, false);
}

static int lcs_reference(const struct dp_instance *inst, struct dp_answer *out)
{
    return grid_reference(inst, out, true);
}

const struct dp_problem dp_editdist = {
    .name = "editdist",
    .summary = "unit-cost edit distance (Levenshtein) between two byte sequences",
    .usage = "--a FILE --b FILE",
    .builtin = "a random 3000-letter DNA string and a copy with about 15% of it mutated (9 million states)",
    .options = { "--a", "--b" },
    .load = editdist_load,
    .unload = grid_unload,
    .begin = grid_begin,
    .end = grid_end,
    .work = editdist_work,
    .finish = grid_finish,
    .reference = editdist_reference,
};

const struct dp_problem dp_lcs = {
    .name = "lcs",
    .summary = "length of the longest common subsequence of two byte sequences",
    .usage = "--a FILE --b FILE",
    .builtin = "a random 3000-letter DNA string and a copy with about 15% of it mutated (9 million states)",
    .options = { "--a", "--b" },
    .load = lcs_load,
    .unload = grid_unload,
    .begin = grid_begin,
    .end = grid_end,
    .work = lcs_work,
    .finish = grid_finish,
    .reference = lcs_reference,
};
