"""The npe2 manifest is found by napari in this (editable) install and is valid."""

import subprocess
import sys
from pathlib import Path

import yaml


def test_npe2_discovers_plugin_and_contributions():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover()
    mf = pm.get_manifest("napari-pointseg")
    c = mf.contributions
    widgets = {w.display_name for w in c.widgets}
    assert {"Annotate & train", "Dataset training"} <= widgets
    assert {s.key for s in c.sample_data} >= {"nuclei", "cells", "tissue", "stack"}
    assert c.readers and c.writers
    assert "napari/layers/segment" in c.menus


def test_npe2_validate_passes():
    exe = Path(sys.executable).with_name("npe2")
    r = subprocess.run([str(exe), "validate", "napari-pointseg"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_manifest_commands_point_at_importable_callables():
    import importlib

    manifest = yaml.safe_load((Path(__file__).parents[1] / "napari.yaml").read_text())
    for cmd in manifest["contributions"]["commands"]:
        module, _, attr = cmd["python_name"].partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), cmd["id"]


def test_manifest_is_packaged_inside_the_package():
    import napari_pointseg

    assert (Path(napari_pointseg.__file__).parent / "napari.yaml").is_file()


def test_built_wheel_contains_manifest_and_sample_data(tmp_path):
    import zipfile

    root = Path(__file__).parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(root), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_pointseg-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_pointseg/napari.yaml" in names
    assert any(n.startswith("napari_pointseg/samples/_data/nuclei_image") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"napari_pointseg:napari.yaml" in entry
