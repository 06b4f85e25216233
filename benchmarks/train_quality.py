"""Train the default config on the full HAM10000 and report held-out test quality and time.

    python benchmarks/train_quality.py [--out runs/quality] [--minutes 60] [-- extra fit args]

Trains with a wall-clock budget (trainer.max_time), picks the checkpoint on validation balanced
accuracy, then evaluates it once on the test split. Prints the machine, the config and the figures
(with the clinical-metadata fusion, and for the image alone).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import describe
from memory import run_measured

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "quality")
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget for training")
    ap.add_argument("extra", nargs="*", help="extra `cli.py fit` arguments (after --)")
    args = ap.parse_args()
    minutes = int(args.minutes)
    budget = f"00:{minutes // 60:02d}:{minutes % 60:02d}:00"
    fit = [sys.executable, str(ROOT / "cli.py"), "fit", "--out", str(args.out), "--quiet",
           "--set", f"trainer.max_time={budget}", *args.extra]
    start = time.time()
    code, peak_gb = run_measured(fit)  # the whole fit, start to end: its peak memory
    if code:
        raise SystemExit(f"fit failed (exit {code})")
    fit_wall = time.time() - start
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "test", "--run", str(args.out), "--quiet"], check=True)

    summary = json.loads((args.out / "summary.json").read_text())
    metrics = json.loads((args.out / "test" / "metrics.json").read_text())
    print(f"\n{describe()}")
    print(f"config: configs/ham10000.yaml {' '.join(args.extra)} (model {summary['model']}, "
          f"{summary['image_size']} px, {summary.get('precision', 'precision not recorded')}), "
          f"training budget {budget}")
    for i, m in enumerate(summary.get("members", [])):
        print(f"member {i} (seed {m['seed']}): {m['epochs']} epochs at {m['seconds_per_epoch']} s, best epoch "
              f"{m['best_epoch']}, val balanced accuracy {m['best_val_balanced_accuracy']:.4f}")
    print(f"epochs run: {summary['epochs']}, best epoch (val): {summary['best_epoch']}, "
          f"val balanced accuracy {summary['best_val_balanced_accuracy']:.4f}"
          + (" (the calibrated ensemble)" if summary.get("members") else ""))
    print(f"seconds per epoch: {summary['seconds_per_epoch']}, fit wall time: {fit_wall / 60:.1f} min, peak memory "
          f"of the whole fit (PSS, process tree): {peak_gb:.2f} GB")
    views = "8-view TTA" if metrics.get("tta") else "one view"
    print(f"TEST ({metrics['n_images']} images, {views}): balanced accuracy {metrics['balanced_accuracy']:.4f}, "
          f"accuracy {metrics['accuracy']:.4f}, macro AUROC {metrics['auroc_macro']:.4f}, "
          f"malignant-vs-benign AUROC {metrics['auroc_malignant']:.4f}")
    if metrics.get("clinical"):
        alone, cl = metrics["clinical"]["image_only"], metrics["clinical"]
        print(f"  (image fused with {', '.join(cl['fields'])}, weight {cl['weight']:.2f} fitted on val; the image "
              f"alone: balanced accuracy {alone['balanced_accuracy']:.4f}, accuracy {alone['accuracy']:.4f}, "
              f"macro AUROC {alone['auroc_macro']:.4f}, malignant-vs-benign AUROC {alone['auroc_malignant']:.4f})")


if __name__ == "__main__":
    main()
