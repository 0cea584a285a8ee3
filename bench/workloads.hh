// Each workload registers its benchmarks (sized by bench::g_quick) when asked to.
#ifndef MEMO_BENCH_WORKLOADS_HH
#define MEMO_BENCH_WORKLOADS_HH

#include <string>

namespace bench {
void register_w1(); // hits
void register_w2(); // unique-key misses
void register_w3(); // Zipf get-or-compute
void register_w4(); // hot-key stampede
void register_w5(); // parallel DP
void register_w6(); // clear and memory
void register_w7(); // the bounded memo: hits, Zipf get-or-compute, a ttl
// Writes the W3 and W4 key streams for bench/lru_cache.py.
int write_streams(const std::string &dir);
} // namespace bench

#endif
