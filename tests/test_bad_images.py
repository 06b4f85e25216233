"""One loader for every source: odd but valid images are read, bad files are named with a reason,
`data check` lists them, and --skip-bad-images leaves them out and says so."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesion_pl.data.check import find_bad_images
from lesion_pl.preprocess import ImageReadError, load_rgb

from .conftest import FAST, evaluate_copy, invoke, make_dataset, sample_meta


@pytest.fixture()
def real(ham_root):
    return Image.open(ham_root / "images" / "ISIC_0024306.jpg").convert("RGB")


def test_odd_but_valid_images_become_rgb(real, tmp_path):
    real.convert("CMYK").save(tmp_path / "cmyk.jpg")
    real.convert("RGBA").save(tmp_path / "rgba.png")
    real.convert("P").save(tmp_path / "palette.png")
    real.convert("L").save(tmp_path / "gray.png")
    Image.fromarray(np.asarray(real.convert("L")).astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    for name in ("cmyk.jpg", "rgba.png", "palette.png", "gray.png", "gray16.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == real.size, name
    # CMYK round trip keeps the picture (within JPEG/colour conversion error)
    diff = np.abs(np.asarray(load_rgb(tmp_path / "cmyk.jpg"), float) - np.asarray(real, float)).mean()
    assert diff < 20


def bad_files(real, folder):
    folder.mkdir(parents=True, exist_ok=True)
    real.save(folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    real.save(folder / "full.jpg", quality=95)
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:2000])
    (folder / "full.jpg").unlink()
    return folder


def test_bad_files_are_named_with_a_reason(real, tmp_path):
    folder = bad_files(real, tmp_path / "b")
    bad = find_bad_images(sorted(str(p) for p in folder.iterdir()), progress=False)
    assert sorted(k.split("/")[-1] for k in bad) == ["empty.jpg", "text.jpg", "truncated.jpg"]
    assert "truncated" in bad[str(folder / "truncated.jpg")]
    assert all(reason.startswith("cannot read image") for reason in bad.values())


def test_decompression_bomb_limit_is_kept(real, tmp_path, monkeypatch):
    real.save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200x150 is now far over twice the limit
    with pytest.raises(ImageReadError, match="decompression bomb"):
        load_rgb(tmp_path / "big.png")


@pytest.fixture(scope="module")
def dataset_with_bad(ham_root, ham_meta, tmp_path_factory):
    meta = sample_meta(ham_meta, 30, seed=4)
    root = make_dataset(ham_root, meta, tmp_path_factory.mktemp("withbad"))
    victims = meta["image_id"][[0, 5]].tolist()
    (root / "images" / f"{victims[0]}.jpg").write_bytes(b"")
    (root / "images" / f"{victims[1]}.jpg").write_text("<html>not a jpeg</html>")
    return root, victims


def test_data_check_writes_the_list(dataset_with_bad, tmp_path):
    root, victims = dataset_with_bad
    r = invoke("data", "check", "--data-root", root, "--out", tmp_path / "bad.csv")
    assert r.exit_code == 1
    assert "2 bad" in r.output
    listed = pd.read_csv(tmp_path / "bad.csv")
    assert sorted(p.split("/")[-1] for p in listed["path"]) == sorted(f"{v}.jpg" for v in victims)
    assert listed["reason"].str.contains("cannot read image").all()


def test_fit_stops_on_a_bad_image_or_skips_when_asked(dataset_with_bad, tmp_path):
    root, victims = dataset_with_bad
    r = invoke("fit", "--data-root", root, "--out", tmp_path / "strict", "--max-epochs", 1, *FAST)
    assert r.exit_code == 2 and "2 bad image(s)" in r.output and not (tmp_path / "strict").exists()
    out = tmp_path / "skip"
    r = invoke("fit", "--data-root", root, "--out", out, "--max-epochs", 1, "--skip-bad-images", *FAST)
    assert r.exit_code == 0, r.output
    assert "skipped 2 missing or unreadable image(s)" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(p.split("/")[-1] for p in summary["skipped_bad_images"]) == sorted(f"{v}.jpg" for v in victims)
    splits = pd.read_csv(out / "splits.csv")
    assert not set(victims) & set(splits["image_id"])


def test_test_on_another_source_with_some_classes(trained_run, ham_root, unseen_meta, tmp_path):
    """A run evaluated on a folder of only mel and nv images: metrics over the classes present."""
    meta = sample_meta(unseen_meta, 6, seed=5)
    meta = meta[meta["dx"].isin(["mel", "nv"])]
    folder = tmp_path / "external"
    for _, row in meta.iterrows():
        (folder / row["dx"]).mkdir(parents=True, exist_ok=True)
        Image.open(ham_root / "images" / f"{row['image_id']}.jpg").save(folder / row["dx"] / f"{row['image_id']}.jpg")
    copy = tmp_path / "run"
    with warnings.catch_warnings():  # torchmetrics' and numpy's warnings of the absent classes are handled
        warnings.filterwarnings("error", message="No positive samples in targets")
        warnings.filterwarnings("error", message="All-NaN slice")
        r = evaluate_copy(trained_run, copy, folder)
    assert r.exit_code == 0, r.output
    assert "metrics are over the 2 classes present: mel, nv" in r.output
    assert "  df           n/a     n/a    n/a    n/a        0" in r.output  # said, not NaN or a made-up 0
    evaluation = copy / "evaluations" / "external-folder"  # the data root's name and its format
    assert not (copy / "test").exists()  # the run's own test results are never this evaluation's
    m = json.loads((evaluation / "metrics.json").read_text())
    assert m["n_images"] == len(meta) and m["classes_present"] == ["mel", "nv"]
    recalls = [m["per_class"][c]["recall"] for c in ("mel", "nv")]
    assert m["balanced_accuracy"] == pytest.approx(sum(recalls) / 2)
    # what has no value on this source (AUROC of an absent class, specificity without negatives...) is
    # null, not NaN: metrics.json stays JSON that strict parsers (browsers, jq, serde) read
    def no_constants(name):
        raise AssertionError(f"metrics.json holds {name}")
    json.loads((evaluation / "metrics.json").read_text(), parse_constant=no_constants)
    assert m["per_class"]["df"]["auroc"] is None and m["per_class"]["df"]["recall"] is None
    # the report describes the images this test scored, and says "n/a" where a figure has no value
    r = invoke("report", "--run", copy, "--evaluation", "external-folder", "--quiet")  # reads where test read
    assert r.exit_code == 0, r.output
    page = (evaluation / "report" / "index.html").read_text()
    assert f"All figures are on all {len(meta)} images of {folder}" in page
    undefined = [k for op in m["operating_points"].values() for k in ("sensitivity", "specificity", "ppv", "npv")
                 if op[k] is None]  # e.g. the NPV of a threshold that flags every image
    assert page.count("n/a [n/a, n/a]") == len(undefined)
