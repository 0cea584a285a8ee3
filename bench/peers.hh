// The peers: memo and what a user would pick instead, behind one small interface so that each
// workload is written once (templates, no virtual calls in the timed loops).
//
//   Peer(expected)                   expected: a sizing hint (0 = start small and grow)
//   void put(K, uint64_t)            store (building the W1 tables)
//   bool get(K, uint64_t &)          a lookup that must hit
//   uint64_t get_or_compute(K, F &)  F: uint64_t(K); the peer's own way to memoize
//
// Every peer hashes with bench::Hasher (XXH3 with the run's secret) and allocates with the
// process malloc, which is jemalloc (memo allocates from its own jemalloc arena).
#ifndef MEMO_BENCH_PEERS_HH
#define MEMO_BENCH_PEERS_HH

#define _LGPL_SOURCE 1
#include <urcu.h>
#include <urcu/rculfhash.h>

#include <glib.h>
#include <libcuckoo/cuckoohash_map.hh>
#include <oneapi/tbb/concurrent_hash_map.h>
#include <oneapi/tbb/concurrent_unordered_map.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include <memo.h>

#include "ck_peer.h"
#include "common.hh"

namespace bench {

// ---- memo ---------------------------------------------------------------------------------------

struct MemoPeer {
    static constexpr const char *kName = "memo";
    memo_t *m = nullptr;
    explicit MemoPeer(size_t expected, uint64_t dense_keys = 0)
    {
        memo_config_t c = MEMO_CONFIG_INIT;
        c.expected_entries = expected;
        c.seed = kSeed;
        c.dense_keys = dense_keys;
        if (memo_create(&m, &c) != 0)
            std::abort();
    }
    ~MemoPeer() { memo_destroy(m); }

    static int no_compute(void *, uint64_t, uint64_t *) { std::abort(); }
    static int no_compute_bytes(void *, const void *, size_t, memo_result_t *) { std::abort(); }
    static int store_u64(void *ctx, uint64_t, uint64_t *value)
    {
        *value = *(uint64_t *)ctx;
        return 0;
    }
    static int store_bytes(void *ctx, const void *, size_t, memo_result_t *out)
    {
        return memo_result_set(out, ctx, sizeof(uint64_t));
    }
    template <class F> static int call_u64(void *ctx, uint64_t key, uint64_t *value)
    {
        *value = (*(F *)ctx)(key);
        return 0;
    }
    template <class F> static int call_bytes(void *ctx, const void *key, size_t, memo_result_t *out)
    {
        uint64_t v = (*(F *)ctx)(*(const Key32 *)key);
        return memo_result_set(out, &v, sizeof v);
    }

