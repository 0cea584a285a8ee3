// Shared pieces of the benchmark harness: the one hash every peer uses, key streams, calibrated
// compute work, a clock, latency histograms, a barrier, and memory probes.
#ifndef MEMO_BENCH_COMMON_HH
#define MEMO_BENCH_COMMON_HH

#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace bench {

// ---- profile ------------------------------------------------------------------------------------

// Set from --memo_profile=quick|full before the benchmarks are registered.
extern bool g_quick;

// ---- hashing: the same for every peer -----------------------------------------------------------

constexpr uint64_t kSeed = 0x6d656d6f62656e63ull; // every table in the run uses this seed
extern unsigned char g_secret[XXH3_SECRET_DEFAULT_SIZE];
void init_secret();

inline uint64_t hash_u64(uint64_t key)
{
    return XXH3_64bits_withSecret(&key, sizeof key, g_secret, sizeof g_secret);
}
inline uint64_t hash_bytes(const void *p, size_t n)
{
    return XXH3_64bits_withSecret(p, n, g_secret, sizeof g_secret);
}

// A 32-byte string key, stored inline by every peer (no std::string heap block).
struct Key32 {
    char b[32];
    bool operator==(const Key32 &o) const { return std::memcmp(b, o.b, 32) == 0; }
};
// A 24-byte constant prefix and the index: built in a few instructions, no memory traffic.
inline Key32 key32_of(uint64_t i)
{
    Key32 k;
    std::memcpy(k.b, "session:memo-benchmark:", 24);
    std::memcpy(k.b + 24, &i, 8);
    return k;
}
template <class K> inline K key_of(uint64_t i);
template <> inline uint64_t key_of<uint64_t>(uint64_t i) { return i; }
template <> inline Key32 key_of<Key32>(uint64_t i) { return key32_of(i); }

struct Hasher {
    size_t operator()(uint64_t k) const noexcept { return hash_u64(k); }
    size_t operator()(const Key32 &k) const noexcept { return hash_bytes(k.b, 32); }
};

// The value every table stores for key k; lookups check it.
inline uint64_t value_of(uint64_t k) { return k * 0x9e3779b97f4a7c15ull + 1; }

// ---- random numbers -----------------------------------------------------------------------------

struct Rng { // xorshift64*: a few cycles, no memory traffic
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull) { if (!s) s = 1; }
    uint64_t next()
    {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545f4914f6cdd1dull;
    }
    uint64_t below(uint64_t n) { return (uint64_t)(((unsigned __int128)next() * n) >> 64); }
};

// splitmix64: the generator of the Zipf streams (bench/lru_cache.py reads the streams from files).
inline uint64_t splitmix64(uint64_t &x)
{
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A Zipf(s) stream over keys 0..universe-1 (key 0 the most frequent), seeded per thread.
std::vector<uint32_t> zipf_stream(uint32_t universe, double s, uint64_t seed, size_t n);

// ---- clock and compute work ---------------------------------------------------------------------

extern double g_ns_per_tick;
void calibrate_clock();
inline uint64_t ticks() { return __rdtsc(); }
inline double ticks_to_ns(uint64_t t) { return (double)t * g_ns_per_tick; }
inline uint64_t now_ns()
{
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
uint64_t thread_cpu_ns();   // getrusage(RUSAGE_THREAD): user + system

// CPU work that takes about ns nanoseconds on an idle core: a fixed amount of work, not a
// wall-clock wait, so a computation that shares its core with spinning threads takes longer.
extern double g_work_per_ns;
void calibrate_work();
uint64_t do_work(uint64_t ns, uint64_t seed);

// ---- latency histogram --------------------------------------------------------------------------

// Log-linear buckets (16 per power of two: at most 6% error), one per thread, merged after a run.
struct Histogram {
    static constexpr int kSub = 16;
    static constexpr int kBuckets = 64 * kSub;
    std::vector<uint64_t> counts = std::vector<uint64_t>(kBuckets, 0);
    uint64_t total = 0;
    static int bucket(uint64_t v)
    {
        if (v < kSub)
            return (int)v;
        int msb = 63 - __builtin_clzll(v);
        int shift = msb - 4;
        return (shift + 1) * kSub + (int)((v >> shift) & (kSub - 1));
    }
    static double lower(int b)
    {
        if (b < kSub)
            return b;
        int shift = b / kSub - 1;
        return (double)((uint64_t)(kSub + b % kSub) << shift);
    }
    void add(uint64_t v) { counts[bucket(v)]++; total++; }
    void merge(const Histogram &o)
    {
        for (int i = 0; i < kBuckets; i++)
            counts[i] += o.counts[i];
        total += o.total;
    }
    double quantile(double q) const; // in the unit added
    void clear() { std::fill(counts.begin(), counts.end(), 0); total = 0; }
};

// ---- threads ------------------------------------------------------------------------------------

// A reusable barrier that sleeps (pthread_barrier), for rounds with more threads than cores.
class Barrier {
public:
    explicit Barrier(unsigned n) { pthread_barrier_init(&b_, nullptr, n); }
    ~Barrier() { pthread_barrier_destroy(&b_); }
    void wait() { pthread_barrier_wait(&b_); }
private:
    pthread_barrier_t b_;
};

// Per-run shared state for benchmarks whose threads need to meet after the timed loop (merging
// histograms, tearing down the table): thread 0 makes it before the loop, Google Benchmark's own
// start barrier publishes it, and every thread calls done() after the loop; thread 0 waits in
// wait_all() until the others are through with the shared objects.
struct RunSync {
    std::atomic<int> done_count{0};
    void reset() { done_count.store(0); }
    void done() { done_count.fetch_add(1, std::memory_order_acq_rel); }
    void wait_all(int threads)
    {
        while (done_count.load(std::memory_order_acquire) < threads)
            sched_yield();
    }
};

// ---- memory -------------------------------------------------------------------------------------

uint64_t jemalloc_allocated(); // stats.allocated after an epoch refresh: every arena, memo's too
uint64_t rss_bytes();          // /proc/self/statm resident
void jemalloc_purge();         // return dirty pages, so RSS deltas start from a clean state

// Writes the run's context (CPU, kernel, packages, git SHA, allocator) into benchmark's context.
void add_context(const char *git_sha);

} // namespace bench

#endif
