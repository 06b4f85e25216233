"""Scoring is defined once (lesion_pl/scoring.py): the referral scores, which the torch metrics and the ONNX
metadata follow, and the policy that turns logits into calibrated probabilities, the class named and the
referral, the same from calibration.json and from an exported model's metadata. No data set needed."""
from __future__ import annotations

import json

import numpy as np
import torch

from lesion_pl.classes import CLASSES, MALIGNANT, parse_label_space
from lesion_pl.evaluate.metrics import is_malignant, malignancy
from lesion_pl.scoring import ScoringPolicy, describe, is_positive, referral_score, score_indices, score_names


def test_the_scores_sum_their_classes():
    probs = np.random.default_rng(0).dirichlet(np.ones(len(CLASSES)), 50)
    mal = sum(probs[:, CLASSES.index(c)] for c in MALIGNANT)
    np.testing.assert_allclose(referral_score(probs, "malignant"), mal)
    np.testing.assert_allclose(referral_score(probs, "melanoma"), probs[:, CLASSES.index("mel")])
    assert referral_score(probs[0], "malignant") == mal[0]  # one row
    labels = np.arange(len(CLASSES))
    assert [CLASSES[i] for i in labels[is_positive(labels, "malignant")]] == sorted(MALIGNANT)
    # another class order (an ONNX file's) picks the same classes by name
    order = list(reversed(CLASSES))
    reordered = parse_label_space({"codes": order, "malignant": list(MALIGNANT), "melanoma": "mel"})
    assert [order[i] for i in score_indices("malignant", reordered)] == sorted(MALIGNANT, reverse=True)
    assert describe("malignant") == "sum of the probabilities of " + ", ".join(MALIGNANT)
    # a space without melanoma has no melanoma score; a binary one sums its one malignant class
    assert score_names(parse_label_space({"codes": ["benign", "malignant"], "malignant": ["malignant"]})) == (
        "malignant",)
    two = parse_label_space("melanoma")
    assert score_names(two) == ("malignant", "melanoma")
    np.testing.assert_allclose(referral_score(np.array([[0.3, 0.7]]), "melanoma", two), [0.3])


def test_the_torch_metrics_use_the_same_score():
    probs = np.random.default_rng(1).dirichlet(np.ones(len(CLASSES)), 20)
    labels = np.random.default_rng(2).integers(0, len(CLASSES), 20)
    np.testing.assert_allclose(malignancy(torch.from_numpy(probs)).numpy(), referral_score(probs, "malignant"))
    assert is_malignant(torch.from_numpy(labels)).bool().numpy().tolist() == is_positive(labels).tolist()


def _calibration(rng, clinical_model=None) -> dict:
    """A calibration.json as calibrate writes it (the fields the policy reads)."""
    bias = rng.normal(0, 0.5, len(CLASSES))
    return {"temperature": 1.7, "class_bias": (bias - bias.mean()).tolist(), "decision": "balanced",
            "decision_bias": (-bias + bias.mean()).tolist(), "tta": True, "clinical": clinical_model,
            "operating_points": {"malignant": {"threshold": 0.30}, "melanoma": {"threshold": 0.12}},
            "operating_points_image_only": {"malignant": {"threshold": 0.20}, "melanoma": {"threshold": 0.08}}}


def _age_model() -> dict:
    """A metadata model that reads age only: older, more likely bcc."""
    coef = np.zeros((len(CLASSES), 10))
    coef[CLASSES.index("bcc"), 7:] = 2.0
    return {"columns": {"age": "age"}, "sexes": [], "sites": [], "coef": coef.tolist(),
            "intercept": [0.0] * len(CLASSES), "log_prior": np.log(np.full(len(CLASSES), 1 / 7)).tolist(),
            "weight": 1.0}


