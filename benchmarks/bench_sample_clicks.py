"""The network against the forest on the samples' stored clicks (not picked against either).

Every other comparison picks its points where one predictor is wrong (the oracle, the
simulated user). The samples ship with stored points (an oracle run's, in its order), which
the widget bench clicks; here the network trains on the first N of them with the product's
defaults (in click order, ``train_all``), per seed, and the forest (`rf_baseline`) fits the
same N. Prints a table and writes ``benchmarks/results/bench_sample_clicks.json``.

    python benchmarks/bench_sample_clicks.py [--samples nuclei,cells,tissue] [--points 30,60,90]
        [--seeds 0,1] [--config '{"forest_on": "always"}']

Run it alone: two trainings on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_widget import load_data
from machine import machine_info

from napari_pointseg.core.metrics import miou
from napari_pointseg.core.points import PointSet
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.oracle.baseline import rf_baseline

RESULTS = Path(__file__).resolve().parent / "results" / "bench_sample_clicks.json"


def run(sample: str, n: int, seeds, size: int = 512, config: dict | None = None) -> dict:
    """One row: the network's mIoU and seconds per seed and the forest's, on the first ``n``
    stored points of ``sample`` (cropped to ``size``); ``config``: TrainConfig overrides."""
    image, mask, coords, labels, _, rgb = load_data(size, sample)
    points = PointSet(coords[:n], labels[:n])
    row = {"sample": sample, "points": int(len(points)), "network": {}}
    for seed in seeds:
        setup = TrainSetup(rgb=rgb)
        setup = replace(setup, config=replace(setup.config, **{**(config or {}), "seed": seed}))
        t = time.perf_counter()
        trainer = make_trainer(image, points, setup=setup).train_all()
        pred = trainer.predict()
        row["network"][str(seed)] = {
            "miou": round(float(miou(mask, pred)), 4),
            "seconds": round(time.perf_counter() - t, 1),
            "honoured": round(trainer.honoured(), 4),
        }
    pred, seconds = rf_baseline(image, points, rgb=rgb)
    row["forest"] = {"miou": round(float(miou(mask, pred)), 4), "seconds": round(seconds, 2)}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default="nuclei,cells,tissue")
    ap.add_argument("--points", default="30,60,90", help="comma-separated N (first N stored points)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    print(f"{'sample':8s} {'N':>4s}  network mIoU per seed (s)            forest (s)")
    for sample in [s for s in args.samples.split(",") if s]:
        for n in [int(k) for k in args.points.split(",") if k]:
            row = run(sample, n, seeds, config=json.loads(args.config))
            rows.append(row)
            net = " / ".join(f"{v['miou']:.3f} ({v['seconds']:.1f})" for v in row["network"].values())
            f = row["forest"]
            print(
                f"{sample:8s} {row['points']:4d}  {net:36s}  {f['miou']:.3f} ({f['seconds']:.1f})", flush=True
            )
    above = sum(np.median([v["miou"] for v in r["network"].values()]) > r["forest"]["miou"] for r in rows)
    print(f"network (median over seeds) above the forest: {above} / {len(rows)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": rows,
                "network_above_forest": int(above),
                "machine": machine_info(),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
