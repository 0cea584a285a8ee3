// W5: parallel dynamic programming over one shared memo.
//  - edit distance of two strings over a 4-letter alphabet (3000 x 3000 in the full profile),
//    memoized top-down on keys i << 32 | j;
//  - a sparse 0/1 knapsack (100 items, capacity ~1e6, weights multiples of 100: about a million
//    reachable states out of 1e8 cells), memoized on keys i << 32 | w.
// With 2 threads, both solve the whole problem, recursing in different child orders, and share
// the memo: what one thread has computed the other takes, and a key in flight is waited for,
// never computed twice. Beside them: the same recursion over a single-thread std::unordered_map
// (same hash), and the bottom-up array DP, which wins wherever the state space fits in an array.
// Each solve runs on a thread of its own with a 256 MiB stack (the recursion is 6000 deep).
#include <pthread.h>

#include <functional>
#include <mutex>

#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

// ---- problems -----------------------------------------------------------------------------------

struct EditDistance {
    std::string a, b;
    explicit EditDistance(size_t n)
    {
        Rng r(42);
        for (size_t i = 0; i < n; i++) {
            a += "ACGT"[r.below(4)];
            b += "ACGT"[r.below(4)];
        }
    }
    uint64_t bottom_up() const
    {
        std::vector<uint64_t> prev(b.size() + 1), cur(b.size() + 1);
        for (size_t j = 0; j <= b.size(); j++)
            prev[j] = j;
        for (size_t i = 1; i <= a.size(); i++) {
            cur[0] = i;
            for (size_t j = 1; j <= b.size(); j++)
                cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
            std::swap(prev, cur);
        }
        return prev[b.size()];
    }
    // One step of the recursion; get(i, j) answers the subproblems, in the order `flip` picks.
    template <class Get> uint64_t step(uint32_t i, uint32_t j, bool flip, Get &&get) const
    {
        if (i == 0)
            return j;
        if (j == 0)
            return i;
        uint64_t up, left;
        if (!flip) {
            up = get(i - 1, j);
            left = get(i, j - 1);
        } else {
            left = get(i, j - 1);
            up = get(i - 1, j);
        }
        uint64_t diag = get(i - 1, j - 1) + (a[i - 1] != b[j - 1]);
        return std::min({up + 1, left + 1, diag});
    }
    uint32_t top_i() const { return (uint32_t)a.size(); }
    uint32_t top_j() const { return (uint32_t)b.size(); }
};

struct Knapsack {
    std::vector<uint32_t> wt, val;
    uint32_t capacity;
    Knapsack(size_t n, uint32_t cap) : capacity(cap)
    {
        Rng r(7);
        for (size_t i = 0; i < n; i++) {
            wt.push_back(100 * (uint32_t)(1 + r.below(200)));
            val.push_back((uint32_t)(1 + r.below(1000)));
        }
    }
    uint64_t bottom_up() const
    {
        std::vector<uint64_t> best(capacity + 1, 0);
        for (size_t i = 0; i < wt.size(); i++)
            for (uint32_t w = capacity; w >= wt[i]; w--)
                best[w] = std::max(best[w], best[w - wt[i]] + val[i]);
        return best[capacity];
    }
    template <class Get> uint64_t step(uint32_t i, uint32_t w, bool flip, Get &&get) const
    {
        if (i == 0)
            return 0;
        uint64_t skip = 0, take = 0;
        bool can = wt[i - 1] <= w;
        if (!flip) {
            skip = get(i - 1, w);
            if (can)
                take = val[i - 1] + get(i - 1, w - wt[i - 1]);
        } else {
            if (can)
                take = val[i - 1] + get(i - 1, w - wt[i - 1]);
            skip = get(i - 1, w);
        }
        return std::max(skip, take);
    }
    uint32_t top_i() const { return (uint32_t)wt.size(); }
    uint32_t top_j() const { return capacity; }
};

// ---- solvers ------------------------------------------------------------------------------------

// Keys are row-major over the (top_i + 1) x (top_j + 1) grid: a dense range, which a memo with
// dense_keys keeps in its flat table and a plain memo hashes.
template <class Problem> uint64_t grid_keys(const Problem &pb)
{
    return ((uint64_t)pb.top_i() + 1) * ((uint64_t)pb.top_j() + 1);
}

template <class Problem> struct MemoSolve {
    const Problem *pb;
    memo_t *m;
    bool flip;
    static int fn(void *ctx, uint64_t key, uint64_t *value)
    {
        auto *s = (MemoSolve *)ctx;
        uint64_t stride = (uint64_t)s->pb->top_j() + 1;
        *value = s->pb->step((uint32_t)(key / stride), (uint32_t)(key % stride), s->flip,
                             [s](uint32_t i, uint32_t j) { return s->get(i, j); });
        return 0;
    }
    uint64_t get(uint32_t i, uint32_t j)
    {
        uint64_t v;
        int rc = memo_get_u64(m, (uint64_t)i * ((uint64_t)pb->top_j() + 1) + j, fn, this, &v);
        if (rc != 0) {
            std::fprintf(stderr, "W5: memo_get_u64: %s\n", memo_strerror(rc));
            std::abort();
        }
        return v;
    }
};

