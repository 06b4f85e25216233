"""Figures of a test: confusion matrix (counts and row-normalised) and ROC curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classes import CLASSES, HAM10000, LabelSpace
from ..io import atomic_path

# one colour per class in every figure: HAM10000's codes keep theirs in any space
PALETTE = dict(zip(CLASSES, ["#8c564b", "#d62728", "#2ca02c", "#9467bd", "#1f1f1f", "#1f77b4", "#e377c2"], strict=True))
OTHER_COLOURS = ["#ff7f0e", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a", "#c5b0d5", "#c49c94"]


def palette(space: LabelSpace = HAM10000) -> dict[str, str]:
    """A colour for each class of the space."""
    others = iter(OTHER_COLOURS * (1 + space.num_classes // len(OTHER_COLOURS)))
    return {c: PALETTE[c] if c in PALETTE else next(others) for c in space.classes}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)


def confusion_matrix_png(target: np.ndarray, pred: np.ndarray, path: Path, space: LabelSpace = HAM10000) -> np.ndarray:
    import seaborn as sns

    plt = _plt()
    classes = list(space.classes)
    k = len(classes)
    cm = np.bincount(target * k + pred, minlength=k * k).reshape(k, k)
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.2))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=axes[0],
                xticklabels=classes, yticklabels=classes)
    sns.heatmap(cm / rows, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, ax=axes[1],
                xticklabels=classes, yticklabels=classes)
    for ax, title in zip(axes, ("Counts", "Row-normalised (recall on the diagonal)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    fig.suptitle(f"Confusion matrix, {len(target)} test images")
    _save(fig, path)
    return cm


def roc_png(target: np.ndarray, probs: np.ndarray, malignant_prob: np.ndarray, is_malignant: np.ndarray,
            path: Path, operating_point: dict | None = None, space: LabelSpace = HAM10000) -> None:
    """ROC per class (one vs rest) and malignant vs benign, with the referral operating point if given."""
    from sklearn.metrics import roc_curve

    from .metrics import binary_auroc

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    colours = palette(space)
    for i, code in enumerate(space.classes):
        y = target == i
        if y.all() or not y.any():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, i])
        axes[0].plot(fpr, tpr, color=colours[code],
                     label=f"{code}: {space.name(code)} (AUROC {binary_auroc(probs[:, i], y):.3f})")
    if 0 < is_malignant.sum() < len(is_malignant):
        fpr, tpr, _ = roc_curve(is_malignant, malignant_prob)
        auc = binary_auroc(malignant_prob, is_malignant)
        axes[1].plot(fpr, tpr, color="crimson", label=f"malignant vs benign (AUROC {auc:.3f})")
        op = operating_point
        if op:
            axes[1].scatter([1 - op["specificity"]], [op["sensitivity"]], s=90, color="black", zorder=3,
                            label=f"referral threshold {op['threshold']:.3f} (chosen on validation): "
                                  f"sensitivity {op['sensitivity']:.3f}, specificity {op['specificity']:.3f}")
    for ax, title in zip(axes, ("One class vs the rest", "Malignant (mel, bcc, akiec) vs benign"), strict=True):
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (1 - specificity)",
               ylabel="True positive rate (sensitivity)", title=title)
        ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def reliability_png(raw: np.ndarray, calibrated: np.ndarray, target: np.ndarray, path: Path) -> None:
    """Reliability diagram (15 bins): accuracy against confidence, before and after calibration."""
    from ..calibration import reliability

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    for probs, name, color in ((raw, "before", "tab:orange"), (calibrated, "after calibration", "tab:blue")):
        _, rows = reliability(probs, target)
        conf = [r[0] for r in rows if r[2]]
        acc = [r[1] for r in rows if r[2]]
        ax.plot(conf, acc, marker="o", color=color, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Confidence (top-class probability)", ylabel="Accuracy",
           title=f"Reliability, {len(target)} images, 15 bins")
    ax.legend(loc="upper left")
    _save(fig, path)
