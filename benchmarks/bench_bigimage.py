"""Benchmark: predicting an image larger than memory, tile by tile (issue 13, part 2).

Writes a synthetic H&E-like RGB image of ``--size`` x ``--size`` pixels as a tiled, compressed
TIFF, 512 x 512 tiles generated and written one at a time (the benchmark itself stays small),
trains the default network (U-Net resnet18, half resolution, filter bank sigma 1-16) briefly on
a 384 x 384 crop of it (80 clicks, a few dozen iterations: the figures are about memory and
time, not accuracy), then runs ``pointseg predict`` on the whole image in a subprocess per
worker count (``--workers``; 1 = in the predict process) and reports wall seconds and peak
memory: the largest sum of the RSS of the predict process and its workers (sampled every
0.1 s with psutil) and the largest RSS of any one of those processes. Target: peak RSS < 3 GB
whatever the image size. ``--compare-whole`` also runs the whole-plane path (only sensible
up to ~4096 px: it holds the whole network input in memory).

    python benchmarks/bench_bigimage.py [--size 8192] [--workers 1,2] [--tile 1024] [--compare-whole]

Run it alone on the machine. Results: benchmarks/results/bench_bigimage.json (a run with
another --size is written next to it as bench_bigimage_SIZE.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TILE = 512  # TIFF tile of the synthetic input


def _tile_content(ty: int, tx: int, tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (tile, tile, 3), mask uint8 (tile, tile) 1 = stroma, 2 = nucleus) of tile
    (ty, tx): pink stroma with texture, purple nuclei as disks (each tile seeded by its index)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng([seed, ty, tx])
    yy, xx = np.mgrid[0:tile, 0:tile]
    mask = np.ones((tile, tile), np.uint8)
    for _ in range(int(tile * tile / 2500)):
        cy, cx, r = rng.integers(0, tile), rng.integers(0, tile), rng.integers(5, 14)
        y0, y1, x0, x1 = max(0, cy - r), min(tile, cy + r + 1), max(0, cx - r), min(tile, cx + r + 1)
        disk = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
        mask[y0:y1, x0:x1][disk] = 2
    texture = ndi.gaussian_filter(rng.normal(size=(tile, tile)), 3) * 60
    stroma = np.array([235, 170, 200], np.float32)
    nucleus = np.array([110, 60, 160], np.float32)
    rgb = np.where((mask == 2)[..., None], nucleus, stroma) + texture[..., None]
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def write_image(path: Path, size: int) -> None:
    """The synthetic RGB image as a tiled, zlib-compressed BigTIFF, tile by tile."""
    import tifffile

    n = -(-size // TILE)

    def tiles():
        for ty in range(n):
            for tx in range(n):
                yield _tile_content(ty, tx, TILE)[0]

    tifffile.imwrite(
        path,
        tiles(),
        shape=(n * TILE, n * TILE, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        photometric="rgb",
        compression="zlib",
        bigtiff=True,
    )


def make_bundle(path: Path, seed: int = 0) -> Path:
    """Train the default network briefly on a 384² crop (tiles (0, 0) to (0, 1)) from clicks
    on its known mask; the bundle's size and filter bank are those of a real run."""
    from napari_pointseg.core.bundle import save_trainer
    from napari_pointseg.core.points import PointSet
    from napari_pointseg.core.session import make_trainer
    from napari_pointseg.core.train_setup import TrainSetup
    from napari_pointseg.core.trainer import TrainConfig

    rgb, mask = _tile_content(0, 0, TILE)
    rgb, mask = rgb[:384, :384], mask[:384, :384]
    rng = np.random.default_rng(seed)
    coords = np.column_stack([rng.integers(0, 384, 80), rng.integers(0, 384, 80)])
    points = PointSet(coords, mask[coords[:, 0], coords[:, 1]].astype(np.int64))
    config = TrainConfig(
        points_per_step=10,
        step_growth=0.5,
        iters_per_step=2,
        final_iters=10,
        polish_iters=0,
        head_polish_iters=10,
        seed=seed,
    )
    trainer = make_trainer(rgb, points, setup=TrainSetup(config=config, device="cpu")).train_all()
    return save_trainer(path, trainer)


