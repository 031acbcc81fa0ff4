"""Pieces every `pointseg` subcommand shares: model/training options, progress, errors."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from .core.errors import InputError


class CliError(InputError):
    """Bad command-line input; printed as one line, exit code 2."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--arch/--encoder/--device/--seed/... with the library's defaults."""
    from .core.models import ModelSpec
    from .core.trainer import TrainConfig

    d, c = ModelSpec(), TrainConfig()
    g = p.add_argument_group("model and training")
    g.add_argument("--arch", default=d.arch, help=f"smp architecture (default {d.arch})")
    g.add_argument("--encoder", default=d.encoder, help=f"smp encoder, random init (default {d.encoder})")
    g.add_argument("--encoder-depth", type=int, default=d.encoder_depth, help="Unet-family encoder depth")
    g.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    g.add_argument("--seed", type=int, default=c.seed, help="random seed (reproducible on CPU)")
    g.add_argument("--iters-per-point", type=float, default=None,
                   help=f"iterations per admitted step (default {c.iters_per_step} per step)")
    g.add_argument("--lr", type=float, default=c.lr, help=f"learning rate (default {c.lr})")
    g.add_argument("--crop-size", type=int, default=c.crop_size,
                   help="training crop size; 0 = whole image every iteration")
    g.add_argument("--entropy-weight", type=float, default=c.entropy_weight,
                   help=f"weight of the prediction-entropy term on unlabelled pixels; 0 = off "
                        f"(default {c.entropy_weight})")
    g.add_argument("--no-filters", action="store_true",
                   help="feed only the raw channels (no fixed filter bank)")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: the cores shared fairly between the "
                        "pointseg trainings running on this machine)")


def model_options(args: argparse.Namespace, **overrides):
    """(ModelSpec, TrainConfig, FilterBank) from parsed options (+ config overrides)."""
    from .core.features import FilterBank
    from .core.models import ModelSpec
    from .core.trainer import TrainConfig

    spec = ModelSpec(arch=args.arch, encoder=args.encoder, encoder_depth=args.encoder_depth)
    cfg = dict(seed=args.seed, lr=args.lr, crop_size=args.crop_size or None, threads=args.threads)
    if args.entropy_weight < 0:
        raise CliError("--entropy-weight must be >= 0")
    cfg["entropy_weight"] = args.entropy_weight
    if args.iters_per_point is not None:
        if args.iters_per_point <= 0:
            raise CliError("--iters-per-point must be > 0")
        ips = max(1, int(round(args.iters_per_point)))
        cfg.update(iters_per_step=ips, min_iters_per_step=min(ips, TrainConfig().min_iters_per_step))
    cfg.update(overrides)
    fb = FilterBank(()) if getattr(args, "no_filters", False) else FilterBank()
    return spec, TrainConfig(**cfg), fb


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
