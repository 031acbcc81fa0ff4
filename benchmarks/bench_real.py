"""Benchmark on real images: the network against the random forest on the same clicks.

Over the development images (``<data>/<set>/image_<i>.png`` + ``mask_<i>.png``, see the data
folder's README; not shipped with the project), per image, side by side in one process:

- ``oracle3`` / ``oracle1``: the oracle (Algorithm 1) at 0.3 % / 0.1 % of the pixels;
- ``user``: a simulated correcting user (5 random clicks per class, then 5 clicks per round at
  the centres of the largest wrong regions, continuing from the current weights) up to 0.3 %,
  reported after 0.05 %, 0.1 % and 0.3 %;
- ``rforacle``: the forest with its own oracle (the same Algorithm 1, the forest refitted at
  every step and the points picked where *it* is wrong), at 0.1 % and 0.3 %. The other modes'
  forest learns from points picked against the network's mistakes, which flatters the network;
  this is what a user correcting an ilastik-style forest would get;
- ``rfuser``: the simulated correcting user correcting the forest instead (the same first
  clicks, then the centres of the forest's largest wrong regions), at the ``user`` marks;
- ``first``: a first Train on clicks that nobody picked against either predictor: per
  ``--first-per-class`` count, that many random clicks per class (the user's first clicks, the
  same pixels at 5), the network trained from scratch on them in click order to the end (the
  final phase and the polishes, as `pointseg train` and a paused widget run), the forest on the
  same clicks. The other modes pick most of their points where the network is wrong;

and for each: the network's mIoU and per-class IoU, the random forest (ilastik-style features
+ 100 trees) on exactly the same points, the share of the run's own points that each final
prediction honours, and seconds. Prints a table and the medians, writes
``benchmarks/results/bench_real.json`` (rewritten after every image).

    python benchmarks/bench_real.py [--data ../shared/devdata] [--sets nerve_us,acdc_mri]
        [--images 0,1,2] [--crop 256] [--modes oracle3,oracle1,user,rforacle,rfuser,first] [--seed 0]
        [--first-per-class 5,20]

Quick slice while tuning: ``--images 0 --crop 256``. Run it alone: two trainings on 2 cores
slow each other far more than 2x. Not a test: the whole set takes the better part of an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from machine import machine_info

from napari_pointseg.core.features import FilterBank
from napari_pointseg.core.metrics import segmentation_metrics
from napari_pointseg.core.models import ModelSpec
from napari_pointseg.core.oracle_loop import run_oracle
from napari_pointseg.core.points import PointSet
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.core.trainer import TrainConfig
from napari_pointseg.oracle.baseline import rf_baseline, rf_features, rf_oracle
from napari_pointseg.oracle.correcting_user import (
    first_clicks,
    honoured_fraction,
    max_drop_after,
    rf_correcting_user,
    run_correcting_user,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_real.json"
DEFAULT_DATA = HERE.parent.parent / "shared" / "devdata"
MODES = ("oracle3", "oracle1", "user", "rforacle", "rfuser", "first")
RF_ORACLE_MARKS = {"oracle1": 0.001, "oracle3": 0.003}
USER_MARKS = (0.0005, 0.001, 0.003)


def load_pair(folder: Path, i: int, crop: int | None):
    """(image, mask) as numpy; a centre crop of ``crop`` px when given."""
    from skimage import io

    image = np.asarray(io.imread(folder / f"image_{i}.png"))
    mask = np.asarray(io.imread(folder / f"mask_{i}.png")).astype(np.int64)
    if crop:
        h, w = mask.shape
        y0, x0 = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        image, mask = image[y0 : y0 + crop, x0 : x0 + crop], mask[y0 : y0 + crop, x0 : x0 + crop]
    return image, mask


def score(mask, pred, points, classes) -> dict:
    m = segmentation_metrics(mask, pred, labels=classes)
    return {
        "miou": m["miou"],
        "per_class_iou": m["per_class_iou"],
        "honoured": honoured_fraction(pred, points),
    }


def rf_row(image, mask, points, classes, feats, feat_s, seed) -> dict:
    pred, s = rf_baseline(image, points, seed=seed, features=feats)
    out = score(mask, pred, points, classes)
    out["seconds"] = round(s + feat_s, 3)
    return {"rf_" + k: v for k, v in out.items()}


def forest_rows(checkpoints, mask, classes, feat_s) -> dict:
    """The forest's own runs (`rf_oracle`, `rf_correcting_user`) as rows keyed by percentage:
    scores, points, seconds (with the features' ``feat_s``) and the run's steps or rounds."""
    return {
        f"{c['fraction'] * 100:.2f}%": {
            **score(mask, c["prediction"], c["points"], classes),
            "n_points": len(c["points"]),
            "seconds": round(c["seconds"] + feat_s, 3),
            **{k: c[k] for k in ("steps", "rounds") if k in c},
        }
        for c in checkpoints
    }


def first_train(image, mask, per_class: int, seed: int, setup: TrainSetup) -> tuple:
    """A first Train: ``per_class`` random clicks of every class of ``mask`` (the simulated
    user's first clicks, `first_clicks` with the ``seed``'s generator), the network trained
    from scratch on them to the end. Returns (points, prediction (H, W) label values,
    seconds, iterations)."""
    yx = first_clicks(mask, per_class, np.random.default_rng(seed))
    points = PointSet(yx.astype(np.float64), mask[yx[:, 0], yx[:, 1]])
    setup = replace(setup, config=replace(setup.config, order="correct"))  # click order, as the user mode
    t = time.perf_counter()
    trainer = make_trainer(image, points, setup=setup).train_all()
    pred = trainer.predict(0)
    return points, pred, time.perf_counter() - t, trainer.iteration


def run_image(name, image, mask, modes, args, setup: TrainSetup) -> dict:
    classes = np.unique(mask)
    t = time.perf_counter()
    feats = rf_features(image)
    feat_s = time.perf_counter() - t
    row = {"image": name, "shape": list(mask.shape), "n_classes": int(len(classes))}
    for mode in modes:
        if mode.startswith("oracle"):
            budget = {"oracle3": 0.003, "oracle1": 0.001}[mode]
            res = run_oracle(
                image,
                mask,
                budget=budget,
                target=1.0,
                seed=args.seed,
                setup=setup,
            )
            r = score(mask, res.prediction, res.points, classes)
            r.update(
                {
                    "n_points": len(res.points),
                    "seconds": res.metrics["seconds"],
                    "iterations": res.metrics["iterations"],
                    "steps": res.metrics["steps"],
                    "curve": [
                        {k: c[k] for k in ("n_points", "miou", "seconds")} for c in res.metrics["curve"]
                    ],
                }
            )
            r.update(rf_row(image, mask, res.points, classes, feats, feat_s, args.seed))
            row[mode] = r
        elif mode == "rforacle":
            own = rf_oracle(image, mask, tuple(RF_ORACLE_MARKS.values()), seed=args.seed, features=feats)
            row["rforacle"] = forest_rows(own, mask, classes, feat_s)
        elif mode == "rfuser":
            marks = tuple(m for m in USER_MARKS if m <= args.user_budget + 1e-12)
            own = rf_correcting_user(image, mask, checkpoints=marks, seed=args.seed, features=feats)
            row["rfuser"] = forest_rows(own, mask, classes, feat_s)
        elif mode == "first":
            row["first"] = {}
            for per_class in args.first_per_class:
                points, pred, seconds, iterations = first_train(image, mask, per_class, args.seed, setup)
                r = score(mask, pred, points, classes)
                r.update({"n_points": len(points), "seconds": round(seconds, 3), "iterations": iterations})
                r.update(rf_row(image, mask, points, classes, feats, feat_s, args.seed))
                row["first"][str(per_class)] = r
        elif mode == "user":
            marks = tuple(m for m in USER_MARKS if m <= args.user_budget + 1e-12)
            res = run_correcting_user(
                image,
                mask,
                budget=marks[-1],
                checkpoints=marks,
                seed=args.seed,
                setup=setup,
            )
            cps = {}
            for mark, cp in zip(marks, res.checkpoints):
                r = score(mask, cp["prediction"], cp["points"], classes)
                r.update(
                    {"n_points": cp["n_points"], "seconds": cp["seconds"], "iterations": cp["iterations"]}
                )
                r.update(rf_row(image, mask, cp["points"], classes, feats, feat_s, args.seed))
                cps[f"{mark * 100:.2f}%"] = r
            row["user"] = {
                "checkpoints": cps,
                "max_drop_after_0.8": max_drop_after(res.curve),
                "rounds": len(res.curve),
                "curve": res.curve,
            }
    return row


def fmt(r: dict) -> str:
    return (
        f"{r['miou']:.3f} (rf {r['rf_miou']:.3f}) hon {r['honoured']:.2f}/{r['rf_honoured']:.2f}"
        f" {r['seconds']:5.1f}s"
    )


def network_at(row: dict, forest_mode: str, key: str) -> dict | None:
    """The network's run of ``row`` that the forest's own run ``forest_mode`` at ``key`` (e.g.
    "0.30%") compares with: the oracle at that budget, or the simulated user at that mark."""
    if forest_mode == "rforacle":
        return row.get({f"{m * 100:.2f}%": mode for mode, m in RF_ORACLE_MARKS.items()}[key])
    return row["user"]["checkpoints"].get(key) if "user" in row else None


def summarise(rows: list[dict], modes) -> dict:
    out = {}
    entries = []
    for mode in modes:
        if mode == "user":
            for mark in USER_MARKS:
                key = f"{mark * 100:.2f}%"
                entries.append(
                    (
                        f"user@{key}",
                        [
                            r["user"]["checkpoints"][key]
                            for r in rows
                            if "user" in r and key in r["user"]["checkpoints"]
                        ],
                    )
                )
        elif mode == "first":
            keys = dict.fromkeys(k for r in rows for k in r.get("first", {}))
            entries += [
                (f"first@{k}", [r["first"][k] for r in rows if k in r.get("first", {})]) for k in keys
            ]
        elif mode not in ("rforacle", "rfuser"):
            entries.append((mode, [r[mode] for r in rows if mode in r]))
    for key, rs in entries:
        if not rs:
            continue
        out[key] = {
            "n": len(rs),
            "median_miou": float(np.median([r["miou"] for r in rs])),
            "median_rf_miou": float(np.median([r["rf_miou"] for r in rs])),
            "min_miou": float(np.min([r["miou"] for r in rs])),
            "beats_rf": int(sum(r["miou"] > r["rf_miou"] for r in rs)),
            "median_honoured": float(np.median([r["honoured"] for r in rs])),
            "min_honoured": float(np.min([r["honoured"] for r in rs])),
            "median_seconds": float(np.median([r["seconds"] for r in rs])),
            "median_rf_seconds": float(np.median([r["rf_seconds"] for r in rs])),
        }
    secs512 = [r["oracle3"]["seconds"] * 512 * 512 / np.prod(r["shape"]) for r in rows if "oracle3" in r]
    if secs512:
        out["oracle3"]["median_seconds_per_512sq"] = float(np.median(secs512))
    # the forest's own runs, against the network's run of the same kind (each with its own clicks)
    pairs = [("rforacle", f"{m * 100:.2f}%") for m in RF_ORACLE_MARKS.values()]
    pairs += [("rfuser", f"{m * 100:.2f}%") for m in USER_MARKS]
    for forest_mode, key in pairs:
        own = [r for r in rows if forest_mode in r and key in r[forest_mode]]
        if not own:
            continue
        v = {
            "n": len(own),
            "median_miou": float(np.median([r[forest_mode][key]["miou"] for r in own])),
            "median_seconds": float(np.median([r[forest_mode][key]["seconds"] for r in own])),
        }
        both = [(network_at(r, forest_mode, key), r[forest_mode][key]) for r in own]
        both = [(a, b) for a, b in both if a is not None]
        if both:
            v["network_beats_it"] = int(sum(a["miou"] > b["miou"] for a, b in both))
            v["compared"] = len(both)
        out[f"{forest_mode}@{key}"] = v
    drops = [r["user"]["max_drop_after_0.8"] for r in rows if "user" in r]
    if drops:
        out["user_max_drop_after_0.8"] = {"max": float(np.max(drops)), "median": float(np.median(drops))}
    return out


def setup_from_json(config: str, spec: str, device: str, filter_bank: str = "{}") -> TrainSetup:
    """The TrainSetup of ``--config`` / ``--spec`` / ``--filter-bank`` (JSON overrides of
    TrainConfig / ModelSpec / FilterBank) on ``device``. Raises ValueError with a one-line
    reason on bad JSON or unknown fields."""
    try:
        # from_dict fills absent fields with old bundles' values: override today's bank instead
        bank = {**FilterBank().to_dict(), **json.loads(filter_bank)}
        return TrainSetup(
            spec=ModelSpec(**json.loads(spec)),
            config=TrainConfig(**json.loads(config)),
            device=device,
            filter_bank=FilterBank.from_dict(bank),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"--config / --spec / --filter-bank: {e}") from None


def parse_pairs(text: str) -> list[tuple[str, int]]:
    """``'set/index,...'`` as [(set, index), ...]; raises ValueError on a malformed item."""
    try:
        return [(s, int(i)) for s, i in (item.rsplit("/", 1) for item in text.split(",") if item)]
    except ValueError:
        raise ValueError(f"--pairs wants set/index items, got '{text}'") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("POINTSEG_DEVDATA", str(DEFAULT_DATA)))
    p.add_argument("--sets", default="", help="comma-separated folder names (default: all)")
    p.add_argument("--images", default="0,1,2", help="comma-separated pair indices")
    p.add_argument(
        "--pairs",
        default="",
        help="comma-separated set/index pairs, e.g. 'fives_fundus/0,acdc_mri/2' (instead of --sets/--images)",
    )
    p.add_argument("--crop", type=int, default=0, help="centre crop size (0: whole image)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--user-budget",
        type=float,
        default=USER_MARKS[-1],
        help="the simulated user stops at this fraction (0.003; 0.001 is ~3x quicker)",
    )
    p.add_argument(
        "--first-per-class",
        default="5,20",
        help="mode first: comma-separated random clicks per class of each first Train",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument(
        "--config",
        default="{}",
        help="TrainConfig overrides as JSON, e.g. '{\"crop_size\": null}' (recipe trials)",
    )
    p.add_argument("--spec", default="{}", help="ModelSpec overrides as JSON")
    p.add_argument(
        "--filter-bank", default="{}", help="FilterBank overrides as JSON, e.g. '{\"on_mean\": false}'"
    )
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        print(f"error: no development data at {data} (--data)", file=sys.stderr)
        return 2
    sets = [s for s in args.sets.split(",") if s] or sorted(
        d.name for d in data.iterdir() if d.is_dir() and (d / "image_0.png").exists()
    )
    idx = [int(i) for i in args.images.split(",") if i != ""]
    modes = [m for m in args.modes.split(",") if m]
    try:
        args.first_per_class = [int(k) for k in args.first_per_class.split(",") if k]
        if not args.first_per_class or min(args.first_per_class) < 1:
            raise ValueError
    except ValueError:
        print("error: --first-per-class wants positive integers, e.g. 5,20", file=sys.stderr)
        return 2
    if args.user_budget < USER_MARKS[0]:
        print(f"error: --user-budget must be >= {USER_MARKS[0]}", file=sys.stderr)
        return 2
    bad = set(modes) - set(MODES)
    if bad:
        print(f"error: unknown mode(s) {sorted(bad)}; choose from {MODES}", file=sys.stderr)
        return 2
    try:
        setup = setup_from_json(args.config, args.spec, args.device, args.filter_bank)
        pairs = parse_pairs(args.pairs) or [(s, i) for s in sets for i in idx]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config, spec = setup.config, setup.spec
    missing = [f"{s}/{i}" for s, i in pairs if not (data / s / f"image_{i}.png").is_file()]
    if missing:
        print(f"error: no such image pair(s) in {data}: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for s, i in pairs:
        image, mask = load_pair(data / s, i, args.crop or None)
        name = f"{s}/{i}"
        row = run_image(name, image, mask, modes, args, setup)
        row["load_1min_after"] = os.getloadavg()[0]
        rows.append(row)
        parts = [f"{name:18s} {mask.shape[0]}x{mask.shape[1]}"]
        for m in modes:
            if m == "user":
                c = row["user"]["checkpoints"]
                parts.append(
                    "user "
                    + " | ".join(f"{k} {fmt(v)}" for k, v in c.items())
                    + f" drop {row['user']['max_drop_after_0.8']:.2f}"
                )
            elif m == "rfuser":
                parts.append(
                    "user correcting the forest "
                    + " | ".join(f"{k} {v['miou']:.3f} {v['seconds']:5.1f}s" for k, v in row[m].items())
                )
            elif m == "first":
                parts.append(" | ".join(f"first@{k} {fmt(v)}" for k, v in row[m].items()))
            elif m == "rforacle":
                parts.append(
                    "forest's own oracle "
                    + " | ".join(f"{k} {v['miou']:.3f} {v['seconds']:5.1f}s" for k, v in row[m].items())
                )
            else:
                parts.append(f"{m} {fmt(row[m])}")
        print("  ".join(parts), flush=True)
        out.write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "rows": rows,
                    "summary": summarise(rows, modes),
                    "config": config.to_dict(),
                    "spec": spec.to_dict(),
                    "filter_bank": setup.filter_bank.to_dict(),
                    "machine": machine_info(threads_env=os.environ.get("POINTSEG_THREADS")),
                    "total_seconds": round(time.perf_counter() - t_all, 1),
                },
                indent=1,
                default=float,
            )
        )
    summary = summarise(rows, modes)
    print("\nmode          n  median net  median RF  min net  net>RF  honoured med/min   s net  s RF")
    for key, v in summary.items():
        if key.startswith(("user_max", "rforacle", "rfuser")):
            continue
        print(
            f"{key:12s} {v['n']:2d}  {v['median_miou']:.3f}       {v['median_rf_miou']:.3f}      "
            f"{v['min_miou']:.3f}    {v['beats_rf']:2d}/{v['n']:<2d}   {v['median_honoured']:.3f}/"
            f"{v['min_honoured']:.3f}      {v['median_seconds']:5.1f}  {v['median_rf_seconds']:4.1f}"
        )
    if "oracle3" in summary and "median_seconds_per_512sq" in summary["oracle3"]:
        print(f"oracle 0.3 %: median {summary['oracle3']['median_seconds_per_512sq']:.1f} s per 512²")
    for key, v in summary.items():
        if key.startswith(("rforacle", "rfuser")):
            oracle = key.startswith("rforacle")
            who = "its own oracle" if oracle else "the user correcting it"
            vs = (
                f", the network ({'its own oracle' if oracle else 'the user correcting the network'}) above it on "
                f"{v['network_beats_it']} / {v['compared']}"
                if "compared" in v
                else ""
            )
            print(
                f"the forest with {who} @{key.split('@')[1]}: median {v['median_miou']:.3f} in "
                f"{v['median_seconds']:.1f} s{vs}"
            )
    if "user_max_drop_after_0.8" in summary:
        d = summary["user_max_drop_after_0.8"]
        print(
            f"user: largest mIoU drop between rounds after 0.8: max {d['max']:.3f}, median {d['median']:.3f}"
        )
    print(f"wrote {out}  ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
