#!/usr/bin/env python3
"""Per-kernel GPU time of the decode steps in an Nsight Systems profile (its SQLite export).

    nsys profile --cuda-graph-trace=node -o run lab bench --workload decode ...
    nsys export --type sqlite -o run.sqlite run.nsys-rep
    scripts/kernel_profile.py run.sqlite

Only kernels launched from CUDA graphs count: the engine replays its decode steps as graphs and
runs prefill eagerly, so these are the timed window's steps (plus any warm-up replays). A step
is one `argmax` launch. For each device: each kernel's launches per step, mean duration and
share of the summed kernel time; the summed kernel time per step beside the median time from
one step's argmax to the next (which includes the host's part of a step: programmatic
dependent launch lets kernels overlap, so the sum can exceed the GPU's busy span).
"""
import sqlite3
import sys
from collections import defaultdict


def main(path):
    db = sqlite3.connect(path)
    cols = {r[1] for r in db.execute("PRAGMA table_info(CUPTI_ACTIVITY_KIND_KERNEL)")}
    graph = "graphId" if "graphId" in cols else None
    where = f"WHERE k.{graph} IS NOT NULL AND k.{graph} != 0" if graph else ""
    rows = db.execute(
        f"""SELECT k.deviceId, s.value, k.start, k.end FROM CUPTI_ACTIVITY_KIND_KERNEL k
            JOIN StringIds s ON s.id = k.shortName {where} ORDER BY k.deviceId, k.start"""
    ).fetchall()
    if not rows:
        print("no graph kernels in the profile")
        return
    by_dev = defaultdict(list)
    for dev, name, start, end in rows:
        by_dev[dev].append((name, start, end))
    # A rank that does not sample (no argmax) ran as many steps as the one that did.
    sampled = {d: sum(1 for n, _, _ in ks if n.startswith("argmax")) for d, ks in by_dev.items()}
    for dev, ks in sorted(by_dev.items()):
        steps = sampled[dev] or max(sampled.values())
        if steps == 0:
            print(f"device {dev}: no argmax launch, cannot count steps")
            continue
        total = defaultdict(float)
        count = defaultdict(int)
        for n, s, e in ks:
            total[n] += (e - s) / 1e3
            count[n] += 1
        busy = sum(total.values())
        # Step spans: from one argmax's end to the next one's end.
        ends = [e for n, _, e in ks if n.startswith("argmax")]
        span = ""
        if len(ends) > 2:
            gaps = sorted((b - a) / 1e3 for a, b in zip(ends, ends[1:]))
            span = f", median argmax-to-argmax {gaps[len(gaps) // 2]:.1f} us"
        print(f"\n### device {dev}: {steps} graph steps, kernel time {busy / steps:.1f} us/step{span}")
        print("| kernel | per step | mean us | us/step | share |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for n in sorted(total, key=total.get, reverse=True)[:25]:
            print(f"| {n[:60]} | {count[n] / steps:.1f} | {total[n] / count[n]:.2f} "
                  f"| {total[n] / steps:.1f} | {100 * total[n] / busy:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
