"""No reader follows a symbolic link out of the data root: a linked file or class folder elsewhere is
refused with one line, and its target is neither opened nor printed."""
from __future__ import annotations

import os

import pytest

from lesion_pl.data.sources import read_source
from lesion_pl.errors import LesionPLError

from .conftest import invoke, make_dataset, sample_meta


def test_ham10000_refuses_an_image_linked_to_a_file_outside_the_root(ham_root, ham_meta, tmp_path):
    meta = sample_meta(ham_meta, 1, seed=3)
    root = make_dataset(ham_root, meta, tmp_path / "ham")
    victim = root / "images" / f"{meta['image_id'].iloc[0]}.jpg"
    secret = tmp_path / "secret.txt"
    secret.write_text("not data")
    victim.unlink()
    os.symlink(secret, victim)
    with pytest.raises(LesionPLError, match=r"1 image\(s\) under .* symbolic links to files outside it"):
        read_source("ham10000", root)
    r = invoke("data", "summary", "--data-root", root)
    assert r.exit_code == 2 and "symbolic links" in r.output and str(secret) not in r.output, r.output
    # a link that stays inside the root is fine
    victim.unlink()
    inner = root / "kept" / "x.jpg"
    inner.parent.mkdir()
    inner.write_bytes((ham_root / "images" / victim.name).read_bytes())
    os.symlink(inner, victim)
    assert len(read_source("ham10000", root)) == len(meta)


def test_folder_refuses_a_class_folder_linked_from_outside(ham_root, tmp_path):
    root, elsewhere = tmp_path / "folder", tmp_path / "elsewhere" / "mel"
    (root / "nv").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    images = sorted((ham_root / "images").glob("*.jpg"))[:2]
    (root / "nv" / images[0].name).write_bytes(images[0].read_bytes())
    (elsewhere / images[1].name).write_bytes(images[1].read_bytes())
    os.symlink(elsewhere, root / "mel", target_is_directory=True)
    with pytest.raises(LesionPLError, match="symbolic links to files outside it"):
        read_source("folder", root)
