"""`calibrate`: temperature scaling with the class-prior correction, the class decision rule, the
clinical-metadata fusion (its model fitted on the train split) and the referral thresholds, fitted
on the validation split only, saved as RUN/calibration.json and used by test, report, explain,
export and the ONNX runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import clinical, ood
from ..calibration import (
    binary_stats,
    decision_bias,
    fit_fusion_weight,
    fit_prior_correction,
    fit_temperature,
    nll,
    referral_threshold,
)
from ..classes import HAM10000, LabelSpace, label_space
from ..config import Calibration
from ..io import atomic_write_json
from ..run import RunDir
from ..scoring import ScoringPolicy, score_names, scores_and_positives, softmax
from .predictions import predictions_frame, write_predictions


def fit_clinical(dm, val_ds, val_probs: np.ndarray, val_labels: np.ndarray, columns: dict, space: LabelSpace):
    """The metadata model on the train split and its fusion weight on validation, and what that did
    on validation; (None, {"used": False, "reason": ...}) where the data has no metadata columns."""
    from .metrics import binary_auroc

    train = dm.table.iloc[dm.indices("train")]
    model = clinical.fit(train, train["label"].to_numpy(), columns, space.num_classes)
    if model is None:
        reason = (f"the data has none of the columns {', '.join(columns.values())}"
                  if not clinical.present(train, columns) else "the train split has fewer than two classes")
        return None, {"used": False, "reason": reason}
    rows = dm.table.iloc[val_ds.indices]
    model["weight"], fused_nll = fit_fusion_weight(val_probs, clinical.log_ratio(rows, model), val_labels)
    fused, with_metadata = clinical.fused(val_probs, rows, model)
    import pandas as pd

    return model, {"used": True, "fields": sorted(model["columns"]), "weight": model["weight"],
                   "read_as_unknown": clinical.unrecognised_notes(pd.concat([train, rows]), model),
                   "val_images_with_metadata": int(with_metadata.sum()),
                   "val_nll_image_only": nll(val_probs, val_labels), "val_nll_fused": fused_nll,
                   "val_auroc_malignant_image_only": binary_auroc(*scores_and_positives(val_probs, val_labels,
                                                                                         "malignant", space)),
                   "val_auroc_malignant_fused": binary_auroc(*scores_and_positives(fused, val_labels, "malignant",
                                                                                     space))}


def fit_ood(run: RunDir, dm, model, val_features: np.ndarray, share: float, tta: bool, space: LabelSpace,
            progress: bool) -> dict:
    """The out-of-distribution Gaussian on the train split's features (each image once, unaugmented), saved as
    RUN/ood.npz, and its threshold on validation's scores (as many views as the thresholds): calibration.json's
    "ood" entry."""
    from .inference import predict_logits

    train = dm.dataset("train")
    features, _ = predict_logits(model, train, progress=progress, features=True)
    gaussian = ood.fit_gaussian(features, np.asarray(train.labels), space.num_classes)
    ood.save(gaussian, run.ood)
    return ood.record(gaussian, gaussian.score(val_features), share, len(features), 8 if tta else 1)


def fit_operating_points(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, c: Calibration, seed: int,
                         space: LabelSpace = HAM10000) -> dict:
    """Per referral score of the space: the highest threshold that reaches the configured sensitivity
    (`calibration.malignant_sensitivity`, `melanoma_sensitivity`) with the configured confidence on new lesions
    (`calibration.referral_confidence`), and what it gives on these images."""
    out = {}
    for name in score_names(space):
        target = getattr(c, f"{name}_sensitivity")
        scores, positive = scores_and_positives(probs, labels, name, space)
        if positive.any():
            op = referral_threshold(scores, positive, groups, float(target), c.referral_confidence,
                                    int(c.bootstrap), seed)
            out[name] = {**op, "val": binary_stats(scores, positive, op["threshold"])}
    return out


def calibration_errors(probs: np.ndarray, labels: np.ndarray, space: LabelSpace = HAM10000) -> dict:
    """The two calibration errors test reports: top-class ECE and the malignancy probability's ECE."""
    import torch

    from .metrics import expected_calibration_error, malignancy_calibration_error

    return {"ece": expected_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels)),
            "malignancy_ece": malignancy_calibration_error(probs, labels, space=space)}


def calibration_error_floor(probs: np.ndarray, space: LabelSpace = HAM10000, draws: int = 200,
                            seed: int = 0) -> dict:
    """The calibration errors a perfectly calibrated model with these probabilities shows on a sample this size:
    labels drawn from `probs` themselves, the mean over `draws`. Binned ECE is biased upwards on a finite sample
    (the noise within each bin), so a measured error close to this floor cannot tell calibrated from not."""
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(axis=1)
    errs = []
    for _ in range(draws):
        u = rng.random((len(probs), 1)) * cumulative[:, -1:]
        errs.append(calibration_errors(probs, np.minimum((u >= cumulative).sum(axis=1), probs.shape[1] - 1), space))
    return {k: float(np.mean([e[k] for e in errs])) for k in errs[0]}


FACTORS = np.geomspace(0.5, 2.0, 41)  # the temperature's scalings keep_errors_down tries


