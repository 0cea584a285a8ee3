/*
 * test_exception (C++17): a C++ exception thrown through fn, and the C++ twin that proves
 * <memo.h> compiles as C++ (MEMO_DEFINE_U64, MEMO_DEFINE, MEMO_DEFINE_BOUNDED, MEMO_CONFIG_INIT,
 * MEMO_REF_INIT).
 *
 * Catches: a memo built without -fexceptions or without a cleanup on the fn call (the exception
 * reaches the caller but the in-flight marker stays: waiters sleep forever and the next call
 * hangs, so the watchdog fires; or std::terminate); waiters that all recompute at once (more
 * than one computation afresh); a marker abandoned only for the innermost of nested
 * computations; memo state (flight stack, held epoch section) left corrupt in the throwing
 * thread, so its later calls misbehave.
 */
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tap.h"
#include "helpers.h"

#include <memo.h>

struct cxx_pair {
    double   x;
    uint16_t y;
};
/* The decorators' functions have external linkage: declared first (-Wmissing-declarations). */
cxx_pair cxx_split(uint32_t a, double b, uint8_t c);
memo_t  *cxx_split_memo();
uint64_t cxx_tri(uint32_t n);
memo_t  *cxx_tri_memo();
uint64_t cxx_fib(uint64_t n);
memo_t  *cxx_fib_memo();

MEMO_DEFINE(cxx_pair, cxx_split, (uint32_t, a), (double, b), (uint8_t, c))
{
    cxx_pair p = { b * 2, static_cast<uint16_t>(a + c) };
    return p;
}

MEMO_DEFINE_BOUNDED(uint64_t, cxx_tri, 2, (uint32_t, n))
{
    return static_cast<uint64_t>(n) * (n + 1) / 2;
}

MEMO_DEFINE_U64(cxx_fib, n)
{
    return n < 2 ? n : cxx_fib(n - 1) + cxx_fib(n - 2);
}

namespace {

struct boom : std::runtime_error {
    explicit boom(uint64_t k) : std::runtime_error("boom " + std::to_string(k)), key(k) {}
    uint64_t key;
};

struct ctx_t {
    memo_t               *m = nullptr;
    bool                  nested = false;
    std::atomic<int>      inside{0};
    std::atomic<int>      arrived{0};
    int                   expect_waiters = 0;
    std::atomic<int>      good_calls[32] = {};
    std::atomic<int>      throws{0};
};

uint64_t good_value(uint64_t k) { return k * 1000 + 7; }

void hold_then_throw(ctx_t *c, uint64_t key)
{
    c->inside = 1;
    uint64_t deadline = tap_now_ns() + 10000000000ull;
    while (c->arrived.load() < c->expect_waiters && tap_now_ns() < deadline)
        tap_sleep_ms(1);
    if (c->expect_waiters)
        tap_sleep_ms(50); // the waiters are asleep on the marker by now
    c->throws++;
    throw boom(key);
}

int throwing_u64(void *ctx, uint64_t key, uint64_t *value)
{
    auto *c = static_cast<ctx_t *>(ctx);
    if (c->nested && key == 1) {
        memo_get_u64(c->m, 2, throwing_u64, c, value); // throws through here
        return 77;
    }
    hold_then_throw(c, key);
    return 77;
}

int throwing_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    auto    *c = static_cast<ctx_t *>(ctx);
    uint64_t k = 0;
    std::memcpy(&k, key, key_len < sizeof k ? key_len : sizeof k);
    memo_result_set(out, "partial", 7); // must be dropped
    if (c->nested && k == 1) {
        uint64_t   inner = 2;
        memo_ref_t r = MEMO_REF_INIT;
        memo_get(c->m, &inner, sizeof inner, throwing_bytes, c, &r);
        return 77;
    }
    hold_then_throw(c, k);
    return 77;
}

int good_u64(void *ctx, uint64_t key, uint64_t *value)
{
    auto *c = static_cast<ctx_t *>(ctx);
    c->good_calls[key % 32]++;
    *value = good_value(key);
    return 0;
}

