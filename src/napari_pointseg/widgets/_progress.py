"""napari's own progress bars for the widgets' long work (shown in the activity dock).

`Activity` wraps one ``napari.utils.progress`` bar: indeterminate (``total=None``) or
counting, one description per stage. Given ``on_cancel``, the bar is a
``cancelable_progress``, so the activity dock shows a Cancel button; clicking it calls
``on_cancel()`` in the main thread. The training and the dataset runs open none (while a bar
is open napari animates an indicator that slowed them 1.5-2x on 2 cores). (napari's
``thread_worker(progress=...)`` bar has no Cancel button and counts yields, which means
nothing for these workers, so the bars are made and updated here, in the main thread only.)

Every method is safe after `close` and never raises into a callback: a progress bar is
feedback, it must not break the work it reports on.
"""

from __future__ import annotations


def _bar(desc: str, total: int | None, on_cancel):
    from napari.utils.progress import cancelable_progress, progress

    if on_cancel is None:
        return progress(desc=desc, total=total, leave=False)

    class _StopOnCancel(cancelable_progress):
        # cancelable_progress only calls its callback while iterating; these bars are
        # updated by hand, so the dock's Cancel calls it at once
        def cancel(self) -> None:
            already = self.is_canceled
            super().cancel()
            if not already and self.cancel_callback is not None:
                self.cancel_callback()

    return _StopOnCancel(desc=desc, total=total, leave=False, cancel_callback=on_cancel)


class Activity:
    """One progress bar in napari's activity dock; see the module doc."""

    def __init__(self, desc: str, total: int | None = None, on_cancel=None):
        self.bar = _bar(desc, total, on_cancel)
        self.desc = desc
        self.closed = False

    @property
    def cancelable(self) -> bool:
        return hasattr(self.bar, "is_canceled")

    @property
    def cancelled(self) -> bool:
        return bool(getattr(self.bar, "is_canceled", False))

    def cancel(self) -> None:
        """What the dock's Cancel button does (tests and scripts)."""
        if not self.closed and self.cancelable:
            self.bar.cancel()

    def stage(self, text: str, total: int | None) -> None:
        """Start counting again from 0 towards ``total`` (None / 0: indeterminate)."""
        if self.closed:
            return
        self.bar.reset(total=total or 0)
        self.bar.events.value(value=0)
        if text != self.desc:
            self.desc = text
            self.bar.set_description(text)

    def advance(self, n: int = 1) -> None:
        if self.closed:
            return
        total = self.bar.total or 0
        step = min(n, max(0, total - self.bar.n)) if total else n
        if step:
            self.bar.update(step)

    @property
    def value(self) -> int:
        return int(self.bar.n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.bar.close()
        except (KeyError, RuntimeError):  # already removed by the dock closing
            pass


def open_bars() -> list:
    """The napari progress bars open now (those the activity dock shows)."""
    from napari.utils.progress import progress

    return list(progress._all_instances)
