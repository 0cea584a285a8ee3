#!/usr/bin/python3
"""functools.lru_cache under threads, on the W3 and W4 key streams of memo_bench.

Run by bench/run with Debian's /usr/bin/python3:  lru_cache.py STREAMS_DIR quick|full  > out.json

W3: each thread walks its own Zipf (s = 0.99) stream, written by memo_bench --memo_write_streams
(the same streams the C++ peers walk), through one lru_cache(maxsize=None) function whose body
costs about 50 ns, 1 us or 50 us (a busy wait: it holds the GIL, as CPU-bound Python does).
W4: every thread asks for the same missing key at once, each round; the body costs 10 us, 1 ms or
10 ms, once as a busy wait ("cpu") and once as time.sleep ("io": it releases the GIL, as a
function that waits on a socket or a database does).
Counted as in memo_bench: calls of the body, distinct keys, duplicates = calls - distinct keys.
"""
import functools
import json
import os
import platform
import sys
import threading
import time
from array import array

perf_ns = time.perf_counter_ns


def busy(ns):
    end = perf_ns() + ns
    while perf_ns() < end:
        pass


def stream_len(cost_ns, quick):
    if cost_ns >= 50000:
        return 2000 if quick else 10000
    if cost_ns >= 1000:
        return 20000 if quick else 100000
    return 100000 if quick else 500000


def load_stream(dirname, length, tid):
    a = array("I")
    with open(os.path.join(dirname, f"zipf-len{length}-t{tid}.u32"), "rb") as f:
        a.frombytes(f.read())
    return a


def w3(dirname, cost_ns, threads, quick):
    length = stream_len(cost_ns, quick)
    streams = [load_stream(dirname, length, t) for t in range(threads)]
    calls = []  # list.append is atomic under the GIL

    @functools.lru_cache(maxsize=None)
    def f(k):
        calls.append(k)
        busy(cost_ns)
        return k * 0x9E3779B97F4A7C15 + 1

    barrier = threading.Barrier(threads + 1)

    def run(s):
        barrier.wait()
        for k in s:
            f(k)

    ts = [threading.Thread(target=run, args=(s,)) for s in streams]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = perf_ns()
    for t in ts:
        t.join()
    elapsed = perf_ns() - t0
    distinct = len(set().union(*[set(s) for s in streams]))
    ops = length * threads
    return {
        "workload": "W3", "cost_ns": cost_ns, "threads": threads, "ops": ops,
        "ops_per_second": ops / (elapsed / 1e9), "fn_calls": len(calls), "distinct_keys": distinct,
        "duplicates": len(calls) - distinct, "hit_ratio": 1 - len(calls) / ops,
    }


def rounds(cost_ns, quick):
    if cost_ns >= 10000000:
        return 3 if quick else 10
    if cost_ns >= 1000000:
        return 10 if quick else 40
    return 50 if quick else 200


def w4(cost_ns, threads, kind, quick):
    n = rounds(cost_ns, quick)
    calls = []

    @functools.lru_cache(maxsize=None)
    def f(k):
        calls.append(k)
        if kind == "cpu":
            busy(cost_ns)
        else:
            time.sleep(cost_ns / 1e9)
        return k

    barrier = threading.Barrier(threads)
    enter = [0] * threads
    leave = [0] * threads
    round_ns = []

    def run(tid):
        for r in range(n):
            barrier.wait()
            enter[tid] = perf_ns()
            f(r)
            leave[tid] = perf_ns()
            if barrier.wait() == 0:
                round_ns.append(max(leave) - min(enter))

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    round_ns.sort()
    return {
        "workload": "W4", "cost_ns": cost_ns, "threads": threads, "kind": kind, "rounds": n,
        "computations_per_key": len(calls) / n,
        "round_over_compute": round_ns[len(round_ns) // 2] / cost_ns,
    }


def main():
    dirname, profile = sys.argv[1], sys.argv[2]
    quick = profile == "quick"
    results = []
    for cost in (50, 1000, 50000):
        for threads in (1, 2, 4):
            results.append(w3(dirname, cost, threads, quick))
    for cost in (10000, 1000000, 10000000):
        for threads in ((2, 4) if quick else (2, 4, 8, 16)):
            for kind in ("cpu", "io"):
                results.append(w4(cost, threads, kind, quick))
    json.dump({"python": sys.version.split()[0], "executable": sys.executable,
               "implementation": platform.python_implementation(),
               "switch_interval_s": sys.getswitchinterval(), "results": results}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
