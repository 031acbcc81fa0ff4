"""Benchmark of the dataset pipeline: pseudo-labels from <= 0.3 % clicked pixels vs full masks.

On a synthetic nuclei data set (``samples.files.make_dataset``: N train + M held-back test images)
it measures

* stage 1 (one network per image from its human-like clicks, 0.3 % of the pixels by default,
  as in the bundled example points; ``--points-fraction``) in seconds
  per image with 1 worker (in-process) and with 2 workers (spawn pool), each on half of the
  training images (the halves are statistically alike; this keeps the benchmark short);
* the test mIoU of the dataset network trained on those pseudo-labels (confidence-weighted,
  points at full weight) and of the same recipe trained on the true masks; their ratio.

Usage: python benchmarks/bench_dataset.py [--out DIR] [--n-train 12] [--n-test 4] [--size 192]
Writes DIR/bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# recipes: "default" = the TrainConfig / ModelSpec defaults (what `pointseg dataset` runs);
# "light" = a lighter network and shorter steps, for a shared, loaded 2-core machine
RECIPES = {
    "default": (dict(), dict()),
    "light": (
        dict(
            iters_per_step=5,
            min_iters_per_step=2,
            step_growth=0.2,
            final_iters=20,
            crop_size=96,
            batch_size=4,
        ),
        dict(encoder_depth=3, decoder_channels=[64, 32, 16]),
    ),
}


def stage1(
    train_dir: Path, pseudo_dir: Path, threads: int, image_config: dict, spec: dict, seed: int
) -> dict:
    """Seconds per image with 1 worker (first half) and 2 workers (second half)."""
    from napari_pointseg.dataset.layout import scan_folder
    from napari_pointseg.dataset.pseudo_labels import PseudoLabelOptions, pseudo_label_job
    from napari_pointseg.dataset.runner import run_jobs

    items = scan_folder(train_dir).items
    half = len(items) // 2
    opts = PseudoLabelOptions(source="points", config=image_config, spec=spec, threads=threads, seed=seed)
    out = {}
    for workers, part in ((1, items[:half]), (2, items[half:])):
        t0 = time.perf_counter()
        res = list(run_jobs(pseudo_label_job, part, pseudo_dir, opts, workers=workers))
        wall = time.perf_counter() - t0
        done = [r for r in res if r["status"] == "done"]
        out[f"workers_{workers}"] = {
            "images": len(done),
            "wall_seconds": round(wall, 1),
            "seconds_per_image": round(wall / max(1, len(done)), 1),
            "statuses": sorted({r["status"] for r in res}),
        }
        print(f"stage 1, {workers} worker(s): {out[f'workers_{workers}']}", flush=True)
    return out


def train_and_test(
    root: Path,
    out: Path,
    source: str,
    pseudo_dir: Path,
    iterations: int,
    threads: int,
    image_config: dict,
    spec: dict,
    seed: int,
) -> dict:
    from napari_pointseg.dataset.pipeline import PipelineOptions, run_pipeline

    opts = PipelineOptions(
        data=root / "train",
        out=out,
        test=root / "test",
        source=source,
        image_config=image_config,
        spec=spec,
        device="cpu",
        threads=threads,
        dataset_config=dict(iterations=iterations, batch_size=8, crop_size=96, threads=threads),
        pseudo_dir=pseudo_dir,
        seed=seed,
    )
    t0 = time.perf_counter()
    s = run_pipeline(opts)
    print(f"{source}: test mIoU {s['miou']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/bench_dataset", help="working folder (images, runs)")
    ap.add_argument(
        "--results",
        default=str(Path(__file__).with_name("results") / "bench_dataset.json"),
        help="where the JSON table goes",
    )
    ap.add_argument("--n-train", type=int, default=12)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument(
        "--points-fraction",
        type=float,
        default=0.003,
        help="clicked fraction of each training image's pixels (default 0.003 = 0.3 %%)",
    )
    ap.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="default",
        help="per-image and network recipe: default (as `pointseg dataset`) or light",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="replicate S: other images (make_dataset seeds 100 S and 1000 + 100 S) and training seeds S",
    )
    ap.add_argument("--iterations", type=int, default=400, help="dataset network iterations")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per process (1: the machine is shared; see README)",
    )
    a = ap.parse_args(argv)
    from napari_pointseg.samples.files import make_dataset

    root = Path(a.out)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    made = root / "made_with.json"
    settings = {
        "recipe": a.recipe,
        "seed": a.seed,
        "n_train": a.n_train,
        "n_test": a.n_test,
        "size": a.size,
        "points_fraction": a.points_fraction,
    }
    if not made.is_file() or json.loads(made.read_text()) != settings:
        # a working folder from other settings: start it afresh (runs there are stale too)
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        make_dataset(
            root / "train",
            n_images=a.n_train,
            size=a.size,
            seed=100 * a.seed,
            points_fraction=a.points_fraction,
        )
        make_dataset(root / "test", n_images=a.n_test, size=a.size, seed=1000 + 100 * a.seed)
        made.write_text(json.dumps(settings))
    image_config, spec = RECIPES[a.recipe]
    s1 = stage1(root / "train", root / "pseudo_points", a.threads, image_config, spec, a.seed)
    pseudo = train_and_test(
        root,
        root / "run_pseudo",
        "points",
        root / "pseudo_points",
        a.iterations,
        a.threads,
        image_config,
        spec,
        a.seed,
    )
    full = train_and_test(
        root,
        root / "run_full",
        "mask",
        root / "pseudo_full",
        a.iterations,
        a.threads,
        image_config,
        spec,
        a.seed,
    )
    result = {
        "images": {"train": a.n_train, "test": a.n_test, "size": a.size},
        "points_fraction": a.points_fraction,
        "labelled_pixels_per_image": pseudo["fraction_labeled"],
        "pseudo_label_miou": pseudo["pseudo_label_miou"],
        "test_miou_pseudo": pseudo["miou"],
        "test_miou_full": full["miou"],
        "ratio": pseudo["miou"] / full["miou"],
        "stage1": s1,
        "dataset_iterations": a.iterations,
        "threads": a.threads,
        "seconds_total": round(time.perf_counter() - t_all, 1),
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "recipe": a.recipe,
        "seed": a.seed,
        "image_config": image_config,
        "spec": spec,
    }
    (root / "bench.json").write_text(json.dumps(result, indent=2))
    results = Path(a.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2))
    print(f"wrote {results}")
    print()
    print(
        "| labelled pixels / image | pseudo-label mIoU (train) | test mIoU pseudo | test mIoU full masks "
        "| ratio | stage 1 s/img, 1 worker | stage 1 s/img, 2 workers |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['labelled_pixels_per_image'] * 100:.3f} % | {result['pseudo_label_miou']:.4f} "
        f"| {result['test_miou_pseudo']:.4f} | {result['test_miou_full']:.4f} | {result['ratio']:.3f} "
        f"| {s1['workers_1']['seconds_per_image']} | {s1['workers_2']['seconds_per_image']} |"
    )
    print(
        f"load average before/after: {load0} / {result['loadavg_after']}; total {result['seconds_total']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
