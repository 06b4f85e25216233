"""Classification metrics (torchmetrics), one definition for validation and test.

All metrics take class probabilities [N, C] and integer targets [N]; the test metrics also take the
classes named (`pred`, by the run's decision rule; default: the most probable). The malignancy
probability is the sum of the malignant classes' probabilities.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryCalibrationError,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper

from ..calibration import binary_stats, bootstrap_ci, lesion_bootstrap, referral_promise
from ..classes import HAM10000, LabelSpace
from ..scoring import Scored, ScoringPolicy, referral_score, score_indices, scores_and_positives


def malignancy(probs: torch.Tensor, space: LabelSpace = HAM10000) -> torch.Tensor:
    """`scoring.referral_score(probs, "malignant")` for torch tensors."""
    return referral_score(probs, "malignant", space)


def is_malignant(target: torch.Tensor, space: LabelSpace = HAM10000) -> torch.Tensor:
    return torch.isin(target, torch.tensor(score_indices("malignant", space), device=target.device)).long()


class MalignantAUROC(BinaryAUROC):
    """AUROC of the space's malignant classes (HAM10000: mel, bcc, akiec) vs the rest, from class probabilities."""

    def __init__(self, space: LabelSpace = HAM10000, **kwargs):
        super().__init__(**kwargs)
        self.space = space

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(malignancy(preds, self.space), is_malignant(target, self.space))


def metric_collection(per_class: bool = False, auroc: bool = True, space: LabelSpace = HAM10000) -> MetricCollection:
    c, classes = space.num_classes, space.classes
    metrics: dict = {
        "accuracy": MulticlassAccuracy(c, average="micro"),
        "balanced_accuracy": MulticlassRecall(c, average="macro"),
        "precision_macro": MulticlassPrecision(c, average="macro"),
        "recall_macro": MulticlassRecall(c, average="macro"),
        "f1_macro": MulticlassF1Score(c, average="macro"),
    }
    if auroc:
        metrics["auroc_macro"] = MulticlassAUROC(c, average="macro")
        metrics["auroc_malignant"] = MalignantAUROC(space)
    if per_class:
        metrics["recall"] = ClasswiseWrapper(MulticlassRecall(c, average=None), labels=list(classes), prefix="recall_")
        if auroc:
            metrics["auroc"] = ClasswiseWrapper(MulticlassAUROC(c, average=None), labels=list(classes),
                                                prefix="auroc_")
    # no compute groups: in a group with the macro recall, the per-class wrapper's own recall is never
    # updated after a reset, and torchmetrics warns "compute before update" every epoch (its values
    # are right); seven classes make the duplicated updates cost nothing
    return MetricCollection(metrics, compute_groups=False)


def metrics_report(probs: torch.Tensor, target: torch.Tensor, pred: torch.Tensor | None = None,
                   space: LabelSpace = HAM10000) -> dict:
    """The test metrics as plain numbers: the overall scores and `per_class` {code: {...}}.

    Accuracy, precision, recall and F1 score `pred` (the most probable classes where not given);
    the AUROCs score the probabilities.

    Macro averages are over the classes present in `target` (`classes_present`), so data with only
    some of the classes (another source, a subset) is not scored on classes it cannot have; an
    absent class's own figures are NaN (null in metrics.json).
    """
    pred = probs.argmax(1) if pred is None else pred
    n, classes = space.num_classes, space.classes
    with warnings.catch_warnings():  # torchmetrics warns of each absent class, which is NaN below
        warnings.filterwarnings("ignore", message="No positive samples in targets")
        per = {
            "precision": MulticlassPrecision(n, average=None)(pred, target),
            "recall": MulticlassRecall(n, average=None)(pred, target),
            "f1": MulticlassF1Score(n, average=None)(pred, target),
            "auroc": MulticlassAUROC(n, average=None)(probs, target),
        }
    support = torch.bincount(target, minlength=n)
    present = support > 0
    mal = is_malignant(target, space)
    out = {
        "n_images": int(len(target)),
        "classes_present": [c for c, p in zip(classes, present, strict=True) if p],
        "accuracy": float((pred == target).float().mean()),
        "balanced_accuracy": float(per["recall"][present].mean()),
        "precision_macro": float(per["precision"][present].mean()),
        "recall_macro": float(per["recall"][present].mean()),
        "f1_macro": float(per["f1"][present].mean()),
        "auroc_macro": float(per["auroc"][present].mean()) if present.sum() > 1 else float("nan"),
        "auroc_malignant": float(BinaryAUROC()(malignancy(probs, space), mal)) if 0 < mal.sum() < len(mal)
        else float("nan"),
    }
    if space.melanoma is not None:  # the melanoma score against every other class: its class's own AUROC
        out["auroc_melanoma"] = float(per["auroc"][space.index[space.melanoma]]) if present[
            space.index[space.melanoma]] and present.sum() > 1 else float("nan")
    predicted = torch.bincount(pred, minlength=n) > 0

    def value(name: str, i: int) -> float:
        # a class the data lacks has no recall, F1 or AUROC (torchmetrics says 0), and no precision
        # unless it was named
        if not present[i] and (name != "precision" or not predicted[i]):
            return float("nan")
        return float(per[name][i])

    out["per_class"] = {code: {**{k: value(k, i) for k in per}, "support": int(support[i])}
                        for i, code in enumerate(classes)}
    if space.binary and len(space.malignant) == 1:  # a two-class task: the named class's sensitivity and specificity
        positive = space.index[space.malignant[0]]
        out["sensitivity"] = value("recall", positive)
        out["specificity"] = value("recall", 1 - positive)
    return out


def binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC by the rank-sum (Mann-Whitney) formula, ties averaged; nan without both classes.

    For the bootstrap's thousands of calls: 0.3 ms on 1,500 scores, where sklearn's roc_auc_score
    takes 5 ms and torchmetrics more."""
    from scipy.stats import rankdata

    pos = positive.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((rankdata(scores)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `target`: `metrics_report`'s definition, in numpy, for the
    bootstrap's thousands of calls and for numpy callers (calibrate, export's int8 check, benchmarks)."""
    target, pred = np.asarray(target), np.asarray(pred)
    support = np.bincount(target)
    present = np.flatnonzero(support)
    return float((np.bincount(target[pred == target], minlength=len(support))[present] / support[present]).mean())


def headline_ci(probs: np.ndarray, target: np.ndarray, groups: np.ndarray, n_boot: int = 1000,
                seed: int = 0, pred: np.ndarray | None = None, space: LabelSpace = HAM10000) -> dict:
    """95% intervals of balanced accuracy, macro AUROC, malignant AUROC and (where the space has one) melanoma
    AUROC, resampling lesions.

    The same definitions as `metrics_report` (macro over the classes present in each resample), in
    numpy, so a thousand resamples take seconds.
    """
    pred = probs.argmax(1) if pred is None else pred
    mal_score, mal = scores_and_positives(probs, target, "malignant", space)
    mel = None if space.melanoma is None else scores_and_positives(probs, target, "melanoma", space)

    def stats(pick):
        t = target[pick]
        present = np.flatnonzero(np.bincount(t))
        out = {"balanced_accuracy": balanced_accuracy(t, pred[pick]),
               "auroc_macro": float(np.nanmean([binary_auroc(probs[pick, c], t == c) for c in present]))
               if len(present) > 1 else float("nan"),
               "auroc_malignant": binary_auroc(mal_score[pick], mal[pick])}
        if mel is not None:
            out["auroc_melanoma"] = binary_auroc(mel[0][pick], mel[1][pick])
        return out

    return lesion_bootstrap(groups, stats, n_boot, seed)


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with `n_bins` equal-width confidence bins (torchmetrics, L1 norm)."""
    return float(MulticlassCalibrationError(probs.shape[1], n_bins=n_bins, norm="l1")(probs, target))


def malignancy_calibration_error(probs: np.ndarray, target: np.ndarray, n_bins: int = 15,
                                 space: LabelSpace = HAM10000) -> float:
    """ECE of the malignancy probability against malignant/benign, `n_bins` equal-width bins."""
    # torch.tensor copies: arrays read with pandas are read-only, which torch.as_tensor warns about
    score = malignancy(torch.tensor(probs, dtype=torch.float32), space).clamp(0, 1)
    return float(BinaryCalibrationError(n_bins=n_bins, norm="l1")(score, is_malignant(torch.tensor(target), space)))


def operating_points(policy: ScoringPolicy, scored: Scored, positives: dict, groups: np.ndarray, n_boot: int,
                     seed: int) -> dict:
    """Each validation-chosen referral applied to these images as predict applies it (each image on its own
    threshold: the fused one where its metadata was fused, the image-only one elsewhere), with lesion-bootstrap
    95% CIs. `positives`: score name -> which images count as positive."""
    out = {}
    for name, op in policy.operating_points.items():
        scores, positive, threshold = scored.scores[name], positives[name], scored.thresholds[name]
        out[name] = {**referral_promise(op), **binary_stats(scores, positive, threshold),
                     "ci95": bootstrap_ci(scores, positive, groups, threshold, n_boot, seed)}
        if scored.with_metadata is not None and not scored.with_metadata.all():
            out[name]["images_on_image_only_threshold"] = int((~scored.with_metadata).sum())
    return out


def by_source(probs: np.ndarray, target: np.ndarray, pred: np.ndarray, rows, space: LabelSpace, n_boot: int,
              seed: int) -> dict | None:
    """For a run of several sources (rows' column `source`): each source's balanced accuracy (over the classes it
    has), malignant and melanoma AUROC, with lesion-bootstrap 95% CIs; None for one source."""
    if "source" not in rows or rows["source"].nunique() < 2:
        return None
    out = {}
    for name in rows["source"].unique():
        mine = (rows["source"] == name).to_numpy()
        t, p = target[mine], probs[mine]
        figures = {"n_images": int(mine.sum()), "balanced_accuracy": balanced_accuracy(t, pred[mine]),
                   "auroc_malignant": binary_auroc(*scores_and_positives(p, t, "malignant", space))}
        if space.melanoma is not None:
            figures["auroc_melanoma"] = binary_auroc(*scores_and_positives(p, t, "melanoma", space))
        ci = headline_ci(p, t, rows["group"].to_numpy()[mine], n_boot, seed, pred[mine], space)
        out[str(name)] = {**figures, "ci95": {k: ci[k] for k in figures if k in ci}}
    return out
