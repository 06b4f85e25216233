"""Figures where HAM10000's follow-up shortcut is gone (issue #38): on histopathology-confirmed lesions, by
diagnosis method, and on a second archive (ISIC 2017) that the run never saw."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lesion_pl.classes import HAM10000
from lesion_pl.evaluate.confirmed import by_method, confirmed_figures
from lesion_pl.scoring import ScoringPolicy

from .conftest import ISIC2017_COLUMNS, invoke, isic2017_slice

MEL, NV = HAM10000.index["mel"], HAM10000.index["nv"]
MALIGNANT = [HAM10000.index[c] for c in HAM10000.malignant]


def _point(threshold):
    return {"threshold": threshold, "target_sensitivity": 0.9, "confidence": 0.99, "lower_bound": 0.9,
            "positive_lesions": 10, "val": {"sensitivity": 0.92, "specificity": 0.5}}


@pytest.fixture
def fixed():
    """400 images with random probabilities whose malignancy leans on the label, dx_type as HAM10000 assigns it
    (malignant: histo; nevi: histo, follow_up or consensus), two images per lesion."""
    rng = np.random.default_rng(3)
    n = 400
    target = rng.choice(7, n, p=[0.05, 0.07, 0.11, 0.02, 0.15, 0.58, 0.02])
    logits = rng.normal(size=(n, 7))
    logits[np.arange(n), target] += rng.normal(0.8, 1.0, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    method = np.where(np.isin(target, MALIGNANT), "histo",
                      rng.choice(["histo", "follow_up", "consensus"], n, p=[0.35, 0.55, 0.10]))
    rows = pd.DataFrame({"group": np.arange(n) // 2, "dx_type": method})
    policy = ScoringPolicy(operating_points={"malignant": _point(0.35), "melanoma": _point(0.12)},
                           operating_points_image_only={"malignant": _point(0.35), "melanoma": _point(0.12)})
    return policy, policy.apply(probs), target, rows


def test_histo_figures_equal_sklearn_on_the_confirmed_rows(fixed):
    policy, scored, target, rows = fixed
    h = confirmed_figures(policy, scored, target, rows, n_boot=200, seed=0)
    histo = rows["dx_type"].to_numpy() == "histo"
    mal = np.isin(target, MALIGNANT)
    mal_p = scored.probabilities[:, MALIGNANT].sum(1)
    mel_p = scored.probabilities[:, MEL]
    assert h["available"] and h["images"] == histo.sum() and h["benign_images"] == (histo & ~mal).sum()
    assert h["lesions"] == rows["group"][histo].nunique() and h["nevus_images"] == (histo & (target == NV)).sum()
    assert h["auroc_malignant"] == pytest.approx(roc_auc_score(mal[histo], mal_p[histo]), abs=1e-12)
    assert h["auroc_melanoma"] == pytest.approx(roc_auc_score(target[histo] == MEL, mel_p[histo]), abs=1e-12)
    vs = histo & ((target == MEL) | (target == NV))
    assert h["auroc_melanoma_vs_nevi"] == pytest.approx(roc_auc_score(target[vs] == MEL, mel_p[vs]), abs=1e-12)
    for key in ("auroc_malignant", "auroc_melanoma", "auroc_melanoma_vs_nevi"):
        lo, hi = h["ci95"][key]
        assert lo < h[key] < hi and hi - lo < 0.3
    # the referral applied to the confirmed lesions alone: specificity counts only the confirmed benign ones
    op = h["operating_points"]["malignant"]
    assert op["specificity"] == pytest.approx((mal_p[histo & ~mal] < 0.35).mean())
    assert op["sensitivity"] == pytest.approx((mal_p[histo & mal] >= 0.35).mean())
    assert op["tn"] + op["fp"] == h["benign_images"]
    assert h["operating_points"]["melanoma"]["sensitivity"] == pytest.approx(
        (mel_p[histo & (target == MEL)] >= 0.12).mean())


def test_table_by_diagnosis_method_equals_sklearn(fixed):
    policy, scored, target, rows = fixed
    table = {r["dx_type"]: r for r in by_method(scored, target, rows, policy.space)}
    method = rows["dx_type"].to_numpy()
    assert set(table) == {"histo", "follow_up", "consensus"}
    mal = np.isin(target, MALIGNANT)
    mal_p = scored.probabilities[:, MALIGNANT].sum(1)
    mel_p = scored.probabilities[:, MEL]
    for value, row in table.items():
        mine = method == value
        assert row["images"] == mine.sum() and row["benign_images"] == (mine & ~mal).sum()
        both = mal | (mine & ~mal)  # every malignant image against this method's benign ones
        assert row["auroc_malignant_vs_these_benign"] == pytest.approx(roc_auc_score(mal[both], mal_p[both]))
        vs = (target == MEL) | (mine & (target == NV))
        assert row["auroc_melanoma_vs_these_nevi"] == pytest.approx(roc_auc_score(target[vs] == MEL, mel_p[vs]))
        assert row["malignant_referral_specificity"] == pytest.approx((mal_p[mine & ~mal] < 0.35).mean())
        assert row["error_rate"] == pytest.approx((scored.top_index[mine] != target[mine]).mean())


def test_a_source_without_dx_type_says_it_has_no_confirmed_figures(fixed):
    policy, scored, target, rows = fixed
    plain = rows.drop(columns="dx_type")
    h = confirmed_figures(policy, scored, target, plain, n_boot=10, seed=0)
    assert h == {"available": False, "reason": h["reason"]} and "no 'dx_type' column" in h["reason"]
    assert by_method(scored, target, plain, policy.space) is None
    nothing_benign = rows.assign(dx_type=np.where(np.isin(target, MALIGNANT), "histo", "follow_up"))
    h = confirmed_figures(policy, scored, target, nothing_benign, n_boot=10, seed=0)
    assert not h["available"] and "0 of them benign" in h["reason"]


def test_test_reports_the_confirmed_lesions_of_its_split(trained_run, small_ham):
    """The tiny run's test split: counts from the metadata and splits.csv, AUROCs recomputed from predictions.csv."""
    m = json.loads((trained_run / "test" / "metrics.json").read_text())
    preds = pd.read_csv(trained_run / "test" / "predictions.csv")
    meta = pd.read_csv(small_ham / "HAM10000_metadata.csv").set_index("image_id")
    splits = pd.read_csv(trained_run / "splits.csv")
    tested = splits[splits["split"] == "test"]["image_id"]
    assert sorted(preds["image_id"]) == sorted(tested)
    assert (preds["dx_type"].to_numpy() == meta.loc[preds["image_id"], "dx_type"].to_numpy()).all()
    histo = (preds["dx_type"] == "histo").to_numpy()
    mal = preds["dx"].isin(HAM10000.malignant).to_numpy()
    h = m["histo_confirmed"]
    assert h["available"] and h["images"] == histo.sum() and h["benign_images"] == (histo & ~mal).sum()
    assert h["auroc_malignant"] == pytest.approx(roc_auc_score(mal[histo], preds["malignant_prob"][histo]), abs=1e-5)
    vs = histo & preds["dx"].isin(["mel", "nv"]).to_numpy()
    assert h["auroc_melanoma_vs_nevi"] == pytest.approx(
        roc_auc_score(preds["dx"][vs] == "mel", preds["p_mel"][vs]), abs=1e-5)
    assert m["auroc_melanoma"] == pytest.approx(roc_auc_score(preds["dx"] == "mel", preds["p_mel"]), abs=1e-5)
    assert {r["dx_type"]: r["images"] for r in m["by_dx_type"]} == preds["dx_type"].value_counts().to_dict()


