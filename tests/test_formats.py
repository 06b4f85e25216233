"""Readers for the other formats (isic-csv, csv, folder), format detection, label mapping and
dropping, and paths that leave the data root; each fixture is real HAM10000 images re-laid out."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesion_pl.classes import CLASSES
from lesion_pl.data.sources import detect_format, read_source
from lesion_pl.errors import LesionPLError

from .conftest import evaluate_copy, invoke, sample_meta

ISIC_2018 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


@pytest.fixture(scope="module")
def meta(unseen_meta):
    return sample_meta(unseen_meta, 3, seed=1)


def _copy(ham_root, image_id, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ham_root / "images" / f"{image_id}.jpg", dest)


def isic_dataset(ham_root, meta, root, columns=ISIC_2018, extra_rows=()):
    rows = []
    for _, r in meta.iterrows():
        code = "AK" if r["dx"] == "akiec" and "AK" in columns else r["dx"].upper()
        rows.append({"image": r["image_id"], **{c: float(c == code) for c in columns}, "lesion_id": r["lesion_id"]})
        _copy(ham_root, r["image_id"], root / "ISIC2018_Task3_Training_Input" / f"{r['image_id']}.jpg")
    for image_id, code in extra_rows:
        rows.append({"image": image_id, **{c: float(c == code) for c in columns}, "lesion_id": image_id})
    pd.DataFrame(rows).to_csv(root / "GroundTruth.csv", index=False)
    return root


def test_isic_2018_csv(ham_root, meta, tmp_path):
    root = isic_dataset(ham_root, meta, tmp_path / "isic")
    assert detect_format(root) == "isic-csv"
    table = read_source("auto", root)
    assert sorted(table["image_id"]) == sorted(meta["image_id"])
    assert table.set_index("image_id")["dx"].to_dict() == meta.set_index("image_id")["dx"].to_dict()
    assert table.set_index("image_id")["group"].to_dict() == meta.set_index("image_id")["lesion_id"].to_dict()


def test_isic_2019_classes_outside_the_label_space(ham_root, meta, tmp_path):
    cols = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    scc = meta["image_id"][0]  # a real image relabelled as SCC for the test
    root = isic_dataset(ham_root, meta[1:], tmp_path / "isic19", cols, extra_rows=[(scc, "SCC")])
    _copy(ham_root, scc, root / "extra" / f"{scc}.jpg")
    with pytest.raises(LesionPLError, match=r"unknown label\(s\) 'scc' in 1 row\(s\).*data.label_map"):
        read_source("isic-csv", root)
    dropped = read_source("isic-csv", root, {"drop_labels": ["SCC"]})
    assert len(dropped) == len(meta) - 1 and dropped.attrs["dropped"] == {"SCC": 1}
    mapped = read_source("isic-csv", root, {"label_map": {"SCC": "akiec"}})
    assert mapped.set_index("image_id").loc[scc, "dx"] == "akiec"
    assert "akiec" in set(read_source("isic-csv", root, {"drop_labels": ["SCC"]})["dx"])  # AK -> akiec


def test_generic_csv_with_mapping_and_groups(ham_root, meta, tmp_path):
    root = tmp_path / "mine"
    names = {"nv": "nevus", "mel": "melanoma"}
    rows = []
    for _, r in meta.iterrows():
        rel = f"pics/{r['dx']}/{r['image_id']}.jpg"
        _copy(ham_root, r["image_id"], root / rel)
        rows.append({"file": rel, "diagnosis": names.get(r["dx"], r["dx"]), "patient": r["lesion_id"]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    opts = {"columns": {"image": "file", "label": "diagnosis", "group": "patient"},
            "label_map": {"nevus": "nv", "melanoma": "mel"}}
    table = read_source("csv", root, opts)
    assert len(table) == len(meta) and set(table["dx"]) == set(meta["dx"])
    assert table["group"].tolist() == meta["lesion_id"].tolist()
    with pytest.raises(LesionPLError, match="unknown label"):
        read_source("csv", root, {**opts, "label_map": {}})


def test_csv_path_outside_the_root_is_refused(ham_root, meta, tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    _copy(ham_root, meta["image_id"][0], tmp_path / "secret.jpg")
    pd.DataFrame({"image": ["../secret.jpg"], "label": ["nv"]}).to_csv(root / "labels.csv", index=False)
    with pytest.raises(LesionPLError, match=r"image path '../secret.jpg' points outside the data root"):
        read_source("csv", root)


def test_folder_layout(ham_root, meta, tmp_path):
    root = tmp_path / "folders"
    for _, r in meta.iterrows():
        name = "Melanoma" if r["dx"] == "mel" else r["dx"].upper()
        _copy(ham_root, r["image_id"], root / name / f"{r['image_id']}.jpg")
    assert detect_format(root) == "folder"
    with pytest.raises(LesionPLError, match="unknown label.*'melanoma'"):
        read_source("auto", root)
    table = read_source("auto", root, {"label_map": {"Melanoma": "mel"}})
    assert sorted(table["dx"]) == sorted(meta["dx"])


def test_undetectable_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(LesionPLError, match="cannot tell the format"):
        read_source("auto", tmp_path)


def test_data_summary_for_each_format(ham_root, ham_meta, tmp_path):
    meta = sample_meta(ham_meta, 25, seed=2)  # enough lesions per class for 20 stratified folds
    isic = isic_dataset(ham_root, meta, tmp_path / "isic")
    folder = tmp_path / "folder"
    for _, r in meta.iterrows():
        _copy(ham_root, r["image_id"], folder / r["dx"] / f"{r['image_id']}.jpg")
    mine = tmp_path / "csv"
    mine.mkdir()
    shutil.copytree(folder, mine / "pics")
    images = [f"pics/{d}/{i}.jpg" for i, d in zip(meta["image_id"], meta["dx"], strict=True)]
    pd.DataFrame({"image": images, "label": meta["dx"],
                  "lesion": meta["lesion_id"]}).to_csv(mine / "labels.csv", index=False)
    for root, extra in ((isic, []), (folder, []), (mine, ["--format", "csv", "--set", "data.columns.group=lesion"])):
        r = invoke("data", "summary", "--data-root", root, *extra)
        assert r.exit_code == 0, r.output
        assert f"{len(meta)} images, {meta['lesion_id'].nunique() if root != folder else len(meta)} lesions" in r.output
        # a folder names no lesions: the split is by image, and the summary says so
        assert ("the split is by image" if root == folder else "no lesion is in two splits") in r.output


def isic2020_dataset(ham_root, meta, root):
    rows = []
    for _, r in meta.iterrows():
        _copy(ham_root, r["image_id"], root / "train" / f"{r['image_id']}.jpg")
        rows.append({"image_name": r["image_id"], "patient_id": r["lesion_id"], "target": int(r["dx"] == "mel")})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def test_isic2020_evaluates_melanoma_and_malignancy_outputs(trained_run, ham_root, meta, tmp_path):
    root = isic2020_dataset(ham_root, meta, tmp_path / "isic2020")
    assert detect_format(root) == "isic2020"
    table = read_source("auto", root)
    assert table["melanoma_target"].sum() == (meta["dx"] == "mel").sum()
    copy = tmp_path / "run"
    r = evaluate_copy(trained_run, copy, root)
    assert r.exit_code == 0, r.output
    assert "melanoma/benign labels only" in r.output
    import json
    m = json.loads((copy / "evaluations" / "isic2020-isic2020" / "metrics.json").read_text())
    assert m["n_images"] == len(meta) and m["positives"] == int((meta["dx"] == "mel").sum())
    from sklearn.metrics import roc_auc_score

    preds = pd.read_csv(copy / "evaluations" / "isic2020-isic2020" / "predictions.csv")
    assert sorted(preds["image_id"]) == sorted(meta["image_id"])
    assert m["auroc_melanoma_vs_target"] == pytest.approx(roc_auc_score(preds["melanoma_target"], preds["p_mel"]),
                                                          abs=1e-5)
    assert m["auroc_malignant_vs_target"] == pytest.approx(
        roc_auc_score(preds["melanoma_target"], preds["malignant_prob"]), abs=1e-5)
    assert set(m["operating_points"]) == {"malignant", "melanoma"}
    r = invoke("report", "--run", copy, "--data-root", root, "--evaluation", "isic2020-isic2020")
    assert r.exit_code == 2 and "scored melanoma vs the rest" in r.output, r.output
    r = invoke("data", "summary", "--data-root", root)
    assert r.exit_code == 0 and "melanoma" in r.output and "benign" in r.output, r.output
    r = invoke("fit", "--data-root", root, "--out", tmp_path / "nofit", "--quiet")
    assert r.exit_code == 2 and "cannot train" in r.output and not (tmp_path / "nofit").exists()


def dermamnist_npz(ham_root, ham_meta, root, size=28, per_split=(14, 7, 7)):
    """A DermaMNIST-layout .npz made from real HAM10000 images (medmnist's keys and label order)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    meta = sample_meta(ham_meta, 4, seed=6).sample(frac=1.0, random_state=0).reset_index(drop=True)
    arrays, start = {}, 0
    for split, n in zip(("train", "val", "test"), per_split, strict=True):
        part = meta[start:start + n]
        start += n
        arrays[f"{split}_images"] = np.stack([
            np.asarray(Image.open(ham_root / "images" / f"{i}.jpg").convert("RGB").resize((size, size)))
            for i in part["image_id"]])
        arrays[f"{split}_labels"] = np.array([[CLASSES.index(d)] for d in part["dx"]], dtype=np.uint8)
    np.savez(root / ("dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"), **arrays)
    return root, arrays


def test_dermamnist_through_medmnist_with_its_official_split(ham_root, ham_meta, tmp_path):
    root, arrays = dermamnist_npz(ham_root, ham_meta, tmp_path / "dm")
    assert detect_format(root) == "dermamnist"
    table = read_source("auto", root, {"cache_dir": tmp_path / "cache"})
    assert table["official_split"].value_counts().to_dict() == {"train": 14, "val": 7, "test": 7}
    first_test = table[table["official_split"] == "test"].iloc[0]
    assert first_test["label"] == arrays["test_labels"][0][0]
    np.testing.assert_array_equal(np.asarray(Image.open(first_test["path"])), arrays["test_images"][0])
    r = invoke("data", "summary", "--data-root", root)
    assert r.exit_code == 0, r.output
    assert "the source's official split" in r.output and "by image" in r.output
