"""The paper's single-image experiments on our setting: Table 1 (orders) and Table 3 (samplers).

`run_orders`: per image and seed one oracle run gives an ordered point set; fresh networks are
then trained on it in correct / entire / random / reverse order with the same total number of
iterations (the oracle's own total, spread evenly over the oracle's steps; ``entire`` gets it
in one step). `run_samplers`: each sampler picks as many points as the oracle revealed; a fresh
network is trained on them in correct order (same iteration budget), and the random forest on
the same points. Both return a JSON-able table and can write ``<name>.json`` and ``<name>.png``.

``images`` is a list of ``(name, image, mask, channel_axis)``: 2D images, mask label values.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.metrics import miou
from ..core.oracle_loop import oracle_config, run_oracle
from ..core.points import PointSet
from ..core.schedule import ORDERS, step_sizes
from ..core.train_setup import TrainSetup
from ..core.trainer import SparseTrainer, TrainConfig
from .baseline import rf_baseline
from .samplers import ACQUISITIONS, LABEL_BASED, active_points, label_based_points

ImageItem = tuple  # (name, image, mask, channel_axis)


def _log(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def replay_config(config: TrainConfig, n_points: int, total_iters: int, order: str, seed: int) -> TrainConfig:
    """A config that trains ``n_points`` in ``order`` for ``total_iters`` iterations in total.

    Same step sizes as the oracle; a fixed number of iterations per step (no early exit), so
    that every order gets exactly the same budget (``entire``: all of it in one step).
    """
    n_steps = len(step_sizes(n_points, config.points_per_step, config.step_growth))
    per_step = max(1, int(round((total_iters - config.final_iters) / n_steps)))
    return replace(
        config,
        order=order,
        seed=seed,
        iters_per_step=per_step,
        min_iters_per_step=per_step,
        fit_threshold=1.01,
    )


def train_fresh(
    image,
    mask,
    points: PointSet,
    setup: TrainSetup,
) -> tuple[float, float, np.ndarray]:
    """Train a new network on ``points`` as ``setup`` says; (mIoU, seconds, prediction)."""
    t0 = time.perf_counter()
    classes = np.unique(mask)
    tr = SparseTrainer(
        setup.prepare(image),
        points,
        classes=classes,
        config=setup.config,
        spec=setup.spec,
        device=setup.device,
    )
    tr.train_all()
    pred = tr.predict(0)
    return miou(mask, pred, classes), time.perf_counter() - t0, pred


def _oracle_setup(setup: TrainSetup | None) -> TrainSetup:
    """``setup`` (default TrainSetup()) with the oracle's training config."""
    setup = setup or TrainSetup()
    return setup.but(config=oracle_config(setup.config))


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(len(v))}


def _oracle_runs(images: Sequence[ImageItem], seeds: Sequence[int], budget, target, setup: TrainSetup):
    """The oracle run every experiment starts from, on each image and seed in turn.

    Yields ``(name, image, mask, image_setup, seed, OracleResult)``; ``image_setup`` is
    ``setup`` with the image's channel axis.
    """
    for name, image, mask, ca in images:
        image_setup = setup.but(channel_axis=ca)
        for seed in seeds:
            res = run_oracle(image, mask, image_setup, budget=budget, target=target, seed=seed)
            yield name, image, mask, image_setup, seed, res


def _table(experiment: str, budget, target, seeds, setup: TrainSetup, runs: list, summary: dict) -> dict:
    """An experiment's result table: its settings, its ``runs`` rows and their ``summary``."""
    return {
        "experiment": experiment,
        "budget": budget,
        "target": target,
        "seeds": list(seeds),
        "config": setup.config.to_dict(),
        "spec": setup.spec.to_dict(),
        "runs": runs,
        "summary": summary,
    }


