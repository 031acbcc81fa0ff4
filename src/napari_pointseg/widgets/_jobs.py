"""Work that needs a network, run where the network lives ("Annotate & train").

A `Job` (predict the whole image, suggest points, save a bundle) runs in the training thread
between two iterations while training runs, so the network is never used by two threads at
once; otherwise in a short-lived worker of its own. The network is the chosen image's trainer
or a model bundle loaded from disk (``Model`` option), which `JobRunner` also holds.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import InputError
from . import _messages
from ._progress import Activity
from ._threads import start_worker
from ._worker import BundleModel, Job, job_runner

QUIET_JOBS = {"slice prediction"}  # follows every slice change: no progress bar for it


class JobRunner:
    """Runs `Job`s for ``view`` (the AnnotateWidget) and holds the loaded model bundle."""

    def __init__(self, view):
        self.view = view
        self.workers: set = set()  # job and bundle-loading workers still running
        self.bundle = None  # a model bundle loaded from disk
        self.bundle_path: Path | None = None
        self.bundle_model = None  # BundleModel of (bundle, chosen image), made lazily
        self.activities: dict[int, Activity] = {}  # id(job) -> its napari progress bar

    @property
    def busy(self) -> bool:
        """True while a job or a bundle load runs in a worker of its own."""
        return bool(self.workers)

    def model(self):
        """The network Predict / Suggest use: the trainer, or "bundle" (the loaded bundle)."""
        if self.view.model_choice() == "bundle" and self.bundle is not None:
            return "bundle"
        return self.view.training.trainer

    def run(self, job: Job) -> None:
        """Run ``job`` where the network lives: in the training loop, else in a worker."""
        view = self.view
        if view.closed:
            return
        training = view.training
        model = self.model()
        if model is training.trainer and training.worker is not None and training.control is not None:
            self._show_activity(job)
            training.control.jobs.put(job)
            return
        if model == "bundle":
            job = self._with_bundle(job)
            model = None
        self._show_activity(job)
        self.start(
            job_runner,
            job,
            model,
            on_done=lambda result, done_job=job: self.finish(done_job, result, None),
            on_error=lambda exc, done_job=job: self.finish(done_job, None, exc),
        )

    def _show_activity(self, job: Job) -> None:
        """An indeterminate napari progress bar until ``job`` is finished (none for quiet jobs;
        one only for a job handed on from the training loop to a worker)."""
        if job.label not in QUIET_JOBS and id(job) not in self.activities:
            self.activities[id(job)] = Activity(f"{job.label or 'task'} ({self.view.image.name})…")

    def close_activities(self) -> None:
        """Close every job's progress bar (the widget shuts down)."""
        for activity in self.activities.values():
            activity.close()
        self.activities.clear()

    def _with_bundle(self, job: Job) -> Job:
        """``job`` applied to the loaded bundle (its BundleModel made for the chosen image)."""
        view = self.view
        image_spec = (
            view.image.data,
            view.image_geometry().channel_axis(),
            bool(view.image.rgb),
            view.device(),
        )
        run_job = job.fn

        def with_bundle(_unused, run_job=run_job, image_spec=image_spec):
            if self.bundle_model is None or self.bundle_model.bundle is not self.bundle:
                self.bundle_model = BundleModel(self.bundle, *image_spec)
            return run_job(self.bundle_model)

        return Job(with_bundle, job.on_done, job.on_error, job.label)

    def start(self, function, *args, on_done, on_error, label: str | None = None) -> None:
        """Run ``function(*args)`` in a worker; ``on_done(result)`` / ``on_error(exc)`` after
        (with a napari progress bar ``label`` until then, if given)."""
        from napari.qt.threading import create_worker

        worker = create_worker(function, *args, _start_thread=False)
        worker.activity = Activity(label) if label else None
        worker.returned.connect(on_done)
        worker.errored.connect(on_error)
        worker.finished.connect(lambda done=worker: self._worker_done(done))
        self.workers.add(worker)
        self.view.refresh()
        start_worker(worker)

    def _worker_done(self, worker) -> None:
        if worker.activity is not None:
            worker.activity.close()
        self.workers.discard(worker)
        if not self.view.closed:
            self.view.refresh()

    def finish(self, job: Job, result, error) -> None:
        """Hand a job's result (or error) to its callbacks, in the main thread."""
        activity = self.activities.pop(id(job), None)
        if activity is not None:
            activity.close()
        if self.view.closed:
            return
        if error is not None:
            if job.on_error is not None:
                job.on_error(error)
            else:
                self.view.fail(f"{job.label or 'task'} failed: {_messages.error_text(error)}")
            return
        if job.on_done is not None:
            try:
                job.on_done(result)
            except InputError as exc:
                self.view.fail(str(exc))

    def set_bundle(self, bundle, path) -> None:
        """Use ``bundle`` (loaded from ``path``) as the other choice of network."""
        self.bundle = bundle
        self.bundle_path = Path(path)
        self.bundle_model = None
