"""Clinical metadata fusion: the encoding, the metadata model on the real HAM10000 metadata, the
fusion weight, and what calibrate and test write."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from lesion_pl import clinical
from lesion_pl.calibration import fit_fusion_weight
from lesion_pl.classes import CLASS_TO_INDEX, MALIGNANT_INDICES, NUM_CLASSES, parse_label_space
from lesion_pl.config import load_config, save_config
from lesion_pl.evaluate.metrics import binary_auroc
from lesion_pl.scoring import ScoringPolicy

from .conftest import invoke

COLUMNS = {"age": "age", "sex": "sex", "site": "localization"}


def test_encoding_decades_unknowns_and_unseen_values():
    model = {"columns": COLUMNS, "sexes": ["female", "male"], "sites": ["back", "face"]}
    records = {"age": [0, 19.5, 95, None, float("nan"), "n/a"],
               "sex": [" Male", "unknown", None, "female", None, None],
               "localization": ["BACK", "palm", None, None, "unknown", None]}
    x, usable = clinical.encode(records, model)
    assert x.shape == (6, clinical.AGE_DECADES + 2 + 2)
    assert np.flatnonzero(x[0]).tolist() == [0, 11, 12]  # age 0-9, male, back
    assert np.flatnonzero(x[1]).tolist() == [1]  # 10-19; "unknown" sex and an unseen site are zeros
    assert np.flatnonzero(x[2]).tolist() == [9]  # 90+
    assert np.flatnonzero(x[3]).tolist() == [10]  # female
    assert usable.tolist() == [True, True, True, True, False, False]
    assert clinical.unrecognised(records, model) == {"site": ["palm"]}


def test_metadata_model_learns_from_real_ham10000_metadata(ham_meta):
    """Fitted on 70% of the lesions, it ranks the other lesions' malignancy well above chance and
    has learnt that nevi are a young patient's lesion."""
    from sklearn.model_selection import GroupShuffleSplit

    labels = ham_meta["dx"].map(CLASS_TO_INDEX).to_numpy()
    split = GroupShuffleSplit(1, test_size=0.3, random_state=0)
    train, held = next(split.split(ham_meta, groups=ham_meta["lesion_id"]))
    model = clinical.fit(ham_meta.iloc[train], labels[train], COLUMNS, NUM_CLASSES)
    assert model["sites"] == sorted(set(ham_meta["localization"]) - {"unknown"})
    log_p = clinical.log_ratio(ham_meta.iloc[held], model) + np.asarray(model["log_prior"])
    probs = np.exp(log_p)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    auroc = binary_auroc(probs[:, list(MALIGNANT_INDICES)].sum(1), np.isin(labels[held], MALIGNANT_INDICES))
    assert auroc > 0.72
    young, old = clinical.log_ratio({"age": [25, 75]}, model)
    assert young[CLASS_TO_INDEX["nv"]] > old[CLASS_TO_INDEX["nv"]]
    assert young[CLASS_TO_INDEX["bcc"]] < old[CLASS_TO_INDEX["bcc"]]
    assert clinical.fit(ham_meta.iloc[train][["image_id"]], labels[train], COLUMNS, NUM_CLASSES) is None


def test_two_classes_give_sklearns_probabilities():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    ages = rng.uniform(5, 85, 300)
    labels = np.where(ages + rng.normal(0, 15, 300) > 50, CLASS_TO_INDEX["bcc"], CLASS_TO_INDEX["nv"])
    model = clinical.fit({"age": ages}, labels, COLUMNS, NUM_CLASSES)
    probs = np.exp(clinical.log_ratio({"age": ages}, model) + np.asarray(model["log_prior"]))
    x, _ = clinical.encode({"age": ages}, model)
    expected = LogisticRegression(max_iter=5000).fit(x, labels).predict_proba(x)
    np.testing.assert_allclose(probs[:, [CLASS_TO_INDEX["bcc"], CLASS_TO_INDEX["nv"]]], expected, atol=1e-6)
    assert probs[:, CLASS_TO_INDEX["mel"]].max() < 1e-9  # never seen in training


