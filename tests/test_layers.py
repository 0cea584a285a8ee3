#!/usr/bin/env python3
"""test_layers: the files of src/ call each other without a cycle (CONTRIBUTING.md, "Layers").

    test_layers.py LIBMEMO.a

Reads the static library's objects with nm: an object that uses (U) a symbol that another object
defines depends on it. Prints TAP: the edges found, the files in an order where each depends only
on files before it, and "not ok" with the cycle if there is none.
"""
import subprocess
import sys


def main():
    lib = sys.argv[1]
    out = subprocess.run(["nm", "-A", lib], check=True, capture_output=True, text=True).stdout
    defs, uses = {}, {}
    for line in out.splitlines():
        # "libmemo.a:memo.c.o:0000000000000000 T memo_create" or "libmemo.a:memo.c.o:  U ck_hs_get"
        where, _, rest = line.rpartition(":")
        obj = where.rpartition(":")[2].removesuffix(".c.o").removesuffix(".o")
        parts = rest.split()
        if len(parts) == 2 and parts[0] == "U":
            uses.setdefault(obj, set()).add(parts[1])
        elif len(parts) == 3 and parts[1] in "TtDdBbRr":
            defs[parts[2]] = obj
    files = sorted(set(defs.values()) | set(uses))
    deps = {f: sorted({defs[s] for s in uses.get(f, ()) if s in defs and defs[s] != f}) for f in files}
    print("1..2")
    for f in files:
        print(f"# {f} -> {', '.join(deps[f]) or '(nothing)'}")
    order, placed = [], set()
    while len(order) < len(files):
        ready = [f for f in files if f not in placed and all(d in placed for d in deps[f])]
        if not ready:
            break
        for f in ready:
            order.append(f)
            placed.add(f)
    print(f"ok 1 - {len(files)} files read from {lib}" if len(files) > 5 else f"not ok 1 - only {len(files)} files in {lib}")
    if len(order) == len(files):
        print(f"ok 2 - no cycle; bottom to top: {' < '.join(order)}")
        return 0
    left = [f for f in files if f not in placed]
    print(f"not ok 2 - a cycle among: {', '.join(left)}")
    for f in left:
        print(f"#   {f} -> {', '.join(d for d in deps[f] if d in left)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
