// W2: unique-key misses. Every call inserts a key nobody asked for before (thread t's i-th key
// is (t+1) << 40 | i), into a table that starts small and grows. Each call is timed on its own
// (rdtsc) into a per-thread histogram, so growth stalls show in p99 and p99.9. Bytes per entry
// come from jemalloc's stats.allocated (every peer allocates from jemalloc) after the run.
#include <mutex>

#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

struct W2Run {
    void *peer = nullptr;
    uint64_t allocated_before = 0;
    RunSync sync;
    std::mutex lock;
    Histogram merged;
};
W2Run g_w2;

struct Noop {
    uint64_t operator()(uint64_t k) const { return value_of(k); }
};

template <class P> void BM_misses(benchmark::State &st)
{
    const int tid = st.thread_index(), threads = st.threads();
    if (tid == 0) {
        g_w2.sync.reset();
        g_w2.merged.clear();
        jemalloc_purge();
        g_w2.allocated_before = jemalloc_allocated();
        g_w2.peer = new P(0);
    }
    P *p = nullptr;
    Histogram h;
    Noop fn;
    uint64_t i = 0, base = (uint64_t)(tid + 1) << 40, sum = 0;
    for (auto _ : st) {
        if (__builtin_expect(p == nullptr, 0))
            p = (P *)g_w2.peer; // published by the start barrier
        uint64_t t0 = ticks();
        sum += p->get_or_compute(base | i++, fn);
        h.add(ticks() - t0);
    }
    benchmark::DoNotOptimize(sum);
    {
        std::lock_guard<std::mutex> g(g_w2.lock);
        g_w2.merged.merge(h);
    }
    g_w2.sync.done();
    st.SetItemsProcessed(st.iterations());
    if (tid != 0)
        return;
    g_w2.sync.wait_all(threads);
    uint64_t entries = (uint64_t)st.iterations() * (uint64_t)threads;
    uint64_t bytes = jemalloc_allocated() - g_w2.allocated_before;
    st.counters["p50_ns"] = ticks_to_ns((uint64_t)g_w2.merged.quantile(0.50));
    st.counters["p99_ns"] = ticks_to_ns((uint64_t)g_w2.merged.quantile(0.99));
    st.counters["p999_ns"] = ticks_to_ns((uint64_t)g_w2.merged.quantile(0.999));
    st.counters["max_ns"] = ticks_to_ns((uint64_t)g_w2.merged.quantile(1.0));
    st.counters["bytes_per_entry"] = (double)bytes / (double)entries;
    delete (P *)g_w2.peer;
    g_w2.peer = nullptr;
}

template <class P> void add(const std::vector<int> &threads, int64_t per_thread)
{
    std::string name = std::string("W2_misses/") + P::kName + "/u64";
    auto *b = benchmark::RegisterBenchmark(name.c_str(), BM_misses<P>);
    b->UseRealTime()->Iterations(per_thread);
    for (int t : threads)
        b->Threads(t);
}

} // namespace

void register_w2()
{
    const std::vector<int> threads = g_quick ? std::vector<int>{1, 2} : std::vector<int>{1, 2, 8};
    const int64_t per_thread = g_quick ? 200000 : 1000000;
    add<MemoPeer>(threads, per_thread);
    add<CkRawPeer>(threads, per_thread);
    add<TbbHashMapPeer<uint64_t>>(threads, per_thread);
    add<TbbUnorderedPeer<uint64_t>>(threads, per_thread);
    add<CuckooPeer<uint64_t>>(threads, per_thread);
    add<UrcuPeer<uint64_t>>(threads, per_thread);
    add<GlibMutexPeer<uint64_t>>(threads, per_thread);
    add<RwlockMapPeer<uint64_t>>(threads, per_thread);
}

} // namespace bench