def run_predict(bundle: Path, image: Path, out: Path, workers: int, tile: int, whole: bool) -> dict:
    """One `pointseg predict` in a subprocess: seconds, peak tree RSS (sum), peak process RSS."""
    import psutil

    cmd = [sys.executable, "-m", "napari_pointseg", "predict", str(bundle), str(image), "--out", str(out)]
    cmd += ["--quiet"] if whole else ["--tile", str(tile), "--workers", str(workers), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        try:
            procs = [ps] + ps.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_sum = max(peak_sum, sum(rss))
            peak_one = max([peak_one] + rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}): {err.strip()[-800:]}")
    return {
        "path": "whole-plane" if whole else "tiled",
        "workers": 1 if whole else workers,
        "seconds": round(seconds, 1),
        "peak_rss_sum_gb": round(peak_sum / 1e9, 2),
        "peak_rss_process_gb": round(peak_one / 1e9, 2),
    }


def summarise(path: Path) -> dict:
    """Class counts of a prediction, read tile by tile through tifffile's zarr store."""
    import tifffile
    import zarr

    z = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    counts: dict[int, int] = {}
    step = 2048
    for y in range(0, z.shape[0], step):
        v, c = np.unique(z[y : y + step], return_counts=True)
        for a, b in zip(v.tolist(), c.tolist()):
            counts[a] = counts.get(a, 0) + b
    return {"shape": list(z.shape), "dtype": str(z.dtype), "class_counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--compare-whole", action="store_true", help="also run the whole-plane path")
    ap.add_argument("--keep", default=None, help="folder to keep the image, bundle and outputs in")
    ap.add_argument("--out", default=None, help="results JSON")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    out_json = (
        Path(args.out)
        if args.out
        else RESULTS / ("bench_bigimage.json" if args.size == 8192 else f"bench_bigimage_{args.size}.json")
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        image = work / f"synthetic_he_{args.size}.tif"
        t = time.perf_counter()
        write_image(image, args.size)
        t_image = time.perf_counter() - t
        t = time.perf_counter()
        bundle = make_bundle(work / "model")
        t_train = time.perf_counter() - t
        runs = []
        for w in workers:
            res = run_predict(bundle, image, work / f"tiled_w{w}", w, args.tile, whole=False)
            res.update(summarise(work / f"tiled_w{w}" / f"{image.stem}_prediction.tif"))
            runs.append(res)
            print(res, flush=True)
        if args.compare_whole:
            res = run_predict(bundle, image, work / "whole", 1, args.tile, whole=True)
            res.update(summarise(work / "whole" / f"{image.stem}_prediction.tif"))
            runs.append(res)
            print(res, flush=True)
        side = -(-args.size // TILE) * TILE
        result = {
            "size": side,
            "pixels": side * side,
            "tile": args.tile,
            "image_bytes_on_disk": image.stat().st_size,
            "seconds_write_image": round(t_image, 1),
            "seconds_train_bundle": round(t_train, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "pointseg_threads": os.environ.get("POINTSEG_THREADS"),
            "runs": runs,
        }
    print(f"\n{side} x {side} RGB ({side * side / 1e6:.0f} Mpx), tiles of {args.tile} px")
    print(
        f"{'path':<12} {'workers':>7} {'seconds':>8} {'Mpx/s':>6} {'peak RSS sum GB':>16} {'max process GB':>15}"
    )
    for r in runs:
        mpx = side * side / 1e6 / r["seconds"]
        print(
            f"{r['path']:<12} {r['workers']:>7} {r['seconds']:>8.1f} {mpx:>6.2f} "
            f"{r['peak_rss_sum_gb']:>16.2f} {r['peak_rss_process_gb']:>15.2f}"
        )
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2))
    print(f"written {out_json}")


if __name__ == "__main__":
    main()
