/*
 * stress_linear: every key's history under random concurrent calls must be linearizable against
 * memo's sequential specification, decided by a checker of our own (lincheck.c; the
 * specification is written out at the top of lincheck.h, from include/memo.h).
 *
 *  - Self-test of the checker, first: hand-made histories with known verdicts. Accepted: plain
 *    sequences, waiters and timeouts during a computation, a forget that detaches a running
 *    computation (forget says ENOENT, the waiter still gets the value, lookups then find nothing,
 *    a newer computation's value survives the old one's end), failures, calls that overlap a
 *    forget or clear. Rejected: a stale value after a completed forget, a second computation of a
 *    stored key, two overlapping computations with no forget between, a lookup that sees a value
 *    before its computation ran, a value or a failure code handed to a call that began after the
 *    computation was forgotten or over, a detached computation's value stored (over a newer one
 *    or not), forget answering 0 for an in-flight key, a timeout with nothing computing, a
 *    lookup missing a stored value, a waiter answering before fn finished, another key's value.
 *    Catches: a checker that accepts everything (the stress below would then prove nothing).
 *  - Stress: 8 threads (4x the 2 cores) released by a barrier each round onto 6 fresh keys (3
 *    numbers, each as a u64 key and as its 8 bytes as a byte key: separate key spaces), 30 random
 *    calls each: get, timed get (timeouts 0 to 200 us), lookup, forget, and now and then clear.
 *    fn yields or sleeps at random, fails 1 time in 7 with a small positive code (1 + its index
 *    in the round), and makes values unique per computation and codes unique per round, so an
 *    answer names the computation it came from. Every call and every fn stamps its start and
 *    end from one atomic counter. After each round, with the threads parked, a lookup of each
 *    key closes its history, then each key's history (about 45 calls) is checked, and
 *    memo_stats must add up (misses = computations, errors = failed ones, hits + waits = calls
 *    answered by another's computation or a stored value, entries = what the lookups found,
 *    counting clears). A final lookup pass over all keys of all rounds must agree with entries.
 *    Catches: two computations of one key at once or one after another with no forget between
 *    (a miss that does not re-check under the lock, a lost or early-removed marker); a timed-out
 *    waiter that disturbs the computation; stale values after forget or clear; a detached
 *    computation that stores its value or strands its waiters; lookups that see a value early
 *    or miss a stored one; a hit on the wrong key space; waiters answering before fn finished
 *    or with another run's result; forget's return value; a code the call had no reason to
 *    return (MEMO_ENOMEM with memory to spare); stats that drift.
 * A failing key's whole history is printed as diagnostics (stamps relative to its first call),
 * with the checker's reason. MEMO_STRESS_SEED replays the random choices (not the schedule); the
 * stress stops early after 20 failing keys.
 *
 * Sizes at scale 1 (2 cores, shared): 8000 rounds (4000 under sanitizers), ~2 million calls in
 * 48000 key histories; measured 11-14 s plain (RelWithDebInfo), ~18 s TSan, ~10 s ASan+UBSan.
 * The checker itself takes ~2 s of that (at most ~1200 search steps for one key).
 *
 * Verified against planted bugs (cmake -DMEMO_MUTANT=<id>, src/mutants.h), scale 1, 5 of 5 runs
 * each caught within the first ~100 rounds (< 0.2 s), also on a copy of memo with the two bugs
 * below fixed, so that only the mutant shows:
 *   M1 double-compute  - the second miss's ck_hs_put_unique mostly finds the first marker and
 *                        fails: a spurious MEMO_ENOMEM ("an unexpected return code"); where it
 *                        lands on a tombstone instead, two fn runs overlap.
 *   M8 timeout-removes - "computed twice at once: c4's fn [..] and c5's fn [..] overlap with no
 *                        forget or clear", "start of c3 cannot take effect (state READY(c2))"
 *                        (a stored key computed again) and "lookup -> ENOENT cannot take effect
 *                        (state READY(c7))" (the value computed was not stored).
 * Real bugs it found in memo (reported to the maintainers; this test fails until they are fixed):
 *   - A fn that fails with code 1 is run again by the same call, and forever if it keeps failing
 *     with 1: memo__compute returns 1 to mean "another thread inserted first, look again", and
 *     passes fn's code through unchanged. Seen here as "the call that ran c0 answered another
 *     result ... [ran c0]" and "fn ran at most once per call" (failure codes are 1 + the index
 *     in the round, so code 1 comes up about 1 round in 7).
 *   - Readers take a marker whose state is READY|DETACHED as a stored value: memo_lookup, and a
 *     memo_get hit, can return the value of a computation that a forget or clear detached while
 *     it ran (never stored): a lookup that found the marker before the forget, or any call while
 *     the forget or clear has set DETACHED and not yet removed the entry. Seen (about 3 keys in
 *     48000) as "lookup -> 0, value of c1 cannot take effect (state COMPUTING(c5) there)" after
 *     a forget answered ENOENT during c1's run.
 */
