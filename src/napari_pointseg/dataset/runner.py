"""Run per-image jobs in-process, in a local process pool, or on a Dask cluster.

All three are generators of job results in completion order, so the caller updates progress
as results arrive and can stop early (closing the generator cancels what has not started and
ends the worker processes of a local pool; finished images are already on disk).

Process pool: the 'spawn' context (forking a process that has torch threads running is
fragile) and ``threads = cores // workers`` torch threads per worker, so that N workers do not
fight over the same cores. Each worker runs a watchdog thread that ends the worker as soon as
its parent is gone: a SIGKILL of the parent (which runs no cleanup) must not leave workers
training on (and holding ~1 GB each) for nobody.

Dask: ``distributed.Client(address)``; each task limits torch to ``threads`` (default 1: a
Dask worker runs one task per thread slot at the same time).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import replace
from typing import Callable, Iterator, Sequence

from ..core.errors import InputError


def threads_per_worker(workers: int) -> int:
    """CPU threads each of ``workers`` local workers may use (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


WATCHDOG_INTERVAL_S = 0.5


def _init_worker(threads: int, parent_pid: int | None = None) -> None:
    # before torch is imported in the child: OpenMP reads these once
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["POINTSEG_THREADS"] = str(threads)
    if parent_pid is not None:
        start_parent_watchdog(parent_pid)


def start_parent_watchdog(parent_pid: int, interval: float = WATCHDOG_INTERVAL_S) -> threading.Thread:
    """End this process (exit code 1) within ``interval`` seconds of ``parent_pid`` dying.

    A daemon thread polls the parent pid: when the parent is SIGKILLed this process is
    re-parented (``os.getppid()`` changes), so polling needs no help from the dead parent and
    works whatever the worker is doing (torch releases the GIL in its kernels). ``os._exit``:
    no cleanup can run that would wait for the dead parent; outputs are written atomically, so
    an image in progress leaves only a temp file that the next run removes.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    t = threading.Thread(target=watch, name="pointseg-parent-watchdog", daemon=True)
    t.start()
    return t


def run_jobs(
    fn: Callable,
    items: Sequence,
    out_dir,
    opts,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    cancel=None,
) -> Iterator[dict]:
    """Yield ``fn(item, out_dir, opts)`` for every item, in completion order.

    workers <= 1 and no scheduler: in this process (``fn`` also gets ``cancel=cancel``, a
    threading.Event checked between training iterations). workers > 1: a spawn process pool
    (``cancel`` is checked every quarter second; its running jobs are then terminated).
    scheduler: address of a dask.distributed scheduler ('tcp://host:8786') or a Client.
    ``opts`` must be a dataclass with a ``threads`` field (filled in per backend).
    """
    if scheduler is not None:
        yield from _run_dask(fn, items, out_dir, opts, scheduler)
    elif workers > 1 and len(items) > 1:
        yield from _run_pool(fn, items, out_dir, opts, workers, cancel)
    else:
        for item in items:
            if cancel is not None and cancel.is_set():
                return
            yield fn(item, out_dir, opts, cancel=cancel)


def _run_pool(fn, items, out_dir, opts, workers: int, cancel=None) -> Iterator[dict]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = opts.threads or threads_per_worker(workers)
    opts = replace(opts, threads=threads)
    ex = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )
    finished = False
    try:
        pending = {ex.submit(fn, item, out_dir, opts) for item in items}
        while pending:
            # wake up now and then: a cancel (the widget's Cancel, its viewer closing) must not
            # wait for the running images to finish, which can take minutes each
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
            if cancel is not None and cancel.is_set():
                return
        finished = True
    except BrokenProcessPool:
        raise InputError(
            "a worker process died (out of memory, or killed); finished images are kept: run again to resume"
        ) from None
    finally:
        if not finished:
            # cancelled (generator closed) or an error: running jobs would otherwise keep
            # their worker busy until done. Their outputs are written atomically, so ending
            # them mid-image leaves nothing half-written behind.
            procs = list(getattr(ex, "_processes", {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                p.terminate()
        else:
            ex.shutdown(wait=True)


def _run_dask(fn, items, out_dir, opts, scheduler) -> Iterator[dict]:
    from ..core.dask_client import dask_client

    opts = replace(opts, threads=opts.threads or 1)
    run_id = uuid.uuid4().hex[:8]  # readable, unique task keys on a shared dashboard
    with dask_client(scheduler) as client:  # InputError first if distributed is missing
        from distributed import as_completed

        futures = []
        try:
            futures = [
                client.submit(
                    fn,
                    item,
                    str(out_dir),
                    opts,
                    pure=False,
                    key=f"pseudo-label-{getattr(item, 'name', i)}-{run_id}",
                )
                for i, item in enumerate(items)
            ]
            for f in as_completed(futures):
                try:
                    yield f.result()
                except Exception as e:  # noqa: BLE001 - jobs catch their own errors: a worker died
                    raise InputError(
                        f"a Dask task failed ({type(e).__name__}: {e}); finished images "
                        "are kept: run again to resume"
                    ) from None
            futures = []
        finally:
            if futures:
                client.cancel(futures)
