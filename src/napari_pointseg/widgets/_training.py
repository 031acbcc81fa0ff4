"""Training of "Annotate & train": the worker around `_worker.training_loop` and its events.

`TrainingController` starts, stops, resumes and resets the training of the chosen image,
keeps one network per image layer, hands edited points to the running trainer, prepares the
chosen image's network input ahead of Train, and turns the worker's typed events (`_events`)
into status text and prediction-layer updates. The worker is a napari ``thread_worker``
started with ``.start()`` (`_threads.start_worker`); everything here runs in the main thread.

The training opens no progress bar in napari's activity dock: it has no end (it waits for
more clicks), and while any bar is open napari animates an "in progress" indicator in its
status bar, which repainted the whole window ~25 times a second and halved the training's
iterations on 2 cores (docs/training.md, twenty-seventh session). The status line and Stop
are its progress and its cancel.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ..core.errors import InputError
from ..core.points import PointSet
from . import _messages
from ._events import JobDone, Progress, Status, TrainerReady
from ._threads import start_worker
from ._worker import LoopControl, TrainRequest, training_loop


def torch_imported() -> bool:
    """True once the network library is imported (then preparing an input costs no import)."""
    return "segmentation_models_pytorch" in sys.modules


class TrainingController:
    """The trainers of ``view`` (the AnnotateWidget) and the worker training one of them.

    Reads the view's ``image``, ``image_geometry()``, ``points``, ``classes``, ``train_settings()``,
    ``device()`` and ``closed``; shows results through ``view.results`` and reports with
    ``set_status`` / ``fail`` / ``refresh``.
    """

    def __init__(self, view):
        self.view = view
        self.trainer = None  # SparseTrainer of the chosen image, or None
        self.trainers: dict[int, object] = {}  # id(image layer) -> its trainer
        self.worker = None  # the running training worker, or None
        self.control: LoopControl | None = None  # shared with the running loop
        self.controls: set = set()  # LoopControl of every loop still alive
        self.last_update = None  # latest TrainUpdate of the running loop
        self.note = ""  # why some points are not used (status line)
        self.stopping_at: float | None = None
        self.stop_seconds: float | None = None  # how long the last Stop took
        self.restart_after = None  # the worker whose end starts a fresh network
        self.prepared = None  # (key, PreparedImage) of the chosen image
        self.preparing_key = None
        self.background: set = set()  # warm-up and input preparation workers

    @property
    def is_training(self) -> bool:
        """True while a training worker runs (also while it is stopping)."""
        return self.worker is not None

    # -- image changes ---------------------------------------------------------------------
    def switch_image(self, old, new) -> None:
        """Keep ``old``'s network and bring back ``new``'s (None: a new one at Train)."""
        if old is not None and self.trainer is not None:
            self.trainers[id(old)] = self.trainer
        self.trainer = self.trainers.get(id(new)) if new is not None else None

    def forget_image(self, layer) -> None:
        """``layer`` was removed: stop its training and drop its network."""
        self.stop()
        self.trainers.pop(id(layer), None)
        self.trainer = None

    def on_plane(self, plane: int) -> None:
        """The viewer shows slice ``plane``: the live prediction follows it."""
        if self.trainer is None:
            return
        self.trainer.config.predict_plane = plane
        if self.worker is not None and self.control is not None:
            self.control.predict_now = self.last_update is not None and self.last_update.waiting

    # -- input prepared ahead of Train ---------------------------------------------------------
    def start_warm_up(self) -> None:
        """Import torch in the background now, so that the first Train starts fast."""
        if torch_imported():
            return
        from napari.qt.threading import create_worker

        from ._worker import warm_up

        worker = create_worker(warm_up, _start_thread=False)
        worker.errored.connect(lambda exc: None)  # a real problem shows up again at Train
        worker.returned.connect(lambda _: self.prepare_input())
        self.warm_up_worker = worker
        start_worker(worker)

    def prepare_key(self):
        """What a prepared input depends on: layer, its data array, channel axis, RGB."""
        image = self.view.image
        if image is None:
            return None
        try:
            geometry = self.view.image_geometry()
            axis = geometry.channel_axis()
            geometry.spatial_shape()
        except (InputError, ValueError, IndexError):
            return None
        return (id(image), id(image.data), axis, bool(image.rgb))

    def prepare_input(self, *_) -> None:
        """Compute the chosen image's network input (filter bank) and warm up the network's
        kernels in the background while the user clicks: Train then starts with the first
        iteration instead of ~1-2 s of set-up. Needs torch imported (the warm-up calls this
        again when it is done)."""
        if self.view.closed or self.is_training or not torch_imported():
            return
        key = self.prepare_key()
        if key is None or key == self.preparing_key or (self.prepared and self.prepared[0] == key):
            return
        from ._bigimage import is_big_layer

        if is_big_layer(self.view.image, self.view.image_geometry()):  # never loaded whole
            return
        self.prepared = None
        from napari.qt.threading import create_worker

        from ._worker import prepare_input

        config, spec = self.view.train_settings()
        worker = create_worker(
            prepare_input,
            self.view.image.data,
            key[2],
            key[3],
            self.view.current_plane(),
            spec,
            max(2, len(self.view.classes.values())),
            config,
            self.view.device(),
            _start_thread=False,
        )
        worker.returned.connect(lambda prepared, made_for=key: self._on_prepared(made_for, prepared))
        worker.errored.connect(lambda exc: None)  # Train reports a real problem with the image
        worker.finished.connect(lambda done=worker: self._prepare_finished(done))
        self.background.add(worker)
        self.preparing_key = key
        start_worker(worker)

    @property
    def input_prepared(self) -> bool:
        """True once the chosen image's network input has been made ahead of Train."""
        return bool(self.prepared) and self.prepared[0] == self.prepare_key()

    @property
    def preparing(self) -> bool:
        """True while the chosen image's input is being prepared in the background."""
        return bool(self.background)

    def _on_prepared(self, key, prepared) -> None:
        if not self.view.closed and key == self.prepare_key():
            self.prepared = (key, prepared)

    def _prepare_finished(self, worker) -> None:
        self.background.discard(worker)
        self.preparing_key = None

    # -- points ------------------------------------------------------------------------------
    def hand_points(self) -> None:
        """Give the running / paused trainer the points as they are now (those it can use)."""
        if self.trainer is None:
            return
        view = self.view
        try:
            points = view.points.current()
        except InputError as exc:
            view.set_status(str(exc))
            return
        known = set(int(value) for value in self.trainer.classes)
        keep = np.isin(points.labels, list(known))
        notes = []
        if not keep.all():
            unknown = sorted(set(points.labels[~keep].tolist()))
            notes.append(
                f"points of class {unknown} wait for Reset (the network was built "
                f"for classes {sorted(known)})"
            )
        pixels = points.pixel_coords()
        inside = np.all((pixels >= 0) & (pixels < np.asarray(view.image_geometry().spatial_shape())), axis=1)
        if not inside.all():
            notes.append(f"{int((~inside).sum())} point(s) outside the image are ignored")
        self.note = "; ".join(notes)
        if self.note:
            view.set_status(self.note)
        keep &= inside
        if not keep.all():
            points = PointSet(points.coords[keep], points.labels[keep], points.order[keep])
        try:
            self.trainer.set_points(points)
        except InputError as exc:
            view.set_status(str(exc))
            _messages.notify("warning", str(exc))

    # -- start / stop / reset ----------------------------------------------------------------
    def start(self) -> bool:
        """Train (or resume). Returns False (with a message) when it cannot start."""
        view = self.view
        if view.closed or self.is_training:
            return False
        if view.image is None:
            view.fail("pick an image layer first")
            return False
        view.stop_sync_timer()
        try:
            points = view.points.current()
            points.validate(view.image_geometry().spatial_shape(), min_classes=2)
        except InputError as exc:
            hint = (
                " — click points of at least two classes (keys 1-9 pick the class)"
                if "class" in str(exc) or "no points" in str(exc)
                else ""
            )
            view.fail(f"cannot train: {exc}{hint}")
            return False
        if self.trainer is not None and not self._resume_with(points):
            return False
        source = self.trainer if self.trainer is not None else self._request(points)
        self._start_worker(source)
        # add the (still empty) prediction layer while the worker builds the network: adding
        # a layer takes up to ~1 s of main-thread time on a software-OpenGL display, which
        # would otherwise delay the first prediction the user sees
        view.results.ensure_prediction_layer(np.uint8 if int(points.labels.max()) < 256 else np.uint16)
        return True

    def _resume_with(self, points: PointSet) -> bool:
        """Update the paused trainer for a resume (or drop it for new classes)."""
        known = set(int(value) for value in self.trainer.classes)
        if not np.isin(points.labels, list(known)).all():
            _messages.notify("info", "new classes since the network was built: training a new network")
            self.trainer = None
            return True
        try:
            self.trainer.set_points(points)
            self.trainer.config.predict_plane = self.view.current_plane()
            self.trainer.config.predict_every_s = float(self.view.interval_spin.value())
        except InputError as exc:
            self.view.fail(f"cannot train: {exc}")
            return False
        return True

    def _request(self, points: PointSet) -> TrainRequest:
        view = self.view
        config, spec = view.train_settings()
        classes = sorted(set(view.classes.values()) | set(points.labels.tolist()))
        axis = view.image_geometry().channel_axis()
        key = self.prepare_key()
        prepared = self.prepared[1] if self.prepared and self.prepared[0] == key else None
        from ..core.train_setup import TrainSetup

        setup = TrainSetup(
            channel_axis=axis, rgb=bool(view.image.rgb), spec=spec, config=config, device=view.device()
        )
        return TrainRequest(
            image=view.image.data, points=points, classes=classes, setup=setup, prepared=prepared
        )

    def _start_worker(self, source) -> None:
        from napari.qt.threading import create_worker

        control = LoopControl()
        worker = create_worker(training_loop, source, control, _start_thread=False)
        worker.image_layer = self.view.image  # whose network it trains (see _on_event)
        worker.discarded = False  # set by Reset: its network is thrown away
        worker.yielded.connect(lambda event, origin=worker: self._on_event(event, origin))
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda done=worker: self._on_finished(done))
        self.worker, self.control = worker, control
        self.controls.add(control)
        self.last_update = None
        self.view.set_status(
            "starting…" if source is self.trainer else "preparing the image and a new network…"
        )
        self.view.refresh()
        start_worker(worker)

    def stop(self) -> None:
        """Ask the training to stop after the current iteration (returns at once)."""
        # Stop after Reset (while the old loop is still ending) cancels the pending restart:
        # the user's last word is Stop, so nothing may start training afterwards
        self.restart_after = None
        if self.worker is None:
            return
        self.stopping_at = time.perf_counter()
        if self.trainer is not None:
            self.trainer.stop()
        if self.control is not None:
            self.control.abort = True
        self.worker.quit()
        self.view.set_status("stopping…")
        self.view.stop_button.setEnabled(False)

    def reset(self) -> None:
        """Fresh random network, replaying every point in click order."""
        was_training = self.is_training
        old = self.worker
        self.trainers.pop(id(self.view.image), None)
        self.trainer = None
        if was_training:
            self.stop()
            old.discarded = True
            self.restart_after = old
        else:
            self.restart_after = None
            self.start()

    # -- worker events -----------------------------------------------------------------------
    def _on_event(self, event, worker=None) -> None:
        view = self.view
        if view.closed:
            return
        if (
            worker is not None
            and isinstance(event, (Progress, TrainerReady))
            and (worker.discarded or worker.image_layer is not view.image)
        ):
            # a loop that is ending after Reset, or after its image was removed / another
            # image was picked: its network and predictions belong to no layer shown now
            return
        if isinstance(event, Progress):
            self._on_progress(event.update)
        elif isinstance(event, TrainerReady):
            self.trainer = event.trainer
            self.trainers[id(view.image)] = event.trainer
            view.sync_points()  # clicks made while the network was being built
            view.refresh_model_choices()
        elif isinstance(event, Status):
            view.set_status(event.text)
        elif isinstance(event, JobDone):
            view.jobs.finish(event.job, event.result, event.error)

    def _on_progress(self, update) -> None:
        self.last_update = update
        if update.prediction is not None:
            self.view.results.show_prediction(update.prediction, update.plane)
        view = self.view
        # clicks plus the scribble points (thinned brush strokes) that train with them
        clicked = (
            view.points.count() + view.scribbles.count() if view.points.layer is not None else update.n_points
        )
        state = " · waiting for new points" if update.waiting else ""
        note = f"\n{self.note}" if self.note else ""
        self.view.set_status(
            f"step {update.step} · loss {update.loss:.3f} · points "
            f"{update.n_active}/{clicked} · {update.iters_per_second:.1f} it/s"
            f" · {update.device}{state}{note}"
        )

    def _on_error(self, exc) -> None:
        if self.view.closed:
            return
        self.view.fail(f"training failed: {_messages.error_text(exc)}")
        if self.trainer is None:
            self.trainers.pop(id(self.view.image), None)

    def _on_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        control, self.control = self.control, None
        self.controls.discard(control)
        if self.view.closed:
            return
        if self.stopping_at is not None:
            self.stop_seconds = time.perf_counter() - self.stopping_at
            self.stopping_at = None
            last = self.last_update if self.trainer is not None else None
            text = "stopped" + (
                f" at step {last.step} · loss {last.loss:.3f} · points {last.n_active}/{last.n_points}"
                if last
                else ""
            )
            if self.restart_after is None:
                self.view.report(text, note=f"training of {worker.image_layer.name} {text}")
            else:
                self.view.set_status(text)
        # jobs that arrived after the loop's last look run on their own
        if control is not None:
            while not control.jobs.empty():
                self.view.jobs.run(control.jobs.get_nowait())
        if self.restart_after is not None:
            self.restart_after = None
            self.start()
        self.view.refresh()

    # -- shutdown ----------------------------------------------------------------------------
    def stop_threads(self) -> list:
        """Stop every trainer and loop; returns the workers to quit (this one's included)."""
        for trainer in [self.trainer, *self.trainers.values()]:
            if trainer is not None:
                trainer.stop()
        for control in list(self.controls):
            control.abort = True
        return [self.worker, *self.background]
