"""What the training worker of "Annotate & train" sends to the main thread.

`_worker.training_loop` yields these small dataclasses (as `dataset.events` does for the
dataset runner); `_training.TrainingController` dispatches on their type. They carry results
only: the main thread turns them into layer and status updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Status:
    """A line for the status label (e.g. while the network is being built)."""

    text: str


@dataclass
class TrainerReady:
    """The worker built a new SparseTrainer: from now on it is the image's network."""

    trainer: Any


@dataclass
class Progress:
    """A throttled `TrainUpdate` (step, loss, points used, maybe a prediction of a plane)."""

    update: Any


@dataclass
class JobDone:
    """A `Job` ran in the training thread: its ``result``, or the ``error`` it raised."""

    job: Any
    result: Any = None
    error: BaseException | None = None
