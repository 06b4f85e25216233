"""The image cache: decoded once, equal to the shared preprocessing, reused, and strict on bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesion_pl.data import cache as cache_mod
from lesion_pl.data.cache import build_cache
from lesion_pl.errors import LesionPLError
from lesion_pl.preprocess import preprocess_file, resize_center_crop


@pytest.fixture()
def paths(ham_root):
    return sorted(str(p) for p in (ham_root / "images").glob("ISIC_00243*.jpg"))[:12]


def test_cache_holds_the_preprocessed_images(paths, tmp_path):
    arr = build_cache(paths, 64, tmp_path, progress=False)
    assert arr.shape == (len(paths), 64, 64, 3) and arr.dtype == np.uint8
    for i in (0, len(paths) - 1):
        np.testing.assert_array_equal(arr[i], preprocess_file(paths[i], 64))
    assert arr.std() > 10  # real pictures, not zeros


def test_cache_is_reused_not_redecoded(paths, tmp_path, monkeypatch):
    build_cache(paths, 48, tmp_path, progress=False)
    monkeypatch.setattr(cache_mod, "preprocess_file", lambda *a: pytest.fail("decoded again"))
    again = build_cache(paths, 48, tmp_path, progress=False)
    assert isinstance(again, np.memmap)
    assert len(list(tmp_path.glob("*.npy"))) == 1


def test_small_cache_in_memory_large_cache_memory_mapped(paths, tmp_path):
    mapped = build_cache(paths, 48, tmp_path, progress=False, in_memory_max_gb=0.0)
    nbytes = len(paths) * 48 * 48 * 3
    in_memory = build_cache(paths, 48, tmp_path, progress=False, in_memory_max_gb=nbytes / 1e9)
    assert isinstance(mapped, np.memmap) and not isinstance(in_memory, np.memmap)
    assert in_memory.flags.writeable and not mapped.flags.writeable
    np.testing.assert_array_equal(in_memory, mapped)
    too_big = build_cache(paths, 48, tmp_path, progress=False, in_memory_max_gb=(nbytes - 1) / 1e9)
    assert isinstance(too_big, np.memmap)


def test_builders_started_together_decode_once(paths, tmp_path, monkeypatch):
    import threading

    calls = []
    real = cache_mod.preprocess_file
    monkeypatch.setattr(cache_mod, "preprocess_file", lambda *a: calls.append(a) or real(*a))
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_cache(paths, 40, tmp_path, progress=False)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == len(paths)  # one builder; the other two waited and read its file
    assert len(results) == 3 and all(np.array_equal(r, results[0]) for r in results)


def test_other_size_other_cache(paths, tmp_path):
    build_cache(paths, 32, tmp_path, progress=False)
    build_cache(paths, 40, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 2


def test_corrupt_image_is_named_and_no_cache_left(paths, tmp_path):
    bad = tmp_path / "ISIC_9999999.jpg"
    bad.write_bytes(Path(paths[0]).read_bytes()[:600])  # a truncated JPEG
    with pytest.raises(LesionPLError, match=r"1 bad image\(s\): cannot read image .*ISIC_9999999.jpg"):
        build_cache(paths + [str(bad)], 32, tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("*"))


def test_resize_center_crop_keeps_the_centre():
    img = np.zeros((150, 200, 3), np.uint8)
    img[:, 25:175] = 255  # the centre square 150x150 is white
    out = resize_center_crop(Image.fromarray(img), 75)
    assert out.shape == (75, 75, 3)
    assert out[:, 1:-1].min() == 255  # only the outermost columns blend with the black sides
