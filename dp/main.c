/*
 * memo-dp: the command line, the memory estimate, and the output (plain or JSON).
 *
 *   memo-dp [PROBLEM] [--threads N] [--json] [--compare] [PROBLEM'S OPTIONS]
 *
 * Exit codes: 0 solved; 1 a run failed (a memo error, or answers that disagree); 2 bad usage or
 * input, or an instance whose memo would not fit in memory.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dp.h"

const struct dp_problem *const dp_problems[] = {
    &dp_editdist, &dp_lcs, &dp_knapsack, &dp_partitions, &dp_collatz, &dp_matrixchain, NULL,
};

/* Refuse when the estimate passes this share of the available memory. */
#define DP_MEMORY_SHARE 0.9
#define DP_MAX_THREADS 1024

struct dp_options {
    const struct dp_problem *problem;
    struct dp_args           args;
    uint64_t                 threads;
    bool                     json, compare, progress, root_only;
    const char              *memo;      /* --memo: "dense", "hash", or NULL (the problem's default) */
};

struct dp_option_name {
    const char *name;
    size_t      offset; /* of the const char * in struct dp_args */
};

static const struct dp_option_name dp_problem_options[] = {
    { "--a", offsetof(struct dp_args, a) },           { "--b", offsetof(struct dp_args, b) },
    { "--items", offsetof(struct dp_args, items) },   { "--capacity", offsetof(struct dp_args, capacity) },
    { "--n", offsetof(struct dp_args, n) },           { "--below", offsetof(struct dp_args, below) },
    { "--dims", offsetof(struct dp_args, dims) },
};
#define DP_PROBLEM_OPTIONS (sizeof dp_problem_options / sizeof dp_problem_options[0])

static void dp_usage(FILE *out)
{
    fprintf(out,
            "usage: memo-dp [PROBLEM] [OPTIONS]\n"
            "\n"
            "Solves a dynamic-programming problem by top-down memoized recursion over one memo\n"
            "shared by N threads, and reports the memo's figures. Without its inputs, a problem\n"
            "solves a built-in instance; without a PROBLEM, memo-dp solves editdist's.\n"
            "\n"
            "problems:\n");
    for (const struct dp_problem *const *p = dp_problems; *p != NULL; p++)
        fprintf(out, "  %-12s %-27s %s\n", (*p)->name, (*p)->usage, (*p)->summary);
    fprintf(out,
            "\n"
            "options:\n"
            "  --threads N    solver threads (default: the number of CPUs, %u here)\n"
            "  --json         print one JSON object\n"
            "  --compare      also run 1 thread, the other storage (--memo) and a bottom-up\n"
            "                 reference, with speedups\n"
            "  --memo dense|hash  dense: the memo keeps the states' keys in a flat table indexed\n"
            "                 by the key (memo's dense_keys), for the problems whose states form a\n"
            "                 known range (the default for them: all but knapsack); hash: memo's\n"
            "                 hash table\n"
            "  --root-only    no split: every thread asks for the root only, and the\n"
            "                 recursion runs as deep as the problem goes (to compare)\n"
            "  --no-progress  no progress bar (it shows on stderr when stderr is a terminal\n"
            "                 and the run passes one second)\n"
            "  --help         this help; PROBLEM --help shows that problem's built-in instance\n"
            "  --version      memo-dp's and memo's versions\n"
            "\n"
            "exit status: 0 solved, 1 a run failed, 2 bad usage or input, or too big for memory\n",
            dp_cpu_count());
}

static void dp_problem_usage(const struct dp_problem *p)
{
    printf("usage: memo-dp %s [%s] [--threads N] [--memo dense|hash] [--json] [--compare]\n\n%s.\n"
           "Without its inputs it solves a built-in instance: %s.\n",
           p->name, p->usage, p->summary, p->builtin);
}

static const struct dp_problem *dp_find_problem(const char *name)
{
    for (const struct dp_problem *const *p = dp_problems; *p != NULL; p++)
        if (strcmp((*p)->name, name) == 0)
            return *p;
    return NULL;
}

