#!/usr/bin/env python3
"""Hit ratios of eviction policies on the public traces in ../shared/traces (or a directory given),
single-threaded, exact simulations: the measurement behind the bounded memo's choice of policy.

    bench/policies/sim.py [TRACES_DIR] [--policies lru,sieve,s3fifo,wtinylfu] [--sizes 128]

Prints a Markdown table: each trace at 5%, 20% and 50% of its distinct keys (the capacities of the
traces' README) and at 128 entries (lru_cache's default), one column per policy, then each policy's
mean over the rows and its worst shortfall against exact LRU.

The policies, as published:
  lru       exact LRU (functools.lru_cache(maxsize)).
  sieve     SIEVE (Zhang et al., NSDI '24): a FIFO queue, a visited bit per entry set on a hit, and a
            hand that moves from the tail to the head evicting the first entry without the bit,
            clearing the bits it passes.
  s3fifo    S3-FIFO (Yang et al., SOSP '23): a small FIFO (10%) for new keys, a main FIFO (90%), a
            2-bit frequency per entry and a ghost FIFO of keys evicted from the small queue (as
            many as the main queue holds); a key found in the ghost enters the main queue.
  wtinylfu  W-TinyLFU (Einziger et al., ACM TOS 2017; Caffeine): a window LRU (1%) in front of a
            segmented LRU (20% probation, 80% protected); a key leaving the window is admitted to
            the main cache only if a count-min sketch (4-bit counters, 4 rows, halved every 10 x
            capacity additions) estimates it more frequent than the main cache's victim.
  wtinylfu20  the same with a 20% window.
  wtinylfu_hc the same with a window that moves by hill climbing on the hit ratio (Caffeine's).
  clock2    CLOCK with a 2-bit counter per entry (a hit saturates it at 3, the hand decrements):
            the cheapest policy whose hits write nothing once the counter is saturated.
  memo      what the C library implements: W-TinyLFU on FIFO lists with a CLOCK hand, a hit only
            sets a visited bit, the window moved by ghosts of evicted keys (see memo() below).
  memo2     memo with a cold start (the whole cache is the window until the first reuse) and a
            ghost for every main eviction (see memo2() below).
"""
import collections
import gzip
import lzma
import os
import struct
import sys


