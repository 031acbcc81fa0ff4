"""`pointseg dataset`: the dataset-level pipeline (and `--grid`) on the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    CliError,
    add_image_options,
    add_model_options,
    check_inputs,
    check_out_dir,
    print_table,
    train_setup,
)

LAYOUT = """\
folder layout (files are matched by name without the last suffix: img_000.tif <-> img_000.csv;
cells.day0.tif and cells.day1.tif are two images; a.tif + a.png in one folder is a name clash:
both are skipped with the reason):
  DATA/images/img_000.tif   images (TIFF, PNG, JPEG; 2D grey or with channels, or 3D stacks);
                            or the images directly in DATA/
  DATA/points/img_000.csv   clicked points (order,label,y,x; a stack: order,label,z,y,x) of
                            the images a human annotated
  DATA/masks/img_000.tif    ground-truth label images (oracle simulation at --rate; a stack:
                            a mask stack of the same shape)
  TEST/images/, TEST/masks/ optional test split: predictions + test mIoU
images with neither points nor mask are labelled by the dataset network (self-training).
a 3D stack is treated as its planes: each annotated plane (points on it, or a mask plane with
two classes) is pseudo-labelled and trains the dataset network; test stacks are predicted
plane by plane and their metrics count every voxel.

outputs in OUT:
  pseudo/NAME_labels.tif, NAME_confidence.tif, NAME_points.csv, NAME.json   stage 1
                                      (a stack: one set per annotated plane, NAME_zNNN_*)
  stage2.safetensors, self_labels/, final.safetensors                      stages 2-3
  test_predictions/NAME.tif, metrics.json, model.safetensors (final bundle)
  --grid: grid.json, grid.png and one folder per cell
