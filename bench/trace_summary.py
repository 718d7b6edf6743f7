"""Summarises a JAX profiler trace of N identical steps on one GPU.

    python bench/trace_summary.py TRACE_DIR --steps 5 [--top 15]

TRACE_DIR is what `jax.profiler.trace(TRACE_DIR)` wrote (its newest
*.trace.json.gz is read). Prints, per step: the span from the first to the last
kernel, the time some kernel was running (the union over streams), the idle
rest of the span (launch gaps and host synchronisation), the number of
kernels, and the kernels that take the most time (numbered copies of one
fusion, fusion_3 and fusion_17, are counted as one row).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re


def load_trace(trace_dir: str) -> dict:
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not files:
        raise SystemExit(f"no *.trace.json.gz under {trace_dir}; pass the directory given to jax.profiler.trace")
    with gzip.open(files[-1]) as f:
        return json.load(f)


def device_kernels(trace: dict) -> list[dict]:
    """Complete events on the GPU's stream lines (not the derived 'XLA Ops' lines)."""
    events = trace["traceEvents"]
    process = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    thread = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
              if e.get("ph") == "M" and e.get("name") == "thread_name"}
    gpu_pids = {pid for pid, name in process.items() if "/device:GPU" in name}
    return [e for e in events if e.get("ph") == "X" and e["pid"] in gpu_pids
            and thread.get((e["pid"], e["tid"]), "").startswith("Stream")]


def busy_time(kernels: list[dict]) -> float:
    """Microseconds during which at least one kernel runs."""
    total, end = 0.0, float("-inf")
    for e in sorted(kernels, key=lambda e: e["ts"]):
        start, stop = e["ts"], e["ts"] + e["dur"]
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def summarize(trace: dict, steps: int, top: int) -> str:
    kernels = device_kernels(trace)
    if not kernels:
        return "no GPU kernels in this trace (was it taken on a GPU?)"
    span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    busy = busy_time(kernels)
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for e in kernels:
        # XLA numbers each copy of a fusion (fusion_3, fusion_17, ...): an unrolled
        # loop's layers would otherwise each get their own row.
        name = re.sub(r"(_\d+)+$", "", e["name"])
        by_name[name][0] += 1
        by_name[name][1] += e["dur"]
    lines = [f"per step ({steps} steps traced): span {span / steps / 1e3:.3f} ms, kernels busy "
             f"{busy / steps / 1e3:.3f} ms ({100 * busy / span:.0f}%), idle {(span - busy) / steps / 1e3:.3f} ms, "
             f"{len(kernels) / steps:.0f} kernels",
             f"{'ms/step':>9} {'share':>6} {'count/step':>10}  kernel"]
    for name, (count, dur) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"{dur / steps / 1e3:>9.3f} {100 * dur / busy:>5.1f}% {count / steps:>10.1f}  {name[:110]}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace_dir")
    p.add_argument("--steps", type=int, default=1, help="how many identical steps the trace holds")
    p.add_argument("--top", type=int, default=15, help="how many kernels to list")
    args = p.parse_args(argv)
    print(summarize(load_trace(args.trace_dir), args.steps, args.top))


if __name__ == "__main__":
    main()