int good_bytes(void *ctx, const void *key, size_t key_len, memo_result_t *out)
{
    auto    *c = static_cast<ctx_t *>(ctx);
    uint64_t k = 0;
    if (key_len != sizeof k)
        return 1;
    std::memcpy(&k, key, sizeof k);
    c->good_calls[k % 32]++;
    uint64_t v = good_value(k);
    return memo_result_set(out, &v, sizeof v);
}

int get(ctx_t *c, bool bytes, uint64_t key, bool throwing, uint64_t *v)
{
    if (!bytes)
        return memo_get_u64(c->m, key, throwing ? throwing_u64 : good_u64, c, v);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_get(c->m, &key, sizeof key, throwing ? throwing_bytes : good_bytes, c, &r);
    if (rc == 0) {
        if (r.len == sizeof *v)
            std::memcpy(v, r.data, sizeof *v);
        else
            rc = 555;
        memo_release(&r);
    }
    return rc;
}

int lookup(ctx_t *c, bool bytes, uint64_t key, uint64_t *v)
{
    if (!bytes)
        return memo_lookup_u64(c->m, key, v);
    memo_ref_t r = MEMO_REF_INIT;
    int        rc = memo_lookup(c->m, &key, sizeof key, &r);
    if (rc == 0 && r.len == sizeof *v)
        std::memcpy(v, r.data, sizeof *v);
    memo_release(&r);
    return rc;
}

void run(bool bytes, bool nested, int waiters, int rounds)
{
    char label[128];
    std::snprintf(label, sizeof label, "exception through fn, %s keys%s, %d waiters",
                  bytes ? "byte" : "u64", nested ? ", nested a -> b" : "", waiters);
    int caught_right = 0, bad_rc = 0, bad_value = 0, bad_calls = 0, bad_lookup = 0,
        bad_after = 0;
    for (int round = 0; round < rounds; round++) {
        ctx_t c;
        c.nested = nested;
        c.expect_waiters = waiters;
        if (test_memo_create(&c.m, nullptr) != 0)
            bail_out("memo_create");
        std::vector<int>      rc(waiters, -100);
        std::vector<uint64_t> val(waiters, 0), key_of(waiters, 1);
        bool                  caught = false;
        std::atomic<int>      finished{0};
        std::thread           thrower([&] {
            uint64_t v = 0;
            try {
                get(&c, bytes, 1, true, &v);
            } catch (const boom &e) {
                caught = e.key == (nested ? 2u : 1u);
            }
            // the throwing thread goes on using memo normally
            for (uint64_t k = 10; k < 20; k++)
                if (get(&c, bytes, k, false, &v) != 0 || v != good_value(k))
                    bad_after++;
        });
        uint64_t deadline = tap_now_ns() + 10000000000ull;
        while (!c.inside.load() && tap_now_ns() < deadline)
            tap_sleep_ms(1);
        std::vector<std::thread> ws;
        for (int i = 0; i < waiters; i++) {
            key_of[i] = nested ? 1 + i % 2 : 1;
            ws.emplace_back([&, i] {
                c.arrived++;
                rc[i] = get(&c, bytes, key_of[i], false, &val[i]);
                finished++;
            });
        }
        thrower.join();
        // a stranded waiter fails here, naming itself, long before the watchdog
        uint64_t limit = tap_now_ns() + 10000000000ull;
        while (finished.load() < waiters && tap_now_ns() < limit)
            tap_sleep_ms(1);
        if (finished.load() < waiters) {
            ok(0, "%s: round %d: waiters still waiting 10 s after the exception", label, round);
            bail_out("%s: waiters stranded by a computation that threw", label);
        }
        for (auto &t : ws)
            t.join();
        caught_right += caught;
        if (waiters == 0) {
            uint64_t v = 0;
            bad_rc += get(&c, bytes, 1, false, &v) != 0;
            bad_value += v != good_value(1);
        }
        for (int i = 0; i < waiters; i++) {
            if (rc[i] != 0) {
                if (bad_rc++ < 5)
                    diag("%s: round %d waiter %d got %s", label, round, i, memo_err_name(rc[i]));
            } else if (val[i] != good_value(key_of[i])) {
                bad_value++;
            }
        }
        for (uint64_t k = 1; k <= (nested ? 2u : 1u); k++) {
            int want = (waiters > 0 || k == 1) ? 1 : 0;
            if (c.good_calls[k].load() != want && bad_calls++ < 5)
                diag("%s: round %d key %d computed %d times afresh", label, round, (int)k,
                     c.good_calls[k].load());
            uint64_t v = 0;
            int      lrc = lookup(&c, bytes, k, &v);
            if (want ? (lrc != 0 || v != good_value(k)) : lrc != MEMO_ENOENT)
                bad_lookup++;
        }
        memo_destroy(c.m);
    }
    is_int(caught_right, rounds, "%s: the caller of memo_get caught the exception (%d rounds)", label,
           rounds);
    is_int(bad_rc, 0, "%s: every waiter woke and got 0", label);
    is_int(bad_value, 0, "%s: every waiter got the right value", label);
    is_int(bad_calls, 0, "%s: exactly one computation afresh per key", label);
    is_int(bad_lookup, 0, "%s: the fresh value is stored", label);
    is_int(bad_after, 0, "%s: the throwing thread's later calls work", label);
}

