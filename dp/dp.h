/*
 * memo-dp: parallel dynamic-programming solvers, each a top-down memoized recursion over one memo
 * shared by N threads.
 *
 * A problem (grid.c: editdist and lcs; knapsack.c, partitions.c, collatz.c, matrixchain.c)
 * describes itself with a struct dp_problem: how to load an instance from the command line (or
 * build its built-in one), how many distinct subproblems the
 * recursion from the root reaches and how deep it goes, the memo compute function, what each
 * solver thread asks for, and a bottom-up reference. run.c runs the threads; main.c parses the
 * command line and prints.
 *
 * Rules every problem keeps:
 *  - states: the number of distinct subproblems that the 1-thread recursion from the root reaches
 *    (exact, or an upper bound when states_exact is false). A thread only ever asks for states in
 *    that set, so memo_stats.misses after a run equals it for every thread count.
 *  - depth: the most nested memo calls any thread can have at once (the solver threads' stacks are
 *    sized from it).
 */
#ifndef MEMO_DP_H
#define MEMO_DP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <memo.h>

/* Memo bytes per state with u64 keys and values in the hash table: a 16-byte record, and the table slots (8 bytes
 * and a 1-byte probe bound each; ck_hs keeps its tables between a quarter and half full, so 18
 * to 36 bytes). memo_stats measures 40.7 (knapsack, 1.76M states) to 50.6 (editdist, 8.9M);
 * this rounds the worst case up. */
#define DP_BYTES_PER_U64_STATE 56

/* Exit codes of memo-dp. */
#define DP_EXIT_OK      0
#define DP_EXIT_FAILED  1 /* a run failed (memo error, answers that disagree) */
#define DP_EXIT_INPUT   2 /* bad usage or input, or an instance too big for this machine */

/* Positive compute-function codes (memo passes them through unchanged). */
#define DP_EOVERFLOW    1 /* a value does not fit in 64 bits */
#define DP_ETHREAD      2 /* dp_solve: the solver threads could not be started (stack size) */
#define DP_EDEPTH       3 /* a recursion deeper than its instance's depth bound */

/* The answer: a decimal number (any length), and for collatz the chain length as well. */
struct dp_answer {
    char       *number;      /* malloc'ed decimal digits */
    const char *extra_name;  /* NULL, or the name of a second figure ("terms") */
    uint64_t    extra;
};

/* Options given after the problem's name; the problem picks the ones it knows. */
struct dp_args {
    const char *a, *b;        /* --a FILE --b FILE (editdist, lcs) */
    const char *items;        /* --items FILE (knapsack) */
    const char *capacity;     /* --capacity W */
    const char *n;            /* --n N (partitions) */
    const char *below;        /* --below N (collatz) */
    const char *dims;         /* --dims FILE (matrixchain) */
};

/* A loaded instance. */
struct dp_instance {
    const struct dp_problem *problem;
    void       *data;
    char        what[256];        /* a one-line description: sizes, and "built-in" if it is */
    uint64_t    states;           /* distinct subproblems (see the top of this file) */
    bool        states_exact;     /* false: states is an upper bound */
    uint64_t    depth;            /* the deepest nesting of memo calls */
    uint64_t    bytes_per_state;  /* estimated memo bytes per state (entry + table share + value) */
    uint64_t    key_space;        /* the u64 keys of the states are below it (a range that memo's
                                     dense_keys can hold); 0: no such range */
    uint64_t    reference_bytes;  /* memory the bottom-up reference needs; 0 = negligible */
};

/* One run: an instance solved by `threads` threads over one memo. */
struct dp_job {
    const struct dp_instance *instance;
    memo_t   *memo;
    unsigned  threads;
    bool      split;              /* false: every thread asks for the root only (--root-only) */
    bool      dense;              /* the memo keeps the keys below instance->key_space dense */
    void     *run;                /* the problem's per-run state (begin/end) */
};