static bool dp_takes(const struct dp_problem *p, const char *option)
{
    for (size_t i = 0; i < sizeof p->options / sizeof p->options[0]; i++)
        if (p->options[i] != NULL && strcmp(p->options[i], option) == 0)
            return true;
    return false;
}

/* Returns -1 to go on, or an exit code. */
static int dp_parse(int argc, char **argv, struct dp_options *o)
{
    int i = 1;
    memset(o, 0, sizeof *o);
    o->problem = &dp_editdist;
    o->threads = dp_cpu_count();
    o->progress = isatty(STDERR_FILENO);
    bool help = false;
    const char *threads = NULL;
    if (argc > 1 && argv[1][0] != '-') {
        o->problem = dp_find_problem(argv[1]);
        if (o->problem == NULL) {
            dp_error("usage", "unknown problem '%s' (try memo-dp --help)", argv[1]);
            return DP_EXIT_INPUT;
        }
        i = 2;
    }
    for (; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        if (strcmp(arg, "--json") == 0) {
            o->json = true;
        } else if (strcmp(arg, "--compare") == 0) {
            o->compare = true;
        } else if (strcmp(arg, "--root-only") == 0) {
            o->root_only = true;
        } else if (strcmp(arg, "--no-progress") == 0) {
            o->progress = false;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            help = true;
        } else if (strcmp(arg, "--version") == 0) {
            printf("memo-dp, with memo %s\n", memo_version());
            return DP_EXIT_OK;
        } else {
            const char **slot = NULL;
            if (name_len == strlen("--threads") && strncmp(arg, "--threads", name_len) == 0)
                slot = &threads;
            else if (name_len == strlen("--memo") && strncmp(arg, "--memo", name_len) == 0)
                slot = &o->memo;
            for (size_t k = 0; slot == NULL && k < DP_PROBLEM_OPTIONS; k++) {
                const char *name = dp_problem_options[k].name;
                if (name_len == strlen(name) && strncmp(arg, name, name_len) == 0) {
                    if (!dp_takes(o->problem, name)) {
                        dp_error(o->problem->name, "no option %s here (it takes %s)", name, o->problem->usage);
                        return DP_EXIT_INPUT;
                    }
                    slot = (const char **)((char *)&o->args + dp_problem_options[k].offset);
                }
            }
            if (slot == NULL) {
                if (arg[0] != '-')
                    dp_error("usage", "'%s': the problem's name comes first (try memo-dp --help)", arg);
                else
                    dp_error("usage", "unknown option '%.*s' (try memo-dp --help)", (int)name_len, arg);
                return DP_EXIT_INPUT;
            }
            if (eq != NULL) {
                *slot = eq + 1;
            } else if (i + 1 < argc) {
                *slot = argv[++i];
            } else {
                dp_error("usage", "%s needs a value", arg);
                return DP_EXIT_INPUT;
            }
        }
    }
    if (help) {
        if (argc > 1 && argv[1][0] != '-')
            dp_problem_usage(o->problem);
        else
            dp_usage(stdout);
        return DP_EXIT_OK;
    }
    if (threads != NULL && dp_parse_u64("usage", "--threads", threads, 1, DP_MAX_THREADS, &o->threads) != 0)
        return DP_EXIT_INPUT;
    if (o->memo != NULL && strcmp(o->memo, "dense") != 0 && strcmp(o->memo, "hash") != 0) {
        dp_error("usage", "--memo takes dense or hash, not '%s'", o->memo);
        return DP_EXIT_INPUT;
    }
    return -1;
}

/* ---- output ---- */

static void dp_json_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static bool dp_same_answer(const struct dp_answer *a, const struct dp_answer *b)
{
    return strcmp(a->number, b->number) == 0 && a->extra == b->extra;
}

static void dp_answer_free(struct dp_answer *a)
{
    free(a->number);
    a->number = NULL;
}

static double dp_bytes_per_state(const struct dp_result *r)
{
    return r->stats.misses > 0 ? (double)r->stats.bytes / (double)r->stats.misses : 0;
}