#include "tap.h"
#include "helpers.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

#include "lincheck.h"
#include "stress.h"

/* ================================================================================================
 * Part 1: the checker's self-test
 */

#define OP(k, a, c, r, i, o, to, nm)                                                         \
    {                                                                                        \
        .kind = (k), .answer = (a), .comp = (c), .ran = (r), .inv = (i), .resp = (o),      \
        .thread = 0, .rc = (a) == LC_A_CODE ? 7 : 0, .timeout_ns = (to), .name = (nm)       \
    }
/* a get that ran computation c itself, answering its value / its failure code */
#define GET_RAN(i, o, c) OP(LC_GET, LC_A_VALUE, c, c, i, o, -1, "get")
#define GET_RAN_FAIL(i, o, c) OP(LC_GET, LC_A_CODE, c, c, i, o, -1, "get")
/* a get that answered c's value / c's code without running fn (a hit or a waiter) */
#define GET_VAL(i, o, c) OP(LC_GET, LC_A_VALUE, c, LC_NO_COMP, i, o, -1, "get")
#define GET_CODE(i, o, c) OP(LC_GET, LC_A_CODE, c, LC_NO_COMP, i, o, -1, "get")
#define TIMED_OUT(i, o) OP(LC_GET, LC_A_TIMEDOUT, LC_NO_COMP, LC_NO_COMP, i, o, 1000, "get_timed")
#define LOOKUP_VAL(i, o, c) OP(LC_LOOKUP, LC_A_VALUE, c, LC_NO_COMP, i, o, -1, "lookup")
#define LOOKUP_NONE(i, o) OP(LC_LOOKUP, LC_A_ENOENT, LC_NO_COMP, LC_NO_COMP, i, o, -1, "lookup")
#define FORGET_OK(i, o) OP(LC_FORGET, LC_A_OK, LC_NO_COMP, LC_NO_COMP, i, o, -1, "forget")
#define FORGET_NONE(i, o) OP(LC_FORGET, LC_A_ENOENT, LC_NO_COMP, LC_NO_COMP, i, o, -1, "forget")
#define CLEAR(i, o) OP(LC_CLEAR, LC_A_NONE, LC_NO_COMP, LC_NO_COMP, i, o, -1, "clear")
/* fn's entry and exit stamps */
#define COMP(e, x) { (e), (x), false, 0 }
#define COMP_FAIL(e, x) { (e), (x), true, 0 }

typedef struct hand {
    const char *name;
    bool        legal;
    lc_comp_t   comps[4];  /* up to the first with exit 0 */
    lc_op_t     ops[12];   /* up to the first with no name */
} hand_t;

