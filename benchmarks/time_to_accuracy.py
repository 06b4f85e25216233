"""Wall-clock time from `fit` start to the first validation balanced accuracy >= a target.

    python benchmarks/time_to_accuracy.py [--target 0.60] [--minutes 10] [--out runs/tta60] [--set key=value ...]

Runs `cli.py fit` on the full HAM10000 (default config plus --set overrides) with a wall-clock
budget, then reads the run's metrics.csv (`time/elapsed_s` counts from fit start, data checks and
caching included). Also prints the peak memory (PSS) of the fit process tree.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe  # noqa: E402
from memory import run_measured  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.60, help="validation balanced accuracy to reach")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget (trainer.max_time)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "time_to_accuracy")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--keep-going", action="store_true", help="train the whole budget, not only to the target")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    seconds = int(args.minutes * 60)
    cmd = [sys.executable, str(ROOT / "cli.py"), "fit", "--out", str(args.out), "--quiet",
           "--set", f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}"]
    if not args.keep_going:
        cmd += ["--set", f"trainer.stop_at={args.target}"]
    for o in args.overrides:
        cmd += ["--set", o]
    code, peak_gb = run_measured(cmd)
    if code:
        sys.exit(code)
    log = pd.read_csv(args.out / "logs" / "metrics.csv")
    val = log[log["val/balanced_accuracy"].notna()][["epoch", "time/elapsed_s", "val/balanced_accuracy",
                                                      "val/auroc_malignant"]]
    print(describe())
    summary = json.loads((args.out / "summary.json").read_text())
    print(f"config: configs/ham10000.yaml {' '.join('--set ' + o for o in args.overrides)} "
          f"(model {summary['model']}, {summary['image_size']} px, {summary['precision']})")
    print(val.to_string(index=False))
    hit = val[val["val/balanced_accuracy"] >= args.target]
    if hit.empty:
        print(f"val balanced accuracy never reached {args.target} in {args.minutes} min")
    else:
        first = hit.iloc[0]
        print(f"time to val balanced accuracy >= {args.target}: {first['time/elapsed_s'] / 60:.1f} min "
              f"(epoch {int(first['epoch'])}, {first['val/balanced_accuracy']:.3f})")
    print(f"peak memory of fit (PSS, process tree): {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
