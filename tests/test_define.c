/*
 * test_define: MEMO_DEFINE, the decorator for functions of one to four arguments of any copyable
 * types (memo.h).
 *
 *  - values: binomials through a two-argument recursion; a four-argument function of a struct with
 *    padding, a double, a pointer and a uint16_t, returning a struct with padding (the byte-key
 *    path); a one-argument double function (the u64 path).
 *  - each state computed once: binom(n, k) asked from 8 threads at once (more than the CPUs; a
 *    barrier, a watchdog) computes exactly the (n, k) pairs the recursion reaches, once each
 *    (memo_stats.misses of binom_memo()), and every thread gets the right value. Catches a key
 *    that is not the arguments' bytes (pairs that collide or never match: wrong values or extra
 *    misses), and a memo made twice by racing first calls (misses counted in a memo that is lost).
 *  - bitwise keys: 0.0 and -0.0 are different keys; a struct argument's padding does not split a
 *    key (the key struct is zeroed before the fields are copied in); a pointer argument is keyed by
 *    its address.
 *  - bounds: MEMO_DEFINE_BOUNDED keeps at most max_entries values (byte path and u64 path;
 *    max_entries = 1 keeps the last value), recomputes an evicted key once; MEMO_DEFINE_U64_CONFIG
 *    applies its designated initializers.
 */
#include "tap.h"

#include <stdatomic.h>
#include <stdbool.h>

#include <memo.h>

/* Each decorator defines two functions with external linkage: they are declared first, as a
 * header would declare them (-Wmissing-prototypes). */
uint64_t binom(uint32_t n, uint32_t k);
memo_t  *binom_memo(void);
static atomic_uint binom_calls;

MEMO_DEFINE(uint64_t, binom, (uint32_t, n), (uint32_t, k))
{
    atomic_fetch_add(&binom_calls, 1);
    return k == 0 || k == n ? 1 : binom(n - 1, k - 1) + binom(n - 1, k);
}

struct pt {
    int8_t  a; /* 7 bytes of padding follow */
    int64_t b;
};
struct res {
    double x;
    char   tag; /* 7 bytes of padding follow */
};
static atomic_uint mix_calls;
struct res mix(struct pt p, double d, const char *s, uint16_t w);
memo_t    *mix_memo(void);

MEMO_DEFINE(struct res, mix, (struct pt, p), (double, d), (const char *, s), (uint16_t, w))
{
    atomic_fetch_add(&mix_calls, 1);
    struct res r;
    memset(&r, 0, sizeof r);
    r.x = (double)p.a + (double)p.b * d + w;
    r.tag = s[0];
    return r;
}

static atomic_uint neg_calls;
double  neg(double x);
memo_t *neg_memo(void);

MEMO_DEFINE(double, neg, (double, x))
{
    atomic_fetch_add(&neg_calls, 1);
    return -x;
}

int8_t  narrow(int8_t a, uint16_t b, int32_t c);
memo_t *narrow_memo(void);

MEMO_DEFINE(int8_t, narrow, (int8_t, a), (uint16_t, b), (int32_t, c))
{
    return (int8_t)(a + b + c);
}

/* lru_cache(maxsize=4): the byte path (a 12-byte key). */
static atomic_uint price_calls;
double  price(int32_t item, double qty);
memo_t *price_memo(void);

MEMO_DEFINE_BOUNDED(double, price, 4, (int32_t, item), (double, qty))
{
    atomic_fetch_add(&price_calls, 1);
    return item * 1.5 * qty;
}

/* The u64 path, bounded to one value, and a config through MEMO_DEFINE_U64_CONFIG. */
static atomic_uint last_calls;
uint32_t last(uint32_t x);
memo_t  *last_memo(void);

MEMO_DEFINE_BOUNDED(uint32_t, last, 1, (uint32_t, x))
{
    atomic_fetch_add(&last_calls, 1);
    return x * 7;
}

static atomic_uint sq_calls;
uint64_t sq(uint64_t n);
memo_t  *sq_memo(void);

