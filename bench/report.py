#!/usr/bin/python3
"""Turns one bench/run's JSON files into a Markdown report with PNG plots, and prints the ratio table.

    report.py RESULTS_DIR REPORT.md [--durations 'W1=123 W2=45 ...']

RESULTS_DIR holds W1.json .. W7.json (Google Benchmark, --benchmark_out_format=json, every
repetition reported), lru_cache.json (bench/lru_cache.py) and W7_traces.json (bench/w7_traces.py). The PNGs go into RESULTS_DIR; the
report links them relative to its own place. Every figure is a median of the interleaved
repetitions; tables give [min, max] beside it. Ratios are taken between peers of the same run.
"""
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

# ---- loading ------------------------------------------------------------------------------------

DROP = ("real_time", "manual_time")


def parse_name(run_name):
    parts, threads = [], 1
    for p in run_name.split("/"):
        if p in DROP or p.startswith("iterations:"):
            continue
        if p.startswith("threads:"):
            threads = int(p.split(":")[1])
            continue
        parts.append(p)
    return tuple(parts), threads


class Group:
    """The repetitions of one benchmark instance."""

    def __init__(self):
        self.runs = []  # dicts, one per repetition

    def values(self, key):
        return [r[key] for r in self.runs if key in r]

    def med(self, key):
        v = self.values(key)
        return statistics.median(v) if v else None

    def lo(self, key):
        v = self.values(key)
        return min(v) if v else None

    def hi(self, key):
        v = self.values(key)
        return max(v) if v else None


