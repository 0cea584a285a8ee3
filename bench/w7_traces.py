#!/usr/bin/python3
"""W7: the bounded memo's hit ratio on the public traces, beside exact LRU (functools.lru_cache).

    w7_traces.py W7_REPLAY OUT.json [--profile quick|full] [--traces DIR]

For each trace of DIR (default: ../shared/traces beside the repository's root; `.gz`: text, one
decimal key per line, lines that are not all digits skipped; `.xz`: big-endian uint32 keys, as
bench/policies/sim.py reads them) it writes the keys to a temporary file of little-endian uint32,
and at each capacity

  - the traces README's three (5%, 20% and 50% of the distinct keys, rounded down as sim.py does)
    and 128 (lru_cache's default maxsize): the rows of the report's table and targets;
  - a sweep for the plot: log-spaced sizes from 16 to 90% of the distinct keys (12 in the full
    profile, 6 in the quick one);

replays them through memo (W7_REPLAY, bench/w7_replay.c: memo_get_u64 on a memo of max_entries
= capacity), once per hash seed (5 seeds in the full profile, 3 in the quick one: the policy's
frequency sketch hashes the keys with the memo's seed, which moves a hit ratio by up to about a
point; the median over the seeds is the figure, with its min and max), and through Python's own
functools.lru_cache(maxsize=capacity) (misses from cache_info()). lru_cache is exact LRU: on the README's rows its hit ratio must equal the README's
LRU column to the last printed digit, and the README's requests and distinct keys must be the
trace's; a disagreement is printed and the exit status is 1 (the JSON is still written). The
README's SIEVE and S3-FIFO figures are carried beside those rows. Hit ratios in the JSON are
percentages. Standard library only; about 25 s in the full profile, 10 s in the quick one (2 cores, shared).
"""
import functools
import json
import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ORDER = ["loop", "gli", "multi2", "sprite", "ps", "cs", "2_pools", "zigzag", "web12"]
FRACTIONS = (0.05, 0.20, 0.50)
SEED0 = 0x6D656D6F62656E63  # bench::kSeed, w7_replay's default; the others follow it


# The traces are read as the policy simulator reads them (one reader: gz text, xz big-endian u32).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies"))
from sim import read_trace  # noqa: E402


def readme_rows(tdir):
    """{(trace, capacity): {requests, keys, lru, sieve, s3fifo}} from the traces README's table."""
    rows = {}
    path = os.path.join(tdir, "README.md")
    if not os.path.exists(path):
        return rows
    with open(path) as fh:
        for line in fh:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 7 or not all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells[1:]):
                continue
            rows[(cells[0], int(cells[3]))] = {"requests": int(cells[1]), "keys": int(cells[2]), "lru": cells[4],
                                               "sieve": cells[5], "s3fifo": cells[6]}
    return rows


def sweep_sizes(distinct, points):
    hi = max(17, int(distinct * 0.9))
    lo = 16
    out = sorted({round(lo * (hi / lo) ** (i / (points - 1))) for i in range(points)})
    return [c for c in out if c >= 1]