    void put(uint64_t k, uint64_t v)
    {
        uint64_t got;
        memo_get_u64(m, k, store_u64, &v, &got);
    }
    void put(const Key32 &k, uint64_t v)
    {
        memo_ref_t ref = MEMO_REF_INIT;
        memo_get(m, k.b, 32, store_bytes, &v, &ref);
        memo_release(&ref);
    }
    bool get(uint64_t k, uint64_t &v) { return memo_get_u64(m, k, no_compute, nullptr, &v) == 0; }
    bool get(const Key32 &k, uint64_t &v)
    {
        memo_ref_t ref = MEMO_REF_INIT;
        if (memo_get(m, k.b, 32, no_compute_bytes, nullptr, &ref) != 0)
            return false;
        std::memcpy(&v, ref.data, sizeof v);
        memo_release(&ref);
        return true;
    }
    template <class F> uint64_t get_or_compute(uint64_t k, F &f)
    {
        uint64_t v = 0;
        if (memo_get_u64(m, k, call_u64<F>, &f, &v) != 0)
            std::abort();
        return v;
    }
    template <class F> uint64_t get_or_compute(const Key32 &k, F &f)
    {
        memo_ref_t ref = MEMO_REF_INIT;
        if (memo_get(m, k.b, 32, call_bytes<F>, &f, &ref) != 0)
            std::abort();
        uint64_t v;
        std::memcpy(&v, ref.data, sizeof v);
        memo_release(&ref);
        return v;
    }
    uint64_t own_bytes()
    {
        memo_stats_t s;
        memo_stats(m, &s);
        return s.bytes;
    }
};

// The ablation: memo's table and single flight, but waiters spin instead of sleeping
// (memo_get_u64_timed with timeout 0 returns at once while another thread computes).
struct MemoSpinPeer : MemoPeer {
    static constexpr const char *kName = "memo_spinwait";
    using MemoPeer::MemoPeer;
    template <class F> uint64_t get_or_compute(uint64_t k, F &f)
    {
        uint64_t v = 0;
        int rc;
        while ((rc = memo_get_u64_timed(m, k, call_u64<F>, &f, 0, &v)) == MEMO_ETIMEDOUT)
            _mm_pause();
        if (rc != 0)
            std::abort();
        return v;
    }
};

// ---- raw ck_hs in an epoch section: memo's floor ------------------------------------------------

struct CkRawPeer {
    static constexpr const char *kName = "ck_hs_raw";
    ckpeer_t *p;
    explicit CkRawPeer(size_t expected) : p(ckpeer_create(g_secret, expected)) {}
    ~CkRawPeer() { ckpeer_destroy(p); }
    void put(uint64_t k, uint64_t v) { ckpeer_put_u64(p, k, v); }
    void put(const Key32 &k, uint64_t v) { ckpeer_put_key32(p, k.b, v); }
    bool get(uint64_t k, uint64_t &v) { return ckpeer_get_u64(p, k, &v); }
    bool get(const Key32 &k, uint64_t &v) { return ckpeer_get_key32(p, k.b, &v); }
    template <class K, class F> uint64_t get_or_compute(const K &k, F &f)
    {
        uint64_t v = 0;
        if (get(k, v))
            return v;
        v = f(k);
        put(k, v);
        return v;
    }
};

// memo with dense keys: the u64 keys below `expected` in its flat table (memo_config_t.dense_keys).
struct MemoDensePeer : MemoPeer {
    static constexpr const char *kName = "memo_dense";
    explicit MemoDensePeer(size_t expected) : MemoPeer(0, expected) {}
};

// ---- a dense array: the physical limit of a random load -----------------------------------------

struct DensePeer {
    static constexpr const char *kName = "dense_array";
    std::vector<uint64_t> a;
    explicit DensePeer(size_t expected) : a(expected) {}
    void put(uint64_t k, uint64_t v)
    {
        if (k >= a.size())
            a.resize(k + 1);
        a[k] = v;
    }
    bool get(uint64_t k, uint64_t &v)
    {
        v = a[k];
        return true;
    }
};

// ---- TBB ----------------------------------------------------------------------------------------

template <class K> struct TbbHashCompare {
    size_t hash(const K &k) const { return Hasher()(k); }
    bool equal(const K &a, const K &b) const { return a == b; }
};

template <class K> struct TbbHashMapPeer {
    static constexpr const char *kName = "tbb_hash_map";
    using Map = tbb::concurrent_hash_map<K, uint64_t, TbbHashCompare<K>, std::allocator<std::pair<const K, uint64_t>>>;
    Map map;
    explicit TbbHashMapPeer(size_t expected) { if (expected) map.rehash(expected); }
    void put(const K &k, uint64_t v) { map.emplace(k, v); }
    bool get(const K &k, uint64_t &v)
    {
        typename Map::const_accessor a;
        if (!map.find(a, k))
            return false;
        v = a->second;
        return true;
    }
    // TBB's single flight: insert() returns holding the element's write lock; the computing
    // thread keeps it while computing, and every other caller of the key blocks in insert().
    template <class F> uint64_t get_or_compute(const K &k, F &f)
    {
        {
            typename Map::const_accessor ca;
            if (map.find(ca, k))
                return ca->second;
        }
        typename Map::accessor a;
        if (map.insert(a, k))
            a->second = f(k);
        return a->second;
    }
};

template <class K> struct TbbUnorderedPeer {
    static constexpr const char *kName = "tbb_unordered_map";
    using Map = tbb::concurrent_unordered_map<K, uint64_t, Hasher, std::equal_to<K>, std::allocator<std::pair<const K, uint64_t>>>;
    Map map;
    explicit TbbUnorderedPeer(size_t expected) : map(expected ? expected : 8) {}
    void put(const K &k, uint64_t v) { map.emplace(k, v); }
    bool get(const K &k, uint64_t &v)
    {
        auto it = map.find(k);
        if (it == map.end())
            return false;
        v = it->second;
        return true;
    }
    template <class F> uint64_t get_or_compute(const K &k, F &f) // check, then compute
    {
        auto it = map.find(k);
        if (it != map.end())
            return it->second;
        uint64_t v = f(k);
        return map.emplace(k, v).first->second;
    }
};

// ---- libcuckoo ----------------------------------------------------------------------------------

template <class K> struct CuckooPeer {
    static constexpr const char *kName = "libcuckoo";
    using Map = libcuckoo::cuckoohash_map<K, uint64_t, Hasher, std::equal_to<K>>;
    Map map;
    explicit CuckooPeer(size_t expected) : map(expected ? expected : libcuckoo::DEFAULT_SIZE) {}
    void put(const K &k, uint64_t v) { map.insert(k, v); }
    bool get(const K &k, uint64_t &v) { return map.find(k, v); }
    template <class F> uint64_t get_or_compute(const K &k, F &f) // check, then compute
    {
        uint64_t v = 0;
        if (map.find(k, v))
            return v;
        v = f(k);
        map.insert(k, v);
        return v;
    }
};

// ---- liburcu cds_lfht ---------------------------------------------------------------------------

// Readers must be registered RCU threads: one registration per thread, dropped at its exit.
struct UrcuThread {
    UrcuThread() { rcu_register_thread(); }
    ~UrcuThread() { rcu_unregister_thread(); }
};
inline void urcu_thread() { thread_local UrcuThread reg; }

template <class K> struct UrcuPeer {
    static constexpr const char *kName = "urcu_lfht";
    struct Node {
        K key;
        uint64_t value;
        cds_lfht_node node;
        rcu_head rcu;
    };
    cds_lfht *ht;
    explicit UrcuPeer(size_t expected)
    {
        urcu_thread();
        // Without a hint: at least 4096 buckets, then auto-resize. Its growth is lazy (a call_rcu
        // worker resizes after a grace period), and in some runs here it lagged for seconds while
        // chains grew; the floor bounds what such a lag costs.
        // With a sizing hint (W1's prebuilt tables): one bucket per entry and no resizing. In this
        // harness, auto-resize under concurrent lookups once tripped liburcu 0.13's assertion
        // `!is_removed(iter)` in _cds_lfht_gc_bucket (rculfhash.c:936), so the read-only tables do
        // without it.
        unsigned long init = 4096;
        while (init < expected)
            init <<= 1;
        int flags = expected ? 0 : CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING;
        ht = cds_lfht_new(init, expected ? init : 1, expected ? init : 0, flags, nullptr);
    }
    ~UrcuPeer()
    {
        urcu_thread();
        std::vector<Node *> nodes;
        cds_lfht_iter it;
        Node *n;
        rcu_read_lock();
        cds_lfht_for_each_entry(ht, &it, n, node)
        {
            cds_lfht_del(ht, &n->node);
            nodes.push_back(n);
        }
        rcu_read_unlock();
        synchronize_rcu(); // no reader can hold a node any more
        for (Node *x : nodes)
            std::free(x);
        cds_lfht_destroy(ht, nullptr);
    }
    static int match(cds_lfht_node *node, const void *key)
    {
        return caa_container_of(node, Node, node)->key == *(const K *)key;
    }
    bool add(const K &k, uint64_t v) // add_unique: false if the key was there
    {
        Node *n = (Node *)std::malloc(sizeof(Node));
        new (&n->key) K(k);
        n->value = v;
        cds_lfht_node_init(&n->node);
        rcu_read_lock();
        cds_lfht_node *got = cds_lfht_add_unique(ht, Hasher()(k), match, &n->key, &n->node);
        rcu_read_unlock();
        if (got != &n->node) {
            std::free(n);
            return false;
        }
        return true;
    }
    void put(const K &k, uint64_t v) { urcu_thread(); add(k, v); }
    bool get(const K &k, uint64_t &v)
    {
        urcu_thread();
        cds_lfht_iter it;
        rcu_read_lock();
        cds_lfht_lookup(ht, Hasher()(k), match, &k, &it);
        cds_lfht_node *node = cds_lfht_iter_get_node(&it);
        bool found = node != nullptr;
        if (found)
            v = caa_container_of(node, Node, node)->value;
        rcu_read_unlock();
        return found;
    }
    template <class F> uint64_t get_or_compute(const K &k, F &f) // check, compute, add_unique
    {
        uint64_t v = 0;
        if (get(k, v))
            return v;
        v = f(k);
        add(k, v);
        return v;
    }
};

// ---- GLib GHashTable under a pthread mutex ------------------------------------------------------

template <class K> struct GlibMutexPeer {
    static constexpr const char *kName = "glib_mutex";
    struct Entry {
        K key;
        uint64_t value;
    };
    GHashTable *t;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static guint hash(gconstpointer p) { return (guint)Hasher()(*(const K *)p); }
    static gboolean equal(gconstpointer a, gconstpointer b) { return *(const K *)a == *(const K *)b; }
    explicit GlibMutexPeer(size_t) : t(g_hash_table_new_full(hash, equal, nullptr, std::free)) {}
    ~GlibMutexPeer() { g_hash_table_destroy(t); }
    // Entry holds the key first, so the entry is its own key; the lock is held by the caller.
    void insert_locked(const K &k, uint64_t v)
    {
        if (g_hash_table_contains(t, &k))
            return;
        Entry *e = (Entry *)std::malloc(sizeof(Entry));
        e->key = k;
        e->value = v;
        g_hash_table_insert(t, e, e);
    }
    void put(const K &k, uint64_t v)
    {
        pthread_mutex_lock(&lock);
        insert_locked(k, v);
        pthread_mutex_unlock(&lock);
    }
    bool get(const K &k, uint64_t &v)
    {
        pthread_mutex_lock(&lock);
        Entry *e = (Entry *)g_hash_table_lookup(t, &k);
        if (e)
            v = e->value;
        pthread_mutex_unlock(&lock);
        return e != nullptr;
    }
    template <class F> uint64_t get_or_compute(const K &k, F &f) // check, unlock, compute
    {
        uint64_t v = 0;
        if (get(k, v))
            return v;
        v = f(k);
        put(k, v);
        return v;
    }
};

// ---- a std::unordered_map under a pthread rwlock: the hand-written memo -------------------------

template <class K> struct RwlockMapPeer {
    static constexpr const char *kName = "rwlock_map";
    std::unordered_map<K, uint64_t, Hasher> map;
    pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
    explicit RwlockMapPeer(size_t expected) { map.reserve(expected); }
    void put(const K &k, uint64_t v)
    {
        pthread_rwlock_wrlock(&lock);
        map.emplace(k, v);
        pthread_rwlock_unlock(&lock);
    }
    bool get(const K &k, uint64_t &v)
    {
        pthread_rwlock_rdlock(&lock);
        auto it = map.find(k);
        bool found = it != map.end();
        if (found)
            v = it->second;
        pthread_rwlock_unlock(&lock);
        return found;
    }
    // Check, then compute: what people write by hand. Two threads that miss the same key at
    // once both compute it.
    template <class F> uint64_t get_or_compute(const K &k, F &f)
    {
        uint64_t v = 0;
        if (get(k, v))
            return v;
        v = f(k);
        put(k, v);
        return v;
    }
};

// ---- a mutex + condition variable memo: single flight by hand -----------------------------------

template <class K> struct CondvarMemoPeer {
    static constexpr const char *kName = "mutex_condvar_memo";
    struct Slot {
        bool ready = false;
        uint64_t value = 0;
    };
    std::unordered_map<K, Slot, Hasher> map;
    std::mutex lock;
    std::condition_variable cv;
    explicit CondvarMemoPeer(size_t expected) { map.reserve(expected); }
    void put(const K &k, uint64_t v)
    {
        std::lock_guard<std::mutex> g(lock);
        Slot &s = map[k];
        s.ready = true;
        s.value = v;
    }
    bool get(const K &k, uint64_t &v)
    {
        std::lock_guard<std::mutex> g(lock);
        auto it = map.find(k);
        if (it == map.end() || !it->second.ready)
            return false;
        v = it->second.value;
        return true;
    }
    template <class F> uint64_t get_or_compute(const K &k, F &f)
    {
        std::unique_lock<std::mutex> g(lock);
        auto [it, inserted] = map.try_emplace(k);
        if (!inserted) {
            // Slots never move in an unordered_map (rehashing moves only bucket pointers).
            Slot *s = &it->second;
            cv.wait(g, [s] { return s->ready; });
            return s->value;
        }
        Slot *s = &it->second;
        g.unlock();
        uint64_t v = f(k);
        g.lock();
        s->value = v;
        s->ready = true;
        g.unlock();
        cv.notify_all(); // one condition variable for all keys: every waiter wakes to check
        return v;
    }
};

} // namespace bench

#endif