a rerun with the same options skips finished images; bad images are skipped with a reason.
"""


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def register(sub) -> None:
    """Add the ``dataset`` subcommand to the `pointseg` subparsers."""
    from ..dataset.layout import SOURCES
    from ..dataset.train import DatasetTrainConfig

    d = DatasetTrainConfig()
    p = sub.add_parser(
        "dataset",
        help="pseudo-label a folder of images and train one network on all of them",
        description="Dataset-level training (How low can we go?, section 4): a fresh network per "
        "annotated image makes a pseudo-label + confidence; a network trained from "
        "scratch on all of them (confidence-weighted, points at full weight) labels "
        "the remaining images; a final network trains on everything.",
        epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", help="data folder (see layout below)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--test", help="test folder with images/ and masks/")
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="what annotates an image: auto (points CSV if present, else the mask via the "
        "oracle), points, oracle",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="labelled pixels per image, a fraction (oracle budget, default 0.001; for "
        "points: use only the first rate*pixels clicks)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="fraction of the annotatable images to annotate (default 1); the rest are self-labelled",
    )
    p.add_argument("--target", type=float, default=0.995, help="oracle: stop at this mIoU (default 0.995)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="stage 1 in a local process pool of N workers (torch threads = cores // N)",
    )
    p.add_argument("--scheduler", help="stage 1 on a dask.distributed cluster at this address")
    p.add_argument("--encoder-weights", help="LOCAL weights file initialising the dataset network's encoder")
    g = p.add_argument_group("dataset network")
    g.add_argument(
        "--iterations", type=int, default=d.iterations, help=f"training iterations (default {d.iterations})"
    )
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"crops per batch (default {d.batch_size})"
    )
    g.add_argument(
        "--dataset-crop-size", type=int, default=d.crop_size, help=f"crop size (default {d.crop_size})"
    )
    g.add_argument("--dataset-lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    g.add_argument(
        "--confidence-power",
        type=float,
        default=d.confidence_power,
        help="pseudo-label weight = confidence ** power (1: S4AL eq. 5, 0: unweighted)",
    )
    gg = p.add_argument_group("grid")
    gg.add_argument(
        "--grid",
        action="store_true",
        help="run fractions x rates (+ full masks) and write grid.json and grid.png",
    )
    gg.add_argument("--fractions", type=_floats, default=[0.5, 1.0], help="grid rows (default 0.5,1)")
    gg.add_argument(
        "--rates", type=_floats, default=[0.001, 0.003], help="grid columns (default 0.001,0.003)"
    )
    add_image_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_dataset)


def options_from_args(args):
    """PipelineOptions from parsed arguments (CliError on bad values)."""
    from ..dataset.pipeline import PipelineOptions

    if args.workers < 1:
        raise CliError("--workers must be >= 1")
    if args.iterations < 1 or args.batch_size < 1 or args.dataset_crop_size < 16:
        raise CliError("--iterations and --batch-size must be >= 1, --dataset-crop-size >= 16")
    setup = train_setup(args)
    # seed and threads are run-level options, not part of the per-image recipe (resume key)
    image_config = {k: v for k, v in setup.config.to_dict().items() if k not in ("seed", "threads")}
    dataset_config = {
        "iterations": args.iterations,
        "batch_size": args.batch_size,
        "crop_size": args.dataset_crop_size,
        "lr": args.dataset_lr,
        "confidence_power": args.confidence_power,
        "threads": args.threads,
    }
    return PipelineOptions(
        data=Path(args.data),
        out=Path(args.out),
        test=args.test,
        source=args.source,
        rate=args.rate,
        fraction=args.fraction,
        target=args.target,
        seed=args.seed,
        channel_axis=setup.channel_axis,
        spec=setup.spec.to_dict(),
        image_config=image_config,
        dataset_config=dataset_config,
        encoder_weights=args.encoder_weights,
        workers=args.workers,
        scheduler=args.scheduler,
        device=setup.device,
        filter_sigmas=tuple(setup.filter_bank.sigmas),
        threads=args.threads,
    )


DATASET_OUTPUTS = (
    "metrics.json",
    "model.safetensors",
    "stage2.safetensors",
    "final.safetensors",
    "grid.json",
    "grid.png",
)
DATASET_DIRS = ("pseudo", "self_labels", "test_predictions")


def check_dataset_args(args, opts) -> None:
    """Before stage 1: the data and test folders hold images, --encoder-weights is a weights
    file that fits the encoder, and the output folder is writable without touching an input
    (the run rewrites OUT/pseudo, OUT/self_labels, ... and, with --grid, OUT/rate_*)."""
    from ..dataset.grid import FULL, _tag
    from ..dataset.layout import scan_folder

    listing = scan_folder(opts.data)
    inputs = [p for it in listing.items for p in (it.image, it.points, it.mask) if p]
    if args.test:
        if not Path(args.test).is_dir():
            raise CliError(f"--test folder not found: {args.test}")
        test = scan_folder(args.test)
        inputs += [p for it in test.items for p in (it.image, it.mask) if p]
    elif args.grid:
        raise CliError("--grid needs a test folder with masks (--test)")
    if args.encoder_weights:
        check_inputs(args.encoder_weights, what="--encoder-weights")
        _check_encoder_weights(args.encoder_weights, opts.spec)
        inputs.append(args.encoder_weights)
    dirs = list(DATASET_DIRS)
    if args.grid:
        dirs += [f"rate_{_tag(r)}" for r in [*args.rates, FULL]]
    check_out_dir(opts.out, DATASET_OUTPUTS, inputs=inputs, generated_dirs=dirs)


def _check_encoder_weights(path, spec: dict) -> None:
    """InputError unless ``path`` loads (without executing code) and some of its tensors fit
    the encoder of ``spec`` (the same test stage 2 applies, minutes later)."""
    from ..core.models import ModelSpec, build_model, load_encoder_weights

    load_encoder_weights(build_model(ModelSpec.from_dict(spec)), path)


def cmd_dataset(args) -> int:
    from ..dataset.grid import iter_grid
    from ..dataset.pipeline import iter_pipeline

    opts = options_from_args(args)
    check_dataset_args(args, opts)
    events = iter_grid(opts, args.fractions, args.rates) if args.grid else iter_pipeline(opts)
    done = consume(events, args.quiet)
    if not args.quiet and done is not None:
        if args.grid:
            print_grid(done.summary)
        else:
            print_summary(done.summary)
    return 0


def consume(events, quiet: bool):
    """Drive the event generator with one tqdm bar per stage; returns the Done event."""
    from ..dataset.events import Advance, Done, Message, Stage

    bar, done = None, None
    try:
        for ev in events:
            if isinstance(ev, Stage):
                if bar is not None:
                    bar.close()
                bar = None if quiet else _bar(ev)
            elif isinstance(ev, Advance):
                if bar is not None:
                    bar.update(ev.n)
                    if ev.info:
                        bar.set_postfix_str(ev.info, refresh=False)
            elif isinstance(ev, Message):
                if ev.level == "warning" or not quiet:
                    _write(f"{'warning: ' if ev.level == 'warning' else ''}{ev.text}", bar)
            elif isinstance(ev, Done):
                done = ev
    finally:
        if bar is not None:
            bar.close()
        events.close()
    return done


def _bar(stage):
    from tqdm import tqdm

    return tqdm(
        total=stage.total, desc=stage.name, unit=stage.unit, file=sys.stderr, dynamic_ncols=True, leave=True
    )


def _write(text: str, bar) -> None:
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.3f} %" if pct else f"{v:.4f}"


def print_summary(s: dict) -> None:
    """The end-of-run table on stdout (skipped images with their reasons)."""
    rows = [
        ("annotated images", s["n_annotated"]),
        ("self-labelled images", s["n_self_labelled"]),
        ("labelled pixels / image", _fmt(s["fraction_labeled"], pct=True)),
        ("pseudo-label mIoU", _fmt(s["pseudo_label_miou"])),
        ("test mIoU", _fmt(s["miou"])),
        ("stage 1 s / image", s["seconds_per_image_stage1"] if s["seconds_per_image_stage1"] else "-"),
        ("seconds", f"{s['seconds']:.1f}"),
        ("skipped", len(s["skipped"])),
        ("bundle", s["bundle"]),
    ]
    print_table(rows)
    for sk in s["skipped"]:
        print(f"  skipped {sk['name']}: {sk['reason']}")


def print_grid(table: dict) -> None:
    """Test mIoU table: rows = fraction of images, columns = labelled pixels (+ full masks)."""
    rates = table["rates"]
    head = ["images"] + [("full" if r == "full" else f"{float(r) * 100:g}%") for r in rates]
    print("  ".join(f"{h:>8}" for h in head))
    for f in table["fractions"]:
        cells = [f"{f * 100:g}%"]
        for r in rates:
            m = [row["miou"] for row in table["rows"] if row["fraction"] == f and row["rate"] == r]
            cells.append(_fmt(m[0]) if m and m[0] is not None else "-")
        print("  ".join(f"{c:>8}" for c in cells))