static const hand_t hands[] = {
    /* ---- legal ---- */
    { "sequential: compute, lookup, hit, forget, lookup, recompute, forget twice", true,
      { COMP(2, 3), COMP(14, 15) },
      { GET_RAN(1, 4, 0), LOOKUP_VAL(5, 6, 0), GET_VAL(7, 8, 0), FORGET_OK(9, 10),
        LOOKUP_NONE(11, 12), GET_RAN(13, 16, 1), GET_VAL(17, 18, 1), FORGET_OK(19, 20),
        FORGET_NONE(21, 22) } },
    { "during a computation: a waiter, a lookup (ENOENT) and a timed-out call", true,
      { COMP(3, 8) },
      { GET_RAN(1, 10, 0), GET_VAL(2, 11, 0), LOOKUP_NONE(4, 5), TIMED_OUT(6, 7),
        LOOKUP_VAL(12, 13, 0), GET_VAL(14, 15, 0) } },
    { "detached: forget during the computation says ENOENT, the waiter still gets its value, "
      "lookups after find nothing, the next call computes again", true,
      { COMP(2, 18), COMP(25, 26) },
      { GET_RAN(1, 20, 0), GET_VAL(3, 21, 0), FORGET_NONE(5, 6), LOOKUP_NONE(7, 8),
        LOOKUP_NONE(22, 23), GET_RAN(24, 27, 1) } },
    { "detached and overlapped: a new computation after the forget, its value survives the old "
      "one's end", true,
      { COMP(2, 18), COMP(10, 12) },
      { GET_RAN(1, 20, 0), GET_VAL(3, 21, 0), FORGET_NONE(5, 6), GET_RAN(9, 14, 1),
        LOOKUP_VAL(15, 16, 1), LOOKUP_VAL(22, 23, 1), GET_VAL(24, 25, 1) } },
    { "failure: the owner and its waiter get the code, nothing stored, the next call computes",
      true,
      { COMP_FAIL(2, 8), COMP(13, 14) },
      { GET_RAN_FAIL(1, 10, 0), GET_CODE(3, 11, 0), LOOKUP_NONE(4, 5), LOOKUP_NONE(9, 12),
        GET_RAN(12, 16, 1), LOOKUP_VAL(17, 18, 1) } },
    { "a lookup hit overlapping a clear and a forget that answers 0 (forget, then clear)", true,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), LOOKUP_VAL(5, 9, 0), CLEAR(6, 10), FORGET_OK(7, 11),
        LOOKUP_NONE(12, 13) } },
    { "a hit overlapping a completed forget may still see the value", true,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), FORGET_OK(11, 13), GET_VAL(12, 16, 0), LOOKUP_NONE(17, 18) } },
    { "a clear inside a computation detaches it: its waiter gets the value, nothing is stored",
      true,
      { COMP(2, 10) },
      { GET_RAN(1, 12, 0), GET_VAL(3, 13, 0), CLEAR(5, 6), LOOKUP_NONE(14, 15) } },
    { "a clear overlapping the end of a computation: stored then cleared, or detached", true,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), CLEAR(3, 12), LOOKUP_NONE(13, 14) } },
    { "a forget spanning a whole computation answers 0: it came after the value was stored, and a "
      "hit in between sees it", true,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), FORGET_OK(3, 20), GET_VAL(12, 14, 0), LOOKUP_NONE(21, 22) } },

    /* ---- illegal ---- */
    { "a stale value: a hit after a completed forget", false,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), FORGET_OK(5, 6), GET_VAL(7, 8, 0) } },
    { "a stale value: a lookup hit after a completed clear", false,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), CLEAR(5, 6), LOOKUP_VAL(7, 8, 0) } },
    { "two overlapping computations of one key, no forget between", false,
      { COMP(2, 8), COMP(4, 9) },
      { GET_RAN(1, 10, 0), GET_RAN(3, 12, 1), FORGET_OK(13, 14) } },
    { "a stored key computed again, with no forget between", false,
      { COMP(2, 3), COMP(6, 7) },
      { GET_RAN(1, 4, 0), GET_RAN(5, 8, 1) } },
    { "a lookup sees a value before its computation started", false,
      { COMP(6, 8) },
      { LOOKUP_VAL(1, 3, 0), GET_RAN(5, 10, 0) } },
    { "a value from a computation that started and ended before a completed forget", false,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), FORGET_OK(11, 13), GET_VAL(14, 16, 0) } },
    { "a failure code seen by a caller that never overlapped the failed computation", false,
      { COMP_FAIL(2, 4) },
      { GET_RAN_FAIL(1, 6, 0), GET_CODE(8, 10, 0) } },
    { "a detached computation's value is stored", false,
      { COMP(2, 18) },
      { GET_RAN(1, 20, 0), FORGET_NONE(5, 6), LOOKUP_VAL(22, 23, 0) } },
    { "a detached computation's end overwrites the newer value", false,
      { COMP(2, 18), COMP(8, 10) },
      { GET_RAN(1, 20, 0), FORGET_NONE(3, 4), GET_RAN(7, 12, 1), LOOKUP_VAL(22, 23, 0) } },
    { "a new call waits on a computation that a completed forget detached", false,
      { COMP(2, 18) },
      { GET_RAN(1, 20, 0), FORGET_NONE(3, 4), GET_VAL(5, 21, 0) } },
    { "a forget spanning a whole computation answers ENOENT (it detached it), yet a call begun "
      "after the computation ended hits its value", false,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), FORGET_NONE(3, 20), GET_VAL(12, 14, 0) } },
    { "a lookup begun before a forget that detached the computation returns its value", false,
      { COMP(2, 8) },
      { GET_RAN(1, 10, 0), LOOKUP_VAL(3, 12, 0), FORGET_NONE(4, 5) } },
    { "forget answers 0 while the key is only being computed", false,
      { COMP(2, 10) },
      { GET_RAN(1, 12, 0), FORGET_OK(4, 6) } },
    { "a timed get times out with nothing being computed", false,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), TIMED_OUT(5, 6) } },
    { "a lookup misses a stored value", false,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), LOOKUP_NONE(5, 6), GET_VAL(7, 8, 0) } },
    { "a waiter answers before the computation's fn finished", false,
      { COMP(2, 10) },
      { GET_RAN(1, 12, 0), GET_VAL(3, 8, 0) } },
    { "a value that no computation of this key made (another key's)", false,
      { COMP(2, 3) },
      { GET_RAN(1, 4, 0), GET_VAL(5, 6, LC_FOREIGN) } },
};

static void test_checker(void)
{
    size_t n = sizeof hands / sizeof hands[0];
    for (size_t i = 0; i < n; i++) {
        const hand_t *t = &hands[i];
        lc_history_t  h = { t->name, t->ops, 0, t->comps, 0 };
        while (h.nops < sizeof t->ops / sizeof t->ops[0] && t->ops[h.nops].name != NULL)
            h.nops++;
        while (h.ncomps < sizeof t->comps / sizeof t->comps[0] && t->comps[h.ncomps].exit != 0)
            h.ncomps++;
        lc_report_t  rep;
        lc_verdict_t v = lc_check(&h, 0, &rep);
        ok(v == (t->legal ? LC_LINEARIZABLE : LC_VIOLATION), "checker %s: %s",
           t->legal ? "accepts" : "rejects", t->name);
        if (v != LC_LINEARIZABLE)
            diag("  checker: %s", rep.why);
    }
}

