"""Train several config variants (in parallel processes) and print their validation scores.

Used to choose defaults on the validation split (never the test split), e.g. the class-imbalance
handling:
    python benchmarks/sweep.py --parallel 4 --out runs/sweep \
        --variant "sqrt=--set data.sampler=sqrt" --variant "bal=--set data.sampler=balanced"
Each variant is a name and the extra `cli.py fit` arguments; all share the common arguments.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_variant(name: str, extra: str, common: list[str], out: Path) -> dict:
    run = out / name
    cmd = [sys.executable, str(ROOT / "cli.py"), "fit", "--out", str(run), "--quiet", *common, *shlex.split(extra)]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"name": name, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    summary = json.loads((run / "summary.json").read_text())
    cal_path = run / "calibration.json"  # fit calibrates on validation when it ends
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    return {"name": name, "args": extra, "wall_s": round(time.time() - start),
            "best_val_balanced_accuracy": summary["best_val_balanced_accuracy"],
            "val_auroc_malignant": summary["best_val_metrics"].get("auroc_malignant"),
            "val_auroc_malignant_calibrated": cal.get("val_auroc_malignant"),
            "best_epoch": summary["best_epoch"], "epochs": summary["epochs"],
            "seconds_per_epoch": summary["seconds_per_epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="NAME=EXTRA FIT ARGS")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("common", nargs="*", help="arguments for every `cli.py fit` (after --)")
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variant]
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}; common args: {args.common}")
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda v: run_variant(v[0], v[1], args.common, args.out), variants))
    for r in sorted(results, key=lambda r: -(r.get("best_val_balanced_accuracy") or 0)):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
