"""`pointseg predict`: label images with a saved model bundle."""

from __future__ import annotations

from pathlib import Path

from .common import add_image_options, print_table, progress, unique_output_names

SUFFIX = "_prediction.tif"


def register(sub) -> None:
    """Add the ``predict`` subcommand to the `pointseg` subparsers."""
    pr = sub.add_parser(
        "predict",
        help="predict images with a saved model bundle",
        description="Predict label images with a bundle written by train/oracle/dataset.",
    )
    pr.add_argument("bundle", help="model bundle (.safetensors)")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument(
        "--out",
        required=True,
        help="output folder: NAME_prediction.tif per image, NAME = the file name without its "
        "last suffix (two images with the same NAME are refused)",
    )
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    add_image_options(pr)
    pr.set_defaults(
        func=cmd_predict, outputs=lambda a: unique_output_names(a.images, SUFFIX), precheck=precheck_images
    )


def precheck_images(args) -> None:
    """Images are read one by one after the bundle loads: all must be images before any work."""
    from ..core.images import probe_image

    for path in args.images:
        probe_image(path)


def cmd_predict(args) -> int:
    """Run `pointseg predict`; 0 on success (bad input raises InputError, see ``main``)."""
    from ..core.bundle import load_bundle, predict_with_bundle
    from ..core.images import read_image
    from ..core.models import choose_device
    from ..core.session import write_labels

    # NAME_prediction.tif with the full stem: img.v1.tif and img.v2.tif stay apart; two inputs
    # that would share a name were refused by `precheck` (see unique_output_names)
    names = unique_output_names(args.images, SUFFIX)
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
