"""`pointseg` command line (also `python -m napari_pointseg`).

Subcommands: train, predict, models; oracle / orders / samplers (oracle package); dataset
(dataset package). Bad input prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

from .cli_common import (CliError, add_model_options, check_inputs, check_options, check_out_dir,
                         model_options, print_table, run_training, unique_output_names)
from .core.errors import InputError

# what each subcommand writes in --out; `precheck` refuses, before any work, an --out that
# would overwrite one of the inputs (`pointseg dataset` checks its folders in its own module)
_OUTPUTS = {
    "train": lambda a: ("prediction.tif", "model.safetensors", "overlay.png", "metrics.json"),
    "predict": lambda a: unique_output_names(a.images, "_prediction.tif"),
    "oracle": lambda a: ("points.csv", "prediction.tif", "metrics.json", "overlay.png",
                         "model.safetensors"),
    "orders": lambda a: ("orders.json", "orders.png"),
    "samplers": lambda a: ("samplers.json", "samplers.png"),
}
_INPUTS = (("image", "image"), ("points", "points"), ("mask", "mask"), ("bundle", "model bundle"),
           ("images", "image"), ("pairs", "input"))


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error convention: one line on stderr, exit code 2 (the
    default prints the whole usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


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

    # options, files and --out were checked by `precheck`; the inputs are read before training
    spec, cfg, fb = model_options(args, order=args.order)
    out = Path(args.out)
    image = read_image(args.image)
    points = PointSet.from_csv(args.points)
    mask = read_mask(args.mask) if args.mask else None
    t0 = time.perf_counter()
    trainer = make_trainer(image, points, channel_axis=args.channel_axis, config=cfg, spec=spec,
                           device=args.device, filter_bank=fb)
    if mask is not None:
        mask = check_mask(mask, trainer.image.spatial_shape, labels=points.labels)
    run_training(trainer, args.quiet, f"training ({args.order} order)")
    pred = trainer.predict(None)
    seconds = time.perf_counter() - t0
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

    # NAME_prediction.tif with the full stem: img.v1.tif and img.v2.tif stay apart; two inputs
    # that would share a name were refused by `precheck` (see unique_output_names)
    names = unique_output_names(args.images, "_prediction.tif")
    out = Path(args.out)
    bundle = load_bundle(args.bundle)
    dev = choose_device(args.device)
    model = bundle.build(dev)
    written = []
    with progress(len(args.images), "predicting", args.quiet, unit="img") as bar:
        for path, name in zip(args.images, names):
            image = read_image(path)
            pred = predict_with_bundle(bundle, image, args.channel_axis, device=str(dev), model=model)
            written.append(write_labels(out / name, pred))
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
    p = _Parser(
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
    pr.add_argument("--out", required=True, help="output folder: NAME_prediction.tif per image, NAME = the file name without its "
                         "last suffix (two images with the same NAME are refused)")
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


def precheck(args) -> None:
    """The checks every subcommand gets before its own code runs (so before any long work):
    numeric options finite and in range, input files present and readable, --out a writable
    folder whose outputs replace no input. CliError (one line) otherwise."""
    check_options(args)
    inputs = []
    for attr, what in _INPUTS:
        value = getattr(args, attr, None)
        values = value if isinstance(value, list) else [value]
        check_inputs(*values, what=what)
        inputs += [v for v in values if v is not None]
    if args.command in _OUTPUTS:
        check_out_dir(args.out, _OUTPUTS[args.command](args), inputs=inputs)
    if args.command == "predict":  # images are read one by one later: all must be images
        from .core.images import probe_image

        for path in args.images:
            probe_image(path)
    pairs = getattr(args, "pairs", None)
    if pairs and len(pairs) % 2 == 0:
        _check_pairs(pairs, args.channel_axis)


def _check_pairs(pairs: list, channel_axis) -> None:
    """orders / samplers run every pair in turn: a bad last pair must fail before the first
    one trains (the pairs are small 2D images: reading them twice is cheap)."""
    from .core.images import read_image, read_mask, to_channels_first
    from .core.session import check_mask

    for img, msk in zip(pairs[::2], pairs[1::2]):
        shape = to_channels_first(read_image(img), channel_axis).shape[1:]
        try:
            check_mask(read_mask(msk), shape)
        except InputError as e:
            raise InputError(f"{msk}: {e}") from None


def main(argv=None) -> int:
    """Run ``pointseg`` with ``argv`` (default: sys.argv); returns the exit code.

    Bad input (InputError, an argparse error, an OS error on a user-named file, memory
    exhausted by a huge input) is exactly one line on stderr and exit code 2. Warnings raised
    while the command runs are shown after it succeeds and dropped when it fails, so the
    error line is never buried under numpy or torch text.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed as one line)
        return e.code if isinstance(e.code, int) else 2
    with warnings.catch_warnings(record=True) as caught:
        try:
            precheck(args)
            code = int(args.func(args) or 0)
        except InputError as e:
            return _fail(args.command, str(e))
        except (OSError, MemoryError) as e:
            what = "out of memory" if isinstance(e, MemoryError) else type(e).__name__
            return _fail(args.command, f"{what}: {e}")
        except KeyboardInterrupt:
            print(f"pointseg {args.command}: interrupted", file=sys.stderr)
            return 130
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return code


def _fail(command: str, message: str) -> int:
    """The one error line (a multi-line message from a library is joined); exit code 2."""
    text = " ".join(message.split()) or "failed"
    if len(text) > 600:
        text = text[:600] + "..."
    print(f"pointseg {command}: error: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
