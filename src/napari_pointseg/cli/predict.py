"""`pointseg predict`: label images with a saved model bundle.

Small images take the whole-plane path (`core.bundle.predict_with_bundle`); 2D images over
`TILED_ABOVE_PIXELS` pixels per plane, zarr inputs, or any image with ``--tile`` /
``--ome-zarr`` / ``--workers`` / ``--scheduler`` take the memory-bounded tiled path
(`core.tiled_predict`): read lazily, predicted tile by tile with a halo, written tile by tile.
"""

from __future__ import annotations

from pathlib import Path

from .common import add_image_options, print_table, progress, unique_output_names

SUFFIX = "_prediction.tif"
ZARR_SUFFIX = "_prediction.ome.zarr"


def _suffix(args) -> str:
    return ZARR_SUFFIX if getattr(args, "ome_zarr", False) else SUFFIX


def _outputs(args) -> list[str]:
    names = unique_output_names(args.images, _suffix(args))
    if getattr(args, "ome_zarr", False):  # a folder from an earlier run is replaced, not refused
        names = [n for n in names if not (Path(args.out) / n).is_dir()]
    return names


def register(sub) -> None:
    """Add the ``predict`` subcommand to the `pointseg` subparsers."""
    pr = sub.add_parser(
        "predict",
        help="predict images with a saved model bundle",
        description="Predict label images with a bundle written by train/oracle/dataset. Large 2D "
        "images (TIFF, OME-Zarr) are read lazily and predicted tile by tile in bounded memory.",
    )
    pr.add_argument("bundle", help="model bundle (.safetensors)")
    pr.add_argument("images", nargs="+", help="image files (TIFF, PNG, ...) or OME-Zarr / zarr folders")
    pr.add_argument(
        "--out",
        required=True,
        help="output folder: NAME_prediction.tif per image, NAME = the file name without its "
        "last suffix (two images with the same NAME are refused)",
    )
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    pr.add_argument(
        "--tile",
        type=int,
        default=0,
        help="predict in tiles of this many pixels (read lazily, written as a tiled BigTIFF); "
        "0 = only 2D images over 4096 x 4096 pixels and zarr inputs (default 1024 px tiles there)",
    )
    pr.add_argument(
        "--halo",
        type=int,
        default=None,
        help="pixels read around each tile (default: 4 x the largest filter sigma + 64 of network "
        "context, rounded up to the network stride)",
    )
    pr.add_argument(
        "--ome-zarr",
        action="store_true",
        help="write NAME_prediction.ome.zarr (OME-Zarr, chunked like the tiles) instead of a TIFF; "
        "implies tiles",
    )
    pr.add_argument(
        "--workers",
        type=int,
        default=1,
        help="tiles predicted at once, by threads sharing one network in this process (one copy "
        "of torch and the weights; implies tiles)",
    )
    pr.add_argument(
        "--scheduler",
        default=None,
        help="dask.distributed scheduler address (tcp://host:8786): the tiles run on that cluster, "
        "whose workers must read the same image and bundle paths (implies tiles)",
    )
    pr.add_argument(
        "--normalisation",
        choices=("image", "bundle"),
        default="image",
        help="intensity percentiles: of each image (default; a strided subsample of at most 2 M "
        "pixels for large images) or the training image's, stored in the bundle",
    )
    add_image_options(pr)
    pr.set_defaults(func=cmd_predict, outputs=_outputs, precheck=precheck_images)


def _image_shape(path):
    from ..core.images import probe_image
    from ..core.lazy_images import is_zarr_path, open_lazy

    if is_zarr_path(path):
        return tuple(open_lazy(path).shape)
    return probe_image(path)[0]


def precheck_images(args) -> None:
    """Images are read one by one after the bundle loads: all must be images before any work."""
    for path in args.images:
        _image_shape(path)


