"""Benchmark: two trainings on one machine share the cores gracefully.

Runs the same `pointseg train` (the bundled nuclei sample and its example points, fixed
iterations) once alone, then twice at the same time, and reports each concurrent run's wall
time as a ratio of the lone run (target: at most ~2.5x on a 2-core machine). The processes
pick their torch thread counts themselves (`core/cpu_share.py`); ``--threads N`` forces N
threads in every process instead, to compare with the old behaviour (all cores each).

    python benchmarks/bench_share.py [--threads N] [--out benchmarks/results/bench_share.json]

Run it alone on the machine. Not a test: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_share.json"


def command(out: Path, threads: int | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "napari_pointseg",
        "train",
        str(ROOT / "sample_data" / "nuclei_image.tif"),
        str(ROOT / "sample_data" / "nuclei_points.csv"),
        "--out",
        str(out),
        "--seed",
        "0",
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


def run_many(n: int, threads: int | None, work: Path) -> list[float]:
    """Start ``n`` trainings at once; their wall times in seconds."""
    procs, starts = [], []
    for i in range(n):
        starts.append(time.perf_counter())
        procs.append(
            subprocess.Popen(
                command(work / f"run{n}_{i}", threads), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    times = [0.0] * n
    pending = set(range(n))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - starts[i]
                pending.discard(i)
                if procs[i].returncode != 0:
                    raise SystemExit(f"training failed: {procs[i].stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        # a private registry so that other trainings on the machine do not count
        os.environ["POINTSEG_RUN_DIR"] = str(work / "registry")
        alone = run_many(1, args.threads, work)[0]
        both = run_many(2, args.threads, work)
    ratios = [t / alone for t in both]
    print(f"threads: {args.threads or 'auto (fair share)'}")
    print(
        f"alone {alone:.1f} s | two at once {both[0]:.1f} s, {both[1]:.1f} s | "
        f"ratios {ratios[0]:.2f}x, {ratios[1]:.2f}x (target <= 2.5x)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "threads": args.threads,
                "alone_s": alone,
                "together_s": both,
                "ratios": ratios,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
