#!/usr/bin/env python3
"""One decode step's kernels from an Nsight Compute CSV (`ncu --csv --page raw --metrics
gpu__time_duration.sum`), each timed alone by ncu.

    scripts/ncu_step.py run.csv

A step ends with the sampler (`argmax` or `sample_*`); the rows between its first two launches
of each device (the ncu "device" column) are one full step. Prints that step's kernels grouped
by name: launches, summed µs and share, then the total. Kernels timed alone do not overlap as
they do in the engine's graphs (programmatic dependent launch), so the total exceeds the step's
device time; the per-kernel split is what this is for.
"""
import csv
import sys
from collections import defaultdict


def main(path):
    lines = open(path).read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
    rows = list(csv.DictReader(lines[start:]))
    rows = [r for r in rows if r.get("gpu__time_duration.sum", "").replace(".", "").replace(",", "").isdigit()]
    by_dev = defaultdict(list)
    for r in rows:
        by_dev[r.get("Device", "0")].append(r)
    for dev, rs in sorted(by_dev.items()):
        marks = [i for i, r in enumerate(rs) if r["Kernel Name"].startswith(("argmax", "sample_"))]
        if len(marks) < 2:
            # A rank that does not sample: take as many kernels as the sampling rank's step.
            print(f"\n### device {dev}: fewer than two sampler launches in {len(rs)} kernels")
            continue
        step = rs[marks[0] + 1 : marks[1] + 1]
        unit = step[0].get("gpu__time_duration.sum_unit") or "nsecond"
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(unit, 1e-3)
        total = defaultdict(float)
        count = defaultdict(int)
        for r in step:
            name = r["Kernel Name"].split("(")[0][:70]
            total[name] += float(r["gpu__time_duration.sum"].replace(",", "")) * scale
            count[name] += 1
        busy = sum(total.values())
        print(f"\n### device {dev}: one step, {len(step)} kernels, {busy:.1f} us timed alone")
        print("| kernel | launches | us | share |")
        print("| --- | ---: | ---: | ---: |")
        for n in sorted(total, key=total.get, reverse=True):
            print(f"| {n} | {count[n]} | {total[n]:.1f} | {100 * total[n] / busy:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
