/*
 * lincheck: the checker described in lincheck.h. Two passes over one key's history:
 *  1. structural checks that need no search: every computation has one owner call that ran it
 *     and answered its result, stamps nest (owner call > fn), answers fit their call, nobody
 *     answers c's result before c's fn exited, no two fn runs overlap unless a forget or clear
 *     could have come between;
 *  2. the WGL search for a linearization (the refinement of Lowe, "Testing for linearizability",
 *     2017: a list of call/return events, lift and unlift, a hash set of configurations).
 */
#include "lincheck.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memo.h>

#define LC_MAX_AOPS (2 * LC_MAX_OPS)
#define LC_WORDS ((LC_MAX_AOPS + 63) / 64)
#define LC_DEFAULT_STEPS 4000000u

/* ---- the sequential specification ---------------------------------------------------------- */

/* State encoding: EMPTY 0, COMPUTING(c) 1 + 2c, READY(c) 2 + 2c. */
enum { ST_EMPTY = 0 };
static int st_computing(int c) { return 1 + 2 * c; }
static int st_ready(int c) { return 2 + 2 * c; }
static bool is_computing(int s) { return s != ST_EMPTY && (s & 1); }
static bool is_ready(int s) { return s != ST_EMPTY && !(s & 1); }
static int st_comp(int s) { return (s - 1) / 2; }

static void st_name(int s, char *buf, size_t len)
{
    if (s == ST_EMPTY)
        snprintf(buf, len, "EMPTY");
    else
        snprintf(buf, len, "%s(c%d)", is_computing(s) ? "COMPUTING" : "READY", st_comp(s));
}

/* An operation of the search: a whole call, or one of the two halves of a call that ran fn. */
typedef enum { A_CALL, A_START, A_END } aop_type_t;

typedef struct aop {
    aop_type_t type;
    int        op;   /* index into h->ops */
    int        comp; /* A_START / A_END: the computation */
    uint64_t   inv, resp;
} aop_t;

/* Applies a to state s: false if the specification does not allow it there, else *out. */
static bool spec_apply(const lc_history_t *h, const aop_t *a, int s, int *out)
{
    *out = s;
    if (a->type == A_START) {
        if (s != ST_EMPTY)
            return false;
        *out = st_computing(a->comp);
        return true;
    }
    if (a->type == A_END) {
        if (s == st_computing(a->comp))
            *out = h->comps[a->comp].failed ? ST_EMPTY : st_ready(a->comp);
        /* else c was detached by a forget or clear: nothing it returns is stored */
        return true;
    }
    const lc_op_t *op = &h->ops[a->op];
    switch (op->kind) {
    case LC_GET:
        if (op->answer == LC_A_TIMEDOUT)
            return is_computing(s);
        /* a waiter joined c while it was in the table, or a hit on c's stored value */
        return s == st_computing(op->comp) || s == st_ready(op->comp);
    case LC_LOOKUP:
        if (op->answer == LC_A_VALUE)
            return s == st_ready(op->comp);
        return !is_ready(s);
    case LC_FORGET:
        if (op->answer == LC_A_OK) {
            if (!is_ready(s))
                return false;
        } else if (is_ready(s)) {
            return false;
        }
        *out = ST_EMPTY; /* a COMPUTING(c) key is detached: c stores nothing */
        return true;
    case LC_CLEAR:
        *out = ST_EMPTY;
        return true;
    }
    return false;
}

/* ---- describing things ------------------------------------------------------------------------ */