def test_the_policy_scores_logits_as_calibration_defines_them():
    rng = np.random.default_rng(3)
    cal = _calibration(rng)
    policy = ScoringPolicy.from_calibration(cal)
    logits = rng.normal(0, 2, (40, 8, len(CLASSES)))  # 8 views
    s = policy(logits)
    z = logits / 1.7 + np.asarray(cal["class_bias"])
    expected = (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).mean(axis=1)  # the views' probabilities averaged
    np.testing.assert_allclose(s.probabilities, expected, rtol=1e-12)
    np.testing.assert_array_equal(s.top_index, (np.log(expected) + np.asarray(cal["decision_bias"])).argmax(1))
    assert not np.array_equal(s.top_index, expected.argmax(1))  # the balanced rule is not the argmax here
    np.testing.assert_allclose(s.scores["malignant"], referral_score(expected, "malignant"))
    # no metadata model: the image-only thresholds, one number for all
    assert s.with_metadata is None and s.thresholds == {"malignant": 0.20, "melanoma": 0.08}
    np.testing.assert_array_equal(s.refer("malignant"), s.scores["malignant"] >= 0.20)


def test_the_policy_fuses_metadata_and_refers_each_image_on_its_own_threshold():
    rng = np.random.default_rng(4)
    policy = ScoringPolicy.from_calibration(_calibration(rng, _age_model()))
    logits = rng.normal(0, 1, (6, len(CLASSES)))
    ages = [85, 80, None, 20, None, 75]
    s = policy(logits, {"age": ages})
    alone = policy(logits)
    assert s.with_metadata.tolist() == [a is not None for a in ages]
    np.testing.assert_allclose(s.probabilities[~s.with_metadata], alone.probabilities[~s.with_metadata])
    bcc = CLASSES.index("bcc")
    assert (s.probabilities[[0, 1, 5], bcc] > alone.probabilities[[0, 1, 5], bcc]).all()  # the old: more bcc
    np.testing.assert_array_equal(s.thresholds["malignant"], np.where(s.with_metadata, 0.30, 0.20))
    np.testing.assert_allclose(s.image_probabilities, alone.probabilities)


def test_an_uncalibrated_policy_names_the_most_probable_class_and_refers_no_one():
    logits = np.random.default_rng(5).normal(0, 1, (10, len(CLASSES)))
    s = ScoringPolicy.from_calibration(None)(logits)
    np.testing.assert_array_equal(s.top_index, logits.argmax(1))
    assert s.thresholds == {} and s.refer() is None


def test_the_onnx_metadata_gives_the_same_policy():
    """The runtime's policy (read from an exported file's metadata, the temperature inside the graph) scores
    the graph's probabilities as calibrate's policy scores the logits."""
    from lesion_pl.export.metadata import PREFIX
    from lesion_pl.export.onnx_export import metadata

    rng = np.random.default_rng(6)
    cal = _calibration(rng, _age_model())
    for op in (*cal["operating_points"].values(), *cal["operating_points_image_only"].values()):
        op.update(target_sensitivity=0.9, confidence=0.95, lower_bound=0.9, positive_lesions=50,
                  val={"sensitivity": 0.92, "specificity": 0.6})
    meta = {k[len(PREFIX):]: v for k, v in metadata({}, 64, [0.5] * 3, [0.2] * 3, cal).items()}
    onnx_policy, torch_policy = ScoringPolicy.from_onnx_metadata(meta), ScoringPolicy.from_calibration(cal)
    assert onnx_policy.in_graph and onnx_policy.tta and onnx_policy.classes == CLASSES
    logits = rng.normal(0, 1, (12, len(CLASSES)))
    ages = {"age": [70, None] * 6}
    a, b = torch_policy(logits, ages), onnx_policy.apply(torch_policy.image_probabilities(logits), ages)
    for field in ("probabilities", "top_index", "with_metadata"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field))
    for name in ("malignant", "melanoma"):
        np.testing.assert_allclose(a.scores[name], b.scores[name])
        np.testing.assert_array_equal(a.refer(name), b.refer(name))
    # a file that lists its own classes and malignant set is scored by them
    reordered = {**meta, "classes": json.dumps(list(reversed(CLASSES))), "malignant": json.dumps(["mel"])}
    policy = ScoringPolicy.from_onnx_metadata(reordered)
    assert policy.indices("malignant") == [list(reversed(CLASSES)).index("mel")]
