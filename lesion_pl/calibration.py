"""Calibration and operating points, in numpy (no torch): temperature scaling with a class-prior
correction, the rule that names a class from the probabilities, Brier score, the threshold that
reaches a target sensitivity, and lesion-level bootstrap confidence intervals.

The torch-free ONNX runtime imports `softmax` from here, so this module must stay numpy-only.
"""
from __future__ import annotations

import numpy as np

from .errors import LesionPLError


def softmax(logits: np.ndarray, temperature: float = 1.0, bias=None) -> np.ndarray:
    """Softmax over the last axis of logits / T + bias; [N, C] or [N, views, C] (views averaged)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    p = e / e.sum(axis=-1, keepdims=True)
    return p.mean(axis=1) if p.ndim == 3 else p


def views_note(tta: bool, calibrated_tta: bool) -> str | None:
    """A warning where images are scored on other views than the calibration was fitted on."""
    if tta == calibrated_tta:
        return None
    return (f"note: calibrated on {'8-view' if calibrated_tta else 'single-view'} scores, so the temperature, "
            "metadata weight and referral thresholds were fitted on other scores than these")


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def calibrated(logits: np.ndarray, calibration: dict, records=None) -> np.ndarray:
    """Probabilities as a run's calibration.json defines them: softmax(logits / T + class_bias),
    fused with the clinical metadata in `records` (column -> values) where the run has a metadata
    model (`lesion_pl.clinical`)."""
    from .clinical import apply

    return apply(softmax(logits, calibration["temperature"], calibration.get("class_bias")), records,
                 calibration.get("clinical"))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bias=None) -> float:
    """The T > 0 that minimises the negative log-likelihood of softmax(logits / T + bias) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_t: nll(softmax(logits, np.exp(log_t), bias), labels),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_prior_correction(logits: np.ndarray, labels: np.ndarray, log_prior: np.ndarray,
                         max_weight: float = 1.5, steps: int = 31) -> dict:
    """Temperature T and prior weight a for softmax(logits / T + a * log_prior): the pair with the
    lowest NLL on validation data, a on a grid over [0, max_weight].

    A model trained on class-balanced batches learns a uniform class prior; its probabilities
    understate the common classes, which no temperature undoes. Adding a * log(training class
    frequencies) restores the data's prior: a = 1 in theory for the balanced sampler, 1/2 for the
    square-root one, 0 for plain shuffling. Which class to *name* is a separate decision (`decide`).
    """
    best = None
    for a in np.linspace(0.0, max_weight, steps):
        bias = a * np.asarray(log_prior, dtype=np.float64)
        t = fit_temperature(logits, labels, bias)
        loss = nll(softmax(logits, t, bias), labels)
        if best is None or loss < best["val_nll"]:
            best = {"prior_weight": round(float(a), 6), "temperature": t, "class_bias": (bias - bias.mean()).tolist(),
                    "val_nll": loss}
    return best


def decision_bias(log_prior: np.ndarray, rule: str) -> list[float] | None:
    """Log-weights that `decide` adds to log-probabilities before the argmax.

    "balanced": argmax p(c|x) / prior(c), the Bayes rule for balanced accuracy (every class's recall
    counts the same); "accuracy": argmax p(c|x), the rule for plain accuracy (no weights).
    """
    if rule == "accuracy":
        return None
    if rule != "balanced":
        raise LesionPLError(f"calibration.decision must be 'balanced' or 'accuracy', got '{rule}'")
    w = -np.asarray(log_prior, dtype=np.float64)
    return (w - w.mean()).tolist()


def decide(probs: np.ndarray, calibration: dict) -> np.ndarray:
    """The class named for each row of calibrated probabilities, by the run's decision rule."""
    probs = np.asarray(probs, dtype=np.float64)  # float32 would round the clip's 1e-300 to 0
    bias = calibration.get("decision_bias")
    if bias is None:
        return probs.argmax(axis=-1)
    return (np.log(np.clip(probs, 1e-300, None)) + np.asarray(bias)).argmax(axis=-1)


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of the squared distance to the one-hot label."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """Per bin: mean confidence, accuracy and count (for the reliability diagram)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # bins (b/n, (b+1)/n]
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append((float(conf[m].mean()) if m.any() else np.nan,
                     float(correct[m].mean()) if m.any() else np.nan, int(m.sum())))
    return edges, rows


def threshold_for_sensitivity(scores: np.ndarray, positive: np.ndarray, target: float) -> float:
    """The highest threshold t such that flagging `scores >= t` catches at least `target` of the positives."""
    pos = np.sort(scores[positive.astype(bool)])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive cases to set a threshold on")
    k = int(np.ceil(target * len(pos)))  # this many positives must be at or above t
    return float(pos[max(k, 1) - 1])


def binary_stats(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    flag = scores >= threshold
    pos = positive.astype(bool)
    tp, fn = int((flag & pos).sum()), int((~flag & pos).sum())
    fp, tn = int((flag & ~pos).sum()), int((~flag & ~pos).sum())

    def ratio(a, b):
        return a / (a + b) if a + b else float("nan")

    return {"sensitivity": ratio(tp, fn), "specificity": ratio(tn, fp), "ppv": ratio(tp, fp),
            "npv": ratio(tn, fn), "tp": tp, "fn": fn, "fp": fp, "tn": tn}


def lesion_bootstrap(groups: np.ndarray, statistic, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Percentile CIs of each value `statistic(indices)` returns, over resamples of lesions (groups),
    not images: the images of one lesion are not independent."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    draws: dict = {}
    for _ in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for k, v in statistic(pick).items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for k, v in draws.items():
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]  # resamples on which the value is undefined (e.g. no positive drawn)
        out[k] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else [float("nan")] * 2
    return out


def bootstrap_ci(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, threshold: float,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile CIs of sensitivity, specificity, PPV and NPV, resampling lesions (groups), not images."""
    keys = ("sensitivity", "specificity", "ppv", "npv")

    def stats(pick):
        s = binary_stats(scores[pick], positive[pick], threshold)
        return {k: s[k] for k in keys}

    return lesion_bootstrap(groups, stats, n_boot, seed, level)