/* ================================================================================================
 * Part 2: the stress
 */

enum {
    THREADS = 8,
    NUMS = 3,               /* key numbers per round */
    KEYS = 2 * NUMS,        /* each number as a u64 key and as a byte key */
    CALLS = 30,             /* calls per thread per round: ~45 per key history */
    MAX_COMPS = THREADS * CALLS + 16,
    ROUNDS_SCALE1 = 8000,   /* rounds at scale 1: ~10 s on a loaded 2-core machine */
    PRINT_MAX = 3,          /* failing histories printed in full */
    STOP_AFTER = 20,        /* failing keys after which the stress stops early */
};

/* values: this tag in the top 24 bits, the computation id in the low 40 */
#define VALUE_TAG 0x4C494E0000000000ull
#define VALUE_ID_MASK 0x000000FFFFFFFFFFull
#define KEY_BASE 0x10000u

/* A key's history holds every call of the round in the worst case, plus the final lookup. */
_Static_assert(THREADS * CALLS + 1 <= LC_MAX_OPS, "a round's calls must fit in one history");

typedef enum { R_GET, R_GET_TIMED, R_LOOKUP, R_FORGET, R_CLEAR } rkind_t;

/* One call as recorded by the thread that made it. */
typedef struct rec {
    rkind_t  kind;
    int      key;        /* 0..KEYS-1; -1 for clear (every key) */
    int      rc;
    bool     garbage;    /* a value no computation writes (bad tag, bytes, length, alignment) */
    uint64_t cid;        /* the computation the answer names (value or code), 0 none */
    int      ran;        /* this round's index of the computation whose fn this call ran, -1 */
    int      ran_more;   /* further fn runs inside this one call (must stay 0) */
    int64_t  timeout_ns; /* timed gets; -1 otherwise */
    uint64_t inv, resp;
} rec_t;

/* One computation, as recorded by its fn. */
typedef struct comp {
    int      key;
    uint64_t entry, exit;
    bool     failed;
    bool     wrong_key; /* fn was handed a key other than its call's */
} comp_t;

typedef struct worker {
    unsigned index;
    uint64_t rng;
    rec_t    recs[CALLS];
    rec_t   *cur; /* the call in progress, for fn */
} worker_t;

static struct {
    memo_t              *m;
    pthread_barrier_t    start, end;
    unsigned             rounds;
    bool                 stop;            /* written by main between the barriers */
    unsigned             round;           /* ditto */
    uint64_t             round_first_cid; /* ditto */
    atomic_uint_fast64_t clock;
    atomic_int           ncomps;
    atomic_int           fn_errors;       /* fn called outside a call, or past MAX_COMPS */
    comp_t               comps[MAX_COMPS];
    worker_t             workers[THREADS];
    rec_t                final[KEYS];     /* main's closing lookups */
} S;

/* A stamp: seq_cst read-modify-writes of one counter are totally ordered consistently with
 * happens-before, so a stamp taken after a call returned is larger than every stamp the calls it
 * could have observed took before. */
static uint64_t tick(void)
{
    return atomic_fetch_add(&S.clock, 1) + 1;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t key_number(unsigned round, int key)
{
    return KEY_BASE + (uint64_t)round * NUMS + (uint64_t)(key / 2);
}

static bool key_is_bytes(int key)
{
    return key % 2 == 1;
}

static size_t value_len(uint64_t cid)
{
    return 24 + (size_t)(cid % 40);
}

/* A random pause inside fn: nothing, a yield, or a short or a longer sleep. */
static void fn_pause(worker_t *w)
{
    unsigned x = (unsigned)(rng_next(&w->rng) % 100);
    if (x < 35)
        return;
    if (x < 65)
        sched_yield();
    else if (x < 90)
        tap_sleep_ns(5000 + rng_next(&w->rng) % 45000);
    else
        tap_sleep_ns(100000 + rng_next(&w->rng) % 300000);
}

/* Both fns: record the computation, pause, fail 1 time in 7. */
static int fn_common(worker_t *w, bool bytes, const void *key, size_t key_len, uint64_t key_u64,
                     memo_result_t *out, uint64_t *value)
{
    uint64_t entry = tick();
    rec_t   *r = w->cur;
    int      idx = atomic_fetch_add(&S.ncomps, 1);
    if (r == NULL || idx >= MAX_COMPS) {
        atomic_fetch_add(&S.fn_errors, 1);
        return 1;
    }
    uint64_t cid = S.round_first_cid + (uint64_t)idx;
    comp_t  *c = &S.comps[idx];
    uint64_t want = key_number(S.round, r->key);
    c->key = r->key;
    c->entry = entry;
    c->wrong_key = bytes ? (key_len != sizeof want || memcmp(key, &want, sizeof want) != 0)
                         : key_u64 != want;
    c->wrong_key |= bytes != key_is_bytes(r->key);
    if (r->ran < 0)
        r->ran = idx;
    else
        r->ran_more++;
    fn_pause(w);
    c->failed = rng_next(&w->rng) % 7 == 0;
    if (!c->failed) {
        if (bytes) {
            size_t         len = value_len(cid);
            unsigned char *p = memo_result_alloc(out, len);
            if (p == NULL) {
                c->failed = true; /* MEMO_ENOMEM travels as the code: the call gets BAD */
                c->exit = tick();
                return MEMO_ENOMEM;
            }
            uint64_t head[2] = { VALUE_TAG | cid, want };
            memcpy(p, head, sizeof head);
            for (size_t i = sizeof head; i < len; i++)
                p[i] = (unsigned char)(cid * 31 + i);
        } else {
            *value = VALUE_TAG | cid;
        }
    }
    c->exit = tick();
    /* Codes are small, as real ones are: 1 + this round's index, unique within the round (keys
     * are fresh each round, so that is enough to name the computation). */
    return c->failed ? 1 + idx : 0;
}

static int fn_u64(void *ctx, uint64_t key, uint64_t *value)
{
    return fn_common(ctx, false, NULL, 0, key, NULL, value);
}

static int fn_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    return fn_common(ctx, true, key, key_len, 0, out, NULL);
}

