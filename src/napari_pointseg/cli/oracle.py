"""`pointseg oracle`, `pointseg orders`, `pointseg samplers`: the oracle experiments."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import CliError, add_image_options, add_model_options, print_table, progress, train_setup

SAMPLE_2D = ("nuclei", "cells", "tissue")
ORACLE_OUTPUTS = ("points.csv", "prediction.tif", "metrics.json", "overlay.png", "model.safetensors")


def _add_common(p: argparse.ArgumentParser, budget: float) -> None:
    p.add_argument(
        "--budget",
        type=float,
        default=budget,
        help=f"stop at this fraction of labelled pixels (default {budget})",
    )
    p.add_argument("--target", type=float, default=0.995, help="stop at this mIoU (default 0.995)")
    add_image_options(p)
    add_model_options(p)


def register(subparsers) -> None:
    """Add the oracle, orders and samplers subcommands to the `pointseg` parser."""
    o = subparsers.add_parser(
        "oracle",
        help="Algorithm 1: reveal pixels from a ground-truth mask while training",
        description="Run the PixelLabeling oracle on a 2D IMAGE with its ground-truth MASK: "
        "train, predict, reveal pixels at the centre of the largest error, repeat. "
        "Writes points.csv, prediction.tif, metrics.json, overlay.png, model.safetensors.",
    )
    o.add_argument("image", help="2D image file")
    o.add_argument("mask", help="ground-truth label image (same height and width)")
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument(
        "--points-per-step",
        type=int,
        default=None,
        help="a fixed number of pixels per oracle step (default: grows with the revealed count)",
    )
    o.add_argument(
        "--iters-per-step", type=int, default=None, help="at most this many training iterations per step"
    )
    o.add_argument(
        "--worst-class", action="store_true", help="sample only errors of the class with the lowest IoU"
    )
    _add_common(o, 0.001)
    o.set_defaults(func=cmd_oracle, outputs=lambda a: ORACLE_OUTPUTS)

    for name, helptext, seeds in (
        ("orders", "Table 1: correct / entire / random / reverse order", 2),
        ("samplers", "Table 3: random, grid, edge, SLIC, geodesic, uncertainty samplers vs the oracle", 1),
    ):
        p = subparsers.add_parser(
            name, help=helptext, description=helptext + f". Writes {name}.json and {name}.png to --out."
        )
        p.add_argument("pairs", nargs="*", metavar="IMAGE MASK", help="image and mask files, in pairs")
        p.add_argument(
            "--samples", action="store_true", help="use the bundled 2D sample images (nuclei, cells, tissue)"
        )
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--seeds", type=int, default=seeds, help=f"seeds per image (default {seeds})")
        _add_common(p, 0.003)
        p.set_defaults(
            func=cmd_orders if name == "orders" else cmd_samplers,
            outputs=lambda a, name=name: (f"{name}.json", f"{name}.png"),
            precheck=precheck_pairs,
        )


def precheck_pairs(args) -> None:
    """orders / samplers run every pair in turn: a bad last pair must fail before the first
    one trains (the pairs are small 2D images: reading them twice is cheap)."""
    from ..core.checks import check_mask
    from ..core.errors import InputError
    from ..core.images import read_image, read_mask, to_channels_first

    pairs = args.pairs
    if not pairs or len(pairs) % 2:
        return  # an odd count is refused with its own message by _load_images
    for img, msk in zip(pairs[::2], pairs[1::2]):
        shape = to_channels_first(read_image(img), args.channel_axis).shape[1:]
        try:
            check_mask(read_mask(msk), shape)
        except InputError as e:
            raise InputError(f"{msk}: {e}") from None


def _check_budget(args) -> None:
    if not 0 < args.budget <= 1:
        raise CliError(f"--budget must be in (0, 1], got {args.budget}")
    if not 0 < args.target <= 1:
        raise CliError(f"--target must be in (0, 1], got {args.target}")


def cmd_oracle(args) -> int:
    from ..core.bundle import save_trainer
    from ..core.images import read_image, read_mask
    from ..core.oracle_loop import run_oracle
    from ..core.overlay import save_overlay
    from ..core.session import write_json, write_labels

    _check_budget(args)
    image, mask = read_image(args.image), read_mask(args.mask)
    setup = train_setup(args)
    out = Path(args.out)
    with progress(None, "oracle", args.quiet, unit="step") as bar:

        def cb(row):
            bar.update(1)
            bar.set_postfix_str(f"{row['n_points']} pts mIoU {row['miou']:.3f}")

        res = run_oracle(
            image,
            mask,
            setup,
            budget=args.budget,
            target=args.target,
            points_per_step=args.points_per_step,
            iters_per_step=args.iters_per_step,
            seed=args.seed,
            restrict_to_worst_class=args.worst_class,
            callback=cb,
        )
    m = res.metrics
    res.points.to_csv(out / "points.csv")
    write_labels(out / "prediction.tif", res.prediction)
    write_json(
        out / "metrics.json",
        {**m, "device": str(res.trainer.device), "image": str(args.image), "mask": str(args.mask)},
    )
    save_overlay(
        out / "overlay.png",
        image,
        res.prediction,
        res.points,
        mask,
        channel_axis=args.channel_axis,
        title=f"{Path(args.image).name}: oracle, {len(res.points)} points, mIoU {m['miou']:.3f}",
    )
    save_trainer(
        out / "model.safetensors", res.trainer, extra={"source_image": str(args.image), "oracle": True}
    )
    if not args.quiet:
        print_table(
            [
                ("image", Path(args.image).name),
                ("points", m["n_points"]),
                ("labelled fraction", f"{m['fraction_labeled'] * 100:.3f} %"),
                ("mIoU", f"{m['miou']:.4f}"),
                ("pixel accuracy", f"{m['pixel_accuracy']:.4f}"),
                ("oracle steps", m["steps"]),
                ("iterations", m["iterations"]),
                ("seconds", f"{m['seconds']:.1f}"),
                ("device", str(res.trainer.device)),
                ("outputs", str(out)),
            ]
        )
    return 0


def _sample(name: str):
    """(image, mask, channel_axis) of a bundled sample."""
    from ..samples.files import load_sample

    s = load_sample(name)
    return s.image, s.mask, s.channel_axis


def _load_images(args) -> list[tuple]:
    """[(name, image, mask, channel_axis)] from --samples and/or IMAGE MASK pairs."""
    from ..core.images import read_image, read_mask

    items = []
    if args.samples:
        for name in SAMPLE_2D:
            image, mask, ca = _sample(name)
            items.append((name, image, mask, ca))
    if len(args.pairs) % 2:
        raise CliError("give images and masks in pairs: IMAGE MASK [IMAGE MASK ...]")
    for img, msk in zip(args.pairs[::2], args.pairs[1::2]):
        items.append((Path(img).name, read_image(img), read_mask(msk), args.channel_axis))
    if not items:
        raise CliError("no images: give IMAGE MASK pairs or --samples")
    if args.seeds < 1:
        raise CliError("--seeds must be >= 1")
    return items


def _print_summary(title: str, rows: list[tuple]) -> None:
    print_table(rows, title=title, indent="  ")


def _fmt(d: dict) -> str:
    return "n/a" if d["mean"] is None else f"{d['mean']:.4f} ± {d['std']:.4f} (n={d['n']})"


def _run_experiment(args, run) -> tuple[dict, float]:
    """Shared part of `orders` and `samplers`: check, load, run ``run(items, seeds, **kw)``;
    returns (table, seconds)."""
    _check_budget(args)
    items = _load_images(args)
    setup = train_setup(args)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    table = run(
        items,
        list(range(args.seed, args.seed + args.seeds)),
        budget=args.budget,
        target=args.target,
        setup=setup,
        out_dir=args.out,
        progress=log,
    )
    return table, time.perf_counter() - t0


def cmd_orders(args) -> int:
    from ..oracle.experiments import run_orders

    table, secs = _run_experiment(args, run_orders)
    if not args.quiet:
        _print_summary(
            f"mIoU per order ({secs:.0f} s; {args.out}/orders.json)",
            [(o, _fmt(s)) for o, s in table["summary"].items()],
        )
    return 0


def cmd_samplers(args) -> int:
    from ..oracle.experiments import run_samplers

    table, secs = _run_experiment(args, run_samplers)
    if not args.quiet:
        _print_summary(
            f"mIoU per sampler: network | random forest ({secs:.0f} s; {args.out}/samplers.json)",
            [(m, _fmt(s["net"]), "|", _fmt(s["rf"])) for m, s in table["summary"].items()],
        )
    return 0
