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
    from napari_pointseg.synthetic import make_dataset

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
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster:
        res = list(run_jobs(pseudo_label_job, items, tmp_path, opts, scheduler=cluster.scheduler_address))
    assert sorted((r["name"], r["status"]) for r in res) == [("img_000", "done"), ("img_001", "done")]
    assert (tmp_path / "img_001_confidence.tif").is_file()


def test_kill_and_resume(four, tmp_path):
    """Kill the CLI (and its spawn pool) once the first image is complete; the rerun skips the
    finished images and completes the run."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_pointseg", "dataset", str(four), "--out", str(out),
           "--workers", "2", *TINY_CLI]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    first = out / "pseudo" / "img_000.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()  # it was really interrupted
    done_before = sorted(p.stem for p in (out / "pseudo").glob("*.json"))
    for name in done_before:  # a record means complete, readable outputs
        assert tifffile.imread(out / "pseudo" / f"{name}_confidence.tif").shape == (64, 64)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in done_before:
        assert f"{name}: complete outputs found, skipped" in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_annotated"] == 3 and m["n_computed_stage1"] == 3 - len(done_before)
    assert (out / "model.safetensors").is_file()
    assert not list(out.rglob("*.tmp"))  # leftovers of the killed writers are cleaned up
