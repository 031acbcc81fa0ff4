"""`pointseg` command line (also `python -m napari_pointseg`).

Subcommands: train, predict, models; oracle / orders / samplers (oracle package); dataset
(dataset package). Bad input prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from .cli_common import CliError, add_model_options, model_options, print_table, run_training
from .core.errors import InputError

# modules that contribute subcommands with a `register(subparsers)` function
_PLUGINS = ("napari_pointseg.oracle.cli", "napari_pointseg.dataset.cli")


def _channel_axis(value: str):
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("channel axis must be auto, none or an integer") from None


def add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel-axis", type=_channel_axis, default="auto",
                   help="axis holding channels: auto (a first/last axis of size <= 4), none, or an index")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")


def cmd_train(args) -> int:
    from .core.images import read_image, read_mask
    from .core.points import PointSet
    from .core.bundle import save_trainer
    from .core.overlay import save_overlay
    from .core.session import check_mask, make_trainer, metrics_for, write_json, write_labels

    image = read_image(args.image)
    points = PointSet.from_csv(args.points)
    spec, cfg, fb = model_options(args, order=args.order)
    t0 = time.perf_counter()
    trainer = make_trainer(image, points, channel_axis=args.channel_axis, config=cfg, spec=spec,
                           device=args.device, filter_bank=fb)
    mask = check_mask(read_mask(args.mask), trainer.image.spatial_shape) if args.mask else None
    run_training(trainer, args.quiet, f"training ({args.order} order)")
    pred = trainer.predict(None)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    write_labels(out / "prediction.tif", pred)
    save_trainer(out / "model.safetensors", trainer, extra={"source_image": str(args.image)})
    metrics = None
    if mask is not None:
        metrics = metrics_for(mask, pred, points, seconds, order=args.order,
                              iterations=trainer.iteration, steps=trainer.step,
                              device=str(trainer.device))
        write_json(out / "metrics.json", metrics)
    save_overlay(out / "overlay.png", image, pred, points, mask, channel_axis=args.channel_axis,
                 title=f"{Path(args.image).name}: {len(points)} points, "
                       + (f"mIoU {metrics['miou']:.3f}" if metrics else f"{seconds:.0f} s"))
    if not args.quiet:
        rows = [("image", Path(args.image).name), ("points", len(points)),
                ("classes", " ".join(map(str, trainer.classes.tolist()))),
                ("iterations", trainer.iteration), ("seconds", f"{seconds:.1f}"),
                ("device", str(trainer.device))]
        if metrics:
            rows += [("mIoU", f"{metrics['miou']:.4f}"), ("pixel accuracy", f"{metrics['pixel_accuracy']:.4f}"),
                     ("labelled fraction", f"{metrics['fraction_labeled'] * 100:.3f} %")]
        rows.append(("outputs", str(out)))
        print_table(rows)
    return 0


def cmd_predict(args) -> int:
    from .core.bundle import load_bundle, predict_with_bundle
    from .core.images import read_image
    from .core.models import choose_device
    from .core.session import write_labels
    from .cli_common import progress

    bundle = load_bundle(args.bundle)
    dev = choose_device(args.device)
    model = bundle.build(dev)
    out = Path(args.out)
    written = []
    with progress(len(args.images), "predicting", args.quiet, unit="img") as bar:
        for path in args.images:
            image = read_image(path)
            pred = predict_with_bundle(bundle, image, args.channel_axis, device=str(dev), model=model)
            written.append(write_labels(out / (Path(path).name.split(".")[0] + "_prediction.tif"), pred))
            bar.update(1)
    if not args.quiet:
        print_table([(Path(p).name, str(w)) for p, w in zip(args.images, written)])
    return 0


def cmd_models(args) -> int:
    from .core.models import ARCHITECTURES, encoder_names

    print("architectures:", ", ".join(ARCHITECTURES))
    print("encoders:", ", ".join(encoder_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointseg",
        description="Train a segmentation network from scratch on one image from a few clicked points.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from .core.schedule import ORDERS

    t = sub.add_parser("train", help="train on one image from a points CSV",
                       description="Train a fresh network on IMAGE from the points in POINTS.csv, "
                                   "admitted in the chosen order; write prediction.tif, "
                                   "model.safetensors, overlay.png and (with --mask) metrics.json.")
    t.add_argument("image", help="image file (TIFF, PNG, ...)")
    t.add_argument("points", help="points CSV: order,label,y,x (z,y,x for stacks)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--order", choices=ORDERS, default="correct", help="admission order (default correct)")
    t.add_argument("--mask", help="ground-truth label image: writes metrics.json")
    add_image_options(t)
    add_model_options(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict images with a saved model bundle",
                        description="Predict label images with a bundle written by train/oracle/dataset.")
    pr.add_argument("bundle", help="model bundle (.safetensors)")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--out", required=True, help="output folder (NAME_prediction.tif per image)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    add_image_options(pr)
    pr.set_defaults(func=cmd_predict)

    m = sub.add_parser("models", help="list architectures and encoders")
    m.set_defaults(func=cmd_models)

    for name in _PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        mod.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"pointseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pointseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
