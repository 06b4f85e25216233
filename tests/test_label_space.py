"""A run's own label space (issue #24): presets and custom spaces parsed with clear errors, and three spaces
trained end to end on real HAM10000 images (melanoma vs the rest, ISIC 2019's eight classes from a one-hot
CSV with UNK dropped, a three-class ImageFolder): fit, test, export, predict, report, with the ONNX file's
outputs and metadata in the run's space and the runtime's probabilities equal to test's."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lesion_pl.classes import HAM10000, PRESETS, parse_label_space
from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.scoring import score_indices

from .conftest import FAST, invoke, named, sample_meta


def test_presets_and_custom_spaces():
    assert parse_label_space(None) is HAM10000 and parse_label_space("ham10000") is HAM10000
    mel = PRESETS["melanoma"]
    assert mel.classes == ("mel", "other") and mel.malignant == ("mel",) and mel.binary
    assert mel.source_map["nv"] == "other" and "mel" not in mel.source_map
    space = parse_label_space({"codes": ["Benign", "suspicious", "malignant"], "malignant": ["malignant"]})
    assert space.classes == ("benign", "suspicious", "malignant") and space.melanoma is None
    assert space.name("suspicious") == "suspicious" and score_indices("malignant", space) == [2]
    for bad, message in ((["mel"], "must be a preset name"), ({"codes": ["a"]}, "two or more different codes"),
                         ({"codes": ["a", "b"], "malignant": ["c"]}, "names 'c' as malignant"),
                         ({"codes": ["a", "b"], "melanoma": "a"}, "must also be in data.classes.malignant"),
                         ({"codes": ["a", "b"], "colours": {}}, "unknown key"), ("isic2018", "must be one of")):
        with pytest.raises(LesionPLError, match=message):
            parse_label_space(bad)
    with pytest.raises(LesionPLError, match="data.classes must be one of ham10000, melanoma, isic2019"):
        load_config(None, ["data.classes=cats"])


def _fit_test_export(data_root, out, *sets):
    """fit, test, export and report of a small run in another space; returns the run's metrics.json."""
    args = [a for s in sets for a in ("--set", s)]
    r = invoke("fit", "--data-root", data_root, "--out", out, "--max-epochs", 2, *FAST, *args)
    assert r.exit_code == 0, r.output
    for command in (("test", "--run", out, "--quiet"), ("export", "--run", out, "--quiet"),
                    ("report", "--run", out, "--quiet")):
        r = invoke(*command)
        assert r.exit_code == 0, r.output
    return json.loads((out / "test" / "metrics.json").read_text())


def _runtime_equals_test(out, data_root, classes, malignant):
    """The exported model's outputs and metadata are in the run's space, and its probabilities are test's."""
    clf = LesionOnnxClassifier(out / "export" / "model.onnx")
    assert clf.classes == tuple(classes)
    assert json.loads(clf.metadata["malignant"]) == list(malignant)
    preds = pd.read_csv(out / "test" / "predictions.csv")
    files = [next(data_root.rglob(f"{_stem(i)}.jpg")) for i in preds["image_id"]]
    result = clf.predict(files, batch_size=16)
    probs = preds[[f"p_{c}" for c in classes]].to_numpy()
    assert result.probabilities.shape == (len(files), len(classes))
    assert not clf.clinical_fields  # these runs score the image alone, so the runtime needs no metadata
    assert np.abs(result.probabilities - probs).max() <= 1e-4
    assert result.top_class == named(preds)


def _stem(image_id: str) -> str:
    """An image id as a file stem (the folder reader's ids may carry the sub-folder)."""
    return str(image_id).rsplit("/", 1)[-1].rsplit(".", 1)[0]


def test_melanoma_against_the_rest_from_ham10000(small_ham, tmp_path):
    out = tmp_path / "mel"
    m = _fit_test_export(small_ham, out, "data.classes=melanoma", "calibration.clinical=false")
    assert m["classes"] == ["mel", "other"] and set(m["per_class"]) == {"mel", "other"}
    assert m["sensitivity"] == pytest.approx(m["per_class"]["mel"]["recall"])
    assert m["specificity"] == pytest.approx(m["per_class"]["other"]["recall"])
    assert 0 <= m["auroc_malignant"] <= 1 and set(m["operating_points"]) == {"malignant", "melanoma"}
    _runtime_equals_test(out, small_ham, ("mel", "other"), ("mel",))
    assert "Any other lesion" in (out / "report" / "index.html").read_text()
    image = next(small_ham.rglob("*.jpg"))
    r = invoke("predict", image, "--model", out / "export" / "model.onnx", "--out", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "p.json").read_text())["predictions"][0]
    assert {k for k in row if k.startswith("p_")} == {"p_mel", "p_other"} and row["top_class"] in ("mel", "other")
    assert row["malignancy"] == pytest.approx(row["p_mel"], abs=1e-5)