template <class Problem> struct HashMapSolve {
    const Problem *pb;
    std::unordered_map<uint64_t, uint64_t, Hasher> map;
    uint64_t get(uint32_t i, uint32_t j)
    {
        uint64_t key = (uint64_t)i << 32 | j;
        auto it = map.find(key);
        if (it != map.end())
            return it->second;
        uint64_t v = pb->step(i, j, false, [this](uint32_t a, uint32_t b) { return get(a, b); });
        map.emplace(key, v);
        return v;
    }
};

// Runs f on a thread with a big stack, and waits for it.
void run_with_stack(const std::function<void()> &f)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256u << 20);
    pthread_t t;
    auto *copy = new std::function<void()>(f);
    pthread_create(&t, &attr, [](void *arg) -> void * {
        auto *fp = (std::function<void()> *)arg;
        (*fp)();
        delete fp;
        return nullptr;
    }, copy);
    pthread_join(t, nullptr);
    pthread_attr_destroy(&attr);
}

struct W5Run {
    memo_t *m = nullptr;
    RunSync sync;
    std::atomic<uint64_t> wrong{0};
};
W5Run g_w5;

template <class Problem> const Problem &problem();
template <> const EditDistance &problem<EditDistance>()
{
    static EditDistance p(g_quick ? 1000 : 3000);
    return p;
}
template <> const Knapsack &problem<Knapsack>()
{
    static Knapsack p(100, g_quick ? 300003 : 1000003);
    return p;
}
template <class Problem> uint64_t answer()
{
    static uint64_t a = problem<Problem>().bottom_up();
    return a;
}

template <class Problem, bool Dense> void BM_memo(benchmark::State &st)
{
    const Problem &pb = problem<Problem>();
    const uint64_t expect = answer<Problem>();
    const int tid = st.thread_index(), threads = st.threads();
    if (tid == 0) {
        g_w5.sync.reset();
        g_w5.wrong = 0;
        memo_config_t c = MEMO_CONFIG_INIT;
        c.seed = kSeed;
        if (Dense)
            c.dense_keys = grid_keys(pb);
        if (memo_create(&g_w5.m, &c) != 0)
            std::abort();
    }
    for (auto _ : st) {
        MemoSolve<Problem> s{&pb, g_w5.m, tid % 2 == 1};
        uint64_t got = 0;
        run_with_stack([&] { got = s.get(pb.top_i(), pb.top_j()); });
        g_w5.wrong += got != expect;
    }
    g_w5.sync.done();
    if (tid != 0)
        return;
    g_w5.sync.wait_all(threads);
    memo_stats_t ms;
    memo_stats(g_w5.m, &ms);
    st.counters["states"] = (double)ms.entries;
    st.counters["computations"] = (double)ms.misses;
    st.counters["duplicates"] = (double)ms.misses - (double)ms.entries;
    st.counters["waits"] = (double)ms.waits;
    st.counters["wrong_answers"] = (double)g_w5.wrong;
    st.counters["states_per_second"] = benchmark::Counter((double)ms.entries, benchmark::Counter::kIsRate);
    st.counters["bytes_per_state"] = ms.entries ? (double)ms.bytes / (double)ms.entries : 0;
    memo_destroy(g_w5.m);
    g_w5.m = nullptr;
}

template <class Problem> void BM_hashmap(benchmark::State &st)
{
    const Problem &pb = problem<Problem>();
    uint64_t states = 0, wrong = 0;
    for (auto _ : st) {
        HashMapSolve<Problem> s{&pb, {}};
        uint64_t got = 0;
        run_with_stack([&] { got = s.get(pb.top_i(), pb.top_j()); });
        wrong += got != answer<Problem>();
        states = s.map.size();
    }
    st.counters["states"] = (double)states;
    st.counters["wrong_answers"] = (double)wrong;
    st.counters["states_per_second"] = benchmark::Counter((double)states, benchmark::Counter::kIsRate);
}

template <class Problem> void BM_array(benchmark::State &st)
{
    const Problem &pb = problem<Problem>();
    uint64_t wrong = 0;
    for (auto _ : st)
        wrong += pb.bottom_up() != answer<Problem>();
    st.counters["cells"] = (double)pb.top_i() * (double)(pb.top_j() + 1);
    st.counters["wrong_answers"] = (double)wrong;
}

// dense: also the memo with dense keys (editdist: 9 million keys, every one a state; not knapsack,
// whose states are one key in a hundred of its range).
template <class Problem> void add(const char *problem_name, bool dense)
{
    answer<Problem>(); // the reference answer, computed once, outside any timing
    std::string base = std::string("W5_dp/") + problem_name + "/";
    benchmark::RegisterBenchmark((base + "memo").c_str(), BM_memo<Problem, false>)->UseRealTime()->Iterations(1)->Threads(1)->Threads(2);
    if (dense)
        benchmark::RegisterBenchmark((base + "memo_dense").c_str(), BM_memo<Problem, true>)
            ->UseRealTime()->Iterations(1)->Threads(1)->Threads(2);
    benchmark::RegisterBenchmark((base + "hashmap_1thread").c_str(), BM_hashmap<Problem>)->UseRealTime()->Iterations(1);
    benchmark::RegisterBenchmark((base + "bottom_up_array").c_str(), BM_array<Problem>)->UseRealTime()->Iterations(1);
}

} // namespace

void register_w5()
{
    add<EditDistance>("editdist", true);
    add<Knapsack>("knapsack", false);
}

} // namespace bench