static void decode_u64(rec_t *r, uint64_t v)
{
    if ((v & ~VALUE_ID_MASK) != VALUE_TAG)
        r->garbage = true;
    else
        r->cid = v & VALUE_ID_MASK;
}

static void decode_bytes(rec_t *r, const memo_ref_t *ref, uint64_t n)
{
    uint64_t head[2];
    if (ref->len < sizeof head || ((uintptr_t)ref->data % _Alignof(max_align_t)) != 0) {
        r->garbage = true;
        return;
    }
    memcpy(head, ref->data, sizeof head);
    uint64_t cid = head[0] & VALUE_ID_MASK;
    const unsigned char *p = ref->data;
    bool good = (head[0] & ~VALUE_ID_MASK) == VALUE_TAG && head[1] == n && ref->len == value_len(cid);
    for (size_t i = sizeof head; good && i < ref->len; i++)
        good = p[i] == (unsigned char)(cid * 31 + i);
    if (good)
        r->cid = cid;
    else
        r->garbage = true;
}

/* One recorded call on key `key` of this round (or a clear). */
static void call(worker_t *w, rec_t *r)
{
    uint64_t n = key_number(S.round, r->key);
    bool     bytes = r->key >= 0 && key_is_bytes(r->key);
    w->cur = r;
    r->inv = tick();
    switch (r->kind) {
    case R_GET:
    case R_GET_TIMED: {
        bool timed = r->kind == R_GET_TIMED;
        if (bytes) {
            memo_ref_t ref = MEMO_REF_INIT;
            r->rc = timed ? memo_get_timed(S.m, &n, sizeof n, fn_bytes, w, (uint64_t)r->timeout_ns, &ref)
                          : memo_get(S.m, &n, sizeof n, fn_bytes, w, &ref);
            r->resp = tick();
            if (r->rc == 0)
                decode_bytes(r, &ref, n);
            memo_release(&ref);
        } else {
            uint64_t v = 0;
            r->rc = timed ? memo_get_u64_timed(S.m, n, fn_u64, w, (uint64_t)r->timeout_ns, &v)
                          : memo_get_u64(S.m, n, fn_u64, w, &v);
            r->resp = tick();
            if (r->rc == 0)
                decode_u64(r, v);
        }
        if (r->rc > 0)
            r->cid = S.round_first_cid + (uint64_t)r->rc - 1;
        break;
    }
    case R_LOOKUP:
        if (bytes) {
            memo_ref_t ref = MEMO_REF_INIT;
            r->rc = memo_lookup(S.m, &n, sizeof n, &ref);
            r->resp = tick();
            if (r->rc == 0)
                decode_bytes(r, &ref, n);
            memo_release(&ref);
        } else {
            uint64_t v = 0;
            r->rc = memo_lookup_u64(S.m, n, &v);
            r->resp = tick();
            if (r->rc == 0)
                decode_u64(r, v);
        }
        break;
    case R_FORGET:
        r->rc = bytes ? memo_forget(S.m, &n, sizeof n) : memo_forget_u64(S.m, n);
        r->resp = tick();
        break;
    case R_CLEAR:
        memo_clear(S.m);
        r->rc = 0;
        r->resp = tick();
        break;
    }
    w->cur = NULL;
}