static void describe_answer(const lc_op_t *op, char *buf, size_t len)
{
    switch (op->answer) {
    case LC_A_VALUE:
        if (op->comp == LC_FOREIGN)
            snprintf(buf, len, "0, a value no computation of this key made");
        else
            snprintf(buf, len, "0, value of c%d", op->comp);
        break;
    case LC_A_CODE:
        if (op->comp == LC_FOREIGN)
            snprintf(buf, len, "code %d, of no computation of this key", op->rc);
        else
            snprintf(buf, len, "code %d, failure of c%d", op->rc, op->comp);
        break;
    case LC_A_TIMEDOUT: snprintf(buf, len, "ETIMEDOUT"); break;
    case LC_A_ENOENT: snprintf(buf, len, "ENOENT"); break;
    case LC_A_OK: snprintf(buf, len, "0"); break;
    case LC_A_NONE: snprintf(buf, len, "(done)"); break;
    case LC_A_BAD: snprintf(buf, len, "%d %s: unexpected", op->rc, memo_err_name(op->rc)); break;
    }
}

static uint64_t history_t0(const lc_history_t *h)
{
    uint64_t t0 = UINT64_MAX;
    for (size_t i = 0; i < h->nops; i++)
        if (h->ops[i].inv < t0)
            t0 = h->ops[i].inv;
    return t0 == UINT64_MAX ? 0 : t0;
}

static void describe_op(const lc_history_t *h, int i, uint64_t t0, char *buf, size_t len)
{
    const lc_op_t *op = &h->ops[i];
    char           ans[96], timed[32] = "", ran[24] = "";
    describe_answer(op, ans, sizeof ans);
    if (op->timeout_ns >= 0)
        snprintf(timed, sizeof timed, "(%" PRId64 "us)", op->timeout_ns / 1000);
    if (op->ran >= 0)
        snprintf(ran, sizeof ran, "  [ran c%d]", op->ran);
    snprintf(buf, len, "#%d [%6" PRIu64 ",%6" PRIu64 "] T%u %s%s -> %s%s", i, op->inv - t0,
             op->resp - t0, op->thread, op->name ? op->name : "?", timed, ans, ran);
}

static void describe_aop(const lc_history_t *h, const aop_t *a, uint64_t t0, char *buf,
                         size_t len)
{
    char call[200];
    describe_op(h, a->op, t0, call, sizeof call);
    if (a->type == A_START)
        snprintf(buf, len, "start of c%d (in [%" PRIu64 ",%" PRIu64 "], by %s)", a->comp,
                 a->inv - t0, a->resp - t0, call);
    else if (a->type == A_END)
        snprintf(buf, len, "end of c%d (in [%" PRIu64 ",%" PRIu64 "], by %s)", a->comp,
                 a->inv - t0, a->resp - t0, call);
    else
        snprintf(buf, len, "%s", call);
}

static lc_verdict_t fail(lc_report_t *rep, lc_verdict_t v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static lc_verdict_t fail(lc_report_t *rep, lc_verdict_t v, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->why, sizeof rep->why, fmt, ap);
    va_end(ap);
    rep->verdict = v;
    return v;
}

/* ---- pass 1: structure ------------------------------------------------------------------------ */

/* Whether some forget or clear could have come between start(a) and start(b) (fn entries
 * entry_a < entry_b, owners' invocations inv_a, inv_b): it must begin before b's fn entered and
 * end after a's owner was invoked, or the same with a and b swapped (b may have started first). */
static bool forget_between(const lc_history_t *h, uint64_t inv_a, uint64_t entry_a, uint64_t inv_b,
                           uint64_t entry_b)
{
    for (size_t i = 0; i < h->nops; i++) {
        const lc_op_t *f = &h->ops[i];
        if (f->kind != LC_FORGET && f->kind != LC_CLEAR)
            continue;
        if ((f->inv < entry_b && f->resp > inv_a) || (f->inv < entry_a && f->resp > inv_b))
            return true;
    }
    return false;
}