struct dp_report {
    const struct dp_options  *options;
    const struct dp_instance *instance;
    uint64_t                  estimate;          /* bytes */
    bool                      dense;             /* the run's storage */
    struct dp_result          run, single;       /* single: the 1-thread run, with --compare */
    struct dp_result          other;             /* the other storage, same threads, with --compare */
    struct dp_answer          reference;
    double                    reference_seconds;
    bool                      have_single, have_reference, have_other;
};

static void dp_print_json(const struct dp_report *rep)
{
    const struct dp_result *run = &rep->run;
    printf("{\"problem\":\"%s\",\"instance\":", rep->instance->problem->name);
    dp_json_string(rep->instance->what);
    printf(",\"answer\":%s", run->answer.number);
    if (run->answer.extra_name != NULL)
        printf(",\"%s\":%" PRIu64, run->answer.extra_name, run->answer.extra);
    printf(",\"memo\":\"%s\"", rep->dense ? "dense" : "hash");
    printf(",\"threads\":%" PRIu64 ",\"seconds\":%.6f,\"states\":%" PRIu64 ",\"hits\":%" PRIu64
           ",\"waits\":%" PRIu64 ",\"bytes_per_state\":%.1f,\"memory_bytes\":%" PRIu64
           ",\"estimated_bytes\":%" PRIu64 ",\"cpus\":%u,\"depth\":%" PRIu64 ",\"stack_per_level\":%zu",
           rep->options->threads, run->seconds, run->stats.misses, run->stats.hits, run->stats.waits,
           dp_bytes_per_state(run), run->stats.bytes, rep->estimate, dp_cpu_count(), rep->instance->depth,
           dp_stack_per_level());
    if (rep->options->compare) {
        printf(",\"compare\":{");
        if (rep->have_single)
            printf("\"one_thread_seconds\":%.6f,\"one_thread_states\":%" PRIu64 ",\"one_thread_answer\":%s,"
                   "\"speedup\":%.3f,",
                   rep->single.seconds, rep->single.stats.misses, rep->single.answer.number,
                   run->seconds > 0 ? rep->single.seconds / run->seconds : 0);
        if (rep->have_other) {
            const struct dp_result *dense = rep->dense ? run : &rep->other, *hash = rep->dense ? &rep->other : run;
            printf("\"other_memo\":\"%s\",\"other_seconds\":%.6f,\"other_states\":%" PRIu64
                   ",\"other_bytes_per_state\":%.1f,\"other_answer\":%s,\"dense_vs_hash_speed\":%.3f,",
                   rep->dense ? "hash" : "dense", rep->other.seconds, rep->other.stats.misses,
                   dp_bytes_per_state(&rep->other), rep->other.answer.number,
                   dense->seconds > 0 ? hash->seconds / dense->seconds : 0);
        }
        if (rep->have_reference) {
            printf("\"reference_seconds\":%.6f,\"reference_answer\":%s,", rep->reference_seconds,
                   rep->reference.number);
            if (rep->reference.extra_name != NULL)
                printf("\"reference_%s\":%" PRIu64 ",", rep->reference.extra_name, rep->reference.extra);
            printf("\"memo_vs_reference\":%.3f,", rep->reference_seconds > 0 ? run->seconds / rep->reference_seconds : 0);
        }
        printf("\"agrees\":%s}", (!rep->have_single || dp_same_answer(&run->answer, &rep->single.answer)) &&
                                         (!rep->have_other || dp_same_answer(&run->answer, &rep->other.answer)) &&
                                         (!rep->have_reference || dp_same_answer(&run->answer, &rep->reference))
                                     ? "true"
                                     : "false");
    }
    printf("}\n");
}

static void dp_print_answer(const char *label, const struct dp_answer *a)
{
    printf("%s%s", label, a->number);
    if (a->extra_name != NULL)
        printf(", %" PRIu64 " %s", a->extra, a->extra_name);
}

