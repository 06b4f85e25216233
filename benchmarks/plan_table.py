"""What `trainer.budget`'s plan is built from, read off trained runs: per run, the epochs its schedule was annealed to,
the calibrated validation balanced accuracy (the table's points), and how its measured seconds per epoch and
calibration compare with what the plan estimates from this machine's timed training rate (the overhead factors).

    python benchmarks/plan_table.py runs/plan/px64 runs/plan/px96 runs/plan/px128

Run it on the machine that trained the runs: the rates are this machine's (timed once and kept, as `fit` does).
Seconds per epoch is the median of the epochs' durations in logs/metrics.csv, so an epoch another process shared
does not count; calibration's is summary.json's write to calibration.json's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from machine import describe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run folders fit made")
    args = ap.parse_args()

    from lesion_pl import plan
    from lesion_pl.config import load_config
    from lesion_pl.hardware import training_rates

    print(describe())
    rows = []
    for path in args.runs:
        cfg = load_config(path / "config.yaml", [])
        summary = json.loads((path / "summary.json").read_text())
        cal = json.loads((path / "calibration.json").read_text())
        log = pd.read_csv(path / "logs" / "metrics.csv")
        elapsed = log.dropna(subset=["val/balanced_accuracy"]).groupby("epoch")["time/elapsed_s"].max()
        per_epoch = float(elapsed.diff().dropna().median())
        calibration_s = (path / "calibration.json").stat().st_mtime - (path / "summary.json").stat().st_mtime
        size, precision = int(cfg.data.image_size), str(summary["precision"])
        rate = training_rates(cfg, (size,), precision)[size]
        t = cfg.trainer
        train, val = plan.epoch_images(summary["images"]["train"], summary["images"]["val"],
                                       int(cfg.data.batch_size), float(t.limit_train_batches),
                                       float(t.limit_val_batches))
        views = 8 if cfg.calibration.tta else 1
        est_epoch = plan.epoch_seconds(rate, train, val) / plan.EPOCH_OVERHEAD
        est_cal = plan.calibration_seconds(rate, val, views, 1) / plan.CALIBRATION_OVERHEAD
        rows.append({"run": path.name, "px": size, "precision": precision, "epochs": summary["epochs"],
                     "best": summary["best_epoch"], "rate img/s": round(rate, 1), "s/epoch": round(per_epoch, 1),
                     "epoch overhead": round(per_epoch / est_epoch, 2), "calibration s": round(calibration_s, 1),
                     "calibration overhead": round(calibration_s / est_cal, 2),
                     "val bal acc": round(cal["val_balanced_accuracy"], 4),
                     "val mal AUROC": round(cal["val_auroc_malignant"], 4)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    print(f"median epoch overhead {table['epoch overhead'].median():.2f}, "
          f"median calibration overhead {table['calibration overhead'].median():.2f}")


if __name__ == "__main__":
    main()
