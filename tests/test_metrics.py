"""Metrics against values computed by hand on a small example."""
from __future__ import annotations

import warnings
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from lesion_pl.classes import CLASSES
from lesion_pl.evaluate.metrics import balanced_accuracy, binary_auroc, headline_ci, metric_collection, metrics_report
from lesion_pl.scoring import scores_and_positives

IDX = {c: i for i, c in enumerate(CLASSES)}


def one_hot_probs(preds, confidences):
    p = torch.full((len(preds), 7), 0.0)
    for row, (c, conf) in enumerate(zip(preds, confidences, strict=True)):
        p[row] = (1 - conf) / 6
        p[row, IDX[c]] = conf
    return p


@pytest.fixture()
def example():
    # 8 images: 3 nv (2 right), 3 mel (1 right, 2 called nv), 1 bcc (right), 1 bkl (called mel)
    target = torch.tensor([IDX[c] for c in ["nv", "nv", "nv", "mel", "mel", "mel", "bcc", "bkl"]])
    preds = ["nv", "nv", "mel", "mel", "nv", "nv", "bcc", "mel"]
    conf = [0.9, 0.8, 0.6, 0.7, 0.6, 0.55, 0.9, 0.5]
    return one_hot_probs(preds, conf), target


def test_report_against_hand_computed(example):
    probs, target = example
    r = metrics_report(probs, target)
    assert r["n_images"] == 8
    assert r["accuracy"] == pytest.approx(4 / 8)
    # recalls of the classes present: nv 2/3, mel 1/3, bcc 1, bkl 0; classes absent from both targets
    # and predictions are left out of the macro average (as sklearn's balanced_accuracy_score does)
    assert r["per_class"]["nv"]["recall"] == pytest.approx(2 / 3)
    assert r["per_class"]["mel"]["recall"] == pytest.approx(1 / 3)
    assert r["per_class"]["mel"]["precision"] == pytest.approx(1 / 3)  # 3 called mel, 1 right
    assert r["per_class"]["nv"]["precision"] == pytest.approx(2 / 4)
    assert r["per_class"]["nv"]["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1 + 0) / 4)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, probs.argmax(1)))
    assert r["per_class"]["mel"]["support"] == 3 and r["per_class"]["df"]["support"] == 0
    # malignant vs benign: malignant = 3 mel + 1 bcc; malignancy prob = p(akiec)+p(bcc)+p(mel)
    mal = probs[:, [IDX["akiec"], IDX["bcc"], IDX["mel"]]].sum(1)
    is_mal = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    pairs = [(m, b) for m in mal[is_mal == 1] for b in mal[is_mal == 0]]
    auc = sum(1.0 if m > b else 0.5 if m == b else 0.0 for m, b in pairs) / len(pairs)
    assert r["auroc_malignant"] == pytest.approx(auc)


def test_report_scores_the_named_classes_and_the_probabilities(example):
    probs, target = example
    # name mel for the two mels called nv (a decision rule that favours the rarer class)
    pred = probs.argmax(1).clone()
    pred[[4, 5]] = IDX["mel"]
    r, plain = metrics_report(probs, target, pred), metrics_report(probs, target)
    assert r["accuracy"] == pytest.approx(6 / 8)
    assert r["per_class"]["mel"]["recall"] == pytest.approx(1.0)
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, pred))
    assert r["auroc_malignant"] == plain["auroc_malignant"] and r["auroc_macro"] == plain["auroc_macro"]
    ci = headline_ci(probs.numpy(), target.numpy(), np.arange(8), n_boot=50, pred=pred.numpy())
    ci_plain = headline_ci(probs.numpy(), target.numpy(), np.arange(8), n_boot=50)  # same seed, same resamples
    assert ci["auroc_malignant"] == ci_plain["auroc_malignant"]
    assert ci["balanced_accuracy"][0] > ci_plain["balanced_accuracy"][0]


def test_collection_per_class_keys(example):
    probs, target = example
    coll = metric_collection(per_class=True).clone(prefix="val/")
    coll.update(probs[:4], target[:4])
    coll.update(probs[4:], target[4:])
    out = coll.compute()
    assert out["val/recall_nv"] == pytest.approx(2 / 3)
    assert out["val/accuracy"] == pytest.approx(0.5)
    assert {f"val/auroc_{c}" for c in CLASSES} <= set(out)