static lc_verdict_t check_structure(const lc_history_t *h, int *owner, lc_report_t *rep)
{
    uint64_t t0 = history_t0(h);
    char     d[240];
    if (h->nops > LC_MAX_OPS)
        return fail(rep, LC_UNKNOWN, "%zu calls: more than the checker takes (%d)", h->nops,
                    LC_MAX_OPS);
    for (size_t c = 0; c < h->ncomps; c++)
        owner[c] = -1;
    for (size_t i = 0; i < h->nops; i++) {
        const lc_op_t *op = &h->ops[i];
        describe_op(h, (int)i, t0, d, sizeof d);
        if (op->inv >= op->resp)
            return fail(rep, LC_VIOLATION, "bad stamps (invocation not before response): %s", d);
        if (op->ran != LC_NO_COMP) {
            if (op->kind != LC_GET || op->ran < 0 || (size_t)op->ran >= h->ncomps)
                return fail(rep, LC_VIOLATION, "a call that cannot run fn ran one: %s", d);
            if (owner[op->ran] != -1)
                return fail(rep, LC_VIOLATION, "c%d was run by two calls: #%d and %s", op->ran,
                            owner[op->ran], d);
            owner[op->ran] = (int)i;
        }
        if (op->answer == LC_A_BAD)
            return fail(rep, LC_VIOLATION, "an unexpected return code: %s", d);
        bool fits;
        switch (op->kind) {
        case LC_GET:
            fits = op->answer == LC_A_VALUE || op->answer == LC_A_CODE ||
                   (op->answer == LC_A_TIMEDOUT && op->timeout_ns >= 0 && op->ran == LC_NO_COMP);
            break;
        case LC_LOOKUP: fits = op->answer == LC_A_VALUE || op->answer == LC_A_ENOENT; break;
        case LC_FORGET: fits = op->answer == LC_A_OK || op->answer == LC_A_ENOENT; break;
        default: fits = op->answer == LC_A_NONE; break;
        }
        if (!fits)
            return fail(rep, LC_VIOLATION, "an answer this call may not give: %s", d);
        if (op->answer != LC_A_VALUE && op->answer != LC_A_CODE)
            continue;
        if (op->comp == LC_FOREIGN)
            return fail(rep, LC_VIOLATION, "an answer no computation of this key produced: %s", d);
        if (op->comp < 0 || (size_t)op->comp >= h->ncomps)
            return fail(rep, LC_VIOLATION, "an answer naming no computation: %s", d);
        const lc_comp_t *c = &h->comps[op->comp];
        if (c->failed != (op->answer == LC_A_CODE))
            return fail(rep, LC_VIOLATION, "%s of c%d, which %s: %s",
                        op->answer == LC_A_CODE ? "a failure code" : "a value", op->comp,
                        c->failed ? "failed" : "succeeded", d);
        if (op->resp < c->exit)
            return fail(rep, LC_VIOLATION,
                        "answered c%d's result before c%d's fn had finished (fn exit at %" PRIu64
                        "): %s",
                        op->comp, op->comp, c->exit - t0, d);
    }
    for (size_t c = 0; c < h->ncomps; c++) {
        const lc_comp_t *k = &h->comps[c];
        if (owner[c] < 0)
            return fail(rep, LC_VIOLATION, "c%zu (fn [%" PRIu64 ",%" PRIu64 "]) was run by no call",
                        c, k->entry - t0, k->exit - t0);
        const lc_op_t *o = &h->ops[owner[c]];
        describe_op(h, owner[c], t0, d, sizeof d);
        if (!(o->inv < k->entry && k->entry < k->exit && k->exit < o->resp))
            return fail(rep, LC_VIOLATION,
                        "c%zu's fn [%" PRIu64 ",%" PRIu64 "] is not inside its caller: %s", c,
                        k->entry - t0, k->exit - t0, d);
        if (o->comp != (int)c)
            return fail(rep, LC_VIOLATION, "the call that ran c%zu answered another result: %s",
                        c, d);
    }
    /* at most once: fn runs of this key that overlap in time need a forget or clear between */
    size_t first_a = 0, first_b = 0;
    for (size_t a = 0; a < h->ncomps; a++)
        for (size_t b = 0; b < h->ncomps; b++) {
            const lc_comp_t *x = &h->comps[a], *y = &h->comps[b];
            if (a == b || !(x->entry < y->entry && y->entry < x->exit))
                continue;
            if (forget_between(h, h->ops[owner[a]].inv, x->entry, h->ops[owner[b]].inv, y->entry))
                rep->overlaps_forget++;
            else if (rep->overlaps_bad++ == 0)
                first_a = a, first_b = b;
        }
    if (rep->overlaps_bad > 0) {
        const lc_comp_t *x = &h->comps[first_a], *y = &h->comps[first_b];
        return fail(rep, LC_VIOLATION,
                    "computed twice at once: c%zu's fn [%" PRIu64 ",%" PRIu64 "] and c%zu's fn [%" PRIu64
                    ",%" PRIu64 "] overlap with no forget or clear that could have come between "
                    "(%zu such pair(s))",
                    first_a, x->entry - t0, x->exit - t0, first_b, y->entry - t0, y->exit - t0,
                    rep->overlaps_bad);
    }
    return LC_LINEARIZABLE;
}

