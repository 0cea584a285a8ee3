// W6: clear and memory. A fresh table gets N u64 entries (1M in the full profile; no sizing
// hint, as a cache that grows); then its memory is read (jemalloc stats.allocated and RSS, each
// as a delta from before the table was made) and one of two things is timed:
//   clear:  the peer's whole-table call (memo_clear, clear(), g_hash_table_remove_all);
//   remove: one removal per key (memo_forget_u64, erase, cds_lfht_del, ...).
// The time is the manual time of that step alone.
#include "peers.hh"
#include "workloads.hh"

namespace bench {
namespace {

size_t entries() { return g_quick ? 200000 : 1000000; }

// Per peer: fill, clear, remove each.
struct MemoOps {
    using P = MemoPeer;
    static void clear(P &p) { memo_clear(p.m); }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++)
            memo_forget_u64(p.m, k);
    }
};
struct CkOps {
    using P = CkRawPeer;
    static void clear(P &p) { std::abort(); (void)p; } // none: not registered
    static void remove_each(P &p, size_t n) { ckpeer_remove_all_u64(p.p, n); }
};
struct TbbHashMapOps {
    using P = TbbHashMapPeer<uint64_t>;
    static void clear(P &p) { p.map.clear(); }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++)
            p.map.erase(k);
    }
};
struct TbbUnorderedOps {
    using P = TbbUnorderedPeer<uint64_t>;
    static void clear(P &p) { p.map.clear(); }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++)
            p.map.unsafe_erase(k); // its only erase: not concurrency-safe
    }
};
struct CuckooOps {
    using P = CuckooPeer<uint64_t>;
    static void clear(P &p) { p.map.clear(); }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++)
            p.map.erase(k);
    }
};
struct UrcuOps {
    using P = UrcuPeer<uint64_t>;
    static void clear(P &p) { std::abort(); (void)p; } // none: not registered
    static void remove_each(P &p, size_t n)
    {
        std::vector<P::Node *> gone;
        gone.reserve(n);
        for (uint64_t k = 0; k < n; k++) {
            cds_lfht_iter it;
            rcu_read_lock();
            cds_lfht_lookup(p.ht, Hasher()(k), P::match, &k, &it);
            cds_lfht_node *node = cds_lfht_iter_get_node(&it);
            if (node && cds_lfht_del(p.ht, node) == 0)
                gone.push_back(caa_container_of(node, P::Node, node));
            rcu_read_unlock();
        }
        synchronize_rcu(); // then the nodes can go
        for (auto *x : gone)
            std::free(x);
    }
};
struct GlibOps {
    using P = GlibMutexPeer<uint64_t>;
    static void clear(P &p)
    {
        pthread_mutex_lock(&p.lock);
        g_hash_table_remove_all(p.t);
        pthread_mutex_unlock(&p.lock);
    }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++) {
            pthread_mutex_lock(&p.lock);
            g_hash_table_remove(p.t, &k);
            pthread_mutex_unlock(&p.lock);
        }
    }
};
struct RwlockOps {
    using P = RwlockMapPeer<uint64_t>;
    static void clear(P &p)
    {
        pthread_rwlock_wrlock(&p.lock);
        p.map.clear();
        pthread_rwlock_unlock(&p.lock);
    }
    static void remove_each(P &p, size_t n)
    {
        for (uint64_t k = 0; k < n; k++) {
            pthread_rwlock_wrlock(&p.lock);
            p.map.erase(k);
            pthread_rwlock_unlock(&p.lock);
        }
    }
};

template <class Ops> void BM_clear(benchmark::State &st, bool whole)
{
    using P = typename Ops::P;
    const size_t n = entries();
    double bytes = 0, rss = 0, own = 0, ns = 0, back = -1;
    for (auto _ : st) {
        jemalloc_purge();
        uint64_t a0 = jemalloc_allocated(), r0 = rss_bytes();
        auto *p = new P(0);
        for (uint64_t k = 0; k < n; k++)
            p->put(k, value_of(k));
        bytes = (double)(jemalloc_allocated() - a0) / (double)n;
        rss = ((double)rss_bytes() - (double)r0) / (double)n;
        if constexpr (std::is_same_v<P, MemoPeer>)
            own = (double)p->own_bytes() / (double)n;
        uint64_t t0 = now_ns();
        if (whole)
            Ops::clear(*p);
        else
            Ops::remove_each(*p, n);
        uint64_t t1 = now_ns();
        ns = (double)(t1 - t0) / (double)n;
        st.SetIterationTime((double)(t1 - t0) * 1e-9);
        if constexpr (std::is_same_v<P, MemoPeer>) {
            // What memo gives back once no reader is left: the grace periods need polls, which
            // every memo_clear makes (two more here, on the now empty memo).
            double full = own * (double)n;
            memo_clear(p->m);
            memo_clear(p->m);
            back = full > 0 ? 100.0 * (full - (double)p->own_bytes()) / full : 0;
        }
        delete p;
    }
    st.counters["entries"] = (double)n;
    st.counters["bytes_per_entry"] = bytes;
    st.counters["rss_per_entry"] = rss;
    if (own > 0)
        st.counters["memo_stats_bytes_per_entry"] = own;
    if (back >= 0)
        st.counters["memo_given_back_pct"] = back;
    st.counters["ns_per_entry"] = ns;
}

template <class Ops> void add(const char *name, bool has_clear)
{
    std::string base = std::string("W6_clear/") + name + "/";
    if (has_clear)
        benchmark::RegisterBenchmark((base + "clear").c_str(), [](benchmark::State &st) { BM_clear<Ops>(st, true); })
            ->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((base + "remove_each").c_str(), [](benchmark::State &st) { BM_clear<Ops>(st, false); })
        ->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

} // namespace

void register_w6()
{
    add<MemoOps>(MemoPeer::kName, true);
    add<CkOps>(CkRawPeer::kName, false);
    add<TbbHashMapOps>(TbbHashMapPeer<uint64_t>::kName, true);
    add<TbbUnorderedOps>(TbbUnorderedPeer<uint64_t>::kName, true);
    add<CuckooOps>(CuckooPeer<uint64_t>::kName, true);
    add<UrcuOps>(UrcuPeer<uint64_t>::kName, false);
    add<GlibOps>(GlibMutexPeer<uint64_t>::kName, true);
    add<RwlockOps>(RwlockMapPeer<uint64_t>::kName, true);
}

} // namespace bench