static void dp_print_plain(const struct dp_report *rep)
{
    const struct dp_result *run = &rep->run;
    char bytes[32];
    dp_print_answer("answer    ", &run->answer);
    printf("\nrun       %" PRIu64 " thread%s, %.3f s, %s memo\n", rep->options->threads,
           rep->options->threads == 1 ? "" : "s", run->seconds, rep->dense ? "dense" : "hash");
    printf("states    %" PRIu64 " distinct subproblems, each computed once\n", run->stats.misses);
    printf("hits      %" PRIu64 " answers taken from the memo\n", run->stats.hits);
    printf("waits     %" PRIu64 " waits for another thread's computation in flight\n", run->stats.waits);
    dp_format_bytes(bytes, sizeof bytes, (double)run->stats.bytes);
    printf("memory    %s in the memo, %.1f bytes per state\n", bytes, dp_bytes_per_state(run));
    if (rep->have_single) {
        printf("compare   1 thread: %.3f s, %" PRIu64 " states, ", rep->single.seconds, rep->single.stats.misses);
        dp_print_answer("answer ", &rep->single.answer);
        printf(": %" PRIu64 " threads are %.2fx as fast\n", rep->options->threads,
               run->seconds > 0 ? rep->single.seconds / run->seconds : 0);
    }
    if (rep->have_other) {
        const struct dp_result *dense = rep->dense ? run : &rep->other, *hash = rep->dense ? &rep->other : run;
        printf("%s %s memo: %.3f s, %" PRIu64 " states, %.1f bytes per state, ", rep->have_single ? "         " : "compare  ",
               rep->dense ? "hash" : "dense", rep->other.seconds, rep->other.stats.misses,
               dp_bytes_per_state(&rep->other));
        dp_print_answer("answer ", &rep->other.answer);
        printf(": dense is %.2fx as fast as hash\n", dense->seconds > 0 ? hash->seconds / dense->seconds : 0);
    }
    if (rep->have_reference) {
        printf("%s bottom-up reference: %.3f s, ", rep->have_single || rep->have_other ? "         " : "compare  ",
               rep->reference_seconds);
        dp_print_answer("answer ", &rep->reference);
        printf(" (%s); the memo run takes %.1fx its time\n",
               dp_same_answer(&run->answer, &rep->reference) ? "agrees" : "DISAGREES",
               rep->reference_seconds > 0 ? run->seconds / rep->reference_seconds : 0);
    }
}

/* ---- main ---- */

/* Fails a run whose state count differs from the instance's exact count. */
static bool dp_check_states(const struct dp_instance *inst, const struct dp_result *r, unsigned threads)
{
    if (!inst->states_exact || r->stats.misses == inst->states)
        return true;
    dp_error(inst->problem->name, "internal error: %u thread%s computed %" PRIu64 " states, expected %" PRIu64,
             threads, threads == 1 ? "" : "s", r->stats.misses, inst->states);
    return false;
}

