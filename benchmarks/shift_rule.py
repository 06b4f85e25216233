"""Does a candidate trained against acquisition shift beat the default? The rule of benchmarks/RESULTS.md
("Three seeds of the default, and training for acquisition shift"), applied to runs already scored.

    python benchmarks/shift_rule.py --default runs/default_s42 runs/default_s1 runs/default_s2 \
                                    --candidate runs/shiftaug_s42 runs/shiftaug_s1 runs/shiftaug_s2

Reads each run's shift_val.json (`shift.py --split val --no-tta`) and calibration.json (validation, fused,
as calibrated); nothing is rescored, and no test figure enters. Per run: the shifts "held" (malignant AUROC
down by at most 0.02 and referral sensitivity by at most 0.05 from the run's own unshifted figures), the
worst malignant-AUROC drop and the failing shifts; then (a) mean held, (b) mean worst drop, (c) mean
unshifted validation balanced accuracy (within 0.01) and malignant AUROC (within 0.005), and the answer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from machine import describe

AUROC_BAR, SENSITIVITY_BAR = 0.02, 0.05
BAL_ACC_SLACK, AUROC_SLACK = 0.01, 0.005


def run_figures(run: Path) -> dict:
    """held, worst AUROC drop, the failing shifts, and the unshifted validation figures of one run."""
    shifts = json.loads((run / "shift_val.json").read_text())["shifts"]
    cal = json.loads((run / "calibration.json").read_text())
    failed = {name: s["drop"] for name, s in shifts.items()
              if s["drop"]["auroc_malignant"] < -AUROC_BAR or s["drop"]["referral_sensitivity"] < -SENSITIVITY_BAR}
    return {"held": len(shifts) - len(failed), "shifts": len(shifts),
            "worst_drop": max(0.0, *(-s["drop"]["auroc_malignant"] for s in shifts.values())), "failed": failed,
            "val_balanced_accuracy": cal["val_balanced_accuracy"], "val_auroc_malignant": cal["val_auroc_malignant"]}


def decide(default: list[dict], candidate: list[dict]) -> dict:
    """The rule's three tests over the seeds (means), and whether the candidate becomes the default."""
    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    d = {k: mean(default, k) for k in ("held", "worst_drop", "val_balanced_accuracy", "val_auroc_malignant")}
    c = {k: mean(candidate, k) for k in d}
    tests = {"a_more_held": c["held"] > d["held"], "b_smaller_worst_drop": c["worst_drop"] < d["worst_drop"],
             "c_unshifted_kept": c["val_balanced_accuracy"] >= d["val_balanced_accuracy"] - BAL_ACC_SLACK
             and c["val_auroc_malignant"] >= d["val_auroc_malignant"] - AUROC_SLACK}
    return {"default": d, "candidate": c, **tests, "adopt": all(tests.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default", nargs="+", type=Path, required=True, help="the default's runs, one per seed")
    ap.add_argument("--candidate", nargs="+", type=Path, required=True, help="the candidate's, the same seeds")
    args = ap.parse_args()
    if len(args.default) != len(args.candidate):
        raise SystemExit("give as many candidate runs as default runs (the same seeds, in the same order)")
    print(describe())
    rows = {}
    for side in ("default", "candidate"):
        rows[side] = [run_figures(r) for r in getattr(args, side)]
        for run, f in zip(getattr(args, side), rows[side], strict=True):
            fails = ", ".join(f"{n} (AUROC {x['auroc_malignant']:+.3f}, sensitivity {x['referral_sensitivity']:+.3f})"
                              for n, x in f["failed"].items()) or "none"
            print(f"{side:9} {run.name:16} held {f['held']}/{f['shifts']}  worst AUROC drop {f['worst_drop']:.3f}  "
                  f"val bal acc {f['val_balanced_accuracy']:.4f}  val mal AUROC {f['val_auroc_malignant']:.4f}  "
                  f"fails: {fails}")
    out = decide(rows["default"], rows["candidate"])
    for side in ("default", "candidate"):
        m = out[side]
        print(f"mean {side:9} held {m['held']:.2f}  worst drop {m['worst_drop']:.3f}  "
              f"val bal acc {m['val_balanced_accuracy']:.4f}  val mal AUROC {m['val_auroc_malignant']:.4f}")
    print(f"(a) more held: {out['a_more_held']}  (b) smaller worst drop: {out['b_smaller_worst_drop']}  "
          f"(c) unshifted within {BAL_ACC_SLACK} / {AUROC_SLACK}: {out['c_unshifted_kept']}  "
          f"-> candidate becomes the default: {'yes' if out['adopt'] else 'no'}")


if __name__ == "__main__":
    main()
