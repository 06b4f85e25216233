"""Bad input is one line and exit 2, found before work is done, never a traceback; and what is silently wrong
is said: tiny or blank images, 16-bit images, ages that are not numbers, failed files in every output."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
from PIL import Image

from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.preprocess import load_rgb

from .conftest import FAST, invoke, make_dataset, sample_meta


@pytest.fixture(scope="module")
def model(trained_run):
    if not (trained_run / "export" / "model.onnx").exists():
        r = invoke("export", "--run", trained_run, "--quiet")
        assert r.exit_code == 0, r.output
    return trained_run / "export" / "model.onnx"


@pytest.fixture(scope="module")
def some_images(small_ham):
    return sorted(small_ham.rglob("*.jpg"))[:3]


def test_a_config_section_that_is_not_a_section(tmp_path):
    (tmp_path / "c.yaml").write_text("data: 5\n")
    r = invoke("fit", "--out", tmp_path / "r", "--config", tmp_path / "c.yaml")
    assert r.exit_code == 2 and "config key 'data' is a section of keys" in r.output, r.output
    r = invoke("fit", "--out", tmp_path / "r", "--set", "optim=null")
    assert r.exit_code == 2 and "config key 'optim' is a section of keys" in r.output, r.output
    assert not (tmp_path / "r").exists()


def test_a_data_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    r = invoke("data", "summary", "--data-root", tmp_path / "f")
    assert r.exit_code == 2 and "is a file, not a folder" in r.output, r.output


def test_image_size_is_bounded_and_the_cache_checks_the_disk(small_ham, tmp_path, monkeypatch):
    with pytest.raises(LesionPLError, match="from 8 to 1024, got 100000"):
        load_config(None, ["data.image_size=100000"])
    import lesion_pl.data.cache as cache

    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 10**5))
    paths = [str(p) for p in sorted(small_ham.rglob("*.jpg"))[:20]]
    with pytest.raises(LesionPLError, match=r"needs 0\.0 GB in .* which has 0\.0 GB free: choose a smaller"):
        cache.build_cache(paths, 64, cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".*"))  # nothing allocated
    monkeypatch.undo()
    # a lock file left by a process that was killed does not block the next build
    target = tmp_path / f"images_64px_{len(paths)}_{cache.cache_key(paths, 64)}.npy"
    target.with_name(target.name + ".lock").write_text("")
    assert cache.build_cache(paths, 64, cache_dir=tmp_path, progress=False).shape == (20, 64, 64, 3)


def test_a_16_bit_png_is_scaled_by_its_bit_depth(tmp_path, some_images):
    gray = np.asarray(Image.open(some_images[0]).convert("L"))
    dark = (gray.astype(np.float64) * 185 / gray.max()).round().astype(np.uint8)  # brightest pixel 185
    Image.fromarray(dark).save(tmp_path / "dark8.png")
    Image.fromarray(dark.astype(np.uint16) * 257).save(tmp_path / "dark16.png")
    eight, sixteen = np.asarray(load_rgb(tmp_path / "dark8.png")), np.asarray(load_rgb(tmp_path / "dark16.png"))
    assert sixteen.max() == 185
    np.testing.assert_array_equal(eight, sixteen)


def test_predict_limits_and_unwritable_outputs_are_refused_before_predicting(model, some_images, tmp_path):
    for bad in ("-1", "0"):
        r = invoke("predict", *some_images, "--model", model, "--limit", bad)
        assert r.exit_code == 2 and "--limit" in r.output, r.output
    (tmp_path / "folder.csv").mkdir()
    r = invoke("predict", *some_images, "--model", model, "--out", tmp_path / "folder.csv")
    assert r.exit_code == 2 and "is a folder" in r.output and "top class" not in r.output, r.output
    locked = tmp_path / "ro"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode bits: a file in the way shows the same rule
            os.chmod(locked, 0o700)
            (locked / "sub").write_text("a file where a folder should be")
            out = locked / "sub" / "p.csv"
        else:
            out = locked / "p.csv"
        r = invoke("predict", *some_images, "--model", model, "--out", out)
        assert r.exit_code == 2 and "--out" in r.output and "top class" not in r.output, r.output
        r = invoke("data", "check", "--data-root", some_images[0].parent.parent, "--out", out)
        assert r.exit_code == 2 and "--out" in r.output, r.output
    finally:
        os.chmod(locked, 0o700)


def test_predict_lists_failed_and_suspect_files_in_every_output(model, some_images, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), (120, 80, 60)).save(tmp_path / "tiny.png")
    Image.new("RGB", (200, 150), (30, 30, 30)).save(tmp_path / "blank.png")
    files = [*some_images, tmp_path / "broken.jpg", tmp_path / "tiny.png", tmp_path / "blank.png"]
    r = invoke("predict", *files, "--model", model, "--out", tmp_path / "p.csv")
    assert r.exit_code == 1, r.output  # one file failed
    assert "tiny.png: only 1x1 px, far below the model's 48 px input" in r.output
    assert "blank.png: no content: the image is a single colour" in r.output
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == len(files)
    failed = table[table["file"].str.endswith("broken.jpg")]
    assert len(failed) == 1 and "cannot read image" in failed["error"].iloc[0] and failed["top_class"].isna().all()
    flagged = table.set_index(table["file"].map(lambda f: f.rsplit("/", 1)[-1]))["warning"]
    assert flagged["tiny.png"].startswith("only 1x1") and flagged["blank.png"].startswith("no content")
    assert flagged[some_images[0].name] != flagged[some_images[0].name]  # NaN: nothing to say
    r = invoke("predict", *files, "--model", model, "--out", tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert [f["file"] for f in data["failed"]] == [str(tmp_path / "broken.jpg")]
    # data check says the same of the images of a dataset
    folder = tmp_path / "folder" / "nv"
    folder.mkdir(parents=True)
    for f in files[:2] + files[-2:]:
        shutil.copy(f, folder / f.name)
    r = invoke("data", "check", "--data-root", tmp_path / "folder", "--format", "folder", "--out", tmp_path / "b.csv")
    listed = pd.read_csv(tmp_path / "b.csv")
    assert sorted(listed["kind"]) == ["warning", "warning"] and r.exit_code == 0, r.output


def test_metadata_csv_that_is_not_utf8_and_an_age_that_is_not_a_number(model, some_images, tmp_path):
    lines = ["image,age,sex,localization"] + [f"{p.stem},abc,male,back" for p in some_images]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    r = invoke("predict", *some_images, "--model", model, "--metadata", tmp_path / "m.csv")
    assert r.exit_code == 0, r.output
    assert "age value(s) 'abc' are not a number of years from 0 to 120, read as unknown" in r.output
    latin1 = "x,40,f\xe9male,back\n".encode("latin-1")
    (tmp_path / "latin1.csv").write_bytes(("\n".join(lines[:2]) + "\n").encode() + latin1)
    r = invoke("predict", *some_images, "--model", model, "--metadata", tmp_path / "latin1.csv")
    assert r.exit_code == 2 and "latin1.csv, line 3: not UTF-8 text (byte 0xe9)" in r.output, r.output


def test_onnx_metadata_that_is_malformed_or_disagrees_with_the_graph(model, some_images, tmp_path):
    def edited(key, value, name):
        m = onnx.load(str(model))
        for prop in m.metadata_props:
            if prop.key == f"lesion_pl.{key}":
                prop.value = value
        onnx.save(m, str(tmp_path / name))
        return tmp_path / name

    r = invoke("predict", *some_images, "--model", edited("classes", "[not json", "bad.onnx"))
    assert r.exit_code == 2 and "malformed lesion-pl metadata" in r.output and "Traceback" not in r.output, r.output
    r = invoke("predict", *some_images, "--model", edited("input_height", "64", "size.onnx"))
    assert r.exit_code == 2 and "metadata says input size 64 px but the graph takes 48 px" in r.output, r.output


def test_skip_bad_images_covers_an_image_listed_but_missing(ham_root, ham_meta, tmp_path):
    meta = sample_meta(ham_meta, 30, seed=8)
    root = make_dataset(ham_root, meta, tmp_path / "missing")
    gone = meta["image_id"].iloc[3]
    (root / "images" / f"{gone}.jpg").unlink()
    r = invoke("fit", "--data-root", root, "--out", tmp_path / "strict", "--max-epochs", 1, *FAST)
    assert r.exit_code == 2 and f"not found under {root}: {gone}" in r.output, r.output
    out = tmp_path / "skip"
    r = invoke("fit", "--data-root", root, "--out", out, "--max-epochs", 1, "--skip-bad-images", *FAST)
    assert r.exit_code == 0 and "skipped 1 missing or unreadable image(s)" in r.output, r.output
    skipped = json.loads((out / "summary.json").read_text())["skipped_bad_images"]
    assert list(skipped) == [gone] and "image not found" in skipped[gone]
    assert gone not in set(pd.read_csv(out / "splits.csv")["image_id"])


def test_a_run_stopped_before_its_best_checkpoint_is_told_to_resume(trained_run, tmp_path):
    copy = tmp_path / "stopped"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("export", "report", "evaluations"))
    (copy / "checkpoints" / "best.ckpt").unlink()
    r = invoke("test", "--run", copy, "--quiet")
    assert r.exit_code == 2 and f"`python cli.py fit --out {copy} --resume` makes it" in r.output, r.output


def test_a_data_csv_that_is_not_utf8_names_its_line(ham_root, ham_meta, tmp_path):
    root = make_dataset(ham_root, sample_meta(ham_meta, 1, seed=9), tmp_path / "latin")
    csv = root / "HAM10000_metadata.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[-1], "t\xeate")  # a Latin-1 'ê' in the site of line 3
    csv.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    r = invoke("data", "summary", "--data-root", root)
    assert r.exit_code == 2 and "HAM10000_metadata.csv, line 3: not UTF-8 text (byte 0xea)" in r.output, r.output


def test_an_output_that_cannot_be_written_is_one_line(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns("export", "report", "evaluations"))
    (copy / "export").write_text("a file where the export folder goes")
    r = invoke("export", "--run", copy, "--quiet")
    assert r.exit_code == 2 and "Traceback" not in r.output and "cannot write" in r.output, r.output
    assert (copy / "export").read_text().startswith("a file")


def test_data_check_takes_set_for_the_csv_format(small_ham, tmp_path):
    images = sorted(small_ham.rglob("*.jpg"))[:4]
    root = tmp_path / "own"
    (root / "pics").mkdir(parents=True)
    for p in images:
        shutil.copy(p, root / "pics" / p.name)
    pd.DataFrame({"file": [f"pics/{p.name}" for p in images], "dx": ["nv", "mel", "nv", "bkl"]}).to_csv(
        root / "labels.csv", index=False)
    r = invoke("data", "check", "--data-root", root, "--format", "csv",
               "--set", "data.columns={image: file, label: dx}", "--out", tmp_path / "b.csv")
    assert r.exit_code == 0 and "4 images checked, 0 bad" in r.output, r.output
