// W3: Zipf (s = 0.99) get-or-compute. Each thread walks its own stream (seed 1000 + thread) over
// a universe of keys, asking each peer for the value and computing it on a miss (a fixed amount
// of CPU work: 50 ns, 1 us or 50 us on an idle core). Counted: fn calls (per thread), the distinct
// keys of the streams that ran, and their difference: duplicate computations. Every value handed
// back is checked.
#include <map>
#include <mutex>
#include <unordered_set>

#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

constexpr double kZipfS = 0.99;
constexpr uint64_t kStreamSeed = 1000;

uint32_t universe() { return g_quick ? 20000 : 100000; }

// Calls per thread: enough misses to show duplicates, few enough that 50 us stays short.
size_t stream_len(uint64_t cost_ns)
{
    if (cost_ns >= 50000)
        return g_quick ? 2000 : 10000;
    if (cost_ns >= 1000)
        return g_quick ? 20000 : 100000;
    return g_quick ? 100000 : 500000;
}

std::mutex g_streams_lock;

const std::vector<uint32_t> &stream(size_t len, int tid)
{
    static std::map<std::pair<size_t, int>, std::vector<uint32_t>> cache;
    std::lock_guard<std::mutex> g(g_streams_lock);
    auto &s = cache[{len, tid}];
    if (s.empty())
        s = zipf_stream(universe(), kZipfS, kStreamSeed + (uint64_t)tid, len);
    return s;
}

uint64_t distinct_keys(size_t len, int threads)
{
    std::unordered_set<uint32_t> keys;
    for (int t = 0; t < threads; t++)
        for (uint32_t k : stream(len, t))
            keys.insert(k);
    return keys.size();
}

struct W3Run {
    void *peer = nullptr;
    RunSync sync;
    std::atomic<uint64_t> calls{0}, wrong{0};
};
W3Run g_w3;

template <class P> void BM_zipf(benchmark::State &st, uint64_t cost_ns)
{
    const int tid = st.thread_index(), threads = st.threads();
    const size_t len = stream_len(cost_ns);
    const std::vector<uint32_t> &keys = stream(len, tid);
    uint64_t distinct = tid == 0 ? distinct_keys(len, threads) : 0;
    if (tid == 0) {
        g_w3.sync.reset();
        g_w3.calls = 0;
        g_w3.wrong = 0;
        g_w3.peer = new P(0);
    }
    uint64_t calls = 0, wrong = 0;
    auto fn = [&calls, cost_ns](uint64_t k) {
        calls++;
        benchmark::DoNotOptimize(do_work(cost_ns, k));
        return value_of(k);
    };
    for (auto _ : st) {
        P *p = (P *)g_w3.peer; // published by the start barrier
        for (uint32_t k : keys)
            wrong += p->get_or_compute((uint64_t)k, fn) != value_of(k);
    }
    g_w3.calls += calls;
    g_w3.wrong += wrong;
    g_w3.sync.done();
    st.SetItemsProcessed((int64_t)len);
    if (tid != 0)
        return;
    g_w3.sync.wait_all(threads);
    uint64_t total_calls = g_w3.calls, ops = (uint64_t)len * (uint64_t)threads;
    st.counters["fn_calls"] = (double)total_calls;
    st.counters["distinct_keys"] = (double)distinct;
    st.counters["duplicates"] = (double)total_calls - (double)distinct;
    st.counters["hit_ratio"] = 1.0 - (double)total_calls / (double)ops;
    st.counters["wrong_values"] = (double)g_w3.wrong;
    delete (P *)g_w3.peer;
    g_w3.peer = nullptr;
}

template <class P> void add(uint64_t cost_ns, const std::vector<int> &threads)
{
    std::string name = std::string("W3_zipf/") + P::kName + "/cost_ns:" + std::to_string(cost_ns);
    auto *b = benchmark::RegisterBenchmark(name.c_str(), [cost_ns](benchmark::State &st) { BM_zipf<P>(st, cost_ns); });
    b->UseRealTime()->Iterations(1);
    for (int t : threads)
        b->Threads(t);
}

} // namespace

void register_w3()
{
    const std::vector<int> threads = g_quick ? std::vector<int>{1, 2} : std::vector<int>{1, 2, 4, 16};
    for (uint64_t cost : {50ull, 1000ull, 50000ull}) {
        add<MemoPeer>(cost, threads);
        add<TbbHashMapPeer<uint64_t>>(cost, threads);
        add<CondvarMemoPeer<uint64_t>>(cost, threads);
        add<RwlockMapPeer<uint64_t>>(cost, threads);
        add<TbbUnorderedPeer<uint64_t>>(cost, threads);
        add<CuckooPeer<uint64_t>>(cost, threads);
        add<UrcuPeer<uint64_t>>(cost, threads);
        add<GlibMutexPeer<uint64_t>>(cost, threads);
    }
}

// The streams, for bench/lru_cache.py: raw little-endian u32 keys, one file per (length, thread).
int write_streams(const std::string &dir)
{
    for (uint64_t cost : {50ull, 1000ull, 50000ull}) {
        size_t len = stream_len(cost);
        for (int t = 0; t < 16; t++) {
            std::string path = dir + "/zipf-len" + std::to_string(len) + "-t" + std::to_string(t) + ".u32";
            FILE *f = std::fopen(path.c_str(), "wb");
            if (!f)
                return 1;
            const auto &s = stream(len, t);
            std::fwrite(s.data(), sizeof(uint32_t), s.size(), f);
            std::fclose(f);
        }
    }
    return 0;
}

} // namespace bench