/* ---- pass 2: the search ----------------------------------------------------------------------- */

typedef struct event {
    uint64_t t;
    int      aop;
    bool     call;
} event_t;

static int event_cmp(const void *pa, const void *pb)
{
    const event_t *a = pa, *b = pb;
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    /* equal stamps (hand-made histories only): calls first, the more permissive order */
    if (a->call != b->call)
        return a->call ? -1 : 1;
    return a->aop - b->aop;
}

/* The set of explored configurations: open addressing over slots of `words` bitset words and
 * one word holding state + 1 (0 = a free slot). */
typedef struct seen {
    uint64_t *slots;
    size_t    cap, count;
    unsigned  words;
} seen_t;

static uint64_t seen_hash(const uint64_t *bits, unsigned words, int state)
{
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)state;
    for (unsigned i = 0; i < words; i++) {
        x ^= bits[i];
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 31;
    }
    return x;
}

/* Inserts (bits, state): 1 if new, 0 if it was there already, -1 out of memory (the search
 * then gives up: pruning a configuration never explored could invent a violation). */
static int seen_insert(seen_t *s, const uint64_t *bits, int state);

static bool seen_grow(seen_t *s)
{
    size_t    ncap = s->cap ? s->cap * 2 : 1024, stride = s->words + 1;
    uint64_t *n = calloc(ncap, stride * sizeof *n);
    if (n == NULL)
        return false;
    uint64_t *old = s->slots;
    size_t    ocap = s->cap;
    s->slots = n;
    s->cap = ncap;
    s->count = 0;
    for (size_t i = 0; i < ocap; i++) {
        uint64_t *slot = old + i * stride;
        if (slot[s->words] != 0)
            (void)seen_insert(s, slot, (int)(slot[s->words] - 1));
    }
    free(old);
    return true;
}

static int seen_insert(seen_t *s, const uint64_t *bits, int state)
{
    if ((s->count + 1) * 2 > s->cap && !seen_grow(s))
        return -1;
    size_t stride = s->words + 1, mask = s->cap - 1;
    for (size_t i = seen_hash(bits, s->words, state) & mask;; i = (i + 1) & mask) {
        uint64_t *slot = s->slots + i * stride;
        if (slot[s->words] == 0) {
            memcpy(slot, bits, s->words * sizeof *bits);
            slot[s->words] = (uint64_t)state + 1;
            s->count++;
            return 1;
        }
        if (slot[s->words] == (uint64_t)state + 1 &&
            memcmp(slot, bits, s->words * sizeof *bits) == 0)
            return 0;
    }
}