struct dp_problem {
    const char *name;
    const char *summary;          /* one line: what it computes */
    const char *usage;            /* its own options, for --help */
    const char *builtin;          /* what the built-in instance is */
    const char *options[3];       /* the options it takes besides the common ones ("--a") */
    /* Builds the instance from args (or the built-in one when args name no inputs). On bad input
     * prints "memo-dp: <problem>: ..." on stderr and returns DP_EXIT_INPUT; else 0. */
    int  (*load)(const struct dp_args *args, struct dp_instance *inst);
    void (*unload)(struct dp_instance *inst);
    /* Per-run state (job->run), before the threads start and after they end. 0 or MEMO_ENOMEM. */
    int  (*begin)(struct dp_job *job);
    void (*end)(struct dp_job *job);
    /* What solver thread `thread` of job->threads does: its own entry points (if job->split),
     * then the root. Returns 0, a memo code or a DP_E* code. */
    int  (*work)(struct dp_job *job, unsigned thread);
    /* The answer, after every thread returned 0. */
    int  (*finish)(struct dp_job *job, struct dp_answer *out);
    /* The bottom-up reference (plain arrays, no memo). 0, or MEMO_ENOMEM / DP_E*. */
    int  (*reference)(const struct dp_instance *inst, struct dp_answer *out);
};

extern const struct dp_problem dp_editdist, dp_lcs, dp_knapsack, dp_partitions, dp_collatz,
    dp_matrixchain;
extern const struct dp_problem *const dp_problems[]; /* NULL-terminated */

/* ---- input.c: files, numbers, messages ---- */

/* Prints "memo-dp: <what>: <message>" and a newline on stderr. */
void dp_error(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reads a whole file into a malloc'ed buffer (with a NUL after it). 0, or DP_EXIT_INPUT after
 * dp_error. */
int dp_read_file(const char *problem, const char *path, unsigned char **data, size_t *len);
/* A sequence file: its bytes less one trailing newline; empty is an error. */
int dp_read_sequence(const char *problem, const char *option, const char *path, unsigned char **data,
                     size_t *len);
/* A decimal integer in [min, max], the whole string and nothing else. */
int dp_parse_u64(const char *problem, const char *option, const char *text, uint64_t min, uint64_t max,
                 uint64_t *out);
/* Unsigned decimal numbers separated by white space; on the first malformed one, its line. */
int dp_read_numbers(const char *problem, const char *option, const char *path, uint64_t max,
                    uint64_t **numbers, size_t *count, size_t **lines);
/* "1.23 GiB" */
void dp_format_bytes(char *buf, size_t size, double bytes);
/* A malloc'ed decimal string of v. NULL on ENOMEM. */
char *dp_u64_string(uint64_t v);
/* xorshift64*: the deterministic generator behind the built-in instances. */
uint64_t dp_random(uint64_t *state);

/* ---- run.c: threads, stacks, the memo ---- */

/* Stack bytes per level of memo_get_u64 recursion in this build, measured once (memo's frames
 * plus a calibration compute function). */
size_t dp_stack_per_level(void);

struct dp_result {
    struct dp_answer answer;
    double       seconds;         /* the threads' wall time */
    memo_stats_t stats;           /* memo_stats after the run */
    int          rc;              /* 0, or the first failure's code */
};

/* memo_strerror, and the DP_E* codes. */
const char *dp_strerror(int code);
/* Solves inst with `threads` threads on a fresh memo (split: see struct dp_job; dense: the memo
 * keeps the keys below inst->key_space in a flat table, memo_config_t.dense_keys); a progress bar
 * on stderr if `progress`. Returns 0 or the first failure's code (reported on stderr). */
int dp_solve(const struct dp_instance *inst, unsigned threads, bool split, bool dense, bool progress,
             struct dp_result *out);
/* The memo's bytes per state to expect: dense keys take 16 bytes per key of the range. */
uint64_t dp_bytes_per_state_estimate(const struct dp_instance *inst, bool dense);
/* The available memory in bytes (MemAvailable, or physical pages). */
uint64_t dp_available_memory(void);
/* The number of CPUs this process may run on. */
unsigned dp_cpu_count(void);
double dp_now(void);

#endif /* MEMO_DP_H */
