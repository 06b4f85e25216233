"""Does a referral threshold keep its promise on new lesions? Each threshold rule fitted on a run's
validation scores, then measured on its test split and, within validation, on held-out halves.

    python benchmarks/referral.py --run runs/A [--run runs/B ...] [--splits 50] [--boot 300]

Reads what `calibrate` and `test` wrote (RUN/val_predictions.csv, RUN/test/predictions.csv and
metrics.json); nothing is retrained or rescored. Rules: `point` (the highest threshold reaching the
target on validation) and a one-sided confidence of 0.90, 0.95 or 0.99 (`calibration.referral_confidence`:
lesion bootstrap and exact binomial bound over lesions, lesion_pl/calibration.py). Prints per run, score
and rule: the threshold, validation's lower bound, test sensitivity and specificity with lesion-bootstrap
95% CIs; then, on validation only, the split-half check: the rule fitted on a random half of the lesions,
the other half's sensitivity at that threshold, the share of splits where it reaches the target
("held") and the other half's mean specificity. Last, each run's calibration errors before -> after, and
on test the reported errors beside the floor a perfectly calibrated model would show.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)

from lesion_pl.calibration import binary_stats, bootstrap_ci, referral_threshold  # noqa: E402
from lesion_pl.classes import CLASS_TO_INDEX, CLASSES  # noqa: E402
from lesion_pl.evaluate.calibrate import calibration_error_floor, calibration_errors  # noqa: E402
from lesion_pl.run import RunDir  # noqa: E402
from lesion_pl.scoring import scores_and_positives  # noqa: E402
from lesion_pl.terminal import metric_text  # noqa: E402

RULES = {"point": None, "0.90": 0.90, "0.95": 0.95, "0.99": 0.99}


def read_predictions(path: Path):
    """Probabilities, labels and lesions of a predictions CSV."""
    frame = pd.read_csv(path)
    return (frame[[f"p_{c}" for c in CLASSES]].to_numpy(), frame["dx"].map(CLASS_TO_INDEX).to_numpy(),
            frame["group"].to_numpy())


def read_scores(path: Path) -> dict:
    """Per referral score: scores, positives and lesions of a predictions CSV."""
    probs, labels, groups = read_predictions(path)
    out = {}
    for name in ("malignant", "melanoma"):
        scores, positive = scores_and_positives(probs, labels, name)
        out[name] = (scores, positive, groups)
    return out


def test_calibration(path: Path, seed: int) -> str:
    """The reported probabilities' two test ECEs and the floor a perfectly calibrated model shows on that many
    images. No bootstrap interval: resampling repeats images, which raises a binned ECE by itself (on the default's
    seeds the percentile interval sat almost wholly above the point estimate)."""
    probs, labels, _ = read_predictions(path)
    point, floor = calibration_errors(probs, labels), calibration_error_floor(probs, seed=seed)
    return ", ".join(f"{label} {point[k]:.4f} floor {floor[k]:.4f} excess {point[k] - floor[k]:+.4f}"
                     for label, k in (("test ECE", "ece"), ("malignancy", "malignancy_ece")))


def split_half(scores, positive, groups, target, confidence, splits: int, boot: int, seed: int) -> dict:
    """The rule fitted on half of the lesions, scored on the other half, over `splits` random halves."""
    rng = np.random.default_rng(seed)
    lesions = np.unique(groups)
    held, spec = [], []
    for _ in range(splits):
        a = np.isin(groups, rng.permutation(lesions)[: len(lesions) // 2])
        op = referral_threshold(scores[a], positive[a], groups[a], target, confidence, boot, seed)
        s = binary_stats(scores[~a], positive[~a], op["threshold"])
        held.append(s["sensitivity"] >= target)
        spec.append(s["specificity"])
    return {"held": float(np.mean(held)), "specificity": float(np.mean(spec))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="a calibrated and tested run folder")
    ap.add_argument("--target", type=float, default=0.90, help="the sensitivity to reach")
    ap.add_argument("--splits", type=int, default=50, help="random halves of validation for the split-half check")
    ap.add_argument("--boot", type=int, default=300, help="bootstrap resamples per threshold in the split-half check")
    args = ap.parse_args()
    print(describe())
    print(f"target sensitivity {args.target:.2f}; test CIs: 1000 lesion-bootstrap resamples; split-half: "
          f"{args.splits} halves of validation, {args.boot} resamples each")
    head = (f"{'run':<22} {'score':<9} {'rule':<5} {'threshold':>9} {'val bound':>9}  "
            f"{'test sensitivity [95% CI]':<26} {'test specificity [95% CI]':<26} {'half held':>9} {'half spec':>9}")
    print(head)
    errors, tested = [], []
    for run in args.run:
        cal = json.loads((run / "calibration.json").read_text())
        seed = int(RunDir(run).load_config().seed)  # calibrate's, so its rule is reproduced
        val, test = read_scores(run / "val_predictions.csv"), read_scores(run / "test" / "predictions.csv")
        for name in ("malignant", "melanoma"):
            for rule, confidence in RULES.items():
                op = referral_threshold(*val[name], args.target, confidence, 1000, seed)
                scores, positive, groups = test[name]
                s = binary_stats(scores, positive, op["threshold"])
                ci = bootstrap_ci(scores, positive, groups, op["threshold"], 1000, seed)
                half = split_half(*val[name], args.target, confidence, args.splits, args.boot, seed)

                def cell(k, s=s, ci=ci):  # this row's figures
                    return f"{metric_text(s[k])} [{metric_text(ci[k][0])}, {metric_text(ci[k][1])}]"
                short = op["lower_bound"] is not None and op["lower_bound"] < args.target
                bound = metric_text(op["lower_bound"]) + ("*" if short else "")
                print(f"{run.name:<22} {name:<9} {rule:<5} {op['threshold']:>9.4f} {bound:>9}  "
                      f"{cell('sensitivity'):<26} {cell('specificity'):<26} {half['held']:>9.2f} "
                      f"{half['specificity']:>9.3f}")
        m = json.loads((run / "test" / "metrics.json").read_text())["calibration"]
        e = cal.get("calibration_errors", {})
        errors.append(f"{run.name:<22} val ECE {e['val_before']['ece']:.4f} -> {e['val_after']['ece']:.4f}, "
                      f"malignancy {e['val_before']['malignancy_ece']:.4f} -> {e['val_after']['malignancy_ece']:.4f} "
                      f"(temperature x {e['temperature_factor']:.3f}); "
                      f"test ECE {m['ece_15_before']:.4f} -> {m['ece_15_after']:.4f}, "
                      f"malignancy {m['malignancy_ece_15_before']:.4f} -> {m['malignancy_ece_15_after']:.4f}"
                      if e else f"{run.name:<22} (calibrated before the calibration-error check)")
        tested.append(f"{run.name:<22} {test_calibration(run / 'test' / 'predictions.csv', seed)}")
    print("* below the target: too few positive lesions on validation to promise it at that confidence")
    print("\ncalibration errors (15 bins), uncalibrated -> as reported:")
    print("\n".join(errors))
    print("\ntest calibration as reported, and the floor (the ECE a perfectly calibrated model with these "
          "probabilities shows on this many images):")
    print("\n".join(tested))


if __name__ == "__main__":
    main()
