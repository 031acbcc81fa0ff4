"""Pieces every `pointseg` subcommand shares: image/model/training options, up-front checks,
progress, errors."""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import InputError


class CliError(InputError):
    """Bad command-line input; printed as one line, exit code 2."""


# Every numeric option of every subcommand, by argparse ``dest``: (integer?, low, high,
# low exclusive?). `check_options` applies the rows whose option the subcommand has, so a
# new subcommand reusing an option name is checked for free. The upper bounds only stop
# absurd values (typos, overflow) before any long work; they are far above useful settings.
_OPTION_RANGES = {
    "seed": (True, 0, 2**32 - 1, False),
    "seeds": (True, 1, 1000, False),
    "encoder_depth": (True, 1, 5, False),
    "crop_size": (True, 0, 65536, False),  # 0 = the whole image
    "input_scale": (True, 0, 8, False),  # 0 = auto
    "threads": (True, 1, 4096, False),
    "iters_per_point": (False, 0, 1e6, True),
    "lr": (False, 0, 10, True),
    "entropy_weight": (False, 0, 1e6, False),
    "budget": (False, 0, 1, True),
    "target": (False, 0, 1, True),
    "points_per_step": (True, 1, 10**7, False),
    "iters_per_step": (True, 1, 10**6, False),
    "rate": (False, 0, 1, True),
    "fraction": (False, 0, 1, True),
    "workers": (True, 1, 1024, False),
    "iterations": (True, 1, 10**7, False),
    "batch_size": (True, 1, 4096, False),
    "dataset_crop_size": (True, 16, 65536, False),
    "dataset_lr": (False, 0, 10, True),
    "confidence_power": (False, 0, 100, False),
    "fractions": (False, 0, 1, True),
    "rates": (False, 0, 1, True),
    "scribble_spacing": (True, 1, 4096, False),
    "scribble_max": (True, 0, 10**7, False),
    "tile": (True, 0, 65536, False),  # 0 = automatic (pointseg predict)
    "halo": (True, 0, 4096, False),
}


def check_options(args: argparse.Namespace) -> None:
    """CliError (one line) unless every numeric option present in ``args`` is a finite number
    within its range (see ``_OPTION_RANGES``): NaN, inf, negative seeds... never reach the
    training code."""
    for dest, (integer, low, high, low_open) in _OPTION_RANGES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            ok = isinstance(v, (int, float)) and math.isfinite(v) and v <= high
            ok = ok and (v > low if low_open else v >= low)
            if ok and integer:
                ok = float(v).is_integer()
            if not ok:
                lo = f"> {_num(low)}" if low_open else f">= {_num(low)}"
                kind = " (an integer)" if integer else ""
                raise CliError(
                    f"--{dest.replace('_', '-')} must be {lo} and <= {_num(high)}{kind}, got {_num(v)}"
                )


def _num(v) -> str:
    """A number as a user typed it (no ``np.float64(...)``, no ``1000000.0``)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return str(v) if isinstance(v, int) else f"{float(v):g}"


def _same_file_key(p) -> str:
    """A comparable identity of a path (symlinks resolved, case folded: a case-insensitive
    file system would merge ``IMG.tif`` and ``img.tif``)."""
    return os.path.normcase(os.path.realpath(p)).casefold()


def check_inputs(*paths, what: str = "input") -> None:
    """CliError unless every path (None skipped) is an existing, readable regular file."""
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        if not p.exists():
            raise CliError(f"{what} file not found: {p}")
        if what == "image" and _is_zarr(p):  # an OME-Zarr / zarr image is a folder
            continue
        if not p.is_file():
            raise CliError(f"{what} {p} is not a file")
        if not os.access(p, os.R_OK):
            raise CliError(f"{what} file {p} is not readable")


def _is_zarr(p: Path) -> bool:
    from ..core.lazy_images import is_zarr_path

    return is_zarr_path(p)


def check_out_dir(out, outputs=(), inputs=(), generated_dirs=()) -> Path:
    """Refuse, before any long work, an output folder the run could not write or that would
    overwrite an input.

    out: the --out folder. outputs: file names the run writes in it. inputs: input files.
    generated_dirs: sub-folders of ``out`` whose content the run (re)writes (no input may
    lie in them). CliError when ``out`` is a file or lies under one, is not writable, an
    output name is a folder, or an output would replace an input file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is an existing file; give a folder")
    anc = out
    while not anc.exists() and anc.parent != anc:
        anc = anc.parent
    if not anc.is_dir():
        raise CliError(f"--out {out} lies under {anc}, which is a file")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise CliError(f"--out {out}: cannot write in {anc}")
    ins = {_same_file_key(p): Path(p) for p in inputs if p is not None}
    for name in outputs:
        target = out / name
        if target.is_dir():
            raise CliError(f"--out {out}: the output {target} is a folder")
        if _same_file_key(target) in ins:
            raise CliError(
                f"--out {out} would overwrite the input {ins[_same_file_key(target)]}; "
                "choose another output folder"
            )
    for d in generated_dirs:
        root = _same_file_key(out / d) + os.sep
        for key, p in ins.items():
            if key.startswith(root):
                raise CliError(
                    f"--out {out}: the input {p} lies in {out / d}, which the run "
                    "rewrites; choose another output folder"
                )
    return out


