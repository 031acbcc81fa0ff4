"""What the dataset pipeline reports while it runs (consumed by the CLI bars and widget 2).

`iter_pipeline` is a generator of these events, so the same run drives a tqdm bar per stage
in the CLI and a napari progress bar in a thread_worker, and stops cleanly when its consumer
stops iterating (Cancel).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Cancelled(Exception):
    """Raised inside a running job when the user cancelled the run."""


@dataclass
class Stage:
    """A stage starts: ``total`` units of work (images or iterations), ``unit`` names them."""

    name: str
    total: int
    unit: str = "img"


@dataclass
class Advance:
    """``n`` more units of the current stage are done; ``info`` a short status text."""

    n: int = 1
    info: str = ""


@dataclass
class Message:
    """A line for the log (skipped images, resumed work, warnings). level: info / warning."""

    text: str
    level: str = "info"


@dataclass
class Done:
    """The run finished. ``summary`` is what metrics.json holds (plus output paths)."""

    summary: dict = field(default_factory=dict)
