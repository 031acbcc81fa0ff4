"""Stage-1 backends (Dask LocalCluster; spawn process pool in the kill test) and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tifffile
from test_dataset import TINY_CLI, TINY_IMAGE, TINY_SPEC


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    from napari_pointseg.samples.files import make_dataset

    root = tmp_path_factory.mktemp("ds4")
    make_dataset(root, n_images=3, size=64, seed=3)
    return root


def _jobs(root):
    from napari_pointseg.dataset.layout import scan_folder
    from napari_pointseg.dataset.pseudo_labels import PseudoLabelOptions

    items = scan_folder(root).items[:2]
    return items, PseudoLabelOptions(config=TINY_IMAGE, spec=TINY_SPEC)


def test_dask_local_cluster(four, tmp_path):
    distributed = pytest.importorskip("distributed")
    from napari_pointseg.dataset.pseudo_labels import pseudo_label_job
    from napari_pointseg.dataset.runner import run_jobs

    items, opts = _jobs(four)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        res = list(run_jobs(pseudo_label_job, items, tmp_path, opts, scheduler=cluster.scheduler_address))
    assert sorted((r["name"], r["status"]) for r in res) == [("img_000", "done"), ("img_001", "done")]
    assert (tmp_path / "img_001_confidence.tif").is_file()


def _descendants(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs) -> list:
    """The processes of ``procs`` still running (a zombie has ended: only its pid is left)."""
    import psutil

    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_and_resume(four, tmp_path, workers):
    """SIGKILL of the CLI process alone (not its group: that is what an OOM killer or
    `kill -9 PID` does) once the first image is complete: no worker process outlives it, and
    the rerun keeps the finished images and completes the run."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "napari_pointseg",
        "dataset",
        str(four),
        "--out",
        str(out),
        "--workers",
        str(workers),
        *TINY_CLI,
    ]
    # own session: the finally clause can end any leftover of a failed run by its group
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        first = out / "pseudo" / "img_000.json"
        deadline = time.time() + 120
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        children = _descendants(proc.pid)
        if workers > 1:
            assert len(children) >= workers  # the pool's workers (+ multiprocessing's tracker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        import psutil

        psutil.wait_procs(children, timeout=5)
        left = _alive(children)
        assert not left, f"worker processes outlived the killed run: {[p.pid for p in left]}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not (out / "metrics.json").exists()  # it was really interrupted
    done_before = sorted(p.stem for p in (out / "pseudo").glob("*.json"))
    assert "img_000" in done_before
    stamps = {}
    for name in done_before:  # a record means complete, readable outputs
        assert tifffile.imread(out / "pseudo" / f"{name}_confidence.tif").shape == (64, 64)
        stamps[name] = (out / "pseudo" / f"{name}.json").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in done_before:
        assert f"{name}: complete outputs found, skipped" in r.stderr
        assert (out / "pseudo" / f"{name}.json").stat().st_mtime_ns == stamps[name]  # not redone
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_annotated"] == 3 and m["n_computed_stage1"] == 3 - len(done_before)
    assert sorted(p.stem for p in (out / "pseudo").glob("*.json")) == ["img_000", "img_001", "img_002"]
    assert (out / "model.safetensors").is_file()
    assert not list(out.rglob("*.tmp"))  # leftovers of the killed writers are cleaned up


def test_parent_watchdog_ends_an_orphaned_worker(tmp_path):
    """The watchdog alone: a grandchild whose parent is SIGKILLed exits within a second."""
    psutil = pytest.importorskip("psutil")
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import os, time\\n"
        "from napari_pointseg.dataset.runner import start_parent_watchdog\\n"
        "start_parent_watchdog(os.getppid(), 0.1)\\n"
        "print(\\'ready\\', flush=True)\\n"
        "time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        child = psutil.Process(int(proc.stdout.readline()))
        assert proc.stdout.readline().strip() == "ready"  # the child's watchdog runs
        assert child.is_running()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs([child], timeout=3)
        assert not _alive([child])
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _sleeping_job(item, out_dir, opts, cancel=None):
    """A stand-in for an image that takes long (module level: spawn workers import it)."""
    time.sleep(60)
    return {"name": str(item), "status": "done"}


def test_cancel_ends_a_process_pool_run_at_once(tmp_path):
    """Cancel while every pool worker is busy with a long image: the run ends within seconds
    (not when the images finish) and its worker processes are gone."""
    psutil = pytest.importorskip("psutil")
    import threading

    from napari_pointseg.dataset.pseudo_labels import PseudoLabelOptions
    from napari_pointseg.dataset.runner import run_jobs

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    cancel = threading.Event()
    timer = threading.Timer(3.0, cancel.set)  # the workers have started their job by then
    timer.start()
    t0 = time.perf_counter()
    results = list(
        run_jobs(
            _sleeping_job, ["a", "b", "c"], tmp_path, PseudoLabelOptions(threads=1), workers=2, cancel=cancel
        )
    )
    elapsed = time.perf_counter() - t0
    timer.join()
    assert results == [] and elapsed < 15, elapsed
    new = [p for p in me.children(recursive=True) if p.pid not in before]
    workers = [p for p in new if "resource_tracker" not in " ".join(_cmdline(p))]
    psutil.wait_procs(workers, timeout=5)
    assert not _alive(workers)


def _cmdline(p) -> list:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - ended meanwhile
        return []


def test_cancel_during_stage1_is_a_cancel(four, tmp_path):
    """A run cancelled in stage 1 ends as Cancelled (the widget says "cancelled"), not as
    "no image could be pseudo-labelled"."""
    import threading

    from test_dataset import tiny_options

    from napari_pointseg.dataset.events import Cancelled
    from napari_pointseg.dataset.pipeline import iter_pipeline

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        for _ in iter_pipeline(tiny_options(four, tmp_path / "out"), cancel):
            pass