def load(results_dir):
    groups = defaultdict(Group)
    context = {}
    for w in ("W1", "W2", "W3", "W4", "W5", "W6", "W7"):
        path = os.path.join(results_dir, f"{w}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            # The run died mid-way (Google Benchmark writes each result as it comes): keep the
            # complete entries and say so.
            cut = text.rfind("\n    }")
            if cut < 0:
                continue
            data = json.loads(text[:cut + 6] + "\n  ]\n}")
            data.setdefault("context", {})["incomplete_" + w] = "yes: the run of this workload died; see its .txt"
            sys.stderr.write(f"report.py: {path} is incomplete; using its complete entries\n")
        context = context or data.get("context", {})
        for b in data.get("benchmarks", []):
            if b.get("run_type") != "iteration" or b.get("error_occurred"):
                continue
            key = parse_name(b["run_name"])
            groups[key].runs.append(b)
    lru = None
    path = os.path.join(results_dir, "lru_cache.json")
    if os.path.exists(path):
        with open(path) as f:
            lru = json.load(f)
    return groups, context, lru


def get(groups, *parts, threads=1):
    return groups.get((tuple(parts), threads))


# ---- formatting ---------------------------------------------------------------------------------


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e9:
        return f"{x / 1e9:.{digits}g} G"
    if ax >= 1e6:
        return f"{x / 1e6:.{digits}g} M"
    if ax >= 1e4:
        return f"{x / 1e3:.{digits}g} k"
    return f"{x:.{digits}g}"


def rng(g, key, scale=1.0, digits=3):
    if g is None or g.med(key) is None:
        return "n/a"
    return f"{fmt(g.med(key) * scale, digits)} [{fmt(g.lo(key) * scale, digits)}, {fmt(g.hi(key) * scale, digits)}]"


def paired_ratio(a, b, key, invert=False):
    """median(a)/median(b), and the min and max of the ratios of same-index repetitions."""
    if a is None or b is None or a.med(key) is None or b.med(key) is None:
        return None, None, None
    ra = {r.get("repetition_index", i): r[key] for i, r in enumerate(a.runs) if key in r}
    rb = {r.get("repetition_index", i): r[key] for i, r in enumerate(b.runs) if key in r}
    pairs = [ra[i] / rb[i] for i in ra if i in rb and rb[i]]
    m = a.med(key) / b.med(key)
    if invert:
        m = 1 / m
        pairs = [1 / p for p in pairs]
    return m, (min(pairs) if pairs else None), (max(pairs) if pairs else None)


def ratio_cell(r):
    m, lo, hi = r
    if m is None:
        return "n/a"
    if lo is None:
        return f"{m:.2f}"
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


# ---- plots --------------------------------------------------------------------------------------


def gnuplot(script, results_dir):
    try:
        subprocess.run(["gnuplot"], input=script, text=True, cwd=results_dir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True
    except (OSError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"report.py: gnuplot failed: {getattr(e, 'stderr', e)}\n")
        return False


HEAD = """set terminal pngcairo size 1000,560 font ",10"
set grid ytics
set key outside right top
"""

W1_PEERS = ["memo", "ck_hs_raw", "memo_dense", "dense_array", "tbb_hash_map", "tbb_unordered_map", "libcuckoo",
            "urcu_lfht", "glib_mutex", "rwlock_map"]
GC_PEERS = ["memo", "tbb_hash_map", "mutex_condvar_memo", "rwlock_map", "tbb_unordered_map",
            "libcuckoo", "urcu_lfht", "glib_mutex"]
W4_PEERS = ["memo", "memo_spinwait", "tbb_hash_map", "mutex_condvar_memo", "rwlock_map"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def plot_w1_sizes(groups, d):
    sizes = sorted({int(k[0][4].split(":")[1]) for k in groups if k[0][0] == "W1_hits" and k[0][2] == "u64"
                    and k[0][3] == "uniform"})
    if not sizes:
        return None
    rows = []
    for n in sizes:
        row = [str(n)]
        for p in W1_PEERS:
            g = get(groups, "W1_hits", p, "u64", "uniform", f"keys:{n}")
            row.append(f"{1e9 / g.med('items_per_second'):.2f}" if g else "NaN")
        rows.append(" ".join(row))
    write(os.path.join(d, "w1_sizes.dat"), "\n".join(rows) + "\n")
    plots = ", ".join(f"'w1_sizes.dat' using 1:{i + 2} with linespoints lw 2 title '{p}'" for i, p in enumerate(W1_PEERS))
    ok = gnuplot(HEAD + f"""set output 'w1_sizes.png'
set title 'W1 hits, u64 keys, uniform, 1 thread: ns per lookup (median; lower is better)'
set logscale x 2
set logscale y 2
set xlabel 'keys in the table'
set ylabel 'ns per lookup'
plot {plots}
""", d)
    return "w1_sizes.png" if ok else None


def plot_w1_scaling(groups, d):
    rows = []
    for p in W1_PEERS:
        row = [p]
        for dist in ("uniform", "hot"):
            for t in (1, 2):
                g = get(groups, "W1_hits", p, "u64", dist, "keys:65536", threads=t)
                row.append(f"{g.med('items_per_second') / 1e6:.3f}" if g else "NaN")
        rows.append(" ".join(row))
    write(os.path.join(d, "w1_scaling.dat"), "\n".join(rows) + "\n")
    ok = gnuplot(HEAD + """set output 'w1_scaling.png'
set title 'W1 hits at 64K u64 keys: the scaling panel, 1 and 2 threads on 2 cores (Mops/s, median)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 10
set ylabel 'Mops/s, all threads'
set xtics rotate by -30
plot 'w1_scaling.dat' using 2:xtic(1) title 'uniform, 1 thread', '' using 3 title 'uniform, 2 threads', \\
     '' using 4 title 'hot key, 1 thread', '' using 5 title 'hot key, 2 threads'
""", d)
    return "w1_scaling.png" if ok else None


def plot_w1_over(groups, d):
    rows = []
    for t in (1, 2, 4, 16):
        row = [str(t)]
        for p in W1_PEERS:
            g = get(groups, "W1_hits", p, "u64", "uniform", "keys:65536", threads=t)
            row.append(f"{g.med('items_per_second') / 1e6:.3f}" if g else "NaN")
        rows.append(" ".join(row))
    write(os.path.join(d, "w1_over.dat"), "\n".join(rows) + "\n")
    plots = ", ".join(f"'w1_over.dat' using 1:{i + 2} with linespoints lw 2 title '{p}'" for i, p in enumerate(W1_PEERS))
    ok = gnuplot(HEAD + f"""set output 'w1_over.png'
set title 'W1 hits, 64K u64 keys, uniform: 4 and 16 threads are OVERSUBSCRIBED (2 cores): not scaling'
set logscale x 2
set logscale y 10
set xtics (1, 2, 4, 16)
set xlabel 'threads (2 cores: beyond 2, threads take turns)'
set ylabel 'Mops/s, all threads'
set arrow from 2.5, graph 0 to 2.5, graph 1 nohead dt 2
plot {plots}
""", d)
    return "w1_over.png" if ok else None


def plot_w3(groups, d):
    rows = []
    for p in GC_PEERS:
        row = [p]
        for cost in (50, 1000, 50000):
            g = get(groups, "W3_zipf", p, f"cost_ns:{cost}", threads=2)
            row.append(f"{g.med('items_per_second') / 1e6:.4f}" if g else "NaN")
        rows.append(" ".join(row))
    write(os.path.join(d, "w3.dat"), "\n".join(rows) + "\n")
    ok = gnuplot(HEAD + """set output 'w3.png'
set title 'W3 Zipf get-or-compute, 2 threads: Mcalls/s by compute cost (median)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y 10
set ylabel 'Mcalls/s, both threads'
set xtics rotate by -30
plot 'w3.dat' using 2:xtic(1) title '50 ns', '' using 3 title '1 us', '' using 4 title '50 us'
""", d)
    return "w3.png" if ok else None


def plot_w4(groups, d):
    rows = []
    for t in (2, 4, 8, 16):
        row = [str(t)]
        for p in W4_PEERS:
            g = get(groups, "W4_stampede", p, "cost_ns:1000000", threads=t)
            row.append(f"{g.med('round_over_compute'):.3f}" if g else "NaN")
        rows.append(" ".join(row))
    write(os.path.join(d, "w4.dat"), "\n".join(rows) + "\n")
    plots = ", ".join(f"'w4.dat' using 1:{i + 2} with linespoints lw 2 title '{p}'" for i, p in enumerate(W4_PEERS))
    ok = gnuplot(HEAD + f"""set output 'w4.png'
set title 'W4 stampede, compute 1 ms: round time / compute time (median). 4+ threads: OVERSUBSCRIBED'
set logscale x 2
set xtics (2, 4, 8, 16)
set xlabel 'threads asking for one missing key (2 cores)'
set ylabel 'round time / compute time (1 = ideal)'
set yrange [0:*]
plot {plots}
""", d)
    return "w4.png" if ok else None


def plot_w6(groups, d):
    peers = ["memo", "ck_hs_raw", "tbb_hash_map", "tbb_unordered_map", "libcuckoo", "urcu_lfht", "glib_mutex", "rwlock_map"]
    rows = []
    for p in peers:
        g = get(groups, "W6_clear", p, "remove_each")
        if g:
            rows.append(f"{p} {g.med('bytes_per_entry'):.1f} {g.med('rss_per_entry'):.1f}")
    if not rows:
        return None
    write(os.path.join(d, "w6.dat"), "\n".join(rows) + "\n")
    ok = gnuplot(HEAD + """set output 'w6.png'
set title 'W6: memory per u64 entry at 1M entries (jemalloc stats.allocated and RSS deltas, median)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'bytes per entry'
set yrange [0:*]
set xtics rotate by -30
plot 'w6.dat' using 2:xtic(1) title 'allocated', '' using 3 title 'RSS'
""", d)
    return "w6.png" if ok else None


def plot_w7_traces(d):
    """One panel per trace: hit ratio against max_entries, memo (median over the seeds) and lru_cache."""
    if not W7_TRACES:
        return None
    by = defaultdict(list)
    for r in W7_TRACES["rows"]:
        by[r["trace"]].append(r)
    panels = []
    for name, rows in by.items():
        rows.sort(key=lambda r: r["capacity"])
        lines = [f"{r['capacity']} {nan(r['memo_hit_pct'])} {nan(r['memo_hit_pct_min'])} {nan(r['memo_hit_pct_max'])} "
                 f"{r['lru_cache_hit_pct']:.4f}" for r in rows]
        write(os.path.join(d, f"w7_{name}.dat"), "\n".join(lines) + "\n")
        panels.append(f"""set title '{name} ({rows[0]['distinct_keys']} keys, {rows[0]['requests']} requests)'
plot 'w7_{name}.dat' using 1:2:3:4 with yerrorlines lw 2 pt 7 ps 0.6 lc rgb '#c0392b' title 'memo (seed min-max)', \\
     '' using 1:5 with linespoints lw 2 pt 5 ps 0.6 lc rgb '#2c3e50' title 'lru_cache (exact LRU)'
""")
    cols = 3
    rows_n = (len(panels) + cols - 1) // cols
    ok = gnuplot(f"""set terminal pngcairo noenhanced size 1500,{420 * rows_n} font ",10"
set output 'w7_traces.png'
set grid
set logscale x 2
set key top left font ",8"
set xlabel 'max_entries (lru_cache maxsize)'
set ylabel 'hit ratio, %'
set yrange [0:*]
set multiplot layout {rows_n},{cols} title 'W7: hit ratio against size on the public traces, memo beside exact LRU'
""" + "".join(panels) + "unset multiplot\n", d)
    return "w7_traces.png" if ok else None


def nan(x):
    return "NaN" if x is None else f"{x:.4f}"


# ---- the report ---------------------------------------------------------------------------------


def targets(groups):
    """(name, figure, goal, met) for each target of the issue."""
    out = []
    memo1 = get(groups, "W1_hits", "memo", "u64", "uniform", "keys:65536")
    ck1 = get(groups, "W1_hits", "ck_hs_raw", "u64", "uniform", "keys:65536")
    tbb1 = get(groups, "W1_hits", "tbb_hash_map", "u64", "uniform", "keys:65536")
    r = paired_ratio(ck1, memo1, "items_per_second")  # time ratio memo/ck = thr(ck)/thr(memo)
    quiet = r
    out.append(("u64 hit, 64K keys, 1 thread: memo time / raw ck_hs_get time (packed records)", ratio_cell(r),
                "<= 1.10", r[0] is not None and r[0] <= 1.10))
    r = paired_ratio(tbb1, memo1, "items_per_second")
    out.append(("u64 hit, 64K keys, 1 thread: memo time / TBB find time", ratio_cell(r), "<= 1.0 (stretch 0.8)",
                r[0] is not None and r[0] <= 1.0))
    ms = get(groups, "W1_hits", "memo", "str32", "uniform", "keys:65536")
    cs = get(groups, "W1_hits", "ck_hs_raw", "str32", "uniform", "keys:65536")
    r = paired_ratio(cs, ms, "items_per_second")
    out.append(("str32 hit, 64K keys, 1 thread: memo time / raw ck_hs_get time", ratio_cell(r), "<= 1.30",
                r[0] is not None and r[0] <= 1.30))
    mp = get(groups, "W1_pressure", "memo", "u64", "uniform", "keys:65536")
    cp = get(groups, "W1_pressure", "ck_hs_raw", "u64", "uniform", "keys:65536")
    r = paired_ratio(cp, mp, "items_per_second")
    rise = None if r[0] is None or quiet[0] is None else r[0] / quiet[0]
    rise_text = "n/a" if rise is None else f"{(rise - 1) * 100:+.1f}%"
    out.append(("u64 hit beside a 64 MiB streamer on the other core: memo / raw ck_hs time (rise over quiet)",
                f"{ratio_cell(r)} ({rise_text})", "rise <= +10%", rise is not None and rise <= 1.10))
    for dist in ("uniform", "hot"):
        g1 = get(groups, "W1_hits", "memo", "u64", dist, "keys:65536", threads=1)
        g2 = get(groups, "W1_hits", "memo", "u64", dist, "keys:65536", threads=2)
        r = paired_ratio(g2, g1, "items_per_second")
        eff = tuple(None if x is None else x / 2 for x in r)
        out.append((f"W1 2-thread efficiency T2/(2 T1), 64K u64 {dist}", ratio_cell(eff), ">= 0.90",
                    eff[0] is not None and eff[0] >= 0.9))
        d1 = get(groups, "W1_hits", "dense_array", "u64", dist, "keys:65536", threads=1)
        d2 = get(groups, "W1_hits", "dense_array", "u64", dist, "keys:65536", threads=2)
        r = paired_ratio(d2, d1, "items_per_second")
        eff = tuple(None if x is None else x / 2 for x in r)
        out.append((f"(reference, no sharing at all) dense_array efficiency, 64K {dist}, same run", ratio_cell(eff), "-", None))
    for t in (1, 2):
        dm = get(groups, "W1_hits", "memo_dense", "u64", "uniform", "keys:65536", threads=t)
        da = get(groups, "W1_hits", "dense_array", "u64", "uniform", "keys:65536", threads=t)
        hm = get(groups, "W1_hits", "memo", "u64", "uniform", "keys:65536", threads=t)
        r = paired_ratio(da, dm, "items_per_second")
        out.append((f"dense hit, 64K u64 uniform, {t} thread{'s' if t > 1 else ''}: memo_dense time / plain array load time",
                    ratio_cell(r), "<= 5 (stretch 3)", r[0] is not None and r[0] <= 5))
        r = paired_ratio(hm, dm, "items_per_second")
        out.append((f"dense hit, 64K u64 uniform, {t} thread{'s' if t > 1 else ''}: memo_dense time / hashed memo hit time",
                    ratio_cell(r), "<= 0.2", r[0] is not None and r[0] <= 0.2))
    du = get(groups, "W1_define", "MEMO_DEFINE_U64", "u64", "uniform", "keys:65536")
    dp2 = get(groups, "W1_define", "MEMO_DEFINE_2xu32", "u64", "uniform", "keys:65536")
    r = paired_ratio(du, dp2, "items_per_second")
    out.append(("hit through MEMO_DEFINE with two uint32_t arguments / through MEMO_DEFINE_U64, 64K keys, 1 thread",
                ratio_cell(r), "<= 1.10", r[0] is not None and r[0] <= 1.10))
    out.extend(dp_targets(groups))
    dup3 = [g.hi("duplicates") for k, g in groups.items() if k[0][:2] == ("W3_zipf", "memo")]
    out.append(("W3 memo duplicate computations (max over every cost, thread count, repetition)",
                fmt(max(dup3)) if dup3 else "n/a", "= 0", bool(dup3) and max(dup3) == 0))
    cpk = [g.hi("computations_per_key") for k, g in groups.items() if k[0][:2] == ("W4_stampede", "memo")]
    out.append(("W4 memo computations per key (max)", fmt(max(cpk)) if cpk else "n/a", "= 1 (0 duplicates)",
                bool(cpk) and max(cpk) == 1))
    for t in (2, 4, 16):
        g = get(groups, "W4_stampede", "memo", "cost_ns:1000000", threads=t)
        panel = "" if t <= 2 else " (oversubscribed)"
        if g is None:
            continue
        out.append((f"W4 1 ms, {t} threads{panel}: waiter CPU, % of compute time", rng(g, "waiter_cpu_pct"), "<= 5",
                    g.med("waiter_cpu_pct") <= 5))
        out.append((f"W4 1 ms, {t} threads{panel}: wake latency p99, us", rng(g, "wake_p99_us"), "<= 100",
                    g.med("wake_p99_us") <= 100))
    c = get(groups, "W6_clear", "memo", "clear")
    e = get(groups, "W6_clear", "memo", "remove_each")
    r = paired_ratio(e, c, "real_time")
    out.append(("W6 memo_clear speed-up over per-entry memo_forget_u64 (1M entries)", ratio_cell(r), ">= 10",
                r[0] is not None and r[0] >= 10))
    out.append(("W6 memo's bytes given back by memo_clear once readers have left, %",
                rng(c, "memo_given_back_pct") if c else "n/a", ">= 75",
                c is not None and c.med("memo_given_back_pct") >= 75))
    tb = get(groups, "W6_clear", "tbb_hash_map", "remove_each")
    mb = e
    out.append(("W6 bytes per u64 entry, 1M keys, no hint: memo (memo_stats.bytes; RSS)",
                f"{rng(mb, 'memo_stats_bytes_per_entry')}; {rng(mb, 'rss_per_entry')}", "<= 40 (stretch 32)",
                mb is not None and mb.med("memo_stats_bytes_per_entry") <= 40 and mb.med("rss_per_entry") <= 40))
    out.append(("W6 bytes per u64 entry: memo vs TBB concurrent_hash_map (jemalloc stats.allocated)",
                f"{rng(mb, 'bytes_per_entry')} vs {rng(tb, 'bytes_per_entry')}", "memo <= TBB",
                mb is not None and tb is not None and mb.med("bytes_per_entry") <= tb.med("bytes_per_entry")))
    out.extend(w7_targets(groups))
    return out


W7_TRACES = None  # bench/w7_traces.py's JSON (W7_traces.json), filled by main


def w7_table_rows():
    """The rows of the traces' table (5%, 20%, 50% of the distinct keys, and 128) with memo's figure."""
    if not W7_TRACES:
        return []
    return [r for r in W7_TRACES["rows"] if r["table"] and r["memo_hit_pct"] is not None]


def w7_summary(rows):
    """mean memo, mean lru, mean gain, worst row (gain, row)."""
    gains = [r["memo_hit_pct"] - r["lru_cache_hit_pct"] for r in rows]
    worst = min(range(len(rows)), key=lambda i: gains[i])
    return (statistics.mean(r["memo_hit_pct"] for r in rows), statistics.mean(r["lru_cache_hit_pct"] for r in rows),
            statistics.mean(gains), gains[worst], rows[worst])


def w7_targets(groups):
    out = []
    rows = w7_table_rows()
    if W7_TRACES:
        ok = W7_TRACES.get("lru_cache_check") == "ok"
        out.append((f"W7 functools.lru_cache replayed = the traces README's exact LRU ({W7_TRACES.get('lru_cache_checked_rows')} rows)",
                    "yes" if ok else "no: " + "; ".join(W7_TRACES.get("failures", [])[:3]), "yes", ok))
    if rows:
        mean_m, mean_l, gain, worst_gain, worst = w7_summary(rows)
        out.append(("W7 hit ratio, every trace at 5/20/50% of its keys and 128: memo - lru_cache, worst row (points)",
                    f"{worst_gain:+.2f} ({worst['trace']} at {worst['capacity']})", ">= -1", worst_gain >= -1))
        out.append((f"W7 hit ratio, mean over the {len(rows)} rows: memo - lru_cache (points)",
                    f"{gain:+.2f} ({mean_m:.2f} vs {mean_l:.2f})", ">= +3", gain >= 3))
        r128 = [r for r in rows if r["capacity"] == 128]
        if r128:
            g = [(r["memo_hit_pct"] - r["lru_cache_hit_pct"], r["trace"]) for r in r128]
            w = min(g)
            out.append(("W7 hit ratio at max_entries = 128: memo - 128-entry lru_cache, worst trace (points)",
                        f"{w[0]:+.2f} ({w[1]}; {sum(1 for x in g if x[0] < 0)} of {len(g)} traces below)", ">= 0",
                        w[0] >= 0))
    sweep = [r for r in (W7_TRACES or {}).get("rows", []) if r["memo_hit_pct"] is not None]
    if sweep:
        sg = min(sweep, key=lambda r: r["memo_hit_pct"] - r["lru_cache_hit_pct"])
        out.append((f"(reference) W7 hit ratio over the plot's {len(sweep)} sizes: memo - lru_cache, worst (points)",
                    f"{sg['memo_hit_pct'] - sg['lru_cache_hit_pct']:+.2f} ({sg['trace']} at {sg['capacity']})", "-", None))
    for t in (1, 2):
        b = get(groups, "W7_hits", "memo_bounded", "u64", "uniform", "keys:65536", threads=t)
        u = get(groups, "W7_hits", "memo", "u64", "uniform", "keys:65536", threads=t)
        if b is None or u is None:
            continue
        r = paired_ratio(b, u, "items_per_second")
        out.append((f"W7 hits, 64K u64 keys, {t} thread{'s' if t > 1 else ''}: bounded (max_entries = 2 x keys) / "
                    f"unbounded memo throughput", ratio_cell(r), ">= 0.90", r[0] is not None and r[0] >= 0.9))
    u = get(groups, "W7_hits", "memo", "u64", "uniform", "keys:65536")
    ttl = get(groups, "W7_hits", "memo_ttl", "u64", "uniform", "keys:65536")
    if u is not None and ttl is not None:
        extra = 1e9 / ttl.med("items_per_second") - 1e9 / u.med("items_per_second")
        out.append(("(reference) W7 hit with ttl_ns set (default clock), 64K keys, 1 thread: ns added to the unbounded hit",
                    f"{extra:+.1f} ns ({ratio_cell(paired_ratio(u, ttl, 'items_per_second'))} x its time)", "-", None))
    return out


DP_RUNS = {}  # (problem, memo, threads) -> memo-dp's JSON objects (W5_memo_dp.jsonl), filled by main


def dp_targets(groups):
    """memo-dp editdist on dense keys against the hash table, from bench/run's memo-dp runs."""
    def med(prob, memo, t, key):
        rs = DP_RUNS.get((prob, memo, t))
        return statistics.median(r[key] for r in rs) if rs else None
    out = []
    d2, h2, d1 = med("editdist", "dense", 2, "seconds"), med("editdist", "hash", 2, "seconds"), med("editdist", "dense", 1, "seconds")
    if d2 is None or h2 is None:
        return out
    out.append(("memo-dp editdist 3000x3000, 2 threads: hash time / dense time", f"{h2 / d2:.2f}", ">= 8",
                h2 / d2 >= 8))
    b = med("editdist", "dense", 2, "bytes_per_state")
    out.append(("memo-dp editdist, dense: bytes per state", f"{b:.1f}", "<= 20 (stretch 16)", b <= 20))
    same = all(r["answer"] == DP_RUNS[("editdist", "hash", 2)][0]["answer"] and r["states"] == DP_RUNS[("editdist", "hash", 2)][0]["states"]
               for r in DP_RUNS[("editdist", "dense", 2)])
    out.append(("memo-dp editdist, dense and hash: same answer and states", "yes" if same else "no", "yes", same))
    if d1 is not None:
        out.append(("memo-dp editdist, dense: 2-thread speedup over 1 thread (medians)", f"{d1 / d2:.2f}", ">= 1.7",
                    d1 / d2 >= 1.7))
    return out


def ratio_rows(groups):
    """Each peer's throughput over memo's, same run, for the headline configurations."""
    rows = []
    configs = [
        ("W1 u64 64K uniform, 1 thread", ("W1_hits", "{p}", "u64", "uniform", "keys:65536"), 1, W1_PEERS),
        ("W1 u64 64K uniform, 2 threads", ("W1_hits", "{p}", "u64", "uniform", "keys:65536"), 2, W1_PEERS),
        ("W1 u64 64K hot key, 2 threads", ("W1_hits", "{p}", "u64", "hot", "keys:65536"), 2, W1_PEERS),
        ("W1 u64 8M uniform, 1 thread", ("W1_hits", "{p}", "u64", "uniform", "keys:8388608"), 1, W1_PEERS),
        ("W1 str32 64K uniform, 2 threads", ("W1_hits", "{p}", "str32", "uniform", "keys:65536"), 2, W1_PEERS),
        ("W2 unique misses, 2 threads", ("W2_misses", "{p}", "u64"), 2, ["memo", "ck_hs_raw"] + GC_PEERS[1:]),
        ("W3 Zipf, 1 us compute, 2 threads", ("W3_zipf", "{p}", "cost_ns:1000"), 2, GC_PEERS),
        ("W3 Zipf, 50 us compute, 16 threads (oversubscribed)", ("W3_zipf", "{p}", "cost_ns:50000"), 16, GC_PEERS),
    ]
    peers_all = []
    for _, _, _, peers in configs:
        for p in peers:
            if p not in peers_all:
                peers_all.append(p)
    for title, pattern, t, peers in configs:
        base = get(groups, *[x.format(p="memo") for x in pattern], threads=t)
        if base is None:
            continue
        cells = []
        for p in peers_all:
            g = get(groups, *[x.format(p=p) for x in pattern], threads=t) if p in peers else None
            cells.append(ratio_cell(paired_ratio(g, base, "items_per_second")) if g else "")
        rows.append((title, fmt(base.med("items_per_second")), cells))
    return peers_all, rows


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def w7_section(L, groups, fig):
    has_bench = any(k[0][0].startswith("W7_") for k in groups)
    if not W7_TRACES and not has_bench:
        return
    L.append("## W7: the bounded memo\n")
    if not W7_TRACES:
        L.append("(The hit ratios on the traces are not in this run: `bench/w7_traces.py` did not run, or "
                 "`../shared/traces` was not there.)\n")
    if W7_TRACES:
        rows = w7_table_rows()
        L.append("**Hit ratio on the public traces** (`../shared/traces`). Each trace is replayed, one key after "
                 "the other on one thread, through `memo_get_u64` on a memo of `max_entries` = the capacity "
                 "(`bench/w7_replay`: its compute function counts its calls; hit ratio = 1 - calls / requests; "
                 "every value checked, entries <= max_entries checked at the end), and through Python's own "
                 "`functools.lru_cache(maxsize=capacity)` (exact LRU; misses from `cache_info()`), which must equal "
                 "the traces README's LRU column on its rows "
                 f"({'checked: equal on all ' + str(W7_TRACES.get('lru_cache_checked_rows')) + ' rows' if W7_TRACES.get('lru_cache_check') == 'ok' else '**the check failed**: ' + '; '.join(W7_TRACES.get('failures', []))}). "
                 "Capacities: 5%, 20% and 50% of the trace's distinct keys (the README's) and 128 (lru_cache's "
                 "default). memo's policy hashes keys into its frequency sketch with the memo's seed, so memo's "
                 f"figure is the median over {len(W7_TRACES.get('seeds', []))} seeds, with [min, max]. SIEVE and "
                 "S3-FIFO are the traces README's reference figures (none at 128). Percent; "
                 f"{W7_TRACES['seconds']['total']} s for the whole replay.\n")
        trows = []
        for r in rows:
            d = r["memo_hit_pct"] - r["lru_cache_hit_pct"]
            mark = "**" if d < -1 or (r["capacity"] == 128 and d < 0) else ""
            trows.append((r["trace"], r["capacity"],
                          f"{r['memo_hit_pct']:.2f} [{r['memo_hit_pct_min']:.2f}, {r['memo_hit_pct_max']:.2f}]",
                          f"{r['lru_cache_hit_pct']:.2f}", nz(r["sieve_ref_pct"]), nz(r["s3fifo_ref_pct"]),
                          f"{mark}{d:+.2f}{mark}"))
        L.append(md_table(["trace", "capacity", "memo", "LRU (lru_cache)", "SIEVE ref", "S3-FIFO ref", "memo - LRU"], trows))
        L.append("")
        if rows:
            mean_m, mean_l, gain, worst_gain, worst = w7_summary(rows)
            ref_rows = [r for r in rows if r["sieve_ref_pct"] is not None]
            extra = ""
            if ref_rows:
                extra = (f" On the README's {len(ref_rows)} rows: memo {statistics.mean(r['memo_hit_pct'] for r in ref_rows):.2f}, "
                         f"LRU {statistics.mean(r['lru_cache_hit_pct'] for r in ref_rows):.2f}, "
                         f"SIEVE {statistics.mean(r['sieve_ref_pct'] for r in ref_rows):.2f}, "
                         f"S3-FIFO {statistics.mean(r['s3fifo_ref_pct'] for r in ref_rows):.2f}.")
            sweep = [r for r in W7_TRACES["rows"] if r["memo_hit_pct"] is not None]
            sg = min(sweep, key=lambda r: r["memo_hit_pct"] - r["lru_cache_hit_pct"])
            L.append(f"Mean over the {len(rows)} rows: memo {mean_m:.2f}, LRU {mean_l:.2f}: **{gain:+.2f} points**; "
                     f"worst row **{worst_gain:+.2f}** ({worst['trace']} at {worst['capacity']}); rows more than a point "
                     f"below LRU: {sum(1 for r in rows if r['memo_hit_pct'] - r['lru_cache_hit_pct'] < -1)}.{extra} "
                     f"Over every size of the plot's sweep ({len(sweep)} sizes), the worst is "
                     f"{sg['memo_hit_pct'] - sg['lru_cache_hit_pct']:+.2f} ({sg['trace']} at {sg['capacity']}).\n")
        L.append(fig("w7_traces", "W7 hit ratio against size, per trace"))
    if has_bench:
        L.append("**Throughput.** `W7_hits`: pure hits on memos filled before the timed loop, uniform keys (as W1): "
                 "`memo` (no bound: the lean layout, the default shards), `memo_bounded` (max_entries = 2 x the keys: "
                 "the policy's record layout and one shard, nothing to evict), `memo_ttl` (ttl_ns of a day, the "
                 "default clock CLOCK_MONOTONIC read on every hit, no bound). 1K keys stay in the core's caches; 64K "
                 "is the target's panel. Ratios pair repetitions of the same run.\n")
        hrows = []
        for n in (1024, 65536):
            for t in (1, 2):
                u = get(groups, "W7_hits", "memo", "u64", "uniform", f"keys:{n}", threads=t)
                b = get(groups, "W7_hits", "memo_bounded", "u64", "uniform", f"keys:{n}", threads=t)
                tt = get(groups, "W7_hits", "memo_ttl", "u64", "uniform", f"keys:{n}", threads=t)
                if u is None:
                    continue
                ns = lambda g: f"{t * 1e9 / g.med('items_per_second'):.1f}" if g else "n/a"
                ttl_cost = ""
                if tt is not None:
                    ttl_cost = (f"{t * 1e9 / tt.med('items_per_second') - t * 1e9 / u.med('items_per_second'):+.1f} / "
                                + (f"{t * 1e9 / tt.med('items_per_second') - t * 1e9 / b.med('items_per_second'):+.1f}" if b else "n/a"))
                hrows.append((n, t, rng(u, "items_per_second"), rng(b, "items_per_second"), rng(tt, "items_per_second"),
                              f"{ns(u)} / {ns(b)} / {ns(tt)}",
                              ratio_cell(paired_ratio(b, u, "items_per_second")),
                              ratio_cell(paired_ratio(tt, u, "items_per_second")), ttl_cost))
        if hrows:
            L.append(md_table(["keys", "threads", "memo hits/s", "memo_bounded hits/s", "memo_ttl hits/s",
                               "ns per hit per thread (memo / bounded / ttl)", "bounded / memo", "ttl / memo",
                               "ttl hit cost, ns (over memo / over bounded)"], hrows))
            L.append("")
        zrows = []
        for t in (1, 2):
            u = get(groups, "W7_zipf", "memo", "cost_ns:50", threads=t)
            b = get(groups, "W7_zipf", "memo_bounded", "cost_ns:50", threads=t)
            for name, g in (("memo", u), ("memo_bounded", b)):
                if g is None:
                    continue
                zrows.append((t, name, f"{g.med('max_entries'):.0f}" if g.med("max_entries") else "none",
                              rng(g, "items_per_second"), rng(g, "hit_ratio"), fmt(g.med("evictions")),
                              f"{g.hi('entries_at_end'):.0f}", fmt(g.hi("wrong_values")),
                              ratio_cell(paired_ratio(g, u, "items_per_second")) if name != "memo" else ""))
        if zrows:
            anyg = next(groups[k] for k in groups if k[0][0] == "W7_zipf")
            L.append("`W7_zipf`: get-or-compute on W3's Zipf (s = 0.99) streams, each thread its own, over "
                     f"{anyg.med('universe'):.0f} keys, compute 50 ns, on a fresh memo warmed by one pass "
                     "of another stream; the bounded memo holds a tenth of the keys (its hit ratio is what that "
                     "bound leaves; the unbounded memo misses only keys the warm-up did not meet). One timed pass per "
                     "repetition; evictions are those of the timed pass.\n")
            L.append(md_table(["threads", "memo", "max_entries", "calls/s", "hit ratio", "evictions",
                               "entries at end (max)", "wrong values (max)", "bounded / unbounded calls/s"], zrows))
            L.append("")


def nz(x):
    return "-" if x is None else f"{x:.2f}"


def main():
    results_dir, report = sys.argv[1], sys.argv[2]
    durations = ""
    if "--durations" in sys.argv:
        durations = sys.argv[sys.argv.index("--durations") + 1]
    groups, ctx, lru = load(results_dir)
    dp_path = os.path.join(results_dir, "W5_memo_dp.jsonl")
    if os.path.exists(dp_path):
        with open(dp_path) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    DP_RUNS.setdefault((r["problem"], r.get("memo", "hash"), r["threads"]), []).append(r)
    global W7_TRACES
    w7_path = os.path.join(results_dir, "W7_traces.json")
    if os.path.exists(w7_path):
        with open(w7_path) as fh:
            W7_TRACES = json.load(fh)
    rel = os.path.relpath(results_dir, os.path.dirname(os.path.abspath(report)))
    figs = {
        "w1_sizes": plot_w1_sizes(groups, results_dir),
        "w1_scaling": plot_w1_scaling(groups, results_dir),
        "w1_over": plot_w1_over(groups, results_dir),
        "w3": plot_w3(groups, results_dir),
        "w4": plot_w4(groups, results_dir),
        "w6": plot_w6(groups, results_dir),
        "w7_traces": plot_w7_traces(results_dir),
    }

    def fig(name, alt):
        return f"![{alt}]({rel}/{figs[name]})\n" if figs.get(name) else f"({alt}: no plot)\n"

    L = []
    L.append(f"# memo benchmark: {ctx.get('profile', '?')} profile, {ctx.get('date', '')[:10]}, git {ctx.get('git_sha', '?')}\n")
    L.append("Produced by `bench/run`; every number is the median of the interleaved repetitions, with "
             "[min, max] beside it; ratios compare peers measured in the same run (the [min, max] of a ratio "
             "pairs repetitions of the same index). The machine has 2 cores and is shared: 1 and 2 threads are "
             "the scaling panel; 4 to 16 threads are an oversubscribed panel, where threads take turns on the "
             "cores. Nothing here is extrapolated past 2 cores.\n")
    L.append("## Machine and build\n")
    for k in ("cpu_model", "online_cpus", "kernel", "os", "compiler", "memo_version", "git_sha", "packages",
              "process_malloc", "hash", "library_build_type", "mhz_per_cpu"):
        if k in ctx:
            L.append(f"- **{k}**: `{ctx[k]}`")
    if lru:
        L.append(f"- **python**: `{lru.get('executable')}` {lru.get('python')} (switch interval {lru.get('switch_interval_s')} s)")
    if durations:
        L.append(f"- **durations (s)**: {durations}")
    L.append("")

    L.append("## How the figures are obtained\n")
    L.append("- memo is called through its shared library (`memo_bench` links `libmemo.so`, as a program that "
             "links the installed library does: through the PLT, exported symbols only).\n"
             "- `ck_hs_raw` is the best use of ck a user could write: packed records (16 bytes for a u64 key and "
             "value, 40 for a 32-byte key and value) carved from 1 MiB chunks, one `ck_hs` per key type, "
             "`ck_hs_get` inside a `ck_epoch` section, memo's hash.\n"
             "- Times: `items_per_second` of Google Benchmark with real time, per configuration; a time ratio "
             "is the inverse ratio of throughputs of the same repetition index.\n"
             "- Bytes per entry (W6): jemalloc's `stats.allocated` delta over 1M inserts into a table made "
             "with no size hint (every peer allocates from jemalloc, the process malloc); `rss_per_entry`: "
             "the resident set's delta over the same inserts; memo's own `memo_stats.bytes` beside them.\n"
             "- Memory given back (W6): memo_stats.bytes after `memo_clear` and two more clears of the empty "
             "memo (each clear polls the epoch; no reader is left), as a share of the bytes before.\n"
             "- Cache pressure (W1): a forked process streams through 64 MiB, one load per cache line, while "
             "the lookups run; it is started before and killed after each run.\n"
             "- Instructions per hit are not in this report: `bench/callgrind-hits` counts them (callgrind).\n")
    L.append("## Targets\n")
    L.append(md_table(["target", "measured (median [min, max])", "goal", "met"],
                      [(n, f, gl, "-" if m is None else "yes" if m else "**no**") for n, f, gl, m in targets(groups)]))
    L.append("")

    peers_all, rows = ratio_rows(groups)
    L.append("## Ratio table: each peer's throughput over memo's (same run; > 1 means the peer is faster)\n")
    L.append(md_table(["configuration", "memo ops/s"] + peers_all, [(t, b, *c) for t, b, c in rows]))
    L.append("")

    # W1
    L.append("## W1: hits only\n")
    L.append(fig("w1_sizes", "W1 ns per lookup by table size"))
    L.append(fig("w1_scaling", "W1 scaling panel"))
    L.append(fig("w1_over", "W1 oversubscribed panel"))
    press = []
    for p in ("memo", "ck_hs_raw", "tbb_hash_map"):
        q = get(groups, "W1_hits", p, "u64", "uniform", "keys:65536")
        g = get(groups, "W1_pressure", p, "u64", "uniform", "keys:65536")
        if q is None or g is None:
            continue
        press.append((p, f"{1e9 / q.med('items_per_second'):.1f}", f"{1e9 / g.med('items_per_second'):.1f}",
                      f"{q.med('items_per_second') / g.med('items_per_second'):.2f}"))
    if press:
        L.append("**Cache pressure.** 64K u64 keys, uniform, 1 thread; beside it a process streams through "
                 "64 MiB (one load per cache line, forked before each run and killed after it). ns per "
                 "lookup, median:\n")
        L.append(md_table(["peer", "quiet", "beside the streamer", "slowdown"], press))
        L.append("")
    w1 = sorted([k for k in groups if k[0][0] == "W1_hits"], key=lambda k: (k[0][2], k[0][3], int(k[0][4].split(":")[1]), k[1], W1_PEERS.index(k[0][1])))
    rows = []
    for k in w1:
        g = groups[k]
        eff = ""
        if k[1] == 2:
            g1 = groups.get((k[0], 1))
            if g1:
                eff = f"{g.med('items_per_second') / (2 * g1.med('items_per_second')):.2f}"
        rows.append((k[0][1], k[0][2], k[0][3], k[0][4].split(":")[1], k[1] if k[1] <= 2 else f"{k[1]} (over)",
                     rng(g, "items_per_second"), f"{k[1] * 1e9 / g.med('items_per_second'):.1f}", eff))
    L.append(md_table(["peer", "keys", "distribution", "table size", "threads", "lookups/s, all threads",
                       "ns per lookup per thread", "efficiency T2/(2 T1)"], rows))
    L.append("")

    # W2
    L.append("## W2: unique-key misses (every call inserts; tables start empty and grow)\n")
    rows = []
    for k in sorted([k for k in groups if k[0][0] == "W2_misses"], key=lambda k: (k[1], k[0][1])):
        g = groups[k]
        rows.append((k[0][1], k[1] if k[1] <= 2 else f"{k[1]} (over)", rng(g, "items_per_second"), rng(g, "p50_ns"),
                     rng(g, "p99_ns"), rng(g, "p999_ns"), rng(g, "max_ns"), rng(g, "bytes_per_entry")))
    L.append(md_table(["peer", "threads", "inserts/s", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "bytes/entry"], rows))
    L.append("")

    # W3
    L.append("## W3: Zipf (s = 0.99) get-or-compute\n")
    L.append("Duplicates are calls of the compute function minus the distinct keys of the streams that ran. "
             "Only memo, TBB's accessor-held insert and the mutex + condition variable memo are single-flight; "
             "the others check, compute, then insert, as people write by hand.\n")
    L.append(fig("w3", "W3 throughput"))
    rows = []
    for k in sorted([k for k in groups if k[0][0] == "W3_zipf"], key=lambda k: (int(k[0][2].split(":")[1]), k[1], GC_PEERS.index(k[0][1]))):
        g = groups[k]
        rows.append((k[0][2].split(":")[1], k[1] if k[1] <= 2 else f"{k[1]} (over)", k[0][1], rng(g, "items_per_second"),
                     rng(g, "hit_ratio"), rng(g, "duplicates"), fmt(g.med("distinct_keys")), fmt(g.hi("wrong_values"))))
    L.append(md_table(["compute ns", "threads", "peer", "calls/s", "hit ratio", "duplicates", "distinct keys", "wrong values (max)"], rows))
    L.append("")

    # W4
    L.append("## W4: hot-key stampede\n")
    L.append("One missing key per round, every thread asks at once. Wake latency: from the end of the compute "
             "function to the waiter's return. Waiter CPU: getrusage(RUSAGE_THREAD) around each waiting call, "
             "averaged over the waits, as a share of the compute time. `memo_spinwait` is the ablation: memo's "
             "table with waiters that spin (memo_get_u64_timed with timeout 0, in a loop) instead of sleeping. "
             "`rwlock_map` is check-then-compute: every thread that misses computes.\n")
    L.append(fig("w4", "W4 round time over compute time"))
    rows = []
    for k in sorted([k for k in groups if k[0][0] == "W4_stampede"], key=lambda k: (int(k[0][2].split(":")[1]), k[1], W4_PEERS.index(k[0][1]))):
        g = groups[k]
        rows.append((f"{int(k[0][2].split(':')[1]) / 1000:g}", k[1] if k[1] <= 2 else f"{k[1]} (over)", k[0][1],
                     rng(g, "computations_per_key"), rng(g, "round_over_compute"), rng(g, "wake_p50_us"),
                     rng(g, "wake_p99_us"), rng(g, "waiter_cpu_pct")))
    L.append(md_table(["compute us", "threads", "peer", "computations per key", "round / compute", "wake p50 us",
                       "wake p99 us", "waiter CPU % of compute"], rows))
    L.append("")

    # Python
    if lru:
        L.append("## Python functools.lru_cache on the same streams\n")
        L.append("`lru_cache(maxsize=None)` under `threading`; its body is a busy wait (holds the GIL) or, in W4 "
                 "`io`, `time.sleep` (releases it, as I/O does). Python's per-call overhead dwarfs the 50 ns body.\n")
        rows = [(r["cost_ns"], r["threads"], fmt(r["ops_per_second"]), f"{r['hit_ratio']:.3f}", r["duplicates"], r["distinct_keys"])
                for r in lru["results"] if r["workload"] == "W3"]
        L.append(md_table(["W3 compute ns", "threads", "calls/s", "hit ratio", "duplicates", "distinct keys"], rows))
        L.append("")
        rows = [(f"{r['cost_ns'] / 1000:g}", r["threads"], r["kind"], f"{r['computations_per_key']:.2f}", f"{r['round_over_compute']:.2f}")
                for r in lru["results"] if r["workload"] == "W4"]
        L.append(md_table(["W4 compute us", "threads", "body", "computations per key", "round / compute"], rows))
        L.append("")

    # W5
    L.append("## W5: parallel DP\n")
    L.append("Both threads solve the whole problem over one memo, recursing in different child orders. "
             "Plainly: where the state space fits a dense array, the bottom-up array DP wins by a wide margin; "
             "a memo pays for hashing, allocation and synchronisation on every state, and earns it only where "
             "the reachable states are a small part of the array or the states are not integers.\n")
    rows = []
    for k in sorted([k for k in groups if k[0][0] == "W5_dp"]):
        g = groups[k]
        rows.append((k[0][1], k[0][2], k[1], rng(g, "real_time", 1e-6), fmt(g.med("states") or g.med("cells")),
                     fmt(g.hi("duplicates")) if g.values("duplicates") else "", fmt(g.hi("wrong_answers"))))
    L.append(md_table(["problem", "solver", "threads", "time ms", "states (memo) / cells (array)", "duplicates (max)", "wrong answers (max)"], rows))
    L.append("")
    dp_path = os.path.join(results_dir, "W5_memo_dp.jsonl")
    if os.path.exists(dp_path):
        runs = {}
        with open(dp_path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    runs.setdefault((r["problem"], r.get("memo", "hash"), r["threads"]), []).append(r)
        L.append("With memo-dp itself (`memo-dp PROBLEM --threads N --json`, built-in instances; the threads split "
                 "the work and share one memo; median [min, max] of the repetitions):\n")
        rows = []
        for (prob, memo, thr) in sorted(runs):
            rs = runs[(prob, memo, thr)]
            secs = sorted(r["seconds"] for r in rs)
            one = runs.get((prob, memo, 1))
            hashed = runs.get((prob, "hash", thr))
            speed = ""
            if one and thr != 1:
                speed = f"{statistics.median(r['seconds'] for r in one) / statistics.median(secs):.2f}x"
            vs_hash = ""
            if memo == "dense" and hashed:
                vs_hash = f"{statistics.median(r['seconds'] for r in hashed) / statistics.median(secs):.2f}x"
            rows.append((prob, memo, thr, f"{statistics.median(secs):.3f} [{secs[0]:.3f}, {secs[-1]:.3f}]",
                         fmt(statistics.median(r["states"] for r in rs)), fmt(statistics.median(r["waits"] for r in rs)),
                         f"{statistics.median(r['bytes_per_state'] for r in rs):.1f}", speed, vs_hash))
        L.append(md_table(["problem", "memo", "threads", "seconds", "states", "waits", "bytes per state",
                           "speedup over 1 thread", "dense speed over hash"], rows))
        L.append("")

    # W6
    L.append("## W6: clear and memory (1M u64 entries in the full profile)\n")
    L.append(fig("w6", "W6 bytes per entry"))
    rows = []
    for k in sorted([k for k in groups if k[0][0] == "W6_clear"]):
        g = groups[k]
        rows.append((k[0][1], k[0][2], rng(g, "real_time"), rng(g, "ns_per_entry"), rng(g, "bytes_per_entry"), rng(g, "rss_per_entry"),
                     rng(g, "memo_stats_bytes_per_entry") if g.values("memo_stats_bytes_per_entry") else ""))
    L.append(md_table(["peer", "how", "time ms", "ns per entry", "bytes/entry (allocated)", "bytes/entry (RSS)", "memo_stats bytes/entry"], rows))
    L.append("")

    w7_section(L, groups, fig)

    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    write(report, "\n".join(L) + "\n")

    # The console: targets and ratio table.
    print("\nTargets")
    for n, f, gl, m in targets(groups):
        print(f"  {'    ' if m is None else 'ok  ' if m else 'MISS'} {n}: {f} (goal {gl})")
    print("\nRatio table: peer throughput / memo throughput (same run; > 1: the peer is faster)")
    for t, b, cells in ratio_rows(groups)[1]:
        print(f"  {t} (memo {b} ops/s)")
        for p, c in zip(peers_all, cells):
            if c:
                print(f"      {p:20s} {c}")
    print(f"\nReport: {report}")


if __name__ == "__main__":
    main()
