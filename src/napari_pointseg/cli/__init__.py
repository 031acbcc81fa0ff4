"""`pointseg` command line (also `python -m napari_pointseg`).

One module per command family, each with a ``register(subparsers)``: ``train`` (train,
models), ``predict``, ``oracle`` (oracle, orders, samplers), ``dataset``; ``common`` holds the
options, checks and progress they share. Bad input prints one line on stderr and exits with
code 2.

A subcommand declares through ``set_defaults``: ``func`` (runs it), ``outputs`` (``args ->``
the file names it writes in --out, so --out is checked before any work) and optionally
``precheck`` (``args ->`` None, its own up-front checks).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..core.errors import InputError
from . import dataset, oracle, predict, train
from .common import check_inputs, check_options, check_out_dir

# argparse dest -> what the error line calls that file
_INPUTS = (
    ("image", "image"),
    ("points", "points"),
    ("scribbles", "scribbles"),
    ("mask", "mask"),
    ("bundle", "model bundle"),
    ("images", "image"),
    ("pairs", "input"),
)


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error convention: one line on stderr, exit code 2 (the
    default prints the whole usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `pointseg` parser with every subcommand registered."""
    p = _Parser(
        prog="pointseg",
        description="Train a segmentation network from scratch on one image from a few clicked points.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # in the order `pointseg --help` lists them
    for register in (
        train.register,
        predict.register,
        train.register_models,
        oracle.register,
        dataset.register,
    ):
        register(sub)
    return p


def precheck(args) -> None:
    """The checks every subcommand gets before its own code runs (so before any long work):
    numeric options finite and in range, input files present and readable, --out a writable
    folder whose outputs replace no input, then the subcommand's own ``precheck``. CliError
    (one line) otherwise."""
    check_options(args)
    inputs = []
    for attr, what in _INPUTS:
        value = getattr(args, attr, None)
        values = value if isinstance(value, list) else [value]
        check_inputs(*values, what=what)
        inputs += [v for v in values if v is not None]
    outputs = getattr(args, "outputs", None)
    if outputs is not None:
        check_out_dir(args.out, outputs(args), inputs=inputs)
    own = getattr(args, "precheck", None)
    if own is not None:
        own(args)


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
