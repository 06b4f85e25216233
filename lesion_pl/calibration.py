"""Fitting calibration and operating points, in numpy (no torch): temperature scaling with a class-prior
correction, the decision rule's weights, the clinical metadata's fusion weight, Brier score, the referral
threshold that reaches a target sensitivity (with a stated confidence on new lesions), and lesion-level
bootstrap confidence intervals. What is fitted here is applied by `lesion_pl.scoring.ScoringPolicy`.

The torch-free ONNX runtime imports `promise_text` from here, so this module must stay numpy-only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .clinical import fuse
from .errors import LesionPLError
from .scoring import softmax

if TYPE_CHECKING:  # the runtime imports this module: no pydantic at run time
    from .config import Calibration


def views_note(tta: bool, calibrated_tta: bool) -> str | None:
    """A warning where images are scored on other views than the calibration was fitted on."""
    if tta == calibrated_tta:
        return None
    return (f"note: calibrated on {'8-view' if calibrated_tta else 'single-view'} scores, so the temperature, "
            "metadata weight and referral thresholds were fitted on other scores than these")


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


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
    square-root one, 0 for plain shuffling. Which class to *name* is a separate decision (`decision_bias`).
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
    """Log-weights that `scoring.decide` adds to log-probabilities before the argmax.

    "balanced": argmax p(c|x) / prior(c), the Bayes rule for balanced accuracy (every class's recall
    counts the same); "accuracy": argmax p(c|x), the rule for plain accuracy (no weights).
    """
    if rule == "accuracy":
        return None
    if rule != "balanced":
        raise LesionPLError(f"calibration.decision must be 'balanced' or 'accuracy', got '{rule}'")
    w = -np.asarray(log_prior, dtype=np.float64)
    return (w - w.mean()).tolist()


def fit_fusion_weight(probs: np.ndarray, ratio: np.ndarray, labels: np.ndarray, max_weight: float = 1.5,
                      steps: int = 31) -> tuple[float, float]:
    """The clinical metadata's fusion weight (`clinical.fuse`) on a grid over [0, max_weight] with the lowest
    NLL, and that NLL."""
    best = min((nll(fuse(probs, ratio, w), labels), float(w)) for w in np.linspace(0.0, max_weight, steps))
    return round(best[1], 6), best[0]


def validation_decision_bias(calibration: Calibration, class_weights, class_prior,
                             tau: float) -> list[float] | None:
    """What validation adds to the logits so that its metrics score the class `calibration.decision` names.

    The logits learn the class distribution the loss sees: the sampler's class prior times the loss's
    class weights, less the part logit adjustment (tau) took out. Test names the class with the run's
    decision rule (`decision_bias`: the balanced rule divides the prior out); validation, which picks the
    checkpoint and stops early, does the same, so a sampler that is not class-balanced is judged as test
    will judge it. The default balanced sampler has a uniform prior: no shift.
    """
    if not class_prior or not calibration.prior_correction:
        return None  # calibrate then names the most probable class
    prior = np.asarray(class_prior, dtype=np.float64)
    if class_weights:
        prior = prior * np.asarray(class_weights, dtype=np.float64)
    bias = decision_bias((1.0 - tau) * np.log(prior / prior.sum()), calibration.decision)
    return None if bias is None or np.allclose(bias, 0.0) else bias


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


def _lesion_members(groups: np.ndarray) -> list[np.ndarray]:
    """The image indices of each lesion (group), in the order of np.unique(groups)."""
    _, inverse = np.unique(groups, return_inverse=True)
    return np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])


def binomial_lower_bound(sensitivity: float, n_lesions: int, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower bound of a sensitivity seen on `n_lesions` positive lesions, the
    lesions counted as the independent units (k = sensitivity * n_lesions, fractional where a lesion's images
    split): the bound that small samples need, where a bootstrap cannot reach below what it saw."""
    from scipy.stats import beta

    k = sensitivity * n_lesions
    return 0.0 if k <= 0 else float(beta.ppf(1 - confidence, k, n_lesions - k + 1))


