"""A small Table-2-style grid: fraction of annotated images x labelled pixels per image.

Every cell is one `iter_pipeline` run in ``out/rate_R/frac_F``; the cells of one rate share
their stage-1 outputs (``out/rate_R/pseudo``: the annotated subsets are nested), and the
reference column ``full`` trains on the true masks of the same images. Writes ``grid.json``
(a table of test mIoU) and ``grid.png``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from ..core.errors import InputError
from .events import Done, Message
from .pipeline import PipelineOptions, iter_pipeline

FULL = "full"


def _tag(v) -> str:
    return FULL if v == FULL else f"{float(v):g}"


def iter_grid(
    opts: PipelineOptions, fractions: Sequence[float], rates: Sequence[float], cancel=None
) -> Iterator[object]:
    """Run every cell; yields the cells' events (Messages name the cell) and finally Done with
    the table ``{'rows': [{fraction, rate, miou, fraction_labeled, pseudo_label_miou}], ...}``.

    rates: sampling rates (fraction of labelled pixels per image); the 'full' reference
    column (true masks) is always added. Needs test masks (``opts.test``).
    """
    if opts.test is None:
        raise InputError("--grid needs a test folder with masks (--test)")
    rows = []
    for rate in list(rates) + [FULL]:
        for frac in fractions:
            cell = opts.out / f"rate_{_tag(rate)}" / f"frac_{_tag(frac)}"
            o = replace(
                opts,
                out=cell,
                fraction=float(frac),
                rate=None if rate == FULL else float(rate),
                source="mask" if rate == FULL else opts.source,
                pseudo_dir=opts.out / f"rate_{_tag(rate)}" / "pseudo",
            )
            yield Message(f"grid cell: {frac:g} of the images, labelled pixels {_tag(rate)}")
            for ev in iter_pipeline(o, cancel):
                if isinstance(ev, Done):
                    s = ev.summary
                    rows.append(
                        {
                            "fraction": float(frac),
                            "rate": rate,
                            "miou": s["miou"],
                            "fraction_labeled": s["fraction_labeled"],
                            "pseudo_label_miou": s["pseudo_label_miou"],
                            "n_annotated": s["n_annotated"],
                            "seconds": s["seconds"],
                            "metrics": str(cell / "metrics.json"),
                        }
                    )
                else:
                    yield ev
    table = {
        "rows": rows,
        "fractions": [float(f) for f in fractions],
        "rates": [float(r) for r in rates] + [FULL],
        "source": opts.source,
    }
    from ..core.session import write_json

    write_json(opts.out / "grid.json", table)
    plot_grid(table, opts.out / "grid.png")
    yield Done(table)


def plot_grid(table: dict, path: str | Path) -> Path:
    """Test mIoU against the fraction of annotated images, one line per sampling rate (PNG).

    Uses matplotlib's Agg canvas directly (no pyplot, no GUI backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for rate in table["rates"]:
        pts = sorted(
            (r["fraction"], r["miou"]) for r in table["rows"] if r["rate"] == rate and r["miou"] is not None
        )
        if not pts:
            continue
        x, y = zip(*pts)
        label = "full masks" if rate == FULL else f"{float(rate) * 100:g} % pixels"
        ax.plot(
            [v * 100 for v in x],
            y,
            "--" if rate == FULL else "-o",
            label=label,
            color="black" if rate == FULL else None,
        )
    ax.set_xlabel("annotated images (%)")
    ax.set_ylabel("test mIoU")
    ax.set_title("Dataset-level training (Table 2 style)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
