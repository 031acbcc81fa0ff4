"""Lifetime of the widgets' background workers (napari ``thread_worker`` / superqt workers).

A worker's signals live in a QObject that Python owns. If the interpreter shuts down (the
user closed napari) while a worker thread still runs (importing torch, preparing an image,
a training iteration), that QObject is deleted under the running thread, whose final
``finished.emit()`` then raises inside Qt and aborts the process (exit 134), losing every
unsaved layer. So every worker is started through `start_worker`, which keeps it referenced
until its thread has ended, and an exit hook first asks the workers to stop and then waits
for the thread pool before Python tears anything down.
"""

from __future__ import annotations

import atexit
import warnings
import weakref

EXIT_WAIT_MS = 30_000  # longest single step a worker cannot interrupt (importing torch) x ~5

_live: set = set()  # started workers whose thread may still run
_stoppers: list = []  # weak methods asking the widgets' loops to stop (exit)
_hook_installed = False


def start_worker(worker) -> None:
    """Start ``worker`` and keep it alive until its thread is done (see the module doc)."""
    global _hook_installed
    if not _hook_installed:
        # registered after napari's own exit hooks, so it runs before them (LIFO)
        atexit.register(wait_for_workers)
        _hook_installed = True
    _live.add(worker)
    worker.finished.connect(lambda w=worker: _live.discard(w))
    worker.start()


def add_stopper(method) -> None:
    """``method()`` (a bound method, held weakly) is called at interpreter exit before the
    wait: it stops loops that a worker's ``quit()`` does not reach (e.g. a dataset run
    between two images, when the script never closed its viewer)."""
    _stoppers[:] = [m for m in _stoppers if m() is not None]
    _stoppers.append(weakref.WeakMethod(method))


def wait_for_workers(timeout_ms: int = EXIT_WAIT_MS) -> bool:
    """Ask every live worker to quit and wait for the global thread pool (True: all done)."""
    from qtpy.QtCore import QThreadPool

    for ref in list(_stoppers):
        try:
            fn = ref()
            if fn is not None:
                fn()
        except Exception:  # noqa: BLE001 - a widget already gone: nothing left to stop
            pass
    for w in list(_live):
        try:
            w.quit()
        except RuntimeError:
            pass
    return bool(QThreadPool.globalInstance().waitForDone(timeout_ms))


def live_workers() -> int:
    """Workers started by the widgets whose ``finished`` has not been handled yet."""
    return len(_live)


def on_viewer_close(widget, viewer, callback) -> None:
    """Call ``callback()`` when the viewer's main window closes (a dock widget gets no
    closeEvent of its own then). Also at application quit. Keeps the filter on ``widget``."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication

    class _CloseFilter(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt API
            if event.type() == QEvent.Close:
                callback()
            return False

    widget._close_filter = _CloseFilter(widget)
    try:
        with warnings.catch_warnings():
            # the main window is napari-private; no public close event exists for plugins
            warnings.simplefilter("ignore", FutureWarning)
            viewer.window._qt_window.installEventFilter(widget._close_filter)
    except (AttributeError, RuntimeError):
        pass
    app = QApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(callback)