def unique_output_names(inputs, suffix: str) -> list[str]:
    """Output file name per input: the full stem (only the last suffix dropped: ``img.v1.tif``
    -> ``img.v1`` + suffix). CliError when two inputs would share a name (``a/img.tif`` and
    ``b/img.tif``, or one file given twice): rather than overwriting one output with another
    or inventing names, the user is asked to rename or predict them in separate runs."""
    seen: dict[str, Path] = {}
    names = []
    for p in map(Path, inputs):
        name = p.stem + suffix
        key = name.casefold()
        if key in seen:
            other = seen[key]
            why = (
                "is given twice"
                if _same_file_key(other) == _same_file_key(p)
                else f"and {other} would both be written as {name}"
            )
            raise CliError(f"{p} {why}; rename one or use separate runs")
        seen[key] = p
        names.append(name)
    return names


def _channel_axis(value: str):
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("channel axis must be auto, none or an integer") from None


def add_image_options(p: argparse.ArgumentParser) -> None:
    """--channel-axis (auto / none / an index) and --quiet."""
    p.add_argument(
        "--channel-axis",
        type=_channel_axis,
        default="auto",
        help="axis holding channels: auto (a first/last axis of size <= 4), none, or an index",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary table")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--arch/--encoder/--device/--seed/... with the library's defaults."""
    from ..core.models import FULL_RES_MAX_SIDE, REDUCED_SCALE, ModelSpec
    from ..core.trainer import TrainConfig

    d, c = ModelSpec(), TrainConfig()
    g = p.add_argument_group("model and training")
    g.add_argument("--arch", default=d.arch, help=f"smp architecture (default {d.arch})")
    g.add_argument("--encoder", default=d.encoder, help=f"smp encoder, random init (default {d.encoder})")
    g.add_argument("--encoder-depth", type=int, default=d.encoder_depth, help="Unet-family encoder depth")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    g.add_argument("--seed", type=int, default=c.seed, help="random seed (reproducible on CPU)")
    g.add_argument(
        "--iters-per-point",
        type=float,
        default=None,
        help=f"iterations per admitted step (default {c.iters_per_step} per step)",
    )
    g.add_argument("--lr", type=float, default=c.lr, help=f"learning rate (default {c.lr})")
    g.add_argument(
        "--crop-size",
        type=int,
        default=c.crop_size,
        help=f"training crop size in network pixels (image pixels / input scale); "
        f"0 = whole image every iteration (default {c.crop_size})",
    )
    g.add_argument(
        "--input-scale",
        type=int,
        default=d.input_scale,
        help="the network sees the image downsampled by this factor (its logits are "
        "upsampled, with a full-resolution head); 0 = auto: 1 for images up to "
        f"{FULL_RES_MAX_SIDE} px, else {REDUCED_SCALE} (default 0)",
    )
    g.add_argument(
        "--entropy-weight",
        type=float,
        default=c.entropy_weight,
        help=f"weight of the prediction-entropy term on unlabelled pixels; 0 = off "
        f"(default {c.entropy_weight})",
    )
    g.add_argument(
        "--no-filters", action="store_true", help="feed only the raw channels (no fixed filter bank)"
    )
    g.add_argument(
        "--forest",
        choices=("colour", "always", "off"),
        default="colour",
        help="give the network the class probabilities of a random forest fitted on the clicks "
        "as extra input channels (of its full-resolution head): on images whose channels "
        "differ (default colour), on every image, or off",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the cores shared fairly between the "
        "pointseg trainings running on this machine)",
    )


def train_setup(args: argparse.Namespace, **overrides):
    """The TrainSetup of parsed options: --channel-axis, --device, the model and training
    options (+ TrainConfig field ``overrides``), --no-filters."""
    from ..core.features import FilterBank
    from ..core.models import ModelSpec
    from ..core.schedule import with_iters_per_step
    from ..core.train_setup import TrainSetup
    from ..core.trainer import TrainConfig

    check_options(args)
    spec = ModelSpec(
        arch=args.arch, encoder=args.encoder, encoder_depth=args.encoder_depth, input_scale=args.input_scale
    )
    cfg = dict(seed=args.seed, lr=args.lr, crop_size=args.crop_size or None, threads=args.threads)
    cfg["entropy_weight"] = args.entropy_weight
    forest = getattr(args, "forest", "colour")
    if forest == "off":
        cfg["forest_trees"] = 0
    else:
        cfg["forest_on"] = forest
    config = TrainConfig(**{**cfg, **overrides})
    if args.iters_per_point is not None:
        config = with_iters_per_step(config, max(1, int(round(args.iters_per_point))))
    return TrainSetup(
        channel_axis=getattr(args, "channel_axis", "auto"),
        spec=spec,
        config=config,
        device=args.device,
        filter_bank=FilterBank(()) if getattr(args, "no_filters", False) else FilterBank(),
    )


@contextmanager
def progress(total: int | None, desc: str, quiet: bool, unit: str = "it"):
    """A tqdm bar on stderr (a no-op object with --quiet)."""
    if quiet:

        class _Null:
            n = 0

            def update(self, n=1):
                self.n += n

            def set_postfix_str(self, *a, **k):
                pass

        yield _Null()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()


def run_training(trainer, quiet: bool, desc: str = "training"):
    """Consume ``trainer.run()`` with a progress bar over admitted points."""
    with progress(len(trainer.points), desc, quiet, unit="pt") as bar:
        for u in trainer.run():
            if u.n_active > bar.n:
                bar.update(u.n_active - bar.n)
            if u.iteration % 5 == 0:
                bar.set_postfix_str(f"loss {u.loss:.3f} it {u.iteration}")
    return trainer


def print_table(rows, title: str | None = None, indent: str = "") -> None:
    """Rows of (name, value, ...) on stdout, names padded to one width, under ``title``."""
    if title:
        print(title)
    w = max(len(str(r[0])) for r in rows)
    for r in rows:
        print(f"{indent}{str(r[0]):<{w}}  " + "  ".join(str(x) for x in r[1:]))