def run_orders(
    images: Sequence[ImageItem],
    seeds: Sequence[int] = (0, 1),
    *,
    budget: float = 0.003,
    target: float = 0.995,
    setup: TrainSetup | None = None,
    orders: Sequence[str] = ORDERS,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Table 1. Returns ``{"runs": [...], "summary": {order: {mean, std, n}}, ...}``.

    Each run row: image, seed, n_points, fraction_labeled, iterations, oracle_miou and
    ``orders: {order: miou}``. With ``out_dir``: writes orders.json and orders.png.
    setup: network, recipe and device (its channel_axis is replaced by each image's).
    """
    setup = _oracle_setup(setup)
    cfg = setup.config
    runs = []
    for name, image, mask, image_setup, seed, res in _oracle_runs(images, seeds, budget, target, setup):
        n = len(res.points)
        row = {
            "image": name,
            "seed": seed,
            "n_points": n,
            "fraction_labeled": res.metrics["fraction_labeled"],
            "iterations": res.metrics["iterations"],
            "oracle_miou": res.metrics["miou"],
            "oracle_seconds": res.metrics["seconds"],
            "curve": res.metrics["curve"],
            "orders": {},
        }
        _log(progress, f"{name} seed {seed}: oracle mIoU {res.metrics['miou']:.4f} with {n} points")
        for order in orders:
            rc = replay_config(cfg, n, res.metrics["iterations"], order, seed)
            m, secs, _ = train_fresh(image, mask, res.points, image_setup.but(config=rc))
            row["orders"][order] = m
            _log(progress, f"  {order:8s} mIoU {m:.4f} ({secs:.0f} s)")
        runs.append(row)
    summary = {o: _mean_std(r["orders"][o] for r in runs) for o in orders}
    table = _table("orders", budget, target, seeds, setup, runs, summary)
    if out_dir is not None:
        _write(out_dir, "orders", table, _plot_orders)
    return table


def run_samplers(
    images: Sequence[ImageItem],
    seeds: Sequence[int] = (0,),
    *,
    budget: float = 0.003,
    target: float = 0.995,
    kinds: Sequence[str] = LABEL_BASED + ACQUISITIONS,
    setup: TrainSetup | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Table 3. Every sampler gets as many points as the oracle revealed on that image/seed.

    Each run row: image, seed, n_points and ``methods: {name: {miou, rf_miou, rf_seconds,
    loop_miou (active methods), curve (active methods)}}``; "oracle" is one of the methods.
    A fresh network in correct order (the oracle's iteration budget) scores every method.
    setup: network, recipe and device (its channel_axis is replaced by each image's).
    """
    setup = _oracle_setup(setup)
    cfg = setup.config
    runs = []
    for name, image, mask, image_setup, seed, res in _oracle_runs(images, seeds, budget, target, setup):
        ca = image_setup.channel_axis
        rng = np.random.default_rng(1000 + seed)
        n, iters = len(res.points), res.metrics["iterations"]
        rc = replay_config(cfg, n, iters, "correct", seed)
        found = {"oracle": (res.points, res.metrics["miou"], res.metrics["curve"])}
        for kind in kinds:
            if kind in ACQUISITIONS:
                act = active_points(image, mask, n, kind, image_setup, seed=seed)
                found[kind] = (act.points, act.metrics["miou"], act.metrics["curve"])
            else:
                yx = label_based_points(kind, image, mask, n, rng, channel_axis=ca)
                found[kind] = (
                    PointSet(yx.astype(np.float64), np.asarray(mask)[yx[:, 0], yx[:, 1]]),
                    None,
                    None,
                )
        row = {
            "image": name,
            "seed": seed,
            "n_points": n,
            "fraction_labeled": n / np.asarray(mask).size,
            "methods": {},
        }
        for method, (pts, loop_miou, curve) in found.items():
            if len(pts.classes) < 2:
                row["methods"][method] = {"miou": None, "note": "points cover one class"}
                continue
            m, secs, _ = train_fresh(image, mask, pts, image_setup.but(config=rc))
            rf_pred, rf_s = rf_baseline(image, pts, channel_axis=ca, seed=seed)
            row["methods"][method] = {
                "miou": m,
                "seconds": secs,
                "rf_miou": miou(mask, rf_pred, np.unique(mask)),
                "rf_seconds": rf_s,
                "loop_miou": loop_miou,
                "curve": curve,
            }
            _log(
                progress,
                f"{name} seed {seed} {method:16s} net {m:.4f}  RF {row['methods'][method]['rf_miou']:.4f}",
            )
        runs.append(row)
    methods = list(runs[0]["methods"]) if runs else []
    summary = {
        m: {
            "net": _mean_std(r["methods"][m].get("miou") for r in runs),
            "rf": _mean_std(r["methods"][m].get("rf_miou") for r in runs),
        }
        for m in methods
    }
    table = _table("samplers", budget, target, seeds, setup, runs, summary)
    if out_dir is not None:
        _write(out_dir, "samplers", table, _plot_samplers)
    return table


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _write(out_dir, name: str, table: dict, plot) -> None:
    from ..core.session import write_json

    out = Path(out_dir)
    write_json(out / f"{name}.json", table)
    plot(table, out / f"{name}.png")


def _plot_curve(ax, curve: list[dict], color: str, alpha: float, label: str | None = None) -> None:
    """Draw one learning curve (rows with fraction_labeled and miou) as mIoU vs labelled %."""
    # no label at all (not label=None) keeps an unnamed curve out of the legend as before
    named = {} if label is None else {"label": label}
    ax.plot(
        [p["fraction_labeled"] * 100 for p in curve],
        [p["miou"] for p in curve],
        color=color,
        lw=1,
        alpha=alpha,
        **named,
    )


def _plot_orders(table: dict, path: Path) -> None:
    """Oracle curves (mIoU vs labelled %) per run, and each order's final mIoU as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"correct": "o", "entire": "s", "random": "^", "reverse": "v"}
    for i, r in enumerate(table["runs"]):
        c = f"C{i % 10}"
        _plot_curve(ax, r["curve"], c, 0.7, label=f"{r['image']} s{r['seed']} oracle")
        for o, m in r["orders"].items():
            ax.scatter([r["fraction_labeled"] * 100], [m], color=c, marker=markers.get(o, "x"), s=30)
    for o, mk in markers.items():
        ax.scatter([], [], color="k", marker=mk, label=o)
    _finish_plot(fig, ax, "Order experiment (Table 1)", path)


def _plot_samplers(table: dict, path: Path) -> None:
    """Active methods' curves (mIoU vs labelled %) and every method's fresh-network mIoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(table["summary"])
    for j, method in enumerate(methods):
        c = f"C{j % 10}"
        first = True
        for r in table["runs"]:
            d = r["methods"][method]
            if d.get("curve"):
                _plot_curve(ax, d["curve"], c, 0.6)
            if d.get("miou") is not None:
                ax.scatter(
                    [r["fraction_labeled"] * 100], [d["miou"]], color=c, s=25, label=method if first else None
                )
                first = False
    _finish_plot(fig, ax, "Samplers (Table 3): fresh network per method; lines = active loops", path)


def _finish_plot(fig, ax, title: str, path: Path) -> None:
    """Axes labels, legend and grid shared by the experiment plots; save and close."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("labelled pixels (%)")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
