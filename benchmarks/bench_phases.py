"""Where the time of an oracle run goes: training iterations, head polish, predictions, rest.

Runs the oracle (Algorithm 1) at ``--budget`` on development images (``<data>/<set>/image_<i>.png``
+ ``mask_<i>.png``, as `bench_real.py`), one after the other in one process, and times the
trainer's phases by wrapping its methods: the training iterations (``_iterate``), the head
polish (``_polish_head``, with its steps, and the whole-network polish that follows a head
polish ending below ``honour_floor``), the predictions (``predict_proba``: the oracle's,
one per step), and the rest (oracle sampling, filter bank, building the network). Prints a
table and writes ``benchmarks/results/bench_phases.json``. For tuning the time of a run:
a recipe change shows which phase it moves (``--config`` / ``--spec`` as in `bench_real.py`).

    python benchmarks/bench_phases.py [--pairs lucchi_em/0,carotid_us/0] [--budget 0.003]
        [--config '{"iters_per_step": 8}'] [--crop 0]

Default: image 0 of every set. Run it alone: two trainings on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from bench_real import DEFAULT_DATA, load_pair, parse_pairs, score, setup_from_json
from machine import machine_info

from napari_pointseg.core.oracle_loop import run_oracle
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.core.trainer import SparseTrainer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_phases.json"
PHASES = {"iterations": "_iterate", "head_polish": "_polish_head", "predictions": "predict_proba"}


@contextmanager
def timed_phases(clock: dict):
    """While active, every call of the SparseTrainer methods in PHASES adds its seconds to
    ``clock[phase]`` and 1 to ``clock[phase + '_calls']`` (outermost calls only: a method
    calling another is counted once, in the outer phase); ``clock['polish_steps']`` gets the
    head polish's steps."""
    from napari_pointseg.core import head_polish

    originals = {name: getattr(SparseTrainer, name) for name in PHASES.values()}
    polish = head_polish.polish_head
    depth = [0]

    def wrap(phase, method):
        def timed(self, *args, **kwargs):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    clock[phase] = clock.get(phase, 0.0) + time.perf_counter() - t
                    clock[f"{phase}_calls"] = clock.get(f"{phase}_calls", 0) + 1

        return timed

    def counted_polish(trainer):
        trace, final = polish(trainer)
        clock["polish_steps"] = clock.get("polish_steps", 0) + len(trace)
        return trace, final

    try:
        for phase, name in PHASES.items():
            setattr(SparseTrainer, name, wrap(phase, originals[name]))
        head_polish.polish_head = counted_polish
        yield clock
    finally:
        for name, method in originals.items():
            setattr(SparseTrainer, name, method)
        head_polish.polish_head = polish


def run_pair(name: str, image, mask, budget: float, seed: int, setup: TrainSetup) -> dict:
    """One oracle run with its phases timed: a row of the table."""
    clock: dict = {}
    t = time.perf_counter()
    with timed_phases(clock):
        res = run_oracle(image, mask, budget=budget, target=1.0, seed=seed, setup=setup)
    total = time.perf_counter() - t
    phases = {phase: round(clock.get(phase, 0.0), 3) for phase in PHASES}
    quality = score(mask, res.prediction, res.points, np.unique(mask))
    return {
        "image": name,
        "shape": list(mask.shape),
        "miou": float(quality["miou"]),
        "honoured": float(quality["honoured"]),
        "n_points": len(res.points),
        "seconds": round(total, 3),
        **phases,
        "rest": round(total - sum(phases.values()), 3),
        "iterations_n": clock.get("iterations_calls", 0),
        "predictions_n": clock.get("predictions_calls", 0),
        "polish_steps": clock.get("polish_steps", 0),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("POINTSEG_DEVDATA", str(DEFAULT_DATA)))
    p.add_argument(
        "--pairs", default="", help="comma-separated set/index pairs (default: image 0 of each set)"
    )
    p.add_argument("--crop", type=int, default=0, help="centre crop size (0: whole image)")
    p.add_argument("--budget", type=float, default=0.003, help="fraction of the pixels the oracle reveals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    p.add_argument("--spec", default="{}", help="ModelSpec overrides as JSON")
    p.add_argument("--filter-bank", default="{}", help="FilterBank overrides as JSON")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_dir():
        print(f"error: no development data at {data} (--data)", file=sys.stderr)
        return 2
    if not 0 < args.budget <= 1:
        print(f"error: --budget must be in (0, 1], got {args.budget}", file=sys.stderr)
        return 2
    try:
        setup = setup_from_json(args.config, args.spec, args.device, args.filter_bank)
        pairs = parse_pairs(args.pairs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pairs = pairs or sorted((d.name, 0) for d in data.iterdir() if (d / "image_0.png").is_file())
    missing = [f"{s}/{i}" for s, i in pairs if not (data / s / f"image_{i}.png").is_file()]
    if missing:
        print(f"error: no such image pair(s) in {data}: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print("image              miou   hon.    total  iterations (n)   polish (steps)  predictions (n)   rest")
    rows = []
    for s, i in pairs:
        image, mask = load_pair(data / s, i, args.crop or None)
        r = run_pair(f"{s}/{i}", image, mask, args.budget, args.seed, setup)
        rows.append(r)
        print(
            f"{r['image']:18s} {r['miou']:.3f}  {r['honoured']:.3f}  {r['seconds']:6.1f}"
            f"  {r['iterations']:6.1f} ({r['iterations_n']:4d})  {r['head_polish']:6.1f} ({r['polish_steps']:4d})"
            f"  {r['predictions']:6.1f} ({r['predictions_n']:3d})  {r['rest']:6.1f}",
            flush=True,
        )
    per512 = {
        key: float(np.median([r[key] * 512 * 512 / np.prod(r["shape"]) for r in rows]))
        for key in ("seconds", *PHASES, "rest")
    }
    print(
        "median s per 512²: "
        + ", ".join(f"{key} {v:.1f}" for key, v in per512.items())
        + f"  (median mIoU {np.median([r['miou'] for r in rows]):.3f},"
        f" min honoured {min(r['honoured'] for r in rows):.4f})"
    )
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": rows,
                "median_seconds_per_512sq": per512,
                "config": setup.config.to_dict(),
                "spec": setup.spec.to_dict(),
                "filter_bank": setup.filter_bank.to_dict(),
                "machine": machine_info(),
            },
            indent=1,
            default=float,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