def test_fusion_weight_follows_how_informative_the_metadata_is():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 2000)
    image = np.full((2000, 3), 0.2)
    image[np.arange(2000), labels] = 0.6  # the image alone: right 60% of the time
    informative = np.log(np.full((2000, 3), 0.25) + 0.5 * np.eye(3)[labels]) - np.log(1 / 3)
    noise = rng.normal(0, 1, (2000, 3))
    assert fit_fusion_weight(image, informative, labels)[0] >= 0.8
    assert fit_fusion_weight(image, noise, labels)[0] == 0.0
    np.testing.assert_allclose(clinical.fuse(image, noise, 0.0), image)
    model = {"columns": COLUMNS, "sexes": [], "sites": [], "coef": np.zeros((3, 10)).tolist(),
             "intercept": [5.0, 0, 0], "log_prior": np.log([1 / 3] * 3).tolist(), "weight": 1.0}
    no_metadata = {"age": [None] * 2000}
    policy = ScoringPolicy(parse_label_space({"codes": ["a", "b", "c"]}), clinical=model)
    fused, used = policy.fuse(image, no_metadata)
    np.testing.assert_allclose(fused, image)  # rows without: image only
    assert not used.any()
    assert policy.fuse(image, None) == (image, None)
    with pytest.raises(ValueError, match="3 metadata rows for 2000 images"):
        policy.fuse(image, {"age": [1, 2, 3]})


def test_calibrate_and_test_write_the_fusion_and_the_image_only_metrics(trained_run, small_ham, tmp_path):
    cal = json.loads((trained_run / "calibration.json").read_text())
    assert cal["clinical_fit"]["used"] and cal["clinical_fit"]["fields"] == ["age", "sex", "site"]
    assert 0.0 <= cal["clinical"]["weight"] <= 1.5
    assert cal["clinical_fit"]["val_nll_fused"] <= cal["clinical_fit"]["val_nll_image_only"] + 1e-12
    assert set(cal["operating_points_image_only"]) == set(cal["operating_points"])
    metrics = json.loads((trained_run / "test" / "metrics.json").read_text())
    assert metrics["clinical"]["weight"] == cal["clinical"]["weight"]
    assert metrics["clinical"]["images_with_metadata"] == metrics["n_images"]
    assert set(metrics["clinical"]["image_only"]) >= {"balanced_accuracy", "auroc_malignant", "auroc_macro"}

    # the same run with clinical: false: no fusion, and the image-only figures become the headline
    run = tmp_path / "image_only"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("test", "report", "export"))
    cfg = load_config(run / "config.yaml")
    cfg.calibration.clinical = False
    save_config(cfg, run / "config.yaml")
    assert invoke("calibrate", "--run", run, "--quiet").exit_code == 0
    assert "clinical" not in json.loads((run / "calibration.json").read_text())
    assert invoke("test", "--run", run, "--quiet").exit_code == 0
    plain = json.loads((run / "test" / "metrics.json").read_text())
    assert "clinical" not in plain
    for key in ("balanced_accuracy", "auroc_malignant", "auroc_macro"):
        assert plain[key] == pytest.approx(metrics["clinical"]["image_only"][key], abs=1e-6)
    preds = pd.read_csv(run / "test" / "predictions.csv")
    assert len(preds) == metrics["n_images"]

    # its ONNX model has no metadata model: predict says the CSV is not used, and still predicts
    assert invoke("export", "--run", run, "--quiet").exit_code == 0
    image = next(small_ham.rglob(f"{preds['image_id'][0]}.jpg"))
    r = invoke("predict", image, "--model", run / "export" / "model.onnx", "--metadata",
               small_ham / "HAM10000_metadata.csv")
    assert r.exit_code == 0 and "is not used, every prediction is from the image alone" in r.output
    assert preds["pred"][0] in r.output.splitlines()[-1]
