"""lesion-pl installs like a library: a wheel built from the checkout carries the whole package (configuration
defaults and the pages included), works from an empty folder, and its base install is the torch-free runtime,
whose `lesion-pl predict` gives the full install's probabilities."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

from .conftest import PROJECT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(PROJECT)], check=True, capture_output=True, text=True)
    (found,) = out.glob("lesion_pl-*.whl")
    return found


def _venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin"


def test_the_wheel_carries_the_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(PROJECT)).replace("/", ".")
                for p in (PROJECT / "lesion_pl").rglob("__init__.py")}
    assert {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")} == packages
    for page in ("index.html", "page.js", "lesion.js"):
        assert f"lesion_pl/export/web/{page}" in names
    assert not [n for n in names if n.startswith(("tests/", "export/", "cli.py", "benchmarks/", "configs/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lesion-pl = lesion_pl.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()


def test_the_full_install_runs_from_an_empty_folder(wheel, small_ham, tmp_path):
    """The wheel in a fresh environment (its dependencies borrowed from this one: no downloads), run from an empty
    folder: the defaults travel in the package, nothing is read from the checkout."""
    bin_ = _venv(tmp_path / "full")
    site = next((tmp_path / "full" / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the venv's own packages
    subprocess.run([bin_ / "pip", "install", "--no-deps", "-q", wheel], check=True, capture_output=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([bin_ / "lesion-pl", "data", "summary", "--data-root", small_ham], cwd=empty, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "no lesion is in two splits" in proc.stdout and f"{small_ham}:" in proc.stdout
    where = subprocess.run([bin_ / "python", "-c", "import lesion_pl; print(lesion_pl.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True).stdout
    assert str(tmp_path / "full") in where  # the installed package, not the checkout
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing written where it ran


def test_the_base_install_is_the_torch_free_runtime(wheel, served_model, small_ham, tmp_path):
    """`pip install lesion-pl` (no extras): under 400 MB, no torch; its `lesion-pl predict` gives this install's
    probabilities to 1e-6; a command that needs an extra says which in one line."""
    bin_ = _venv(tmp_path / "base")
    proc = subprocess.run([bin_ / "pip", "install", "-q", wheel], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    size = sum(f.stat().st_size for f in (tmp_path / "base").rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 400 * 2**20, f"{size / 2**20:.0f} MB"
    assert subprocess.run([bin_ / "python", "-c", "import torch"], capture_output=True).returncode != 0
    images = sorted((small_ham / "images").glob("*.jpg"))[:4]
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([bin_ / "lesion-pl", "predict", *images, "--model", served_model, "--out", "p.json"],
                          cwd=empty, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = json.loads((empty / "p.json").read_text())["predictions"]
    from lesion_pl.export.runtime import LesionOnnxClassifier

    want = LesionOnnxClassifier(served_model).predict([str(p) for p in images])
    classes = [k[2:] for k in got[0] if k.startswith("p_")]
    assert np.abs(np.array([[g[f"p_{c}"] for c in classes] for g in got]) - want.probabilities).max() <= 1e-6
    proc = subprocess.run([bin_ / "lesion-pl", "fit", "--out", "run"], cwd=empty, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'lesion-pl[train]'" in proc.stderr and not (empty / "run").exists()
    proc = subprocess.run([bin_ / "lesion-pl", "serve", "--model", served_model], cwd=empty, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "pip install 'lesion-pl[serve]'" in proc.stderr, proc.stderr
