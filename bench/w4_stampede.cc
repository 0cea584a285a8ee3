// W4: the hot-key stampede. Each round, every thread is released from a (sleeping) barrier and
// asks for the same key, which nobody has computed; computing it costs 10 us, 1 ms or 10 ms of
// CPU work. Measured per round: how many times the key was computed, the round's time (first
// call in to last call out) over the compute time, each waiter's wake latency (from the moment
// fn returned to the moment its own call returned), and each waiter's CPU time during its call
// (getrusage(RUSAGE_THREAD) around the call).
#include <mutex>

#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

int rounds(uint64_t cost_ns)
{
    if (cost_ns >= 10000000)
        return g_quick ? 3 : 10;
    if (cost_ns >= 1000000)
        return g_quick ? 10 : 40;
    return g_quick ? 50 : 200;
}

struct W4Run {
    void *peer = nullptr;
    Barrier *barrier = nullptr;
    std::vector<uint64_t> enter, leave; // ticks, per thread, this round
    std::atomic<uint64_t> done_tick{0};  // when the (last) fn of this round returned
    std::atomic<uint64_t> calls{0};
    RunSync sync;
    std::mutex lock;
    Histogram wake;                      // ns
    uint64_t waiter_cpu_ns = 0, waiter_calls = 0;
    std::vector<double> round_ns;
};
W4Run g_w4;

template <class P> void BM_stampede(benchmark::State &st, uint64_t cost_ns)
{
    const int tid = st.thread_index(), threads = st.threads();
    const int nrounds = rounds(cost_ns);
    if (tid == 0) {
        g_w4.sync.reset();
        g_w4.peer = new P(0);
        g_w4.barrier = new Barrier((unsigned)threads);
        g_w4.enter.assign((size_t)threads, 0);
        g_w4.leave.assign((size_t)threads, 0);
        g_w4.calls = 0;
        g_w4.wake.clear();
        g_w4.waiter_cpu_ns = g_w4.waiter_calls = 0;
        g_w4.round_ns.clear();
    }
    Histogram wake;
    uint64_t my_calls = 0, cpu_waiting = 0, waits = 0;
    bool computed = false;
    auto fn = [&](uint64_t k) {
        my_calls++;
        computed = true;
        benchmark::DoNotOptimize(do_work(cost_ns, k));
        g_w4.done_tick.store(ticks(), std::memory_order_release);
        return value_of(k);
    };
    for (auto _ : st) {
        P *p = (P *)g_w4.peer; // published by the start barrier
        const uint64_t base = 1; // a fresh table per run: round r asks for key 1 + r
        for (int r = 0; r < nrounds; r++) {
            g_w4.barrier->wait();
            computed = false;
            uint64_t cpu0 = thread_cpu_ns();
            uint64_t t0 = ticks();
            uint64_t v = p->get_or_compute(base + (uint64_t)r, fn);
            uint64_t t1 = ticks();
            uint64_t cpu1 = thread_cpu_ns();
            benchmark::DoNotOptimize(v);
            g_w4.enter[(size_t)tid] = t0;
            g_w4.leave[(size_t)tid] = t1;
            if (!computed) {
                uint64_t done = g_w4.done_tick.load(std::memory_order_acquire);
                wake.add(t1 > done ? (uint64_t)ticks_to_ns(t1 - done) : 0);
                cpu_waiting += cpu1 - cpu0;
                waits++;
            }
            g_w4.barrier->wait();
            if (tid == 0) {
                uint64_t first = *std::min_element(g_w4.enter.begin(), g_w4.enter.end());
                uint64_t last = *std::max_element(g_w4.leave.begin(), g_w4.leave.end());
                g_w4.round_ns.push_back(ticks_to_ns(last - first));
            }
        }
    }
    {
        std::lock_guard<std::mutex> g(g_w4.lock);
        g_w4.wake.merge(wake);
        g_w4.waiter_cpu_ns += cpu_waiting;
        g_w4.waiter_calls += waits;
    }
    g_w4.calls += my_calls;
    g_w4.sync.done();
    st.SetItemsProcessed(nrounds);
    if (tid != 0)
        return;
    g_w4.sync.wait_all(threads);
    std::vector<double> rn = g_w4.round_ns;
    std::sort(rn.begin(), rn.end());
    double median_round = rn.empty() ? 0 : rn[rn.size() / 2];
    st.counters["computations_per_key"] = (double)g_w4.calls / nrounds;
    st.counters["round_over_compute"] = median_round / (double)cost_ns;
    st.counters["round_over_compute_max"] = rn.empty() ? 0 : rn.back() / (double)cost_ns;
    st.counters["wake_p50_us"] = g_w4.wake.quantile(0.50) / 1000.0;
    st.counters["wake_p99_us"] = g_w4.wake.quantile(0.99) / 1000.0;
    double cpu_per_wait = g_w4.waiter_calls ? (double)g_w4.waiter_cpu_ns / (double)g_w4.waiter_calls : 0;
    st.counters["waiter_cpu_us"] = cpu_per_wait / 1000.0;
    st.counters["waiter_cpu_pct"] = 100.0 * cpu_per_wait / (double)cost_ns;
    st.counters["waits"] = (double)g_w4.waiter_calls;
    delete g_w4.barrier;
    g_w4.barrier = nullptr;
    delete (P *)g_w4.peer;
    g_w4.peer = nullptr;
}

template <class P> void add(uint64_t cost_ns, const std::vector<int> &threads)
{
    std::string name = std::string("W4_stampede/") + P::kName + "/cost_ns:" + std::to_string(cost_ns);
    auto *b = benchmark::RegisterBenchmark(name.c_str(), [cost_ns](benchmark::State &st) { BM_stampede<P>(st, cost_ns); });
    b->UseRealTime()->Iterations(1);
    for (int t : threads)
        b->Threads(t);
}

} // namespace

void register_w4()
{
    const std::vector<int> threads = g_quick ? std::vector<int>{2, 4} : std::vector<int>{2, 4, 8, 16};
    for (uint64_t cost : {10000ull, 1000000ull, 10000000ull}) {
        add<MemoPeer>(cost, threads);
        add<MemoSpinPeer>(cost, threads);
        add<TbbHashMapPeer<uint64_t>>(cost, threads);
        add<CondvarMemoPeer<uint64_t>>(cost, threads);
        add<RwlockMapPeer<uint64_t>>(cost, threads);
    }
}

} // namespace bench
