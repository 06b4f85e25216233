"""Calibration and operating points: temperature scaling, ECE, Brier, thresholds, lesion bootstrap,
and the calibrated + TTA probabilities agreeing between PyTorch and the ONNX runtime."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from lesion_pl.calibration import (
    binary_stats,
    bootstrap_ci,
    brier_score,
    decision_bias,
    fit_prior_correction,
    fit_temperature,
    nll,
    promise_text,
    referral_promise,
    referral_threshold,
    threshold_for_sensitivity,
)
from lesion_pl.classes import CLASSES
from lesion_pl.config import load_config
from lesion_pl.errors import LesionPLError
from lesion_pl.evaluate.calibrate import calibration_error_floor, calibration_errors, keep_errors_down
from lesion_pl.evaluate.metrics import expected_calibration_error, malignancy_calibration_error
from lesion_pl.export.runtime import LesionOnnxClassifier
from lesion_pl.scoring import decide, softmax

from .conftest import clinical_metadata, invoke, named

CONFIDENCE = load_config().calibration.referral_confidence  # the default the fixture run was calibrated at


def _ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE written out here: bins (b/15, (b+1)/15], |accuracy - confidence| weighted by the bin's share."""
    conf, correct = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return float(sum(abs(correct[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def test_temperature_scaling_lowers_validation_nll_on_real_predictions(trained_run):
    """The NLLs calibrate reports, recomputed here: before, from the model's own 8-view logits (softmax per view,
    views averaged); after, from val_predictions.csv with scikit-learn."""
    import torch
    from sklearn.metrics import log_loss

    from lesion_pl.checkpoint import load_run_model
    from lesion_pl.evaluate.inference import predict_logits
    from lesion_pl.run import RunDir

    cal = json.loads((trained_run / "calibration.json").read_text())
    val = pd.read_csv(trained_run / "val_predictions.csv")
    labels = val["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    after = log_loss(labels, val[[f"p_{c}" for c in CLASSES]].to_numpy(), labels=range(len(CLASSES)))
    assert cal["val_nll_after"] == pytest.approx(after, abs=1e-4)  # the CSV keeps 6 decimals
    run = RunDir(trained_run)
    dm = run.datamodule(run.load_config(), progress=False)
    logits = torch.from_numpy(predict_logits(load_run_model(run), dm.dataset("val"), tta=True, progress=False))
    raw = logits.double().softmax(-1).mean(1).numpy()
    assert cal["val_nll_before"] == pytest.approx(log_loss(labels, raw, labels=range(len(CLASSES))), abs=1e-6)
    assert cal["split"] == "val" and cal["temperature"] > 0
    assert cal["val_nll_after"] < cal["val_nll_before"]
    assert len(cal["class_bias"]) == len(CLASSES) and 0.0 <= cal["prior_weight"] <= 1.5
    assert cal["decision"] == "balanced" and len(cal["decision_bias"]) == len(CLASSES)
    assert 0.0 <= cal["val_balanced_accuracy"] <= 1.0


def test_fit_temperature_finds_the_nll_minimum():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 500)
    logits = rng.normal(size=(500, 7))
    logits[np.arange(500), labels] += 2.0
    logits *= 5.0  # over-confident: the best temperature is well above 1
    t = fit_temperature(logits, labels)
    assert t > 1.5
    best = nll(softmax(logits, t), labels)
    assert best < nll(softmax(logits, t * 1.1), labels) and best < nll(softmax(logits, t / 1.1), labels)


def balanced_model(n: int = 4000, seed: int = 0, prior_power: float = 0.0):
    """Labels with a skewed prior, and logits that carry the likelihood plus `prior_power` times the
    log prior: 0 as a model trained on class-balanced batches gives them, 0.5 for square-root sampling."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.70, 0.15, 0.10, 0.05])
    labels = rng.choice(4, n, p=prior)
    x = rng.normal(size=(n, 4))
    x[np.arange(n), labels] += 1.5
    log_likelihood = 1.5 * x  # log N(x; 1.5 e_c, I) up to a constant
    return log_likelihood + prior_power * np.log(prior), labels, np.log(prior)


@pytest.mark.parametrize("prior_power, expected_weight", [(0.0, 1.0), (0.5, 0.5)])
def test_prior_correction_restores_the_missing_prior(prior_power, expected_weight):
    logits, labels, log_prior = balanced_model(prior_power=prior_power)
    fit = fit_prior_correction(logits, labels, log_prior)
    assert fit["prior_weight"] == pytest.approx(expected_weight, abs=0.2)
    assert fit["val_nll"] < nll(softmax(logits, fit_temperature(logits, labels)), labels) - 0.02
    assert np.allclose(np.sum(fit["class_bias"]), 0.0)


def test_balanced_decision_divides_the_prior_out_again():
    logits, labels, log_prior = balanced_model()
    fit = fit_prior_correction(logits, labels, log_prior)
    probs = softmax(logits, fit["temperature"], fit["class_bias"])
    balanced = decide(probs, decision_bias(log_prior, "balanced"))
    most_probable = decide(probs, decision_bias(log_prior, "accuracy"))
    assert np.array_equal(most_probable, probs.argmax(1))
    # each rule wins the metric it is named for
    assert balanced_accuracy_score(labels, balanced) > balanced_accuracy_score(labels, most_probable) + 0.05
    assert (most_probable == labels).mean() > (balanced == labels).mean()
    # and the balanced rule gives back the balanced-trained model's own decisions (prior weight ~1)
    assert (balanced == logits.argmax(1)).mean() > 0.95


def test_decide_by_hand():
    probs = np.array([[0.6, 0.4], [0.9, 0.1]])
    bias = decision_bias(np.log([0.8, 0.2]), "balanced")
    # 0.6 / 0.8 < 0.4 / 0.2, but 0.9 / 0.8 > 0.1 / 0.2
    assert decide(probs, bias).tolist() == [1, 0]
    assert decide(probs).tolist() == [0, 0]
    with warnings.catch_warnings():  # float32 zeros (onnxruntime's output) must not reach log(0)
        warnings.simplefilter("error")
        assert decide(np.array([[1.0, 0.0]], np.float32), bias).tolist() == [0]
    with pytest.raises(LesionPLError, match="calibration.decision"):
        decision_bias(np.log([0.8, 0.2]), "recall")


def test_ece_and_brier_by_hand():
    # 4 images, 2 classes of 7 used. Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right)
    probs = np.zeros((4, 7))
    probs[0, [0, 1]] = [0.9, 0.1]
    probs[1, [0, 1]] = [0.9, 0.1]
    probs[2, [1, 0]] = [0.6, 0.4]
    probs[3, [1, 0]] = [0.6, 0.4]
    labels = np.array([0, 1, 1, 1])
    # bins: {0.9, 0.9}: accuracy 0.5, confidence 0.9 -> 0.4; {0.6, 0.6}: accuracy 1.0, confidence 0.6 -> 0.4
    ece = expected_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.4, abs=1e-6)
    brier = ((0.1 ** 2 + 0.1 ** 2) + (0.9 ** 2 + 0.9 ** 2) + (0.4 ** 2 + 0.4 ** 2) * 2) / 4
    assert brier_score(probs, labels) == pytest.approx(brier)


def test_malignancy_ece_by_hand():
    i = {c: k for k, c in enumerate(CLASSES)}
    probs = np.zeros((4, 7))
    probs[0, [i["mel"], i["bcc"], i["nv"]]] = [0.6, 0.3, 0.1]  # malignancy 0.9, melanoma
    probs[1, [i["mel"], i["nv"]]] = [0.9, 0.1]  # malignancy 0.9, a naevus
    probs[2, [i["akiec"], i["bkl"]]] = [0.2, 0.8]  # malignancy 0.2, benign keratosis
    probs[3, [i["bcc"], i["nv"]]] = [0.2, 0.8]  # malignancy 0.2, a naevus
    labels = np.array([i["mel"], i["nv"], i["bkl"], i["nv"]])
    # bin 0.9: half malignant -> |0.9 - 0.5|; bin 0.2: none malignant -> |0.2 - 0|; half the images each
    assert malignancy_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.2, abs=1e-6)


def test_threshold_search_toy_case():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.85, 0.05])
    positive = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])  # 10 positives
    t = threshold_for_sensitivity(scores, positive, 0.9)
    assert t == pytest.approx(0.2)  # 9 of 10 positives are >= 0.2, and no higher threshold catches 9
    s = binary_stats(scores, positive, t)
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (9, 1, 1, 1)
    assert s["sensitivity"] == pytest.approx(0.9) and s["ppv"] == pytest.approx(0.9)
    assert threshold_for_sensitivity(scores, positive, 1.0) == pytest.approx(0.1)


def _positive_lesions(rng, n_lesions: int):
    """Scores of positive lesions with 1-3 images each, a lesion's images alike (its own level plus noise)."""
    per = rng.integers(1, 4, n_lesions)
    level = rng.beta(4, 2, n_lesions)
    scores = np.clip(np.repeat(level, per) + rng.normal(0, 0.05, per.sum()), 0, 1)
    return scores, np.repeat(np.arange(n_lesions), per)


def test_referral_threshold_with_confidence_holds_on_new_lesions_where_the_point_rule_does_not():
    rng = np.random.default_rng(0)
    population, _ = _positive_lesions(rng, 200_000)  # the sensitivity a threshold has on all lesions to come
    held = {None: [], 0.95: []}
    for trial in range(40):
        scores, groups = _positive_lesions(rng, 120)  # a validation split's positives
        positive = np.ones(len(scores), bool)
        point = referral_threshold(scores, positive, groups, 0.9, None)
        sure = referral_threshold(scores, positive, groups, 0.9, 0.95, n_boot=300, seed=trial)
        assert point["threshold"] == threshold_for_sensitivity(scores, positive, 0.9) == sure["point_threshold"]
        assert sure["threshold"] <= point["threshold"] and sure["lower_bound"] >= 0.9
        assert sure["positive_lesions"] == 120
        for conf, op in ((None, point), (0.95, sure)):
            held[conf].append((population >= op["threshold"]).mean() >= 0.9)
    assert np.mean(held[0.95]) >= 0.85  # 95% nominal, over 40 draws
    assert np.mean(held[None]) <= 0.75  # about half


def test_referral_threshold_is_reproducible_and_falls_with_confidence():
    rng = np.random.default_rng(1)
    scores, groups = _positive_lesions(rng, 150)
    negatives = rng.random(400) * 0.5  # ignored by the threshold: only positives set it
    s = np.concatenate([scores, negatives])
    pos = np.r_[np.ones(len(scores), bool), np.zeros(400, bool)]
    g = np.r_[groups, np.arange(400) + 10_000]
    a = referral_threshold(s, pos, g, 0.9, 0.9, n_boot=500, seed=4)
    assert a == referral_threshold(s, pos, g, 0.9, 0.9, n_boot=500, seed=4)
    b = referral_threshold(s, pos, g, 0.9, 0.99, n_boot=500, seed=4)
    assert b["threshold"] <= a["threshold"] and binary_stats(s, pos, b["threshold"])["sensitivity"] > 0.9


def test_too_few_positive_lesions_cannot_promise_the_target():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1])
    positive = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    op = referral_threshold(scores, positive, np.arange(8), 0.9, 0.95, n_boot=200)
    assert op["bootstrap_bound"] == 1.0  # the bootstrap cannot see below what it drew
    assert op["binomial_bound"] == pytest.approx(0.05 ** (1 / 5))  # 5 of 5 lesions, exact
    assert op["threshold"] == 0.5 and op["lower_bound"] < 0.9
    text = promise_text(referral_promise({**op, "val": binary_stats(scores, positive, op["threshold"])}))
    assert "too few positive lesions" in text and "5 positive lesions" in text


def test_calibration_never_leaves_a_reported_error_above_the_raw_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2.0, (3000, len(CLASSES)))
    p = softmax(logits)
    labels = np.array([rng.choice(len(CLASSES), p=row) for row in p])  # the raw softmax is calibrated
    before = calibration_errors(p, labels)
    result = {"temperature": 1.8}  # as if the NLL fit had gone astray: far underconfident
    guard = keep_errors_down(result, lambda t: softmax(logits, t), labels, before)
    assert guard["kept"] and guard["temperature_factor"] < 1.0 and guard["nll_temperature"] == 1.8
    assert all(guard["after"][k] <= before[k] for k in before)
    assert result["temperature"] == pytest.approx(1.8 * guard["temperature_factor"])
    fine = {"temperature": 1.0}
    assert keep_errors_down(fine, lambda t: softmax(logits, t), labels, before)["temperature_factor"] == 1.0
    assert fine["temperature"] == 1.0


def test_calibrate_writes_the_scores_its_thresholds_were_chosen_on(trained_run):
    cal = json.loads((trained_run / "calibration.json").read_text())
    val = pd.read_csv(trained_run / "val_predictions.csv")
    assert len(val) == cal["n_images"]
    errs = cal["calibration_errors"]
    # `kept` says whether both errors stayed at or below the raw softmax's (else the NLL fit is kept, and said)
    assert errs["kept"] == all(errs["val_after"][k] <= errs["val_before"][k] for k in errs["val_before"])
    labels = val["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    assert errs["val_after"]["ece"] == pytest.approx(_ece(val[[f"p_{c}" for c in CLASSES]].to_numpy(), labels),
                                                     abs=1e-4)
    positive = val["dx"].isin(["mel", "bcc", "akiec"]).to_numpy()
    op = cal["operating_points"]["malignant"]
    again = referral_threshold(val["malignant_prob"].to_numpy(), positive, val["group"].to_numpy(), 0.9,
                               CONFIDENCE, n_boot=1000, seed=42)
    assert op["confidence"] == CONFIDENCE and again["threshold"] == pytest.approx(op["threshold"], abs=2e-6)
    assert op["lower_bound"] == min(op["bootstrap_bound"], op["binomial_bound"]) == again["lower_bound"]
    assert op["val"]["sensitivity"] >= 0.9  # at or below the point rule's threshold


def test_bootstrap_ci_resamples_lesions_reproducibly():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(150), 2)  # two images per lesion
    positive = np.repeat(rng.random(150) < 0.3, 2)
    scores = np.clip(positive * 0.4 + rng.random(300) * 0.6, 0, 1)
    point = binary_stats(scores, positive, 0.5)
    a = bootstrap_ci(scores, positive, groups, 0.5, n_boot=300, seed=3)
    b = bootstrap_ci(scores, positive, groups, 0.5, n_boot=300, seed=3)
    assert a == b
    for k in ("sensitivity", "specificity", "ppv", "npv"):
        assert a[k][0] <= point[k] <= a[k][1] and a[k][0] < a[k][1]