def referral_threshold(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, target: float,
                       confidence: float | None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The highest threshold that reaches `target` sensitivity, with `confidence` that it does on new lesions.

    confidence None: the point rule, the highest threshold reaching `target` on these images (it lands below
    the target on new lesions about half the time). Else the threshold must pass two one-sided bounds:
    - the lesion bootstrap: resample the positive lesions (all images of a lesion together) `n_boot` times;
      t_b is the highest threshold reaching `target` in resample b, and since sensitivity only falls as the
      threshold rises, `scores >= t` reaches it in resample b iff t <= t_b: so t is at most the largest value
      with t <= t_b in a `confidence` share of resamples (`bootstrap_bound`: the (1 - confidence) quantile of
      the resampled sensitivities at t);
    - the exact binomial bound over positive lesions (`binomial_bound`), which keeps a small split honest;
    `lower_bound` is the smaller of the two at the threshold, >= target by construction.
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    point = threshold_for_sensitivity(scores, positive, target)
    pos_scores = scores[positive]
    members = _lesion_members(np.asarray(groups)[positive])
    out = {"target_sensitivity": float(target), "confidence": confidence, "positive_lesions": len(members)}
    if confidence is None:
        return {**out, "threshold": point, "point_threshold": point, "lower_bound": None}
    rng = np.random.default_rng(seed)
    tb, drawn = np.empty(n_boot), []
    for b in range(n_boot):
        pick = pos_scores[np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])]
        drawn.append(pick)
        tb[b] = threshold_for_sensitivity(pick, np.ones(len(pick), bool), target)
    k = int(np.ceil(confidence * n_boot))  # resamples that must reach the target
    boot_t = min(float(np.sort(tb)[::-1][k - 1]), point)  # never above the point rule's
    # the binomial bound only rises as the threshold falls: walk down the positives' scores until it holds
    candidates = np.unique(np.r_[pos_scores[pos_scores <= boot_t], boot_t])[::-1]
    threshold, binomial = float(candidates[-1]), 0.0
    for t in candidates:
        binomial = binomial_lower_bound(float((pos_scores >= t).mean()), len(members), confidence)
        if binomial >= target:
            threshold = float(t)
            break
    boot = float(np.sort([(d >= threshold).mean() for d in drawn])[n_boot - k])
    return {**out, "threshold": threshold, "point_threshold": point, "bootstrap_bound": boot,
            "binomial_bound": binomial, "lower_bound": min(boot, binomial)}


def referral_promise(op: dict) -> dict:
    """What a fitted operating point (calibrate's, with its "val" stats) promises, flat: the fields that
    test, the report, the ONNX metadata and predict show."""
    return {"threshold": op["threshold"], "target_sensitivity": op["target_sensitivity"],
            "confidence": op.get("confidence"), "val_sensitivity": op["val"]["sensitivity"],
            "val_specificity": op["val"]["specificity"], "val_lower_bound": op.get("lower_bound"),
            "val_positive_lesions": op.get("positive_lesions")}


def promise_text(p: dict) -> str:
    """One sentence for a `referral_promise`: the target, how sure, and what validation showed."""
    seen = f"validation sensitivity {p['val_sensitivity']:.3f}, specificity {p['val_specificity']:.3f}"
    if p.get("confidence") is None:
        return (f"chosen on validation for sensitivity >= {p['target_sensitivity']:.2f} at the point estimate "
                f"({seen}; no confidence bound: on new lesions it falls below the target about half the time)")
    lesions = f" over {p['val_positive_lesions']} positive lesions" if p.get("val_positive_lesions") else ""
    bound = f"one-sided {p['confidence']:.0%} lower bound {p['val_lower_bound']:.3f}{lesions}"
    if p["val_lower_bound"] < p["target_sensitivity"]:
        return (f"the lowest positive score on validation: too few positive lesions there to promise sensitivity >= "
                f"{p['target_sensitivity']:.2f} with {p['confidence']:.0%} confidence ({seen}; {bound})")
    return (f"chosen on validation for sensitivity >= {p['target_sensitivity']:.2f} with {p['confidence']:.0%} "
            f"confidence ({seen}; {bound})")


def binary_stats(scores: np.ndarray, positive: np.ndarray, threshold) -> dict:
    """Sensitivity, specificity, PPV, NPV and the counts of flagging `scores >= threshold` (one threshold, or
    one per image)."""
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
    members = _lesion_members(groups)
    draws: dict = {}
    for _ in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for k, v in statistic(pick).items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for k, v in draws.items():
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]  # resamples on which the value is undefined (e.g. no positive drawn)
        out[k] = [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else [float("nan")] * 2
    return out


def bootstrap_ci(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, threshold,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile CIs of sensitivity, specificity, PPV and NPV, resampling lesions (groups), not images
    (`threshold`: one, or one per image)."""
    keys = ("sensitivity", "specificity", "ppv", "npv")
    per_image = np.ndim(threshold) > 0

    def stats(pick):
        s = binary_stats(scores[pick], positive[pick], threshold[pick] if per_image else threshold)
        return {k: s[k] for k in keys}

    return lesion_bootstrap(groups, stats, n_boot, seed, level)