def test_isic_2019_eight_classes_with_unk_dropped(ham_root, ham_meta, tmp_path):
    """A one-hot ISIC 2019 CSV built from HAM10000 images: AK for akiec, some bkl relabelled SCC, a few UNK."""
    meta = sample_meta(ham_meta, 12, seed=3)
    root = tmp_path / "isic2019"
    (root / "images").mkdir(parents=True)
    codes = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
    bkl_lesions = meta.loc[meta["dx"] == "bkl", "lesion_id"].drop_duplicates()
    scc = set(bkl_lesions[: len(bkl_lesions) // 2])
    unk = set(meta.loc[meta["dx"] == "nv", "lesion_id"].drop_duplicates()[:2])
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = []
    for r in meta.itertuples():
        code = "SCC" if r.lesion_id in scc else "UNK" if r.lesion_id in unk else codes[r.dx]
        rows.append({"image": r.image_id, **{c: float(c == code) for c in columns}, "lesion_id": r.lesion_id})
        shutil.copy(ham_root / "images" / f"{r.image_id}.jpg", root / "images" / f"{r.image_id}.jpg")
    pd.DataFrame(rows).to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    out = tmp_path / "run8"
    m = _fit_test_export(root, out, "data.classes=isic2019", "data.drop_labels=[UNK]")
    assert m["classes"] == ["ak", "bcc", "bkl", "df", "mel", "nv", "scc", "vasc"]
    assert m["per_class"]["scc"]["support"] + m["per_class"]["ak"]["support"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["left_out"] == {"UNK": int(sum(r["UNK"] for r in rows))}
    _runtime_equals_test(out, root, PRESETS["isic2019"].classes, ("ak", "bcc", "mel", "scc"))


def test_three_class_image_folder(ham_root, ham_meta, tmp_path):
    """benign / suspicious / malignant folders: a space of the user's own, no groups (a warning says so)."""
    meta = sample_meta(ham_meta, 10, seed=4)
    groups = {"nv": "benign", "vasc": "benign", "df": "benign", "bkl": "suspicious", "akiec": "suspicious",
              "mel": "malignant", "bcc": "malignant"}
    root = tmp_path / "folders"
    for r in meta.itertuples():
        (root / groups[r.dx]).mkdir(parents=True, exist_ok=True)
        shutil.copy(ham_root / "images" / f"{r.image_id}.jpg", root / groups[r.dx] / f"{r.image_id}.jpg")
    out = tmp_path / "run3"
    space = "data.classes={codes: [benign, suspicious, malignant], malignant: [malignant]}"
    r = invoke("fit", "--data-root", root, "--out", out, "--max-epochs", 1, *FAST, "--set", space)
    assert r.exit_code == 0, r.output
    assert "the split is by image" in r.output
    for command in (("test", "--run", out, "--quiet"), ("export", "--run", out, "--quiet")):
        r = invoke(*command)
        assert r.exit_code == 0, r.output
    m = json.loads((out / "test" / "metrics.json").read_text())
    assert m["classes"] == ["benign", "suspicious", "malignant"] and set(m["operating_points"]) == {"malignant"}
    _runtime_equals_test(out, root, ("benign", "suspicious", "malignant"), ("malignant",))


def test_a_named_class_without_training_images_is_refused(small_ham, tmp_path):
    space = "data.classes={codes: [mel, other, scc], malignant: [mel, scc], source_map: {nv: other, bkl: other, " \
            "bcc: other, akiec: other, df: other, vasc: other}}"
    r = invoke("fit", "--data-root", small_ham, "--out", tmp_path / "x", "--max-epochs", 1, *FAST, "--set", space)
    assert r.exit_code != 0 and "no training image of class(es) scc" in r.output
    assert not (tmp_path / "x").exists()