MEMO_DEFINE_U64_CONFIG(sq, n, .max_entries = 3, .failure_ttl_ns = 0)
{
    atomic_fetch_add(&sq_calls, 1);
    return n * n;
}

static uint64_t binom_ref(uint32_t n, uint32_t k)
{
    uint64_t r = 1;
    for (uint32_t i = 1; i <= k; i++)
        r = r * (n - k + i) / i;
    return r;
}

#define THREADS 8
static pthread_barrier_t start;
static atomic_int wrong;

static void *binom_thread(void *arg)
{
    unsigned t = *(const unsigned *)arg;
    tap_barrier_wait(&start);
    for (uint32_t n = 40 + t % 3; n <= 60; n++)
        if (binom(n, n / 2) != binom_ref(n, n / 2))
            atomic_fetch_add(&wrong, 1);
    return NULL;
}

int main(void)
{
    tap_watchdog(60);
    plan_no_plan();

    /* Recursion from 8 threads; each (n, k) with 0 < k < n reachable from (60, 30) computed once. */
    static unsigned ids[THREADS];
    pthread_t tids[THREADS];
    for (unsigned i = 0; i < THREADS; i++)
        ids[i] = i;
    tap_barrier_init(&start, THREADS);
    tap_start_threads(tids, THREADS, binom_thread, ids, sizeof ids[0]);
    if (tap_join_threads_timed(tids, THREADS, 50) != 0)
        bail_out("binom threads did not finish");
    tap_barrier_destroy(&start);
    is_int(atomic_load(&wrong), 0, "binom(n, n/2) for n up to 60, from %d threads: every value right", THREADS);
    /* The states: the pairs (m, j) below (60, 30) with j <= 30 and m - j <= 30 (every thread's
     * (n, n/2) is among them); the borders k == 0 and k == n are states too (their calls are
     * memoized), except (0, 0), which only the borders (1, 0) and (1, 1) would ask for. */
    memo_stats_t st;
    memo_stats(binom_memo(), &st);
    uint64_t states = 0;
    for (uint32_t m = 1; m <= 60; m++)
        for (uint32_t j = 0; j <= m; j++)
            states += j <= 30 && m - j <= 30;
    is_u64(st.misses, states, "each (n, k) computed once: misses = the %llu states reached", (unsigned long long)states);
    is_u64(atomic_load(&binom_calls), states, "the body ran once per state");
    is_u64(st.entries, states, "entries: one per state");
    is_u64(binom(60, 30), 118264581564861424u, "binom(60, 30)");

    /* Four arguments, struct argument and result with padding: the byte path. */
    struct pt p1, p2;
    memset(&p1, 0, sizeof p1);
    memset(&p2, 0xAB, sizeof p2); /* other padding bytes */
    p1.a = p2.a = 3;
    p1.b = p2.b = 10;
    static const char *label = "zeta";
    struct res r1 = mix(p1, 2.5, label, 7);
    is_int(r1.x == 3 + 25 + 7 && r1.tag == 'z', 1, "mix(): a struct result with padding comes back whole");
    struct res r2 = mix(p2, 2.5, label, 7);
    is_int(r2.x == r1.x && r2.tag == r1.tag, 1, "the same arguments with other padding in the struct argument");
    /* A struct argument's own padding is whatever the compiler copies when it is passed by value
     * and assigned (gcc copies it, clang may not): either one key or two, never a wrong value. */
    ok(atomic_load(&mix_calls) == 1 || atomic_load(&mix_calls) == 2,
       "... are one key or two, as the compiler copies the padding (%u computations)", atomic_load(&mix_calls));
    unsigned mix_before = atomic_load(&mix_calls);
    (void)mix(p1, 2.5, label, 7);
    is_u64(atomic_load(&mix_calls), mix_before, "the same arguments again: a hit");
    static const char other[] = "zeta";
    (void)mix(p1, 2.5, other, 7);
    is_u64(atomic_load(&mix_calls), mix_before + 1, "a pointer argument is keyed by its address, not what it points to");

    /* One double: the u64 path; bitwise keys. */
    double a = neg(0.0), b = neg(-0.0);
    is_int(a == 0.0 && b == 0.0, 1, "neg(0.0) and neg(-0.0) are right");
    is_u64(atomic_load(&neg_calls), 2, "0.0 and -0.0 are different keys");
    (void)neg(0.0);
    is_u64(atomic_load(&neg_calls), 2, "neg(0.0) again: a hit");
    memo_stats(neg_memo(), &st);
    is_u64(st.hits, 1, "neg's memo counted one hit");

    /* Mixed widths: int8_t, uint16_t, int32_t in 8 bytes with padding zeroed: the u64 path. */
    is_int(narrow(-3, 300, -290), 7, "narrow(-3, 300, -290)");
    is_int(narrow(-3, 300, -290), 7, "... again");
    memo_stats(narrow_memo(), &st);
    is_u64(st.misses, 1, "narrow: one computation");
    is_u64(st.hits, 1, "narrow: one hit");

    /* MEMO_DEFINE_BOUNDED: at most max_entries values; an evicted key is computed again. */
    for (int32_t item = 0; item < 10; item++)
        is_int(price(item, 2.0) == item * 3.0, 1, "price(%d, 2.0) right", (int)item);
    memo_stats(price_memo(), &st);
    ok(st.entries <= 4, "MEMO_DEFINE_BOUNDED(..., 4, ...): %llu entries after 10 keys", (unsigned long long)st.entries);
    is_u64(st.evictions, 10 - st.entries, "... the rest evicted (evictions = keys - entries)");
    is_u64(atomic_load(&price_calls), 10, "... each key computed once so far");
    unsigned before = atomic_load(&price_calls);
    is_int(price(9, 2.0) == 27.0, 1, "the last key stored is still right");
    is_u64(atomic_load(&price_calls), before, "... and a hit: the newest value is kept");
    /* Which keys went is the policy's choice: find one that is not stored (its key is the
     * decorator's key struct, as the macro builds it). */
    int32_t gone = -1;
    for (int32_t item = 0; item < 10 && gone < 0; item++) {
        struct price_memo__key k;
        memset(&k, 0, sizeof k);
        k.item = item;
        k.qty = 2.0;
        memo_ref_t ref = MEMO_REF_INIT;
        if (memo_lookup(price_memo(), &k, sizeof k, &ref) == MEMO_ENOENT)
            gone = item;
        memo_release(&ref);
    }
    ok(gone >= 0, "an evicted key: price(%d, 2.0) is not stored", (int)gone);
    is_int(price(gone, 2.0) == gone * 3.0, 1, "... asked again, its value is right");
    is_u64(atomic_load(&price_calls), before + 1, "... computed again, once");
    (void)price(gone, 2.0);
    is_u64(atomic_load(&price_calls), before + 1, "... and stored: the next call is a hit");

    is_u64(last(5), 35, "MEMO_DEFINE_BOUNDED(..., 1, ...): last(5)");
    is_u64(last(6), 42, "last(6)");
    is_u64(last(6), 42, "last(6) again");
    is_u64(atomic_load(&last_calls), 2, "max_entries = 1 keeps the last value (a hit)");
    is_u64(last(5), 35, "last(5) again");
    is_u64(atomic_load(&last_calls), 3, "... the value before it was evicted: computed again");
    memo_stats(last_memo(), &st);
    is_u64(st.entries, 1, "one entry");

    for (uint64_t n = 0; n < 8; n++)
        is_u64(sq(n), n * n, "MEMO_DEFINE_U64_CONFIG(sq, n, .max_entries = 3): sq(%llu)", (unsigned long long)n);
    memo_stats(sq_memo(), &st);
    is_u64(st.entries, 3, "... its config applies: 3 entries after 8 keys");
    is_u64(st.evictions, 5, "... 5 evicted");
    return done_testing();
}
