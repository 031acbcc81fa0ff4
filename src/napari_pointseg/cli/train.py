"""`pointseg train` (one image from a points CSV) and `pointseg models`."""

from __future__ import annotations

import time
from pathlib import Path

from .common import add_image_options, add_model_options, print_table, run_training, train_setup

TRAIN_OUTPUTS = ("prediction.tif", "model.safetensors", "overlay.png", "metrics.json")


def register(sub) -> None:
    """Add the ``train`` subcommand to the `pointseg` subparsers."""
    from ..core.schedule import ORDERS

    t = sub.add_parser(
        "train",
        help="train on one image from a points CSV and / or painted scribbles",
        description="Train a fresh network on IMAGE from the points in POINTS.csv and / or "
        "the strokes of a painted label image (--scribbles), admitted in the chosen order; "
        "write prediction.tif, model.safetensors, overlay.png and (with --mask) metrics.json.",
    )
    t.add_argument("image", help="image file (TIFF, PNG, ...)")
    t.add_argument("points", nargs="?", help="points CSV: order,label,y,x (z,y,x for stacks)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--order", choices=ORDERS, default="correct", help="admission order (default correct)")
    t.add_argument("--mask", help="ground-truth label image: writes metrics.json")
    add_scribble_options(t)
    add_image_options(t)
    add_model_options(t)
    t.set_defaults(func=cmd_train, outputs=lambda a: TRAIN_OUTPUTS, precheck=precheck_train)


def add_scribble_options(t) -> None:
    """--scribbles, --scribble-spacing, --scribble-max (see core/scribbles.py)."""
    from ..core.scribbles import DEFAULT_MAX_PER_STROKE, DEFAULT_SPACING

    g = t.add_argument_group("scribbles")
    g.add_argument(
        "--scribbles",
        help="painted label image of the image's spatial shape (0 = not painted, else the "
        "class value); its strokes (connected components) follow the points, interleaved "
        "across classes, largest first",
    )
    g.add_argument(
        "--scribble-spacing",
        type=int,
        default=DEFAULT_SPACING,
        help=f"keep one pixel per N x N cell of a stroke (default {DEFAULT_SPACING})",
    )
    g.add_argument(
        "--scribble-max",
        type=int,
        default=DEFAULT_MAX_PER_STROKE,
        help=f"at most this many pixels per stroke, 0 = no cap (default {DEFAULT_MAX_PER_STROKE})",
    )


def precheck_train(args) -> None:
    """A points CSV, scribbles or both."""
    from .common import CliError

    if not args.points and not args.scribbles:
        raise CliError("give a points CSV, --scribbles LABELS.tif, or both")


def read_annotations(args, image):
    """The points CSV then the thinned scribble strokes, in one order (a PointSet)."""
    from ..core.errors import InputError
    from ..core.images import guess_channel_axis, read_mask
    from ..core.points import PointSet
    from ..core.scribbles import scribble_points

    points = PointSet.from_csv(args.points) if args.points else None
    if not args.scribbles:
        return points
    labels = read_mask(args.scribbles)
    axis = guess_channel_axis(image.shape) if args.channel_axis == "auto" else args.channel_axis
    spatial = tuple(n for i, n in enumerate(image.shape) if axis is None or i != axis % image.ndim)
    if labels.shape != spatial:
        raise InputError(f"scribbles {args.scribbles} have shape {labels.shape}, the image {spatial}")
    scribbles = scribble_points(labels, args.scribble_spacing, args.scribble_max)
    if points is None:
        return scribbles
    if points.ndim != scribbles.ndim:
        raise InputError(f"points have {points.ndim} coordinates but the scribbles {scribbles.ndim}")
    # the order of clicks and strokes is unknown here: the CSV's clicks first, then the strokes
    return points.renumbered().append(scribbles.coords, scribbles.labels)


def register_models(sub) -> None:
    """Add the ``models`` subcommand (what --arch / --encoder accept)."""
    m = sub.add_parser("models", help="list architectures and encoders")
    m.set_defaults(func=cmd_models)


def cmd_train(args) -> int:
    """Run `pointseg train`; 0 on success (bad input raises InputError, see ``main``)."""
    from ..core.bundle import save_trainer
    from ..core.checks import check_mask
    from ..core.images import read_image, read_mask
    from ..core.overlay import save_overlay
    from ..core.session import make_trainer, metrics_for, write_json, write_labels

    # options, files and --out were checked by `precheck`; the inputs are read before training
    setup = train_setup(args, order=args.order)
    out = Path(args.out)
    image = read_image(args.image)
    points = read_annotations(args, image)
    mask = read_mask(args.mask) if args.mask else None
    t0 = time.perf_counter()
    trainer = make_trainer(image, points, setup)
    if mask is not None:
        mask = check_mask(mask, trainer.image.spatial_shape, labels=points.labels)
    run_training(trainer, args.quiet, f"training ({args.order} order)")
    pred = trainer.predict(None)
    seconds = time.perf_counter() - t0
    write_labels(out / "prediction.tif", pred)
    save_trainer(out / "model.safetensors", trainer, extra={"source_image": str(args.image)})
    metrics = None
    if mask is not None:
        metrics = metrics_for(
            mask,
            pred,
            points,
            seconds,
            order=args.order,
            iterations=trainer.iteration,
            steps=trainer.step,
            device=str(trainer.device),
        )
        write_json(out / "metrics.json", metrics)
    save_overlay(
        out / "overlay.png",
        image,
        pred,
        points,
        mask,
        channel_axis=args.channel_axis,
        title=f"{Path(args.image).name}: {len(points)} points, "
        + (f"mIoU {metrics['miou']:.3f}" if metrics else f"{seconds:.0f} s"),
    )
    if not args.quiet:
        rows = [
            ("image", Path(args.image).name),
            ("points", len(points)),
            ("classes", " ".join(map(str, trainer.classes.tolist()))),
            ("iterations", trainer.iteration),
            ("seconds", f"{seconds:.1f}"),
            ("device", str(trainer.device)),
        ]
        if metrics:
            rows += [
                ("mIoU", f"{metrics['miou']:.4f}"),
                ("pixel accuracy", f"{metrics['pixel_accuracy']:.4f}"),
                ("labelled fraction", f"{metrics['fraction_labeled'] * 100:.3f} %"),
            ]
        rows.append(("outputs", str(out)))
        print_table(rows)
    return 0


def cmd_models(args) -> int:
    """Print the architectures and encoders --arch / --encoder accept."""
    from ..core.models import ARCHITECTURES, encoder_names

    print("architectures:", ", ".join(ARCHITECTURES))
    print("encoders:", ", ".join(encoder_names()))
    return 0