def test_the_second_archive_evaluates_a_run_that_never_saw_it(trained_run, isic2017_root, small_ham, tmp_path):
    """ISIC 2017 read as the csv format: its three classes scored, melanoma AUROC and the referral with CIs, no
    histopathology figures (it records no dx_type) and a line saying so; `data.where` keeps its val rows and says
    how many it left out; a source holding the run's own training images is refused."""
    root = isic2017_slice(isic2017_root, tmp_path / "isic2017", per_class=8)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report", "export", "evaluations"))
    r = invoke("test", "--run", run, "--data-root", root, "--format", "csv", "--split", "all",
               "--set", ISIC2017_COLUMNS, "--quiet")
    assert r.exit_code == 0, r.output
    assert "no figures on histopathology-confirmed lesions: this source records no 'dx_type' column" in r.output
    m = json.loads((run / "evaluations" / "isic2017-csv" / "metrics.json").read_text())
    labels = pd.read_csv(root / "labels.csv")
    assert m["n_images"] == len(labels) and m["classes_present"] == ["bkl", "mel", "nv"]
    preds = pd.read_csv(run / "evaluations" / "isic2017-csv" / "predictions.csv")
    assert m["auroc_melanoma"] == pytest.approx(roc_auc_score(preds["dx"] == "mel", preds["p_mel"]), abs=1e-5)
    assert m["histo_confirmed"]["available"] is False and "by_dx_type" not in m
    for key in ("balanced_accuracy", "auroc_malignant", "auroc_melanoma"):
        assert len(m["ci95"][key]) == 2
    assert set(m["operating_points"]) == {"malignant", "melanoma"}
    assert all(len(op["ci95"]["specificity"]) == 2 for op in m["operating_points"].values())

    r = invoke("test", "--run", run, "--data-root", root, "--format", "csv", "--split", "all", "--name", "val",
               "--set", ISIC2017_COLUMNS, "--set", "data.where={split: val}", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((run / "evaluations" / "val" / "metrics.json").read_text())
    assert m["n_images"] == (labels["split"] == "val").sum()
    assert m["rows_kept"] == {"rule": {"split": "val"}, "kept": int((labels["split"] == "val").sum()),
                              "left_out": int((labels["split"] == "train").sum())}
    r = invoke("test", "--run", run, "--data-root", root, "--format", "csv", "--split", "all", "--name", "x",
               "--set", ISIC2017_COLUMNS, "--set", "data.where={site: back}", "--quiet")
    assert r.exit_code == 2 and "data.where names column 'site'" in r.output, r.output
    r = invoke("test", "--run", run, "--data-root", root, "--split", "all", "--set", "model.dropout=0.1")
    assert r.exit_code == 2 and "only takes data.* keys" in r.output, r.output

    # the run's own images under another root: refused, nothing written
    copy = tmp_path / "ham_copy"
    shutil.copytree(small_ham, copy)
    r = invoke("test", "--run", run, "--data-root", copy, "--split", "all", "--quiet")
    assert r.exit_code == 2 and "in " + str(run) + "'s train or val split" in r.output, r.output
    assert not (run / "evaluations" / "ham_copy-ham10000").exists()