void test_header_in_cxx()
{
    memo_config_t cfg = MEMO_CONFIG_INIT;
    is_size(cfg.struct_size, sizeof(memo_config_t), "C++: MEMO_CONFIG_INIT sets struct_size");
    cfg.shards = 4;
    memo_t *m = nullptr;
    is_code(test_memo_create(&m, &cfg), 0, "C++: memo_create with MEMO_CONFIG_INIT");
    memo_ref_t r = MEMO_REF_INIT;
    ok(r.data == nullptr && r.len == 0, "C++: MEMO_REF_INIT is empty");
    ctx_t c;
    c.m = m;
    uint64_t v = 0;
    is_code(get(&c, true, 3, false, &v), 0, "C++: memo_get");
    is_u64(v, good_value(3), "C++: value");
    memo_destroy(m);

    std::vector<std::thread> ts;
    std::atomic<int>         wrong{0};
    for (int i = 0; i < 8; i++)
        ts.emplace_back([&, i] {
            for (uint64_t n = 0; n <= 90; n++) {
                uint64_t k = (i % 2) ? 90 - n : n;
                uint64_t a = 0, b = 1;
                for (uint64_t j = 0; j < k; j++) {
                    uint64_t t = a + b;
                    a = b;
                    b = t;
                }
                if (cxx_fib(k) != a)
                    wrong++;
            }
        });
    for (auto &t : ts)
        t.join();
    is_u64(cxx_fib(90), 2880067194370816120ull, "C++: MEMO_DEFINE_U64 fib(90)");
    cxx_pair sp = cxx_split(40, 1.5, 2), sp2 = cxx_split(40, 1.5, 2);
    is_int(sp.x == 3.0 && sp.y == 42 && sp2.x == 3.0 && sp2.y == 42, 1, "C++: MEMO_DEFINE, three arguments, a struct result");
    is_int(wrong.load(), 0, "C++: MEMO_DEFINE_U64 fib(0..90) from 8 threads all right");
    memo_stats_t s;
    memo_stats(cxx_fib_memo(), &s);
    is_u64(s.misses, 91, "C++: cxx_fib_memo() stats misses == 91");
    uint64_t tri = 0;
    for (uint32_t n = 0; n < 5; n++)
        tri += cxx_tri(n);
    memo_stats(cxx_tri_memo(), &s);
    is_int(tri == 20 && s.entries == 2 && s.evictions == 3, 1, "C++: MEMO_DEFINE_BOUNDED keeps 2 of 5 values");
}

} // namespace

int main()
{
    tap_watchdog(100);
    test_header_in_cxx();
    run(false, false, 8, 20);
    run(true, false, 8, 20);
    run(false, false, 0, 10);
    run(true, false, 0, 10);
    run(false, true, 8, 10);
    run(true, true, 8, 10);
    return done_testing();
}
