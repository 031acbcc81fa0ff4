"""Training and inference speed of the default model on this machine, and the demo's result.

Prints a table and writes benchmarks/results/bench_train.json. Run: `python benchmarks/bench_train.py`
(`make bench`). Measures, side by side in one run:
- ms per training iteration with the default recipe (a batch of crops, size independent of the
  image) and with the whole 256² / 512² image per iteration;
- ms per full-image prediction at 256² and 512²;
- the demo: `pointseg train` on sample image (a) with its example points: mIoU and seconds.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_pointseg.core.train_setup import TrainSetup

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bench_train.json"


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def speed_rows(repeats: int = 5) -> list[dict]:
    from napari_pointseg.core.points import PointSet
    from napari_pointseg.core.session import make_trainer
    from napari_pointseg.core.trainer import TrainConfig

    rng = np.random.default_rng(0)
    rows = []
    for size in (256, 512):
        image = rng.normal(size=(size, size)).astype(np.float32)
        coords = rng.integers(0, size, (60, 2))
        pts = PointSet(coords, np.arange(60) % 2 + 1)
        for label, crop in (("default (crops)", TrainConfig().crop_size), ("whole image", None)):
            tr = make_trainer(image, pts, setup=TrainSetup(config=TrainConfig(crop_size=crop), device="cpu"))
            tr.n_admitted = len(pts)  # every point in the loss: a steady-state iteration
            train_ms = _median_ms(lambda tr=tr: tr._iterate(0), repeats)
            row = {
                "size": size,
                "mode": label,
                "train_ms": round(train_ms, 1),
                "crop_size": crop,
                "batch_size": tr.config.batch_size if crop else 1,
            }
            if crop is None:
                row["predict_ms"] = round(_median_ms(lambda tr=tr: tr.predict(0), repeats), 1)
            rows.append(row)
        spec = tr.spec
    return rows, spec


def demo_row() -> dict:
    from napari_pointseg.cli import main

    out = ROOT / "results" / "bench_demo"
    t0 = time.perf_counter()
    code = main(
        [
            "train",
            str(ROOT / "sample_data/nuclei_image.tif"),
            str(ROOT / "sample_data/nuclei_points.csv"),
            "--mask",
            str(ROOT / "sample_data/nuclei_mask.tif"),
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    secs = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text()) if code == 0 else {}
    return {
        "exit_code": code,
        "miou": m.get("miou"),
        "seconds": round(secs, 1),
        "n_points": m.get("n_points"),
        "iterations": m.get("iterations"),
    }


def main() -> int:
    import torch

    from napari_pointseg.core.models import setup_torch

    setup_torch()
    rows, spec = speed_rows()
    demo = demo_row()
    print(
        f"model: {spec.arch} / {spec.encoder} depth {spec.encoder_depth}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'size':>5} {'mode':<16} {'train ms/iter':>14} {'predict ms':>11}")
    for r in rows:
        print(
            f"{r['size']:>5} {r['mode']:<16} {r['train_ms']:>14.1f} {r.get('predict_ms', float('nan')):>11.1f}"
        )
    print(
        f"demo (sample a, nuclei 512x512): mIoU {demo['miou']}, {demo['seconds']} s, "
        f"{demo['n_points']} points, {demo['iterations']} iterations"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "model": spec.to_dict(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "speed": rows,
                "demo": demo,
            },
            indent=2,
        )
    )
    print(f"wrote {OUT}")
    return 0 if demo["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
