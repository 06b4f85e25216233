"""Figures of the HTML report beyond the test's own: training curves, precision-recall,
image galleries with Grad-CAM and top-3 bars, error rates by subgroup. Each returns PNG bytes."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ..classes import HAM10000, LabelSpace
from .plots import palette


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def training_curves(log: pd.DataFrame) -> bytes:
    plt = _plt()
    per_epoch = log.groupby("epoch").last()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for col, label in (("train/loss_epoch", "train"), ("val/loss", "validation")):
        if col in per_epoch:
            axes[0].plot(per_epoch.index, per_epoch[col], marker=".", label=label)
    axes[0].set(title="Loss", xlabel="Epoch", ylabel="Cross entropy")
    axes[0].legend()
    for col, label in (("train/balanced_accuracy", "train"), ("val/balanced_accuracy", "validation")):
        if col in per_epoch:
            axes[1].plot(per_epoch.index, per_epoch[col], marker=".", label=label)
    axes[1].set(title="Balanced accuracy", xlabel="Epoch", ylabel="Mean recall over classes", ylim=(0, 1))
    axes[1].legend()
    lr_cols = [c for c in log.columns if c.startswith("lr-")]
    if lr_cols:
        # the LR monitor logs at the first step of an epoch, on rows without an epoch number
        lr = log[log[lr_cols[0]].notna()]
        epoch_end_steps = log.dropna(subset=["epoch"]).groupby("epoch")["step"].max().to_numpy()
        axes[2].plot(np.searchsorted(epoch_end_steps, lr["step"].to_numpy()), lr[lr_cols[0]], marker=".",
                     color="tab:green")
    axes[2].set(title="Learning rate (start of epoch)", xlabel="Epoch", ylabel="Learning rate")
    fig.tight_layout()
    return _png(fig)


def precision_recall(target, probs, mal_prob, is_mal, space: LabelSpace = HAM10000) -> bytes:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    colours = palette(space)
    for i, code in enumerate(space.classes):
        y = target == i
        if y.any():
            p, r, _ = precision_recall_curve(y, probs[:, i])
            ax.plot(r, p, color=colours[code], label=f"{code} (AP {average_precision_score(y, probs[:, i]):.3f})")
    if is_mal.any():
        p, r, _ = precision_recall_curve(is_mal, mal_prob)
        ax.plot(r, p, color="crimson", ls="--", lw=2,
                label=f"malignant (AP {average_precision_score(is_mal, mal_prob):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall (sensitivity)", ylabel="Precision (PPV)",
           title="Precision-recall, test split")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def gallery(items: list[dict], title: str, columns: int = 4, space: LabelSpace = HAM10000) -> bytes:
    """items: {image, cam overlay, true, pred, probs}; each cell is the overlay and a top-3 bar chart."""
    plt = _plt()
    colours, classes = palette(space), space.classes
    rows = max(1, int(np.ceil(len(items) / columns)))
    fig = plt.figure(figsize=(columns * 3.6, rows * 2.3))
    grid = fig.add_gridspec(rows, columns * 2, width_ratios=[1.25, 1] * columns, wspace=0.35, hspace=0.55)
    for k, it in enumerate(items):
        r, c = divmod(k, columns)
        ax = fig.add_subplot(grid[r, 2 * c])
        ax.imshow(it["overlay"])
        ok = it["true"] == it["pred"]
        ax.set_title(f"true {it['true']} / pred {it['pred']}", fontsize=8, color="darkgreen" if ok else "crimson")
        ax.set_xlabel(it["image_id"], fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        bar = fig.add_subplot(grid[r, 2 * c + 1])
        top = np.argsort(it["probs"])[::-1][:3]
        bar.barh(range(len(top)), it["probs"][top][::-1], color=[colours[classes[i]] for i in top][::-1])
        bar.set_yticks(range(len(top)), [classes[i] for i in top][::-1], fontsize=7)
        bar.set_xlim(0, 1)
        bar.tick_params(axis="x", labelsize=6)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def subgroup_errors(tables: dict[str, pd.DataFrame], overall: float) -> bytes:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 4.5))
    for ax, (name, t) in zip(np.atleast_1d(axes), tables.items(), strict=True):
        ax.barh(t.index.astype(str), t["error_rate"], color="tab:red", alpha=0.75)
        ax.axvline(overall, color="black", ls="--", lw=1, label=f"overall {overall:.3f}")
        ax.set(title=f"Error rate by {name}", xlabel="Share of test images misclassified", xlim=(0, 1))
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)
