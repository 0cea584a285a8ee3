/*
 * lincheck: decides whether the history of one memo key is linearizable against memo's
 * sequential specification (include/memo.h), with a Wing & Gong / Lowe search of our own.
 *
 * The specification. A key's state is EMPTY, COMPUTING(c) or READY(c), c a computation (one run
 * of fn). Each event below is atomic and takes effect at one point inside its interval:
 *
 *   start(c)          EMPTY -> COMPUTING(c). Inside the owner call's interval, before fn's entry
 *                     stamp (the owner is the get whose thread ran fn).
 *   end(c)            after fn's exit stamp, before the owner's response. COMPUTING(c) ->
 *                     READY(c) if fn returned 0, -> EMPTY if it failed; anything else (c was
 *                     detached by a forget or clear) is left as it is: nothing c returns is
 *                     stored.
 *   get -> c's value or c's code (not the owner)
 *                     needs COMPUTING(c) (it waited on c) or READY(c) (a hit); no change. A
 *                     waiter of a detached c still gets c's result, so it only needs to have
 *                     joined c while c was in the table. It also cannot answer before c's fn
 *                     exited (checked apart, from the stamps).
 *   get -> MEMO_ETIMEDOUT   needs COMPUTING(any); a timed call only.
 *   lookup -> c's value     needs READY(c).
 *   lookup -> MEMO_ENOENT   needs EMPTY or COMPUTING(any) ("also while the key is being computed").
 *   forget -> 0             READY(any) -> EMPTY.
 *   forget -> MEMO_ENOENT   EMPTY -> EMPTY, or COMPUTING(c) -> EMPTY with c detached (the header:
 *                           ENOENT means nothing stored, and an in-flight key stores nothing;
 *                           after the forget no new call waits on c and c stores nothing).
 *   clear             a forget of this key somewhere inside its interval, whatever it finds.
 *                     clear is not atomic across keys, which is why histories are per key.
 *
 * Values must be unique per computation, so that an answer names the computation that made it;
 * the caller maps answers to computation indices (LC_FOREIGN for one of another key, or bytes no
 * computation wrote).
 *
 * The search: calls and returns sorted by stamp; repeatedly take a minimal pending operation
 * (one whose call precedes every pending return), apply it if the state allows, and backtrack
 * when a return is reached before its operation was placed. (set of placed operations, state)
 * pairs already explored are kept in a hash set and never explored twice (Lowe's refinement),
 * and the search gives up (LC_UNKNOWN) after max_steps.
 *
 * Not part of memo's library: a test-only file, shared by tests/stress/stress_linear.c.
 */
#ifndef MEMO_TESTS_LINCHECK_H
#define MEMO_TESTS_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum lc_kind {
    LC_GET,    /* memo_get, memo_get_u64, and their _timed forms */
    LC_LOOKUP, /* memo_lookup, memo_lookup_u64 */
    LC_FORGET, /* memo_forget, memo_forget_u64 */
    LC_CLEAR,  /* memo_clear, seen from this key */
} lc_kind_t;

typedef enum lc_answer {
    LC_A_VALUE,    /* 0 with the value of computation `comp` */
    LC_A_CODE,     /* the failure code of computation `comp` */
    LC_A_TIMEDOUT, /* MEMO_ETIMEDOUT */
    LC_A_ENOENT,   /* MEMO_ENOENT */
    LC_A_OK,       /* forget: 0 */
    LC_A_NONE,     /* clear returns nothing */
    LC_A_BAD,      /* anything else: a code the call may not return here; always a violation */
} lc_answer_t;

#define LC_NO_COMP (-1)
#define LC_FOREIGN (-2) /* a value or code that no computation of this key produced */

typedef struct lc_op {
    lc_kind_t   kind;
    lc_answer_t answer;
    int         comp;       /* LC_A_VALUE / LC_A_CODE: whose (an index into comps, or LC_FOREIGN) */
    int         ran;        /* the computation whose fn this call ran itself, or LC_NO_COMP */
    uint64_t    inv, resp;  /* stamps taken just before the call and just after it returned */
    unsigned    thread;     /* printing only */
    int         rc;         /* the raw return code, printing only */
    int64_t     timeout_ns; /* a timed get's bound, -1 for any other call */
    const char *name;       /* printing only: "get_u64", "lookup", ... (a static string) */
} lc_op_t;

typedef struct lc_comp {
    uint64_t entry, exit; /* fn's own stamps: the first and the last thing it did */
    bool     failed;      /* fn returned non-zero (its code) */
    uint64_t id;          /* the global computation id, printing only */
} lc_comp_t;

typedef struct lc_history {
    const char      *key_name;
    const lc_op_t   *ops;
    size_t           nops;
    const lc_comp_t *comps;
    size_t           ncomps;
} lc_history_t;

/* Calls per history; one that ran fn counts as two events of the search (start and end). */
#define LC_MAX_OPS 480

typedef enum lc_verdict { LC_LINEARIZABLE, LC_VIOLATION, LC_UNKNOWN } lc_verdict_t;

typedef struct lc_report {
    lc_verdict_t verdict;
    char         why[640];        /* for LC_VIOLATION / LC_UNKNOWN: what went wrong, readable */
    uint64_t     steps;           /* search steps taken */
    size_t       overlaps_forget; /* pairs of fn runs of the key that overlapped in time, with a
                                     forget or clear that may have come between (legal) */
    size_t       overlaps_bad;    /* ... with none that could have (at most once is broken) */
} lc_report_t;

/* Decides h; fills *rep (never NULL). max_steps bounds the search (0: a default of 4 million). */
lc_verdict_t lc_check(const lc_history_t *h, uint64_t max_steps, lc_report_t *rep);

/* Prints h line by line (computations, then calls by invocation stamp, stamps relative to the
 * first), for a failure report. */
typedef void lc_print_fn(void *ctx, const char *line);
void lc_print(const lc_history_t *h, lc_print_fn *print, void *ctx);

#endif /* MEMO_TESTS_LINCHECK_H */