static const int64_t TIMEOUTS[] = { 0, 2000, 20000, 200000 };

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    for (;;) {
        tap_barrier_wait(&S.start);
        if (S.stop)
            break;
        for (int i = 0; i < CALLS; i++) {
            rec_t *r = &w->recs[i];
            memset(r, 0, sizeof *r);
            r->ran = -1;
            r->timeout_ns = -1;
            r->key = (int)(rng_next(&w->rng) % KEYS);
            unsigned x = (unsigned)(rng_next(&w->rng) % 1000);
            if (x < 420) {
                r->kind = R_GET;
            } else if (x < 600) {
                r->kind = R_GET_TIMED;
                r->timeout_ns = TIMEOUTS[rng_next(&w->rng) % 4];
            } else if (x < 800) {
                r->kind = R_LOOKUP;
            } else if (x < 990) {
                r->kind = R_FORGET;
            } else {
                r->kind = R_CLEAR;
                r->key = -1;
            }
            call(w, r);
            if (rng_next(&w->rng) % 8 == 0)
                sched_yield();
        }
        tap_barrier_wait(&S.end);
    }
    return NULL;
}

/* ---- checking a round ---- */

typedef struct totals {
    uint64_t calls, keys, computations, failed, timeouts, waiter_codes, overlaps_forget,
        steps, max_steps_key;
    uint64_t violations, unknown, bad_overlaps, garbage, ran_twice, wrong_key;
    uint64_t stats_bad[4]; /* misses, errors, hits + waits, entries */
    unsigned stats_first_bad_round[4];
    uint64_t stored;       /* entries the model says are stored now */
} totals_t;

static const char *const STAT_NAMES[4] = { "misses", "errors", "hits + waits", "entries" };

static void print_line(void *ctx, const char *line)
{
    (void)ctx;
    diag("%s", line);
}

static lc_answer_t answer_of(const rec_t *r)
{
    switch (r->kind) {
    case R_GET:
    case R_GET_TIMED:
        if (r->rc == 0)
            return LC_A_VALUE;
        if (r->rc > 0)
            return LC_A_CODE;
        return r->rc == MEMO_ETIMEDOUT ? LC_A_TIMEDOUT : LC_A_BAD;
    case R_LOOKUP:
        return r->rc == 0 ? LC_A_VALUE : r->rc == MEMO_ENOENT ? LC_A_ENOENT : LC_A_BAD;
    case R_FORGET:
        return r->rc == 0 ? LC_A_OK : r->rc == MEMO_ENOENT ? LC_A_ENOENT : LC_A_BAD;
    case R_CLEAR:
        return LC_A_NONE;
    }
    return LC_A_BAD;
}

static const char *name_of(const rec_t *r, bool bytes)
{
    switch (r->kind) {
    case R_GET: return bytes ? "get" : "get_u64";
    case R_GET_TIMED: return bytes ? "get_timed" : "get_u64_timed";
    case R_LOOKUP: return bytes ? "lookup" : "lookup_u64";
    case R_FORGET: return bytes ? "forget" : "forget_u64";
    case R_CLEAR: return "clear";
    }
    return "?";
}

static lc_op_t to_op(const rec_t *r, unsigned thread, int key, const int *local, int ncomps)
{
    lc_op_t op = { 0 };
    op.kind = r->kind == R_LOOKUP ? LC_LOOKUP : r->kind == R_FORGET ? LC_FORGET
            : r->kind == R_CLEAR  ? LC_CLEAR  : LC_GET;
    op.answer = answer_of(r);
    op.comp = LC_NO_COMP;
    if (op.answer == LC_A_VALUE || op.answer == LC_A_CODE) {
        op.comp = LC_FOREIGN;
        if (!r->garbage && r->cid >= S.round_first_cid) {
            uint64_t idx = r->cid - S.round_first_cid;
            if (idx < (uint64_t)ncomps && S.comps[idx].key == key)
                op.comp = local[idx];
        }
    }
    op.ran = r->ran >= 0 && r->ran < ncomps ? local[r->ran] : LC_NO_COMP;
    op.inv = r->inv;
    op.resp = r->resp;
    op.thread = thread;
    op.rc = r->rc;
    op.timeout_ns = r->timeout_ns;
    op.name = name_of(r, key_is_bytes(key));
    return op;
}

