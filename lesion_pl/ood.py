"""Out-of-distribution score, defined once: how far an image's features (the network's penultimate features and
statistics of the image: lesion_pl.models.ood_features) lie from the training split's, as the squared Mahalanobis
distance to the nearest class mean under one shared covariance (Lee et al., NeurIPS 2018), averaged over the
image's views; and the rule that refuses an image whose score is above the threshold chosen on validation.
numpy only: the ONNX runtime imports it.

The fitted Gaussian is stored as `whiten` (W, with W W^T the shared precision) and the class means, so the
distance is ||f W - mu_c W||^2: the form the ONNX graph computes (`export.onnx_export.OnnxWrapper`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MEASURE = "squared Mahalanobis distance of the penultimate features and image statistics to the nearest " \
          "training class mean (shared Ledoit-Wolf covariance), the mean over the image's views"
OUTSIDE = "outside what this model was trained on"


@dataclass(frozen=True)
class Gaussian:
    """Class means [C, D] and the whitening matrix W [D, D] of the training split's features."""
    means: np.ndarray
    whiten: np.ndarray

    def score(self, features: np.ndarray) -> np.ndarray:
        """Features [N, D] -> [N]; [N, V, D] (V views) -> [N], the mean over views."""
        f = np.asarray(features, dtype=np.float64)
        z = f @ self.whiten
        centres = self.means @ self.whiten
        d2 = ((z[..., None, :] - centres) ** 2).sum(-1).min(-1)
        return d2.mean(-1) if f.ndim == 3 else d2


def fit_gaussian(features: np.ndarray, labels: np.ndarray, num_classes: int) -> Gaussian:
    """Class means and a Ledoit-Wolf shrunk covariance of the class-centred features (sklearn: fit time only).
    A class with no training image gets the overall mean."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    overall = f.mean(0)
    means = np.stack([f[labels == c].mean(0) if (labels == c).any() else overall for c in range(num_classes)])
    precision = LedoitWolf().fit(f - means[labels]).precision_
    whiten = np.linalg.cholesky((precision + precision.T) / 2)  # precision = W W^T
    return Gaussian(means, whiten)


def threshold(val_scores: np.ndarray, share: float) -> float:
    """The score below which `share` of validation's images fall (each passes where score <= threshold)."""
    return float(np.quantile(np.asarray(val_scores, dtype=np.float64), share, method="higher"))


@dataclass(frozen=True)
class OodRule:
    """A run's refusal rule: images whose score exceeds `threshold` are outside what it was trained on."""
    threshold: float
    share: float  # the share of validation's images chosen to pass
    facts: Mapping  # what it was measured on (calibration.json's "ood" entry, the ONNX metadata's)

    @classmethod
    def from_record(cls, record: Mapping | None) -> OodRule | None:
        if not record:
            return None
        return cls(float(record["threshold"]), float(record["share"]), dict(record))

    def outside(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64) > self.threshold

    def describe(self) -> str:
        f = self.facts
        text = (f"out-of-distribution threshold {self.threshold:.4g} ({f.get('measure', 'score')}), chosen so that "
                f"{self.share:.0%} of validation's images pass")
        if "val_pass" in f:
            text += f" ({f['val_pass']:.1%} of {f.get('n_val', '?')} did)"
        return text


def record(gaussian: Gaussian, val_scores: np.ndarray, share: float, n_train: int, views: int) -> dict:
    """calibration.json's "ood" entry (the Gaussian itself is stored beside it, RunDir.ood_path)."""
    t = threshold(val_scores, share)
    return {"measure": MEASURE, "threshold": t, "share": float(share), "views": int(views),
            "val_pass": float((np.asarray(val_scores) <= t).mean()), "n_val": int(len(val_scores)),
            "n_train": int(n_train), "feature_dim": int(gaussian.whiten.shape[0])}


def rethreshold(rule: Mapping, val_scores: np.ndarray, why: str) -> dict:
    """The same rule with its threshold chosen again, at its share, on another graph's validation scores (an int8
    model's: its scores are not the float model's)."""
    t = threshold(val_scores, float(rule["share"]))
    return {**rule, "threshold": t, "val_pass": float((np.asarray(val_scores) <= t).mean()),
            "n_val": int(len(val_scores)), "threshold_chosen": why}


def save(gaussian: Gaussian, path) -> None:
    np.savez(path, means=gaussian.means, whiten=gaussian.whiten)


def load(path) -> Gaussian:
    with np.load(path) as z:
        return Gaussian(z["means"], z["whiten"])