def test_calibration_error_floor_is_what_calibrated_labels_show_and_shrinks_with_the_sample():
    """Labels drawn from the probabilities themselves are calibrated by construction: their measured ECE sits at
    the floor, and the floor falls as the sample grows. Labels that disagree with the probabilities sit above it."""
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2.0, (4000, len(CLASSES))))
    floor = calibration_error_floor(probs, draws=100, seed=1)
    assert floor == calibration_error_floor(probs, draws=100, seed=1)
    calibrated = np.array([rng.choice(len(CLASSES), p=p) for p in probs])
    measured = calibration_errors(probs, calibrated)
    for k in ("ece", "malignancy_ece"):
        assert 0 < floor[k] < 0.05 and abs(measured[k] - floor[k]) < 0.015
    small = calibration_error_floor(probs[:200], draws=100, seed=1)
    assert all(small[k] > 2 * floor[k] for k in floor)  # the bias falls about as 1/sqrt(n)
    overconfident = softmax(np.log(probs) * 3)  # same ranking, sharper: miscalibrated against `calibrated`
    assert calibration_errors(overconfident, calibrated)["ece"] > calibration_error_floor(overconfident)["ece"] + 0.05


def test_test_reports_calibration_and_operating_points(trained_run):
    """test's ECE, Brier and each referral's sensitivity, specificity, PPV and NPV, recomputed from its
    predictions.csv (scikit-learn's confusion matrix, the ECE and Brier written out here)."""
    from sklearn.metrics import confusion_matrix

    m = json.loads((trained_run / "test" / "metrics.json").read_text())
    preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    probs = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    labels = preds["dx"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    c = m["calibration"]
    assert c["temperature"] != 1.0
    assert c["ece_15_after"] == pytest.approx(_ece(probs, labels), abs=1e-4)
    assert c["brier_after"] == pytest.approx(((probs - np.eye(len(CLASSES))[labels]) ** 2).sum(1).mean(), abs=1e-4)
    assert 0 < c["ece_15_floor"] < 0.5 and 0 < c["malignancy_ece_15_floor"] < 0.5
    cal = json.loads((trained_run / "calibration.json").read_text())
    assert m["clinical"]["images_with_metadata"] == len(preds)  # every test image is on the fused threshold
    malignant = preds["dx"].isin(["mel", "bcc", "akiec"])
    for name, positive in (("malignant", malignant), ("melanoma", preds["dx"] == "mel")):
        op = m["operating_points"][name]
        score = preds["malignant_prob"] if name == "malignant" else preds["p_mel"]
        threshold = cal["operating_points"][name]["threshold"]
        tn, fp, fn, tp = confusion_matrix(positive, score >= threshold, labels=[False, True]).ravel()
        assert op["threshold"] == threshold and (op["tp"], op["fn"], op["fp"], op["tn"]) == (tp, fn, fp, tn)
        assert op["sensitivity"] == pytest.approx(tp / (tp + fn)) and op["specificity"] == pytest.approx(tn / (tn + fp))
        assert op["target_sensitivity"] == 0.9 and op["val_sensitivity"] >= 0.9 and op["confidence"] == CONFIDENCE
        assert 0 < op["val_lower_bound"] <= op["val_sensitivity"] and op["val_positive_lesions"] > 0
        for k in ("sensitivity", "specificity", "ppv", "npv"):
            lo, hi = op["ci95"][k]
            assert lo <= op[k] <= hi
    assert (trained_run / "test" / "reliability.png").stat().st_size > 10_000


def test_calibrated_tta_probabilities_agree_between_torch_and_onnx(trained_run, small_ham, tmp_path):
    """calibration.tta (the default) fits on 8-view scores; `test` and the exported model then score
    8 views unless told otherwise, and give the same probabilities."""
    cal = json.loads((trained_run / "calibration.json").read_text())
    assert cal["tta"] is True
    r = invoke("export", "--run", trained_run, "--quiet")
    assert r.exit_code == 0, r.output
    r = invoke("test", "--run", trained_run, "--quiet")
    assert r.exit_code == 0, r.output
    assert "the mean of 8 flips/rotations per image" in r.output and "note:" not in r.output
    assert json.loads((trained_run / "test" / "metrics.json").read_text())["tta"] is True
    preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    clf = LesionOnnxClassifier(trained_run / "export" / "model.onnx")
    assert clf.tta is True
    assert float(clf.metadata["temperature"]) == pytest.approx(cal["temperature"])
    assert json.loads(clf.metadata["class_bias"]) == pytest.approx(cal["class_bias"])
    files = [next(small_ham.rglob(f"{i}.jpg")) for i in preds["image_id"]]
    metadata = clinical_metadata(small_ham, preds["image_id"])  # test fused them, so the runtime does too
    onnx_default = clf.predict(files, metadata=metadata)
    torch_tta = preds[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert np.abs(onnx_default.probabilities - torch_tta).max() <= 1e-4
    assert clf.metadata["decision_rule"] == cal["decision"]
    assert onnx_default.top_class == named(preds)  # same decision rule, same refusals
    onnx_one_view = clf.predict(files, tta=False, metadata=metadata).probabilities
    assert np.abs(onnx_one_view - torch_tta).max() > 1e-3  # TTA does change something

    r = invoke("test", "--run", trained_run, "--no-tta", "--quiet")
    assert r.exit_code == 0, r.output
    assert "one view per image" in r.output and "calibrated on 8-view scores" in r.output
    one_view = pd.read_csv(trained_run / "test" / "predictions.csv")
    assert np.abs(one_view[[f"p_{c}" for c in CLASSES]].to_numpy() - onnx_one_view).max() <= 1e-4
    assert invoke("test", "--run", trained_run, "--quiet").exit_code == 0  # leave the default outputs for other tests


def test_predict_says_refer_or_not(trained_run, small_ham):
    model = trained_run / "export" / "model.onnx"
    if not model.exists():
        assert invoke("export", "--run", trained_run, "--quiet").exit_code == 0
    clf = LesionOnnxClassifier(model)
    files = sorted(small_ham.rglob("*.jpg"))[:6]
    r = invoke("predict", *files, "--model", model)
    assert r.exit_code == 0, r.output
    assert "referral threshold: malignancy >=" in r.output and "not a diagnostic device" in r.output
    assert f"with {CONFIDENCE:.0%} confidence" in r.output and "lower bound" in r.output
    assert "mean of its 8 flips/90-degree rotations" in r.output  # as the run was calibrated
    r1 = invoke("predict", *files, "--model", model, "--no-tta")
    assert "scored on one view" in r1.output and "calibrated on 8-view scores" in r1.output
    res = clf.predict(files)
    for f, refer in zip(files, res.refer, strict=True):
        line = next(out for out in r.output.splitlines() if out.startswith(str(f)))
        assert line.endswith("refer") if refer else line.endswith("no referral at this threshold")


def test_referral_figures_take_a_threshold_per_image():
    """test refers each image on its own threshold (fused or image-only), as predict does."""
    rng = np.random.default_rng(7)
    scores, positive = rng.random(300), rng.random(300) < 0.3
    groups = np.arange(300) // 2
    same = np.full(300, 0.4)
    assert binary_stats(scores, positive, same) == binary_stats(scores, positive, 0.4)
    assert bootstrap_ci(scores, positive, groups, same, 50) == bootstrap_ci(scores, positive, groups, 0.4, 50)
    mixed = np.where(np.arange(300) < 150, 0.4, 0.0)  # the second half: everyone referred
    got = binary_stats(scores, positive, mixed)
    first, second = binary_stats(scores[:150], positive[:150], 0.4), binary_stats(scores[150:], positive[150:], 0.0)
    assert got["tp"] == first["tp"] + second["tp"] and got["fp"] == first["fp"] + second["fp"]