static void check_round(unsigned round, totals_t *t, const memo_stats_t *before,
                        const memo_stats_t *after, bool had_clear)
{
    int ncomps = atomic_load(&S.ncomps);
    if (ncomps > MAX_COMPS)
        ncomps = MAX_COMPS;
    uint64_t answered = 0, failed = 0;

    /* the stats identities, over this round (quiescent: the threads are parked) */
    for (unsigned i = 0; i < THREADS; i++)
        for (int j = 0; j < CALLS; j++) {
            const rec_t *r = &S.workers[i].recs[j];
            if ((r->kind == R_GET || r->kind == R_GET_TIMED) && r->ran < 0 && r->rc >= 0)
                answered++;
            if (r->kind == R_LOOKUP && r->rc == 0)
                answered++;
            t->timeouts += r->rc == MEMO_ETIMEDOUT;
            t->waiter_codes += (r->kind == R_GET || r->kind == R_GET_TIMED) && r->ran < 0 && r->rc > 0;
            t->garbage += r->garbage;
            t->ran_twice += r->ran_more > 0;
        }
    uint64_t found = 0;
    for (int k = 0; k < KEYS; k++)
        found += S.final[k].rc == 0;
    answered += found;
    for (int c = 0; c < ncomps; c++) {
        failed += S.comps[c].failed;
        t->wrong_key += S.comps[c].wrong_key;
    }
    t->computations += (uint64_t)ncomps;
    t->failed += failed;
    t->stored = (had_clear ? 0 : t->stored) + found;
    uint64_t got[4] = { after->misses - before->misses, after->errors - before->errors,
                        (after->hits + after->waits) - (before->hits + before->waits), after->entries };
    uint64_t want[4] = { (uint64_t)ncomps, failed, answered, t->stored };
    for (int i = 0; i < 4; i++)
        if (got[i] != want[i]) {
            if (t->stats_bad[i]++ == 0) {
                t->stats_first_bad_round[i] = round;
                diag("round %u: stats %s: %" PRIu64 " (expected %" PRIu64 ")", round,
                     STAT_NAMES[i], got[i], want[i]);
            }
        }

    /* the per-key histories */
    static lc_op_t ops[LC_MAX_OPS];
    static lc_comp_t comps[MAX_COMPS];
    static int local[MAX_COMPS];
    for (int k = 0; k < KEYS; k++) {
        int nc = 0;
        for (int c = 0; c < ncomps; c++) {
            local[c] = LC_FOREIGN;
            if (S.comps[c].key != k)
                continue;
            local[c] = nc;
            comps[nc++] = (lc_comp_t){ S.comps[c].entry, S.comps[c].exit, S.comps[c].failed,
                                       S.round_first_cid + (uint64_t)c };
        }
        size_t n = 0;
        for (unsigned i = 0; i < THREADS; i++)
            for (int j = 0; j < CALLS; j++) { /* fits: see the _Static_assert above */
                const rec_t *r = &S.workers[i].recs[j];
                if (r->key == k || r->kind == R_CLEAR)
                    ops[n++] = to_op(r, i, k, local, ncomps);
            }
        ops[n++] = to_op(&S.final[k], THREADS, k, local, ncomps);
        char name[64];
        snprintf(name, sizeof name, "%s %" PRIu64 " (round %u)", key_is_bytes(k) ? "bytes" : "u64",
                 key_number(round, k), round);
        lc_history_t h = { name, ops, n, comps, (size_t)nc };
        lc_report_t  rep;
        lc_verdict_t v = lc_check(&h, 0, &rep);
        t->calls += n;
        t->keys++;
        t->steps += rep.steps;
        if (rep.steps > t->max_steps_key)
            t->max_steps_key = rep.steps;
        t->overlaps_forget += rep.overlaps_forget;
        t->bad_overlaps += rep.overlaps_bad;
        if (v == LC_LINEARIZABLE)
            continue;
        uint64_t bad = v == LC_VIOLATION ? ++t->violations : ++t->unknown;
        if (t->violations + t->unknown <= PRINT_MAX) {
            diag("key %s: %s: %s", name, v == LC_VIOLATION ? "VIOLATION" : "UNDECIDED", rep.why);
            lc_print(&h, print_line, NULL);
        } else if (bad == PRINT_MAX + 1) {
            diag("(further failing histories are counted, not printed)");
        }
    }
}