typedef struct search {
    const lc_history_t *h;
    aop_t               aops[LC_MAX_AOPS];
    int                 naops;
    event_t             ev[2 * LC_MAX_AOPS];
    int                 nev;
    int                 match[2 * LC_MAX_AOPS];        /* call <-> return of one aop */
    int                 next[2 * LC_MAX_AOPS + 2], prev[2 * LC_MAX_AOPS + 2];
    int                 stack_ev[LC_MAX_AOPS], stack_state[LC_MAX_AOPS];
    uint64_t            bits[LC_WORDS];
} search_t;

static void lift(search_t *s, int e)
{
    int m = s->match[e];
    s->next[s->prev[e]] = s->next[e];
    s->prev[s->next[e]] = s->prev[e];
    s->next[s->prev[m]] = s->next[m];
    s->prev[s->next[m]] = s->prev[m];
}

static void unlift(search_t *s, int e)
{
    int m = s->match[e];
    s->next[s->prev[m]] = m;
    s->prev[s->next[m]] = m;
    s->next[s->prev[e]] = e;
    s->prev[s->next[e]] = e;
}

static lc_verdict_t search_run(search_t *s, uint64_t max_steps, lc_report_t *rep)
{
    const lc_history_t *h = s->h;
    uint64_t            t0 = history_t0(h);
    const int           head = s->nev, tail = s->nev + 1;
    unsigned            words = (unsigned)((s->naops + 63) / 64);
    seen_t              seen = { NULL, 0, 0, words ? words : 1 };

    for (int i = 0; i < s->nev; i++) {
        s->prev[i] = i == 0 ? head : i - 1;
        s->next[i] = i == s->nev - 1 ? tail : i + 1;
    }
    s->next[head] = s->nev ? 0 : tail;
    s->prev[tail] = s->nev ? s->nev - 1 : head;
    memset(s->bits, 0, sizeof s->bits);

    int          state = ST_EMPTY, sp = 0, best = -1, stuck_aop = -1, stuck_state = ST_EMPTY;
    int          e = s->next[head];
    lc_verdict_t v = LC_LINEARIZABLE;
    while (s->next[head] != tail) {
        if (++rep->steps > max_steps) {
            v = fail(rep, LC_UNKNOWN, "search gave up after %" PRIu64 " steps (%d of %d placed)",
                     max_steps, best, s->naops);
            break;
        }
        const event_t *ev = &s->ev[e];
        if (ev->call) {
            int a = ev->aop, ns;
            if (spec_apply(h, &s->aops[a], state, &ns)) {
                s->bits[a / 64] |= 1ull << (a % 64);
                int fresh = seen_insert(&seen, s->bits, ns);
                if (fresh < 0) {
                    v = fail(rep, LC_UNKNOWN, "out of memory for %zu configurations", seen.count);
                    break;
                }
                if (fresh) {
                    s->stack_ev[sp] = e;
                    s->stack_state[sp] = state;
                    sp++;
                    state = ns;
                    lift(s, e);
                    e = s->next[head];
                    continue;
                }
                s->bits[a / 64] &= ~(1ull << (a % 64));
            }
            e = s->next[e];
        } else {
            /* the response of an operation not yet placed: what was placed before cannot stay */
            if (sp > best) {
                best = sp;
                stuck_aop = ev->aop;
                stuck_state = state;
            }
            if (sp == 0) {
                char what[320], st[40];
                describe_aop(h, &s->aops[stuck_aop], t0, what, sizeof what);
                st_name(stuck_state, st, sizeof st);
                v = fail(rep, LC_VIOLATION,
                         "not linearizable: at best %d of %d events ordered, then %s cannot "
                         "take effect (state %s there, and no other order does better)",
                         best, s->naops, what, st);
                break;
            }
            sp--;
            e = s->stack_ev[sp];
            state = s->stack_state[sp];
            int a = s->ev[e].aop;
            s->bits[a / 64] &= ~(1ull << (a % 64));
            unlift(s, e);
            e = s->next[e];
        }
    }
    free(seen.slots);
    return v;
}