def wants_tiles(args, path) -> bool:
    """True when ``path`` goes through the tiled path (see the module docstring)."""
    from ..core.lazy_images import TILED_ABOVE_PIXELS, is_zarr_path, plane_pixels

    if args.tile or args.ome_zarr or args.workers > 1 or args.scheduler or is_zarr_path(path):
        return True
    n_spatial, pixels = plane_pixels(_image_shape(path), args.channel_axis)
    return n_spatial == 2 and pixels > TILED_ABOVE_PIXELS


def cmd_predict(args) -> int:
    """Run `pointseg predict`; 0 on success (bad input raises InputError, see ``main``)."""
    from ..core.bundle import load_bundle, predict_with_bundle
    from ..core.images import read_image
    from ..core.models import choose_device
    from ..core.session import write_labels

    # NAME_prediction.tif with the full stem: img.v1.tif and img.v2.tif stay apart; two inputs
    # that would share a name were refused by `precheck` (see unique_output_names)
    names = unique_output_names(args.images, _suffix(args))
    out = Path(args.out)
    bundle = load_bundle(args.bundle)
    dev = choose_device(args.device)
    model = bundle.build(dev)
    written = []
    with progress(len(args.images), "predicting", args.quiet, unit="img") as bar:
        for path, name in zip(args.images, names):
            if wants_tiles(args, path):
                written.append(predict_file_tiled(args, bundle, model, dev, path, out / name))
            else:
                image = read_image(path)
                pred = predict_with_bundle(
                    bundle,
                    image,
                    args.channel_axis,
                    device=str(dev),
                    model=model,
                    renormalise=args.normalisation == "image",
                )
                written.append(write_labels(out / name, pred))
            bar.update(1)
    if not args.quiet:
        print_table([(Path(p).name, str(w)) for p, w in zip(args.images, written)])
    return 0


def predict_file_tiled(args, bundle, model, dev, path, target: Path) -> Path:
    """Predict one image file tile by tile and write ``target`` (tiled BigTIFF or OME-Zarr)
    tile by tile, with a progress bar over tiles."""
    from ..core import lazy_images as lazy
    from ..core import tiled_predict as tp
    from ..core import tiled_writers as writers

    image = lazy.LazyImage(lazy.open_lazy(path), args.channel_axis)
    predictor, boxes, tile = tp.prepare_tiled(
        bundle,
        image,
        tile=args.tile or tp.DEFAULT_TILE,
        halo=args.halo,
        normalisation=args.normalisation,
        device=dev,
        model=model,
    )
    plan = None
    if args.scheduler:
        plan = tp.TilePlan(
            bundle_path=str(Path(args.bundle).resolve()),
            image_path=str(Path(path).resolve()),
            channel_axis=args.channel_axis,
            rgb=None,
            normalisation=predictor.normalisation,
            feature_mean=predictor.feature_mean,
            feature_std=predictor.feature_std,
            tile=tile,
            halo=predictor.halo,
            device="cpu" if dev.type == "cpu" else str(dev),
            threads=getattr(args, "threads", None),
        )
    dtype = writers.label_dtype_for(bundle.classes)
    with progress(len(boxes), Path(path).name, args.quiet, unit="tile") as bar:

        def tiles():
            for box, labels in tp.iter_tiled_prediction(
                predictor, boxes, plan=plan, workers=args.workers, scheduler=args.scheduler
            ):
                yield box, labels
                bar.update(1)

        if args.ome_zarr:
            writer = writers.OmeZarrLabels(
                target,
                image.shape,
                dtype,
                tile,
                attrs={
                    "bundle": str(args.bundle),
                    "image": str(path),
                    "classes": [int(c) for c in bundle.classes],
                    "normalisation": predictor.normalisation.to_dict(),
                    "tile": tile,
                    "halo": predictor.halo,
                },
            )
            try:
                for box, labels in tiles():
                    writer.write(box, labels)
            except BaseException:
                writer.abort()
                raise
            return writer.close()
        return writers.write_tiled_tiff(target, image.shape, dtype, tile, tiles())
