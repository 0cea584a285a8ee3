// W7 (throughput): the bounded memo beside the unbounded one. Its hit ratios on the public traces
// are bench/w7_replay.c and bench/w7_traces.py; this file times memo_get_u64.
//
//  - W7_hits: pure hits, 64K u64 keys (and 1K, whose records all stay in the core's caches: what
//    is left there is the instructions), uniform (as W1), on three memos filled with every key
//    before the timed loop: `memo` (no bound: the lean layout and the default shards),
//    `memo_bounded` (max_entries = 2 x the keys: the policy's layout, nothing to evict) and
//    `memo_ttl` (ttl_ns of a day and the default clock, no bound: every hit reads CLOCK_MONOTONIC).
//    1 and 2 threads. Each memo is built once and kept for the process, as W1's tables.
//  - W7_zipf: get-or-compute on W3's Zipf (s = 0.99) streams over a universe of keys ten times the
//    bound (100K keys, max_entries 10K; quick: 20K and 2K), compute 50 ns of calibrated work, on a
//    fresh memo warmed by one pass of another stream of the same length (seed 2000) before the
//    timed pass: `memo` (no bound) and `memo_bounded` (max_entries = 10% of the universe). 1 and
//    2 threads, each thread on its own stream (seed 1000 + thread, as W3's). Counted: the hit ratio
//    and the evictions of the timed pass (1 - fn calls / calls), entries at the end (<= the bound),
//    wrong values.
#include <map>
#include <memory>
#include <mutex>

#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

constexpr double kZipfS = 0.99;
constexpr uint64_t kStreamSeed = 1000, kWarmSeed = 2000;
constexpr uint64_t kCostNs = 50;
constexpr uint64_t kTtlNs = 86400ull * 1000000000ull; // a day: nothing expires during the run

uint32_t zipf_universe() { return g_quick ? 20000 : 100000; } // W3's
uint64_t zipf_bound() { return zipf_universe() / 10; }
size_t zipf_len() { return g_quick ? 200000 : 1000000; }

enum Kind { kPlain, kBounded, kTtl };
const char *kind_name(Kind k) { return k == kPlain ? "memo" : k == kBounded ? "memo_bounded" : "memo_ttl"; }

memo_t *make_memo(Kind kind, size_t expected, uint64_t max_entries)
{
    memo_config_t c = MEMO_CONFIG_INIT;
    c.expected_entries = expected;
    c.seed = kSeed;
    if (kind == kBounded)
        c.max_entries = max_entries;
    if (kind == kTtl)
        c.ttl_ns = kTtlNs;
    memo_t *m = nullptr;
    int rc = memo_create(&m, &c);
    if (rc != 0) {
        std::fprintf(stderr, "W7: memo_create (%s): %s\n", kind_name(kind), memo_strerror(rc));
        std::abort();
    }
    return m;
}

int store_value(void *, uint64_t key, uint64_t *value)
{
    *value = value_of(key);
    return 0;
}

// ---- pure hits ----------------------------------------------------------------------------------

std::mutex g_hit_memos_lock;

memo_t *hit_memo(Kind kind, size_t n)
{
    static std::map<std::pair<int, size_t>, memo_t *> memos; // kept for the process, as W1's tables
    std::lock_guard<std::mutex> g(g_hit_memos_lock);
    memo_t *&m = memos[{(int)kind, n}];
    if (m == nullptr) {
        m = make_memo(kind, n, 2 * (uint64_t)n);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t v;
            if (memo_get_u64(m, i, store_value, nullptr, &v) != 0)
                std::abort();
        }
        memo_stats_t s;
        memo_stats(m, &s);
        if (s.entries != n || s.evictions != 0) {
            std::fprintf(stderr, "W7: %s holds %llu of %zu keys after filling (%llu evictions)\n", kind_name(kind),
                         (unsigned long long)s.entries, n, (unsigned long long)s.evictions);
            std::abort();
        }
    }
    return m;
}

int must_hit(void *, uint64_t, uint64_t *) { return 1; } // a miss: reported as an error

void BM_hits(benchmark::State &st, Kind kind, size_t n)
{
    memo_t *m = hit_memo(kind, n);
    Rng rng(0x77 + (uint64_t)st.thread_index());
    uint64_t sum = 0, wrong = 0;
    for (auto _ : st) {
        uint64_t i = rng.below(n), v;
        if (__builtin_expect(memo_get_u64(m, i, must_hit, nullptr, &v) != 0, 0)) {
            st.SkipWithError("a key that was stored is missing");
            break;
        }
        wrong += v != value_of(i);
        sum += v;
    }
    benchmark::DoNotOptimize(sum);
    st.SetItemsProcessed(st.iterations());
    if (wrong)
        st.SkipWithError("a hit returned a wrong value");
}