static void test_stress(unsigned scale, uint64_t seed)
{
    unsigned rounds = ROUNDS_SCALE1 * scale;
#ifdef TAP_SANITIZED
    rounds = rounds / 2 ? rounds / 2 : 1; /* measured: TSan ~2x, ASan ~1x the plain time per round */
#endif
    memo_config_t cfg = MEMO_CONFIG_INIT;
    cfg.shards = 4; /* keys share shards: more meetings on shard locks, cheaper clears */
    if (test_memo_create(&S.m, &cfg) != 0)
        bail_out("memo_create failed");
    tap_barrier_init(&S.start, THREADS + 1);
    tap_barrier_init(&S.end, THREADS + 1);
    pthread_t tids[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        S.workers[i].index = i;
        S.workers[i].rng = seed ^ (0xA0761D6478BD642Full * (i + 1));
    }
    tap_start_threads(tids, THREADS, worker_main, S.workers, sizeof S.workers[0]);

    totals_t t;
    memset(&t, 0, sizeof t);
    uint64_t t0 = tap_now_ns(), check_ns = 0;
    unsigned done = 0;
    static worker_t closer; /* main's own: fn never runs in a lookup, but call() wants one */
    memo_stats_t before, after;
    memo_stats(S.m, &before);
    for (unsigned round = 0; round < rounds; round++) {
        S.round = round;
        S.round_first_cid = 1 + (uint64_t)round * MAX_COMPS;
        if (S.round_first_cid + MAX_COMPS > VALUE_ID_MASK)
            bail_out("too many rounds for the computation ids in values");
        atomic_store(&S.ncomps, 0);
        tap_barrier_wait(&S.start);
        tap_barrier_wait(&S.end);
        /* parked: close each key's history with a lookup */
        for (int k = 0; k < KEYS; k++) {
            rec_t *r = &S.final[k];
            memset(r, 0, sizeof *r);
            r->kind = R_LOOKUP;
            r->key = k;
            r->ran = -1;
            r->timeout_ns = -1;
            call(&closer, r);
        }
        bool had_clear = false;
        for (unsigned i = 0; i < THREADS; i++)
            for (int j = 0; j < CALLS; j++)
                had_clear |= S.workers[i].recs[j].kind == R_CLEAR;
        memo_stats(S.m, &after);
        uint64_t c0 = tap_now_ns();
        check_round(round, &t, &before, &after, had_clear);
        check_ns += tap_now_ns() - c0;
        before = after;
        done++;
        if (t.violations + t.unknown >= STOP_AFTER) {
            diag("stopping after %u rounds: %" PRIu64 " failing keys", done, t.violations + t.unknown);
            break;
        }
    }
    S.stop = true;
    tap_barrier_wait(&S.start);
    tap_join_threads(tids, THREADS);
    double secs = (double)(tap_now_ns() - t0) / 1e9;

    diag("scale %u, seed %" PRIu64 ", %u threads, %u rounds of %d calls per thread on %d keys",
         scale, seed, THREADS, done, CALLS, KEYS);
    diag("checked %" PRIu64 " calls in %" PRIu64 " key histories (%.1f per key), %" PRIu64
         " computations (%" PRIu64 " failed), %" PRIu64 " search steps (at most %" PRIu64
         " for one key), checking took %.2f s",
         t.calls, t.keys, t.keys ? (double)t.calls / (double)t.keys : 0.0, t.computations,
         t.failed, t.steps, t.max_steps_key, (double)check_ns / 1e9);
    diag("seen: %" PRIu64 " timeouts, %" PRIu64 " failure codes handed to waiters, %" PRIu64
         " overlapping computations after a forget or clear detached the first",
         t.timeouts, t.waiter_codes, t.overlaps_forget);
    diag("elapsed %.2f s", secs);

    is_u64(t.violations, 0, "every key history is linearizable (%" PRIu64 " keys, %" PRIu64 " calls)",
           t.keys, t.calls);
    is_u64(t.unknown, 0, "the checker decided every history within its bound");
    is_u64(t.bad_overlaps, 0, "at most once: no two fn runs of a key overlapped without a forget or clear between");
    is_u64(t.garbage, 0, "every value read is one that some computation wrote (tag, key, bytes, alignment)");
    is_u64(t.ran_twice + t.wrong_key + (uint64_t)atomic_load(&S.fn_errors), 0,
           "fn ran at most once per call, on its call's key");
    for (int i = 0; i < 4; i++)
        is_u64(t.stats_bad[i], 0, "stats.%s adds up after every round%s", STAT_NAMES[i],
               i == 2 ? " (calls answered without running fn + lookups found)" : "");

    /* every key of every round: what lookup finds is what the model says is stored */
    uint64_t present = 0;
    for (unsigned r = 0; r < done; r++)
        for (int k = 0; k < KEYS; k++) {
            uint64_t n = key_number(r, k), v;
            if (key_is_bytes(k)) {
                memo_ref_t ref = MEMO_REF_INIT;
                if (memo_lookup(S.m, &n, sizeof n, &ref) == 0) {
                    present++;
                    memo_release(&ref);
                }
            } else {
                present += memo_lookup_u64(S.m, n, &v) == 0;
            }
        }
    memo_stats(S.m, &after);
    is_u64(present, t.stored, "a final lookup of all %u keys finds what the model stores", done * KEYS);
    is_u64(after.entries, present, "stats.entries == keys that lookup finds");
    cmp_u64(t.timeouts, >, 0, "the stress saw timed-out calls");
    cmp_u64(t.waiter_codes, >, 0, "the stress saw failure codes handed to waiters");
    cmp_u64(after.waits, >, 0, "the stress saw waiters");
    cmp_u64(t.overlaps_forget, >, 0, "the stress saw computations detached by a forget or clear and "
            "overlapped by the next one");

    tap_barrier_destroy(&S.start);
    tap_barrier_destroy(&S.end);
    memo_destroy(S.m);
}

int main(void)
{
    unsigned scale = env_unsigned("MEMO_STRESS_SCALE", 1, 100000);
    uint64_t seed;
    const char *s = getenv("MEMO_STRESS_SEED");
    if (s != NULL && *s != '\0')
        seed = strtoull(s, NULL, 0);
    else
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    /* a round takes ~10-20 ms at most on a loaded 2-core machine, sanitizers ~4x */
#ifdef TAP_SANITIZED
    tap_watchdog(240 + 60 * scale);
#else
    tap_watchdog(120 + 60 * scale);
#endif
    diag("stress_linear: scale %u, seed %" PRIu64 " (MEMO_STRESS_SEED=%" PRIu64
         " replays the random choices)", scale, seed, seed);
    test_checker();
    test_stress(scale, seed);
    return done_testing();
}
