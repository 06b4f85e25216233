"""What test-time augmentation (8 flips/90-degree rotations) changes and costs, for finished runs.

    python benchmarks/tta.py --run runs/A [--run runs/B ...]

For each run, two copies in a temp folder are calibrated on validation, one on single-view scores
(calibration.tta: false) and one on 8-view scores (true), exactly as `cli.py calibrate` does, and
each is then tested with the scores it was calibrated on. Prints, per run and mode, the validation
figures (what the default was chosen on) and the test figures, with the seconds each `test` took.
The runs themselves are not changed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)


def copy_with_tta(run: Path, dest: Path, tta: bool) -> Path:
    """The run's config, split and checkpoints (no outputs) in `dest`, with calibration.tta set."""
    dest.mkdir(parents=True)
    for name in ("config.yaml", "splits.csv", "summary.json"):
        if (run / name).exists():
            shutil.copy(run / name, dest / name)
    shutil.copytree(run / "checkpoints", dest / "checkpoints")
    from lesion_pl.config import load_config, save_config

    cfg = load_config(dest / "config.yaml")
    cfg.calibration.tta = tta
    save_config(cfg, dest / "config.yaml")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="a run folder (repeatable)")
    args = ap.parse_args()

    from lesion_pl.evaluate.calibrate import calibrate_run
    from lesion_pl.evaluate.run_test import test_run

    print(f"{describe()}; "
          "fused = image + age, sex, site (the default); image = the image alone")
    print(f"{'run':<28} {'views':<6} {'val NLL':>8} {'val bal':>8} {'val mal':>8} | {'test bal':>17} "
          f"{'test mal AUROC':>20} {'macro':>7} {'img mal':>8} {'test s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.run:
            for tta in (False, True):
                copy = copy_with_tta(run, Path(tmp) / f"{run.name}-{int(tta)}", tta)
                cal = calibrate_run(copy, progress=False)
                start = time.perf_counter()
                m = test_run(copy, progress=False)
                sec = time.perf_counter() - start
                ci = m["ci95"]
                alone = m.get("clinical", {}).get("image_only", m)
                print(f"{run.name:<28} {'8' if tta else '1':<6} {cal['val_nll_after']:>8.4f} "
                      f"{cal['val_balanced_accuracy']:>8.4f} {cal['val_auroc_malignant']:>8.4f} | "
                      f"{m['balanced_accuracy']:.4f} "
                      f"({ci['balanced_accuracy'][0]:.3f}-{ci['balanced_accuracy'][1]:.3f}) "
                      f"{m['auroc_malignant']:.4f} ({ci['auroc_malignant'][0]:.3f}-{ci['auroc_malignant'][1]:.3f}) "
                      f"{m['auroc_macro']:>7.4f} {alone['auroc_malignant']:>8.4f} {sec:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
