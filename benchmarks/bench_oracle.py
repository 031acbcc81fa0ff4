"""Benchmark: the oracle (default model and recipe, CPU) on the 2D sample images vs the RF.

For each sample image (nuclei 512², cells 384², tissue 512²): run the oracle with a 0.3 %
budget (target mIoU 0.995), then the random forest on the SAME points. Prints a table and
writes benchmarks/results/bench_oracle.json (with the machine load seen during the run: on a
shared 2-core machine the wall times are only meaningful together with it).

    python benchmarks/bench_oracle.py [--budget 0.003] [--images nuclei cells tissue] [--seed 0]
        [--config '{"forest_trees": 0}']

Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import machine_info

from napari_pointseg.core.metrics import miou
from napari_pointseg.core.models import ModelSpec
from napari_pointseg.core.oracle_loop import run_oracle
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.core.trainer import TrainConfig
from napari_pointseg.oracle.baseline import rf_baseline

RESULTS = Path(__file__).resolve().parent / "results" / "bench_oracle.json"


def load(name: str):
    """(image, mask, channel_axis) of a bundled sample (the CLI's loader)."""
    from napari_pointseg.cli.oracle import _sample

    image, mask, ca = _sample(name)
    return image, np.asarray(mask), ca


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=0.003)
    p.add_argument("--target", type=float, default=0.995)
    p.add_argument("--images", nargs="+", default=["nuclei", "cells", "tissue"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--entropy-weight",
        type=float,
        default=TrainConfig().entropy_weight,
        help="TrainConfig.entropy_weight (0 = the recipe before the entropy term)",
    )
    p.add_argument(
        "--config", default="{}", help="more TrainConfig overrides as JSON, e.g. '{\"forest_trees\": 0}'"
    )
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    config = TrainConfig(**{"entropy_weight": args.entropy_weight, **json.loads(args.config)})

    rows = []
    loads = [os.getloadavg()[0]]
    for name in args.images:
        image, mask, ca = load(name)
        res = run_oracle(
            image,
            mask,
            budget=args.budget,
            target=args.target,
            seed=args.seed,
            setup=TrainSetup(channel_axis=ca, config=config, device="cpu"),
        )
        m = res.metrics
        rf_pred, rf_s = rf_baseline(image, res.points, channel_axis=ca, seed=args.seed)
        rf_m = miou(mask, rf_pred, np.unique(mask))
        loads.append(os.getloadavg()[0])
        rows.append(
            {
                "image": name,
                "shape": list(mask.shape),
                "miou": m["miou"],
                "fraction_labeled": m["fraction_labeled"],
                "n_points": m["n_points"],
                "seconds": m["seconds"],
                "iterations": m["iterations"],
                "steps": m["steps"],
                "per_class_iou": m["per_class_iou"],
                "rf_miou": rf_m,
                "rf_seconds": rf_s,
                "curve": m["curve"],
                "load_1min_after": loads[-1],
            }
        )
        print(
            f"{name:8s} oracle mIoU {m['miou']:.4f}  {m['fraction_labeled'] * 100:.3f} %  "
            f"{m['seconds']:6.1f} s  ({m['iterations']} it, {m['steps']} steps) | "
            f"RF {rf_m:.4f} {rf_s:.1f} s  (load {loads[-1]:.1f})",
            flush=True,
        )
        del res
        time.sleep(0.1)
    mious = [r["miou"] for r in rows]
    secs = [r["seconds"] for r in rows if r["shape"] == [512, 512]]
    summary = {
        "median_miou": float(np.median(mious)),
        "min_miou": float(np.min(mious)),
        "median_seconds_512": float(np.median(secs)) if secs else None,
        "beats_rf_everywhere": all(r["miou"] > r["rf_miou"] for r in rows),
        "max_fraction_labeled": max(r["fraction_labeled"] for r in rows),
    }
    print(
        "median mIoU {median_miou:.4f}, min {min_miou:.4f}, median s/512² {median_seconds_512}, "
        "beats RF on every image: {beats_rf_everywhere}".format(**summary)
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "budget": args.budget,
                "target": args.target,
                "seed": args.seed,
                "rows": rows,
                "summary": summary,
                "config": config.to_dict(),
                "spec": ModelSpec().to_dict(),
                "machine": machine_info(load_1min=loads, threads_env=os.environ.get("POINTSEG_THREADS")),
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