def lru_misses(keys, cap):
    @functools.lru_cache(maxsize=cap)
    def f(k):
        return k * 0x9E3779B97F4A7C15 + 1

    for _ in map(f, keys):
        pass
    return f.cache_info().misses


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    replay, out_path = args[0], args[1]
    profile = "full"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tdir = os.path.join(root, "..", "shared", "traces")
    rest = args[2:]
    while rest:
        a = rest.pop(0)
        if a == "--profile":
            profile = rest.pop(0)
        elif a == "--traces":
            tdir = rest.pop(0)
        else:
            sys.exit(f"w7_traces.py: unknown argument {a!r}")
    tdir = os.path.normpath(tdir)
    if not os.path.isdir(tdir):
        sys.exit(f"w7_traces.py: no traces directory {tdir}")
    points = 6 if profile == "quick" else 12
    seeds = [SEED0 + i for i in range(3 if profile == "quick" else 5)]
    ref = readme_rows(tdir)
    files = {f.split(".")[0]: os.path.join(tdir, f) for f in os.listdir(tdir) if ".trace" in f}
    names = [n for n in ORDER if n in files] + sorted(set(files) - set(ORDER))
    t_start = time.monotonic()
    rows, failures = [], []
    memo_seconds = lru_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="memo-w7-") as tmp:
        for name in names:
            keys = read_trace(files[name])
            distinct = len(set(keys))
            table_caps = [max(1, int(distinct * f)) for f in FRACTIONS] + [128]
            caps = []
            for c in table_caps + sweep_sizes(distinct, points):
                if c not in caps:
                    caps.append(c)
            bin_path = os.path.join(tmp, name + ".u32")
            with open(bin_path, "wb") as fh:
                fh.write(struct.pack("<%dI" % len(keys), *keys))
            memo = {}  # capacity -> w7_replay's objects, one per seed
            for seed in seeds:
                t0 = time.monotonic()
                p = subprocess.run([replay, "--name", name, "--seed", str(seed), bin_path, ",".join(map(str, caps))],
                                   text=True, capture_output=True)
                memo_seconds += time.monotonic() - t0
                got = 0
                for line in p.stdout.splitlines():
                    r = json.loads(line)
                    memo.setdefault(r["capacity"], []).append(r)
                    got += 1
                if p.returncode != 0 or got != len(caps):
                    failures.append(f"{name} (seed {seed:#x}): w7_replay failed (status {p.returncode}): "
                                    f"{p.stderr.strip()}")
            for cap in caps:
                t0 = time.monotonic()
                misses = lru_misses(keys, cap)
                lru_seconds += time.monotonic() - t0
                lru_pct = 100.0 * (len(keys) - misses) / len(keys)
                ms = memo.get(cap, [])
                pcts = [100.0 * r["hit_ratio"] for r in ms]
                readme = ref.get((name, cap))
                row = {
                    "trace": name,
                    "capacity": cap,
                    "table": cap in table_caps,
                    "requests": len(keys),
                    "distinct_keys": distinct,
                    "memo_hit_pct": statistics.median(pcts) if pcts else None,
                    "memo_hit_pct_min": min(pcts) if pcts else None,
                    "memo_hit_pct_max": max(pcts) if pcts else None,
                    "memo_hit_pct_by_seed": pcts,
                    "memo_evictions": [r["evictions"] for r in ms],
                    "memo_entries_at_end_max": max((r["entries_at_end"] for r in ms), default=None),
                    "memo_seconds": sum(r["seconds"] for r in ms),
                    "lru_cache_hit_pct": lru_pct,
                    "lru_cache_misses": misses,
                    "readme_lru_pct": None,
                    "sieve_ref_pct": None,
                    "s3fifo_ref_pct": None,
                }
                if readme:
                    row["readme_lru_pct"] = float(readme["lru"])
                    row["sieve_ref_pct"] = float(readme["sieve"])
                    row["s3fifo_ref_pct"] = float(readme["s3fifo"])
                    if f"{lru_pct:.2f}" != readme["lru"]:
                        failures.append(f"{name} at {cap}: lru_cache hits {lru_pct:.2f}%, the traces README's "
                                        f"LRU says {readme['lru']}%")
                    if (readme["requests"], readme["keys"]) != (len(keys), distinct):
                        failures.append(f"{name}: {len(keys)} requests and {distinct} keys; the README says "
                                        f"{readme['requests']} and {readme['keys']}")
                rows.append(row)
            sys.stderr.write(f"w7_traces.py: {name}: {len(keys)} requests, {distinct} keys, {len(caps)} sizes\n")
    checked = sum(1 for r in rows if r["readme_lru_pct"] is not None)
    missing = sorted({n for n, _ in ref} - set(names))
    if not checked:
        failures.append(f"no row of {tdir}/README.md was checked")
    for n in missing:
        failures.append(f"{n}: in the README, but no trace file")
    out = {
        "workload": "W7_traces",
        "profile": profile,
        "traces_dir": tdir,
        "python": platform.python_version(),
        "executable": sys.executable,
        "sweep_points": points,
        "seeds": [f"{x:#x}" for x in seeds],
        "lru_cache_checked_rows": checked,
        "lru_cache_check": "failed" if failures else "ok",
        "failures": failures,
        "seconds": {"total": round(time.monotonic() - t_start, 2), "memo": round(memo_seconds, 2),
                    "lru_cache": round(lru_seconds, 2)},
        "rows": rows,
    }
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    for f in failures:
        sys.stderr.write(f"w7_traces.py: FAILED: {f}\n")
    sys.stderr.write(f"w7_traces.py: {len(rows)} rows ({checked} checked against the README's LRU) in "
                     f"{out['seconds']['total']} s (memo {out['seconds']['memo']} s, lru_cache "
                     f"{out['seconds']['lru_cache']} s)\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
