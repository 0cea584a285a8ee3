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
    def __init__(self, cap):
        self.width = 1
        while self.width < max(16, cap):
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


POLICIES = {"lru": lru, "sieve": sieve, "s3fifo": s3fifo, "wtinylfu": wtinylfu, "clock2": clock2,
            "wtinylfu20": lambda t, c: wtinylfu(t, c, window_frac=0.2), "wtinylfu_hc": lambda t, c: wtinylfu(t, c, climb=True)}


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