def test_collection_second_epoch_is_right_and_quiet(example):
    # each epoch updates, computes and resets; the second epoch must score its own batches, and
    # without torchmetrics' "compute before update" warning (once per epoch in every fit's log)
    probs, target = example
    coll = metric_collection(per_class=True).clone(prefix="val/")
    coll.update(probs, target)
    coll.compute()
    coll.reset()
    first_four = target[:4]  # nv, nv, nv, mel: recall_nv 2/3, recall_mel 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*called before the ``update``")
        coll.update(probs[:4], first_four)
        out = coll.compute()
    assert out["val/recall_nv"] == pytest.approx(2 / 3)
    assert out["val/recall_mel"] == pytest.approx(1.0)
    assert out["val/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(first_four, probs[:4].argmax(1)))


def test_rank_auroc_and_lesion_bootstrap_intervals(example):
    probs, target = example
    p, t = probs.numpy(), target.numpy()
    r = metrics_report(probs, target)
    assert binary_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert binary_auroc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)  # a tie counts half
    assert np.isnan(binary_auroc(np.array([0.1, 0.2]), np.array([1, 1])))
    # with a lesion per image, the intervals bracket the point estimates of metrics_report
    ci = headline_ci(p, t, np.arange(len(t)), n_boot=300, seed=1)
    for key in ("balanced_accuracy", "auroc_macro", "auroc_malignant"):
        assert ci[key][0] <= r[key] <= ci[key][1]
    assert ci == headline_ci(p, t, np.arange(len(t)), n_boot=300, seed=1)  # seeded
    # one lesion (group) holding every image: each resample is the whole set, so no spread at all
    one = headline_ci(p, t, np.zeros(len(t)), n_boot=50, seed=1)
    assert one["balanced_accuracy"] == pytest.approx([r["balanced_accuracy"]] * 2)
    assert one["auroc_malignant"] == pytest.approx([r["auroc_malignant"]] * 2)


def test_one_balanced_accuracy_in_numpy_torchmetrics_and_sklearn():
    """The numpy definition (calibrate, the bootstrap, export's int8 check) is metrics_report's (test) and
    validation's torchmetrics one, and sklearn's, also where classes are absent or named without support."""
    rng = np.random.default_rng(0)
    for n, classes in ((400, 7), (60, 4), (25, 2)):
        target = rng.integers(0, classes, n)
        pred = np.where(rng.random(n) < 0.6, target, rng.integers(0, 7, n))  # names classes absent from target
        probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 7).float()
        ours = balanced_accuracy(target, pred)
        assert ours == pytest.approx(metrics_report(probs, torch.from_numpy(target))["balanced_accuracy"], abs=1e-6)
        with pytest.warns(UserWarning) if len(set(pred) - set(target)) else nullcontext():
            assert ours == pytest.approx(balanced_accuracy_score(target, pred), abs=1e-12)
        if classes == 7:  # validation's torchmetrics macro recall, over all seven classes present
            val = metric_collection()["balanced_accuracy"]
            assert ours == pytest.approx(float(val(probs, torch.from_numpy(target))), abs=1e-6)


def test_one_auroc_in_numpy_torchmetrics_and_sklearn():
    """The rank AUROC (the bootstrap, calibrate, shift, the ROC plot) is metrics_report's torchmetrics one (test)
    and sklearn's, with ties (rounded scores) and in the macro over the classes present."""
    from sklearn.metrics import roc_auc_score
    from torchmetrics.classification import BinaryAUROC

    rng = np.random.default_rng(3)
    for n, decimals in ((500, 6), (300, 1), (40, 2)):  # 1 decimal: many ties
        positive = rng.random(n) < 0.3
        scores = np.round(np.clip(rng.normal(positive * 0.8, 1.0) / 4 + 0.5, 0, 1), decimals)
        ours = binary_auroc(scores, positive)
        assert ours == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
        assert ours == pytest.approx(float(BinaryAUROC()(torch.from_numpy(scores), torch.from_numpy(positive))),
                                     abs=1e-6)
    target = rng.integers(0, 5, 400)  # two classes absent: the macro is over the five present
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(400, 7)) + 1.5 * np.eye(7)[target]), 1).float()
    p = probs.numpy()
    macro = np.mean([binary_auroc(p[:, c], target == c) for c in range(5)])
    r = metrics_report(probs, torch.from_numpy(target))
    assert macro == pytest.approx(r["auroc_macro"], abs=1e-6)
    mal_score, mal = scores_and_positives(p, target, "malignant")
    assert binary_auroc(mal_score, mal) == pytest.approx(r["auroc_malignant"], abs=1e-6)