def read_trace(path):
    if path.endswith(".xz"):
        data = lzma.open(path).read()
        return list(struct.unpack(">%dI" % (len(data) // 4), data[: len(data) // 4 * 4]))
    with gzip.open(path, "rt") as fh:
        # The LIRS traces mark some lines with "*" (not a request): skipped.
        return [int(line) for line in fh if line.strip().isdigit()]


def lru(trace, cap):
    d = collections.OrderedDict()
    hits = 0
    for k in trace:
        if k in d:
            hits += 1
            d.move_to_end(k)
        else:
            if len(d) >= cap:
                d.popitem(last=False)
            d[k] = True
    return hits


def sieve(trace, cap):
    # Doubly linked list: head = newest. prev points toward the head, nxt toward the tail.
    visited, prev, nxt = {}, {}, {}
    head = tail = hand = None
    hits = 0
    for k in trace:
        if k in visited:
            hits += 1
            visited[k] = True
            continue
        if len(visited) >= cap:
            o = hand if hand is not None else tail
            while visited[o]:
                visited[o] = False
                o = prev[o] if prev[o] is not None else tail
            hand = prev[o]
            # unlink o
            p, n = prev[o], nxt[o]
            if p is not None:
                nxt[p] = n
            else:
                head = n
            if n is not None:
                prev[n] = p
            else:
                tail = p
            del visited[o], prev[o], nxt[o]
        visited[k] = False
        prev[k], nxt[k] = None, head
        if head is not None:
            prev[head] = k
        head = k
        if tail is None:
            tail = k
    return hits


def s3fifo(trace, cap, small_frac=0.1):
    s_cap = max(1, int(cap * small_frac))
    m_cap = cap - s_cap
    small, main = collections.deque(), collections.deque()
    ghost, ghost_set = collections.deque(), set()
    freq, where = {}, {}
    hits = 0

    def evict_main():
        while main:
            k = main.popleft()
            if freq[k] > 0:
                freq[k] -= 1
                main.append(k)
            else:
                del freq[k], where[k]
                return

    def evict_small():
        while small:
            k = small.popleft()
            if freq[k] > 1:
                main.append(k)
                where[k] = "m"
                freq[k] = 0
                if len(main) > m_cap:
                    evict_main()
            else:
                del freq[k], where[k]
                ghost.append(k)
                ghost_set.add(k)
                if len(ghost) > m_cap:
                    ghost_set.discard(ghost.popleft())
                return

    for k in trace:
        if k in where:
            hits += 1
            freq[k] = min(freq[k] + 1, 3)
            continue
        while len(small) + len(main) >= cap:
            if len(small) >= s_cap or not main:
                evict_small()
            else:
                evict_main()
        if k in ghost_set:
            ghost_set.discard(k)
            main.append(k)
            where[k] = "m"
        else:
            small.append(k)
            where[k] = "s"
        freq[k] = 0
    return hits


class CountMin:
    def __init__(self, cap, width_min=16):
        self.width = 1
        while self.width < max(width_min, cap):
            self.width <<= 1
        self.rows = [[0] * self.width for _ in range(4)]
        self.seeds = [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93]
        self.additions, self.sample = 0, 10 * max(16, cap)

    def _idx(self, k, i):
        h = (k * self.seeds[i] + i) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 32
        return h & (self.width - 1)

    def add(self, k):
        for i in range(4):
            j = self._idx(k, i)
            if self.rows[i][j] < 15:
                self.rows[i][j] += 1
        self.additions += 1
        if self.additions >= self.sample:
            for r in self.rows:
                for j in range(self.width):
                    r[j] >>= 1
            self.additions //= 2

    def estimate(self, k):
        return min(self.rows[i][self._idx(k, i)] for i in range(4))


def wtinylfu(trace, cap, window_frac=0.01, climb=False):
    """W-TinyLFU with a window of window_frac of the capacity. With climb, the window moves by hill
    climbing, as Caffeine's: every 10 x capacity requests the hit ratio of the period is compared
    with the previous one's; the window keeps growing or shrinking while that helps, and turns
    round when it does not, with a step that starts at 6.25% of the capacity and decays by 0.98 a
    period."""
    main_total = cap
    w_cap = max(1, int(cap * window_frac))
    window, prob, prot = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
    sketch = CountMin(cap)
    hits = 0
    period, seen, period_hits, prev_rate = 10 * cap, 0, 0, None
    step = max(1.0, cap * 0.0625)
    direction = 1

    def main_cap():
        return main_total - w_cap

    def shrink_main():
        while len(prob) + len(prot) > max(0, main_cap()):
            if prob:
                d, _ = prob.popitem(last=False)
            else:
                d, _ = prot.popitem(last=False)

    for k in trace:
        sketch.add(k)
        seen += 1
        hit = True
        if k in window:
            window.move_to_end(k)
        elif k in prot:
            prot.move_to_end(k)
        elif k in prob:
            del prob[k]
            prot[k] = True
            while len(prot) > int(max(0, main_cap()) * 0.8):
                d, _ = prot.popitem(last=False)
                prob[d] = True
        else:
            hit = False
            window[k] = True
            while len(window) > w_cap:
                cand, _ = window.popitem(last=False)
                if main_cap() <= 0:
                    continue
                if len(prob) + len(prot) < main_cap():
                    prob[cand] = True
                    continue
                victim = next(iter(prob)) if prob else next(iter(prot))
                if sketch.estimate(cand) > sketch.estimate(victim):
                    if prob:
                        prob.popitem(last=False)
                    else:
                        prot.popitem(last=False)
                    prob[cand] = True
        if hit:
            hits += 1
            period_hits += 1
        if climb and seen == period:
            rate = period_hits / period
            if prev_rate is not None and rate < prev_rate:
                direction = -direction
            prev_rate = rate
            w_cap = int(min(cap * 0.8, max(1, w_cap + direction * step)))
            step = max(1.0, step * 0.98)
            shrink_main()
            seen = period_hits = 0
    return hits


def clock2(trace, cap):
    keys, cnt, index = [None] * cap, [0] * cap, {}
    hand, n, hits = 0, 0, 0
    for k in trace:
        i = index.get(k)
        if i is not None:
            hits += 1
            if cnt[i] < 3:
                cnt[i] += 1
            continue
        if n < cap:
            i = n
            n += 1
        else:
            while cnt[hand] > 0:
                cnt[hand] -= 1
                hand = (hand + 1) % cap
            i = hand
            del index[keys[i]]
            hand = (hand + 1) % cap
        keys[i], cnt[i] = k, 0
        index[k] = i
    return hits


def memo(trace, cap):
    """memo: the policy the C library implements (hits only set a bit), port it line by line.

    Hit: set the entry's visited bit (1 bit; nothing else: no list move, no sketch update).

    Structures (all under the lock, touched only on a miss):
      W, P, Q  three FIFO lists (head = oldest): window, probation, protected. Entries move only
               from a head to a tail, O(1).
      sketch   CountMin above: 4 rows of 4-bit counters, width = next power of two >= max(16, cap),
               index (k * seed[i] + i) mod 2^64, xor its high 32 bits into the low, & (width - 1);
               halved (every counter >> 1, additions //= 2) when additions reach
               SAMPLE = 20 * max(16, cap). One addition = +1 on each row (saturating at 15).
      GW, GM   two ghost FIFOs of evicted keys, each bounded to GHOST = cap // 2 entries, with a
               hash map key -> (tag, seq); GW = keys dropped from the window (rejected candidates),
               GM = main victims evicted by an admitted candidate. A ghost entry popped from its
               FIFO is forgotten only if the map still holds that same seq.
      w_cap    the window's target size: starts at max(1, cap // 100), kept in [1, cap].
    credit(k) = one sketch addition for k (stands for the hits the bit recorded).

    Miss on k:
      1. if k is in the ghost map: remove it; tag GW -> w_cap = min(cap, w_cap + 1);
         tag GM -> w_cap = max(1, w_cap - 1).
      2. sketch.add(k); append k to W's tail with its bit clear.
      3. while |W| + |P| + |Q| > cap: evict_one().
    evict_one():
      if |W| > w_cap or P and Q are empty:            # the window gives a candidate
        c = pop W's head
        if c.visited: clear it, credit(c), append c to W's tail; return   (CLOCK window)
        if |P| + |Q| < cap - w_cap: append c to P's tail; return         (main not full)
        if P and Q are empty: drop c, push c into GW; return               (window = whole cache)
        v = victim()
        if est(c) > est(v) + MARGIN (MARGIN = 2): pop v from P's head, drop it, push v into GM;
                                                  append c to P's tail
        else: drop c, push c into GW
      else:                                            # the window shrank: main over its share
        v = victim(); pop v from P's head and drop it (no ghost)
    victim():  (returns P's head, unvisited, without removing it)
      loop:
        if P is empty: pop Q's head q; if q.visited: clear it, credit(q), append q to Q's tail
                       else append q to P's tail; continue
        v = P's head; if not v.visited: return v
        pop v, clear its bit, credit(v), append v to Q's tail (promotion)
        while |Q| > (cap - w_cap) * 8 // 10: pop Q's head q; if q.visited: clear it, credit(q),
                       append q to Q's tail; else append q to P's tail (demotion)
    Every pass of the hand over an entry either clears a bit (set by a hit) or removes/demotes an
    unvisited entry, so eviction is amortized O(1). No hill climber: the ghosts move the window.
    cap == 1: the cache holds the newest key only (the old entry is dropped whatever its bit).
    """
    if cap <= 1:
        last, hits = None, 0
        for k in trace:
            if k == last:
                hits += 1
            last = k
        return hits
    MARGIN, GHOST = 2, cap // 2
    W, P, Q = collections.deque(), collections.deque(), collections.deque()
    vis = {}
    sketch = CountMin(cap)
    sketch.sample = 20 * max(16, cap)
    w_cap = max(1, cap // 100)
    ghosts = {"W": collections.deque(), "M": collections.deque()}
    gmap, gseq = {}, 0
    hits = 0

    def ghost_add(k, tag):
        nonlocal gseq
        gseq += 1
        g = ghosts[tag]
        g.append((k, gseq))
        gmap[k] = (tag, gseq)
        if len(g) > GHOST:
            ok, oseq = g.popleft()
            e = gmap.get(ok)
            if e is not None and e[1] == oseq:
                del gmap[ok]

    def victim():
        while True:
            if not P:
                q = Q.popleft()
                if vis[q]:
                    vis[q] = False
                    sketch.add(q)
                    Q.append(q)
                else:
                    P.append(q)
                continue
            v = P[0]
            if not vis[v]:
                return v
            P.popleft()
            vis[v] = False
            sketch.add(v)
            Q.append(v)
            while len(Q) > (cap - w_cap) * 8 // 10:
                q = Q.popleft()
                if vis[q]:
                    vis[q] = False
                    sketch.add(q)
                    Q.append(q)
                else:
                    P.append(q)

    def evict_one():
        main_len = len(P) + len(Q)
        if len(W) > w_cap or main_len == 0:
            c = W.popleft()
            if vis[c]:
                vis[c] = False
                sketch.add(c)
                W.append(c)
                return
            if main_len < cap - w_cap:
                P.append(c)
                return
            if main_len == 0:
                del vis[c]
                ghost_add(c, "W")
                return
            v = victim()
            if sketch.estimate(c) > sketch.estimate(v) + MARGIN:
                P.popleft()
                del vis[v]
                ghost_add(v, "M")
                P.append(c)
            else:
                del vis[c]
                ghost_add(c, "W")
        else:
            v = victim()
            P.popleft()
            del vis[v]

    for k in trace:
        v = vis.get(k)
        if v is not None:
            hits += 1
            vis[k] = True
            continue
        e = gmap.pop(k, None)
        if e is not None:
            w_cap = min(cap, w_cap + 1) if e[0] == "W" else max(1, w_cap - 1)
        sketch.add(k)
        W.append(k)
        vis[k] = False
        while len(W) + len(P) + len(Q) > cap:
            evict_one()
    return hits


def memo2(trace, cap):
    """memo2: memo (above) with a cold start and ghosts for every main eviction. Port: memo's
    algorithm with these differences (everything else, word for word, as in memo):

      State added: cold (starts true), nev (evictions counted while cold, starts 0).
      BASE = max(1, cap // 100) (memo's initial window); COLD_LIMIT = 32 * cap.
      w_cap starts at cap (memo: BASE): until the first sign of reuse the whole cache is the
      window, i.e. a CLOCK that keeps the newest keys (a trace that starts with a scan longer
      than the cache keeps its newest keys, as LRU does, instead of its oldest).
      end_cold(timeout): cold = false; if not timeout and nev >= cap: leave w_cap as it is (the
        first reuse came after at least one full turnover of the cache: recency evidence);
        else w_cap = BASE (memo's start).
      evict_one(): first of all, if cold: nev += 1; if nev >= COLD_LIMIT: end_cold(true).
        Window branch: when the popped candidate c has its visited bit set and cold:
        end_cold(false) before clearing the bit (the hand found a hit: reuse).
        Shrink branch ("the window shrank: main over its share"): the dropped victim v is
        pushed into GM (memo drops it without a ghost).
      Miss on k, step 1: if k is in the ghost map and cold: end_cold(false); then apply memo's
        +1 / -1 step as before.
      Sketch: at least 1024 counters per row (memo: 16), so that a small cache's sketch is not
        flooded by a scan's keys (a 128-entry cache under a hot set interleaved with a scan).
      A GW ghost hit grows the window only if est(k) <= est(W's head) + MARGIN (memo: always):
        a returning key more frequent than what the window holds lost a duel on frequency, and
        growing the window for it drove a hot set a little larger than main to a whole-cache
        window (seen in the library under some hash seeds: tests/test_bounded.c, scan resistance).
    cap == 1: as memo (the newest key only). src/policy.c implements this policy.
    """
    if cap <= 1:
        last, hits = None, 0
        for k in trace:
            if k == last:
                hits += 1
            last = k
        return hits
    MARGIN, GHOST, BASE, COLD_LIMIT = 2, cap // 2, max(1, cap // 100), 32 * cap
    W, P, Q = collections.deque(), collections.deque(), collections.deque()
    vis = {}
    sketch = CountMin(cap, width_min=1024)
    sketch.sample = 20 * max(16, cap)
    w_cap = cap
    cold, nev = True, 0
    ghosts = {"W": collections.deque(), "M": collections.deque()}
    gmap, gseq = {}, 0
    hits = 0

    def ghost_add(k, tag):
        nonlocal gseq
        gseq += 1
        g = ghosts[tag]
        g.append((k, gseq))
        gmap[k] = (tag, gseq)
        if len(g) > GHOST:
            ok, oseq = g.popleft()
            e = gmap.get(ok)
            if e is not None and e[1] == oseq:
                del gmap[ok]

    def end_cold(timeout):
        nonlocal cold, w_cap
        cold = False
        if timeout or nev < cap:
            w_cap = BASE

    def victim():
        while True:
            if not P:
                q = Q.popleft()
                if vis[q]:
                    vis[q] = False
                    sketch.add(q)
                    Q.append(q)
                else:
                    P.append(q)
                continue
            v = P[0]
            if not vis[v]:
                return v
            P.popleft()
            vis[v] = False
            sketch.add(v)
            Q.append(v)
            while len(Q) > (cap - w_cap) * 8 // 10:
                q = Q.popleft()
                if vis[q]:
                    vis[q] = False
                    sketch.add(q)
                    Q.append(q)
                else:
                    P.append(q)

    def evict_one():
        nonlocal nev
        if cold:
            nev += 1
            if nev >= COLD_LIMIT:
                end_cold(True)
        main_len = len(P) + len(Q)
        if len(W) > w_cap or main_len == 0:
            c = W.popleft()
            if vis[c]:
                if cold:
                    end_cold(False)
                vis[c] = False
                sketch.add(c)
                W.append(c)
                return
            if main_len < cap - w_cap:
                P.append(c)
                return
            if main_len == 0:
                del vis[c]
                ghost_add(c, "W")
                return
            v = victim()
            if sketch.estimate(c) > sketch.estimate(v) + MARGIN:
                P.popleft()
                del vis[v]
                ghost_add(v, "M")
                P.append(c)
            else:
                del vis[c]
                ghost_add(c, "W")
        else:
            v = victim()
            P.popleft()
            del vis[v]
            ghost_add(v, "M")

    for k in trace:
        v = vis.get(k)
        if v is not None:
            hits += 1
            vis[k] = True
            continue
        e = gmap.pop(k, None)
        if e is not None:
            if cold:
                end_cold(False)
            if e[0] == "W":
                # Frequency, not recency, is at stake when the returning key is asked for more
                # often than the window's head: the window does not grow then.
                if not W or sketch.estimate(k) <= sketch.estimate(W[0]) + MARGIN:
                    w_cap = min(cap, w_cap + 1)
            else:
                w_cap = max(1, w_cap - 1)
        sketch.add(k)
        W.append(k)
        vis[k] = False
        while len(W) + len(P) + len(Q) > cap:
            evict_one()
    return hits


POLICIES = {"lru": lru, "sieve": sieve, "s3fifo": s3fifo, "wtinylfu": wtinylfu, "clock2": clock2,
            "wtinylfu20": lambda t, c: wtinylfu(t, c, window_frac=0.2), "wtinylfu_hc": lambda t, c: wtinylfu(t, c, climb=True),
            "memo": memo, "memo2": memo2}


def main():
    args = sys.argv[1:]
    tdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "traces")
    names = list(POLICIES)
    sizes_extra = [128]
    while args:
        a = args.pop(0)
        if a == "--policies":
            names = args.pop(0).split(",")
        elif a == "--sizes":
            sizes_extra = [int(x) for x in args.pop(0).split(",")]
        else:
            tdir = a
    order = ["loop", "gli", "multi2", "sprite", "ps", "cs", "2_pools", "zigzag", "web12"]
    files = {f.split(".")[0]: os.path.join(tdir, f) for f in os.listdir(tdir) if ".trace" in f}
    rows = []
    print("| trace | capacity | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for name in [n for n in order if n in files] + sorted(set(files) - set(order)):
        trace = read_trace(files[name])
        distinct = len(set(trace))
        caps = [max(1, int(distinct * f)) for f in (0.05, 0.20, 0.50)] + sizes_extra
        for cap in caps:
            ratios = [100.0 * POLICIES[p](trace, cap) / len(trace) for p in names]
            rows.append((name, cap, ratios))
            print(f"| {name} | {cap} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |", flush=True)
    if "lru" in names:
        li = names.index("lru")
        print()
        print("| policy | mean hit ratio | mean gain over LRU (points) | worst row against LRU (points) |")
        print("|---|---|---|---|")
        for i, p in enumerate(names):
            mean = sum(r[2][i] for r in rows) / len(rows)
            gains = [r[2][i] - r[2][li] for r in rows]
            worst = min(range(len(rows)), key=lambda j: gains[j])
            print(f"| {p} | {mean:.2f} | {sum(gains) / len(gains):+.2f} | {gains[worst]:+.2f} "
                  f"({rows[worst][0]} at {rows[worst][1]}) |")


if __name__ == "__main__":
    main()