// ---- Zipf get-or-compute ------------------------------------------------------------------------

std::mutex g_streams_lock;

const std::vector<uint32_t> &stream(uint64_t seed)
{
    static std::map<uint64_t, std::vector<uint32_t>> cache;
    std::lock_guard<std::mutex> g(g_streams_lock);
    auto &s = cache[seed];
    if (s.empty())
        s = zipf_stream(zipf_universe(), kZipfS, seed, zipf_len());
    return s;
}

struct W7Run {
    memo_t *m = nullptr;
    RunSync sync;
    std::atomic<uint64_t> calls{0}, wrong{0};
    uint64_t warm_evictions = 0;
};
W7Run g_w7;

struct Compute {
    uint64_t calls = 0;
    static int fn(void *ctx, uint64_t key, uint64_t *value)
    {
        ((Compute *)ctx)->calls++;
        benchmark::DoNotOptimize(do_work(kCostNs, key));
        *value = value_of(key);
        return 0;
    }
};

void BM_zipf(benchmark::State &st, Kind kind)
{
    const int tid = st.thread_index(), threads = st.threads();
    const std::vector<uint32_t> &keys = stream(kStreamSeed + (uint64_t)tid);
    if (tid == 0) {
        g_w7.sync.reset();
        g_w7.calls = 0;
        g_w7.wrong = 0;
        g_w7.m = make_memo(kind, 0, zipf_bound());
        Compute warm;
        for (uint32_t k : stream(kWarmSeed)) {
            uint64_t v;
            if (memo_get_u64(g_w7.m, k, Compute::fn, &warm, &v) != 0)
                std::abort();
        }
        memo_stats_t s;
        memo_stats(g_w7.m, &s);
        g_w7.warm_evictions = s.evictions;
    }
    Compute c;
    uint64_t wrong = 0;
    for (auto _ : st) {
        memo_t *m = g_w7.m; // published by the start barrier
        for (uint32_t k : keys) {
            uint64_t v = 0;
            if (memo_get_u64(m, k, Compute::fn, &c, &v) != 0)
                std::abort();
            wrong += v != value_of(k);
        }
    }
    g_w7.calls += c.calls;
    g_w7.wrong += wrong;
    g_w7.sync.done();
    st.SetItemsProcessed((int64_t)keys.size());
    if (tid != 0)
        return;
    g_w7.sync.wait_all(threads);
    memo_stats_t s;
    memo_stats(g_w7.m, &s);
    uint64_t ops = (uint64_t)keys.size() * (uint64_t)threads;
    st.counters["fn_calls"] = (double)g_w7.calls;
    st.counters["hit_ratio"] = 1.0 - (double)g_w7.calls / (double)ops;
    st.counters["evictions"] = (double)(s.evictions - g_w7.warm_evictions); // the timed pass's
    st.counters["entries_at_end"] = (double)s.entries;
    st.counters["max_entries"] = kind == kBounded ? (double)zipf_bound() : 0.0;
    st.counters["universe"] = (double)zipf_universe();
    st.counters["wrong_values"] = (double)g_w7.wrong;
    memo_destroy(g_w7.m);
    g_w7.m = nullptr;
    if (kind == kBounded && s.entries > zipf_bound())
        st.SkipWithError("the bounded memo holds more than max_entries once the calls are over");
    if (g_w7.wrong)
        st.SkipWithError("wrong values");
}

} // namespace

void register_w7()
{
    for (size_t n : {(size_t)1024, (size_t)65536}) {
        for (Kind k : {kPlain, kBounded, kTtl}) {
            std::string name = std::string("W7_hits/") + kind_name(k) + "/u64/uniform/keys:" + std::to_string(n);
            auto *b = benchmark::RegisterBenchmark(name.c_str(), [k, n](benchmark::State &st) { BM_hits(st, k, n); });
            b->UseRealTime()->Threads(1)->Threads(2);
        }
    }
    for (Kind k : {kPlain, kBounded}) {
        std::string name = std::string("W7_zipf/") + kind_name(k) + "/cost_ns:" + std::to_string(kCostNs);
        auto *b = benchmark::RegisterBenchmark(name.c_str(), [k](benchmark::State &st) { BM_zipf(st, k); });
        b->UseRealTime()->Iterations(1)->Threads(1)->Threads(2);
    }
}

} // namespace bench
