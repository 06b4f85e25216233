"""What test-time augmentation (8 flips/90-degree rotations) changes and costs, on one run's test split.

    python benchmarks/tta.py --run runs/NAME

Runs `test` without and with --tta in one process (calibrated probabilities both times) and prints
balanced accuracy, macro and malignant AUROC, ECE, Brier and the wall time of each.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from lesion_pl.evaluate.run_test import test_run

    rows = {}
    for tta in (True, False):  # single view last, so the run's test/ folder ends as `cli.py test` leaves it
        start = time.perf_counter()
        m = test_run(args.run, tta=tta, progress=False)
        rows["8-view TTA" if tta else "single view"] = (m, time.perf_counter() - start)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"run {args.run}; {m['n_images']} test images")
    print(f"{'':<12} {'bal acc':>8} {'AUROC':>7} {'mal AUROC':>10} {'ECE':>7} {'Brier':>7} {'seconds':>8}")
    for name, (m, sec) in sorted(rows.items(), key=lambda kv: kv[0] != "single view"):
        c = m["calibration"]
        print(f"{name:<12} {m['balanced_accuracy']:>8.4f} {m['auroc_macro']:>7.4f} {m['auroc_malignant']:>10.4f} "
              f"{c['ece_15_after']:>7.4f} {c['brier_after']:>7.4f} {sec:>8.1f}")


if __name__ == "__main__":
    main()
