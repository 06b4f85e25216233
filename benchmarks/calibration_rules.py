"""What the class-prior correction and the decision rule change, on one run: each scheme fitted on
the validation split, then scored on validation and on the test split.

    python benchmarks/calibration_rules.py --run runs/NAME

Schemes: no calibration; temperature only; the previous default (prior weight limited to 1 point
of validation balanced accuracy, class = most probable); the current default (prior weight fitted
for NLL, class by the balanced rule); and the same probabilities with the accuracy rule.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)


def limited_prior_weight(logits, labels, log_prior, max_drop: float = 0.01) -> tuple[float, float]:
    """The previous scheme: the lowest-NLL prior weight whose argmax keeps validation balanced
    accuracy within `max_drop` of the uncorrected model's."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    from lesion_pl.calibration import fit_temperature, nll
    from lesion_pl.scoring import softmax

    base = balanced_accuracy_score(labels, logits.argmax(1))
    best = (np.inf, 0.0, 1.0)
    for a in np.linspace(0, 1, 21):
        t = fit_temperature(logits, labels, a * log_prior)
        probs = softmax(logits, t, a * log_prior)
        if balanced_accuracy_score(labels, probs.argmax(1)) >= base - max_drop:
            best = min(best, (nll(probs, labels), float(a), t))
    return best[1], best[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a fitted run folder")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sklearn.metrics import balanced_accuracy_score

    from lesion_pl.calibration import brier_score, decision_bias, fit_prior_correction, fit_temperature
    from lesion_pl.checkpoint import load_run_model
    from lesion_pl.evaluate.inference import predict_logits
    from lesion_pl.evaluate.metrics import (
        binary_auroc,
        expected_calibration_error,
        malignancy_calibration_error,
        metrics_report,
    )
    from lesion_pl.run import RunDir
    from lesion_pl.scoring import decide, scores_and_positives, softmax

    run = RunDir(args.run)
    run.require_fitted()
    cfg = run.load_config()
    dm = run.datamodule(cfg, progress=False)
    model = load_run_model(run)
    data = {}
    for split in ("val", "test"):
        ds = dm.dataset(split)
        data[split] = (predict_logits(model, ds, progress=False), np.asarray(ds.labels))
    counts = np.maximum(dm.class_counts("train"), 1)
    log_prior = np.log(counts / counts.sum())
    logits, labels = data["val"]

    a_old, t_old = limited_prior_weight(logits, labels, log_prior)
    fitted = fit_prior_correction(logits, labels, log_prior)
    schemes = {  # name: (temperature, class bias, decision bias)
        "none": (1.0, None, None),
        "temperature only": (fit_temperature(logits, labels), None, None),
        f"prior weight {a_old:.2f} (<= 1 pt val bal acc), argmax": (t_old, a_old * log_prior, None),
        f"prior weight {fitted['prior_weight']:.2f} (NLL), balanced rule": (
            fitted["temperature"], fitted["class_bias"], decision_bias(log_prior, "balanced")),
        f"prior weight {fitted['prior_weight']:.2f} (NLL), accuracy rule": (
            fitted["temperature"], fitted["class_bias"], None),
    }
    print(f"{describe()}; "
          f"run {args.run} ({cfg.model.name}, {cfg.data.image_size} px, sampler {cfg.data.sampler}); "
          f"every scheme fitted on val ({len(data['val'][1])} images), scored on val and test ({len(data['test'][1])})")
    print(f"{'scheme':<48} {'val bal':>7} {'val mal':>7} | {'bal acc':>7} {'acc':>6} {'AUROC':>6} {'mal AUROC':>9} "
          f"{'ECE':>6} {'mal ECE':>7} {'Brier':>6}")
    for name, (t, bias, rule) in schemes.items():
        cells = []
        for split in ("val", "test"):
            z, y = data[split]
            probs = softmax(z, t, bias)
            pred = decide(probs, rule)
            mal = binary_auroc(*scores_and_positives(probs, y, "malignant"))
            if split == "val":
                cells.append(f"{balanced_accuracy_score(y, pred):>7.4f} {mal:>7.4f} |")
                continue
            m = metrics_report(torch.from_numpy(probs).float(), torch.from_numpy(y), torch.from_numpy(pred))
            ece = expected_calibration_error(torch.from_numpy(probs).float(), torch.from_numpy(y))
            cells.append(f"{m['balanced_accuracy']:>7.4f} {m['accuracy']:>6.4f} {m['auroc_macro']:>6.4f} {mal:>9.4f} "
                         f"{ece:>6.4f} {malignancy_calibration_error(probs, y):>7.4f} {brier_score(probs, y):>6.4f}")
        print(f"{name:<48} " + " ".join(cells))


if __name__ == "__main__":
    main()