int main(int argc, char **argv)
{
    struct dp_options o;
    int rc = dp_parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    const struct dp_problem *p = o.problem;
    struct dp_instance inst;
    memset(&inst, 0, sizeof inst);
    inst.problem = p;
    if ((rc = p->load(&o.args, &inst)) != 0)
        return rc;

    /* The storage: dense where the states form a known key range that memo can reserve. */
    bool dense_possible = inst.key_space != 0 && inst.key_space <= (uint64_t)1 << 40;
    bool dense = o.memo != NULL ? strcmp(o.memo, "dense") == 0 : dense_possible;
    if (dense && !dense_possible) {
        dp_error(p->name, "--memo dense: this instance's states form no key range that dense keys can hold");
        p->unload(&inst);
        return DP_EXIT_INPUT;
    }

    /* The memory estimate, before anything big is allocated (with --compare, the larger of the
     * two storages: both run). */
    uint64_t per_state = dp_bytes_per_state_estimate(&inst, dense);
    if (o.compare && dense_possible && dp_bytes_per_state_estimate(&inst, !dense) > per_state)
        per_state = dp_bytes_per_state_estimate(&inst, !dense);
    double need = (double)inst.states * (double)per_state;
    double reference = o.compare ? (double)inst.reference_bytes : 0;
    double available = (double)dp_available_memory();
    char need_text[32], avail_text[32], ref_text[32];
    dp_format_bytes(need_text, sizeof need_text, need);
    dp_format_bytes(avail_text, sizeof avail_text, available);
    dp_format_bytes(ref_text, sizeof ref_text, reference);
    if (!inst.states_exact || need > available * DP_MEMORY_SHARE || reference > available * DP_MEMORY_SHARE) {
        if (reference > available * DP_MEMORY_SHARE && need <= available * DP_MEMORY_SHARE)
            dp_error(p->name, "too big for this machine's memory: the bottom-up reference of --compare needs "
                     "about %s, and %s is available", ref_text, avail_text);
        else
            dp_error(p->name, "too big for this machine's memory: the memo needs about %s (%s%" PRIu64
                     " states x %" PRIu64 " bytes), and %s is available", need_text,
                     inst.states_exact ? "" : "at least ", inst.states, per_state, avail_text);
        p->unload(&inst);
        return DP_EXIT_INPUT;
    }

    if (!o.json) {
        printf("%s: %s\ninstance  %s\nestimate  %" PRIu64 " states, about %s of memo (%" PRIu64
               " bytes per state); %s available\n",
               p->name, p->summary, inst.what, inst.states, need_text, per_state, avail_text);
        fflush(stdout);
    }

    struct dp_report rep;
    memset(&rep, 0, sizeof rep);
    rep.options = &o;
    rep.instance = &inst;
    rep.estimate = (uint64_t)need;
    rep.dense = dense;
    int exit_code = DP_EXIT_OK;
    rc = dp_solve(&inst, (unsigned)o.threads, !o.root_only, dense, o.progress, &rep.run);
    if (rc == 0 && !dp_check_states(&inst, &rep.run, (unsigned)o.threads))
        rc = -1;
    if (rc == 0 && o.compare) {
        if (o.threads == 1) {
            rep.single = rep.run;
            rep.single.answer.number = strdup(rep.run.answer.number);
            rc = rep.single.answer.number != NULL ? 0 : MEMO_ENOMEM;
        } else {
            rc = dp_solve(&inst, 1, !o.root_only, dense, o.progress, &rep.single);
            if (rc == 0 && !dp_check_states(&inst, &rep.single, 1))
                rc = -1;
        }
        rep.have_single = rc == 0;
        if (rc == 0 && dense_possible) {
            rc = dp_solve(&inst, (unsigned)o.threads, !o.root_only, !dense, o.progress, &rep.other);
            if (rc == 0 && !dp_check_states(&inst, &rep.other, (unsigned)o.threads))
                rc = -1;
            rep.have_other = rc == 0;
        }
        if (rc == 0) {
            double start = dp_now();
            rc = p->reference(&inst, &rep.reference);
            rep.reference_seconds = dp_now() - start;
            if (rc != 0)
                dp_error(p->name, "bottom-up reference: %s", dp_strerror(rc));
            rep.have_reference = rc == 0;
        }
    }
    if (rc == 0) {
        if (o.json)
            dp_print_json(&rep);
        else
            dp_print_plain(&rep);
        if ((rep.have_single && !dp_same_answer(&rep.run.answer, &rep.single.answer)) ||
            (rep.have_other && !dp_same_answer(&rep.run.answer, &rep.other.answer)) ||
            (rep.have_reference && !dp_same_answer(&rep.run.answer, &rep.reference))) {
            dp_error(p->name, "the answers disagree");
            exit_code = DP_EXIT_FAILED;
        }
    } else if (rc == DP_EOVERFLOW || rc == DP_ETHREAD || rc == DP_EDEPTH) {
        exit_code = DP_EXIT_INPUT; /* the instance is too big for 64-bit values or for stacks */
    } else {
        exit_code = DP_EXIT_FAILED;
    }
    dp_answer_free(&rep.run.answer);
    dp_answer_free(&rep.single.answer);
    dp_answer_free(&rep.other.answer);
    dp_answer_free(&rep.reference);
    p->unload(&inst);
    return exit_code;
}