def keep_errors_down(result: dict, final_probs, labels: np.ndarray, before: dict, space: LabelSpace = HAM10000,
                     factors=FACTORS) -> dict:
    """The NLL fit can leave one of the reported calibration errors above the raw softmax's (issue #27: top-class
    ECE 0.026 -> 0.035 while the malignancy ECE fell). Where it does, the temperature is scaled by the factor in
    `factors` with the lowest NLL among those that leave neither error above `before`. Where no factor does (the
    class-prior correction and the metadata fusion move the probabilities too), the NLL fit stays and `kept` is
    False, for calibrate to say so. `final_probs(temperature)`: the probabilities as reported."""
    fitted = result["temperature"]

    def score(factor: float):
        probs = final_probs(fitted * factor)
        errs = calibration_errors(probs, labels, space)
        return max(errs[k] - before[k] for k in before), nll(probs, labels), float(factor), errs

    rise, _, _, errs = score(1.0)
    if rise <= 0:
        return {"temperature_factor": 1.0, "kept": True, "after": errs}
    kept = [s for s in map(score, factors) if s[0] <= 0]
    if not kept:
        return {"temperature_factor": 1.0, "kept": False, "after": errs}
    best = min(kept, key=lambda s: s[1])
    result["temperature"] = fitted * best[2]
    return {"temperature_factor": best[2], "nll_temperature": fitted, "kept": True, "after": best[3]}


def calibrate_run(run_path: Path, data_root: Path | None = None, progress: bool = True, dm=None) -> dict:
    """`dm`: the run's datamodule where the caller already has it (fit), so the data is not read twice."""
    from ..checkpoint import load_run_model
    from .inference import has_features, predict_logits
    from .metrics import balanced_accuracy, binary_auroc, by_source

    run = RunDir(Path(run_path))
    run.require_fitted()
    cfg = run.load_config(data_root)
    dm = dm or run.datamodule(cfg, progress)
    ds = dm.dataset("val")
    labels = np.asarray(ds.labels)
    c = cfg.calibration
    tta = bool(c.tta)  # the scores thresholds are chosen on must be the scores they will be applied to
    model = load_run_model(run)
    ood_fit = c.ood_pass is not None and has_features(model)
    out = predict_logits(model, ds, tta=tta, progress=progress, features=ood_fit)
    val_features, logits = out if ood_fit else (None, out)
    space = label_space(cfg.data)
    result = {"split": "val", "n_images": int(len(labels)), "tta": tta, "label_space": space.as_config()}
    if c.prior_correction:
        counts = np.maximum(dm.class_counts("train"), 1)
        log_prior = np.log(counts / counts.sum())
        fitted = fit_prior_correction(logits, labels, log_prior)
        result.update({k: fitted[k] for k in ("temperature", "class_bias", "prior_weight")})
        # the probabilities now carry the training prior; the balanced rule divides it out again
        result.update(decision=c.decision, decision_bias=decision_bias(log_prior, c.decision))
    else:
        result.update(temperature=fit_temperature(logits, labels), class_bias=None, prior_weight=0.0,
                      decision="accuracy", decision_bias=None)  # no prior to divide out
    rows = dm.table.iloc[ds.indices]
    groups, seed = rows["group"].to_numpy(), int(cfg.seed)
    probs = ScoringPolicy.from_calibration(result)(logits).probabilities
    records = None
    if c.clinical:
        result["clinical"], result["clinical_fit"] = fit_clinical(dm, ds, probs, labels, c.clinical_columns, space)
        records = rows if result["clinical"] else None
    before = calibration_errors(softmax(logits), labels, space)
    guard = keep_errors_down(
        result, lambda t: ScoringPolicy.from_calibration({**result, "temperature": t})(logits, records).probabilities,
        labels, before, space)
    result["calibration_errors"] = {"val_before": before, "val_after": guard.pop("after"), **guard}
    policy = ScoringPolicy.from_calibration(result)
    scored = policy(logits, records)
    if records is not None:
        # images that come without metadata (predict) are referred on image-only thresholds
        result["operating_points_image_only"] = fit_operating_points(scored.image_probabilities, labels, groups, c,
                                                                     seed, space)
        result["clinical_fit"]["val_balanced_accuracy_image_only"] = balanced_accuracy(
            labels, policy.decide(scored.image_probabilities))
    probs, pred = scored.probabilities, scored.top_index
    result.update(val_nll_before=nll(softmax(logits), labels), val_nll_after=nll(probs, labels),
                  val_balanced_accuracy=balanced_accuracy(labels, pred),
                  val_balanced_accuracy_argmax_logits=balanced_accuracy(labels, softmax(logits).argmax(1)),
                  val_auroc_malignant=binary_auroc(*scores_and_positives(probs, labels, "malignant", space)),
                  operating_points=fit_operating_points(probs, labels, groups, c, seed, space))
    if ood_fit:
        result["ood"] = fit_ood(run, dm, model, val_features, float(c.ood_pass), tta, space, progress)
    sources = by_source(probs, labels, pred, rows, space, int(c.bootstrap), seed)
    if sources is not None:  # a run of several sources: validation per source, beside the pooled figures
        result["by_source"] = sources
    # the scores the thresholds were chosen on, for benchmarks/referral.py and anyone re-checking them
    write_predictions(predictions_frame(rows, scored), run.val_predictions)
    atomic_write_json(run.calibration, result)
    return result


def load_calibration(run: RunDir, data_root: Path | None = None, progress: bool = True) -> dict:
    """The run's calibration.json, fitted now (on validation) where the run has none yet."""
    path = run.calibration
    if path.exists():
        return json.loads(path.read_text())
    return calibrate_run(run.path, data_root, progress)