lc_verdict_t lc_check(const lc_history_t *h, uint64_t max_steps, lc_report_t *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->verdict = LC_LINEARIZABLE;
    if (max_steps == 0)
        max_steps = LC_DEFAULT_STEPS;
    int *owner = calloc(h->ncomps ? h->ncomps : 1, sizeof *owner);
    if (owner == NULL)
        return fail(rep, LC_UNKNOWN, "out of memory");
    lc_verdict_t v = check_structure(h, owner, rep);
    if (v != LC_LINEARIZABLE) {
        free(owner);
        return v;
    }
    search_t *s = malloc(sizeof *s);
    if (s == NULL) {
        free(owner);
        return fail(rep, LC_UNKNOWN, "out of memory");
    }
    s->h = h;
    s->naops = 0;
    for (size_t i = 0; i < h->nops; i++) {
        const lc_op_t *op = &h->ops[i];
        if (op->ran >= 0) {
            const lc_comp_t *c = &h->comps[op->ran];
            s->aops[s->naops++] = (aop_t){ A_START, (int)i, op->ran, op->inv, c->entry };
            s->aops[s->naops++] = (aop_t){ A_END, (int)i, op->ran, c->exit, op->resp };
        } else {
            s->aops[s->naops++] = (aop_t){ A_CALL, (int)i, LC_NO_COMP, op->inv, op->resp };
        }
    }
    s->nev = 0;
    for (int a = 0; a < s->naops; a++) {
        s->ev[s->nev++] = (event_t){ s->aops[a].inv, a, true };
        s->ev[s->nev++] = (event_t){ s->aops[a].resp, a, false };
    }
    qsort(s->ev, (size_t)s->nev, sizeof s->ev[0], event_cmp);
    int where[LC_MAX_AOPS][2];
    for (int i = 0; i < s->nev; i++)
        where[s->ev[i].aop][s->ev[i].call ? 0 : 1] = i;
    for (int a = 0; a < s->naops; a++) {
        s->match[where[a][0]] = where[a][1];
        s->match[where[a][1]] = where[a][0];
    }
    v = search_run(s, max_steps, rep);
    free(s);
    free(owner);
    return v;
}

/* ---- printing --------------------------------------------------------------------------------- */

static int op_by_inv_cmp(const void *pa, const void *pb, void *ctx)
{
    const lc_history_t *h = ctx;
    const lc_op_t      *a = &h->ops[*(const int *)pa], *b = &h->ops[*(const int *)pb];
    return a->inv < b->inv ? -1 : a->inv > b->inv;
}

void lc_print(const lc_history_t *h, lc_print_fn *print, void *ctx)
{
    char     line[320];
    uint64_t t0 = history_t0(h);
    snprintf(line, sizeof line,
             "history of key %s: %zu calls, %zu computations (stamps from %" PRIu64 ")",
             h->key_name ? h->key_name : "?", h->nops, h->ncomps, t0);
    print(ctx, line);
    for (size_t c = 0; c < h->ncomps; c++) {
        const lc_comp_t *k = &h->comps[c];
        snprintf(line, sizeof line, "  c%zu (computation %" PRIu64 "): fn [%6" PRIu64 ",%6" PRIu64
                 "] %s", c, k->id, k->entry - t0, k->exit - t0, k->failed ? "failed" : "value");
        print(ctx, line);
    }
    int *order = malloc((h->nops ? h->nops : 1) * sizeof *order);
    if (order == NULL)
        return;
    for (size_t i = 0; i < h->nops; i++)
        order[i] = (int)i;
    qsort_r(order, h->nops, sizeof *order, op_by_inv_cmp, (void *)h);
    for (size_t i = 0; i < h->nops; i++) {
        char d[240];
        describe_op(h, order[i], t0, d, sizeof d);
        snprintf(line, sizeof line, "  %s", d);
        print(ctx, line);
    }
    free(order);
}
