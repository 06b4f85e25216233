"""Is behaviour unchanged by a refactor? Record a trained run's outputs before it, compare after it.

    python benchmarks/behaviour.py --run runs/A --record runs/A.behaviour.json    # before the change
    python benchmarks/behaviour.py --run runs/A --compare runs/A.behaviour.json   # after: the differences

Copies the trained run (checkpoints, config, splits; not its calibration, test or export) into a fresh
folder and there runs `calibrate`, `test`, `export` and the torch-free runtime on the first --images
images of the test split, with and without their age, sex and site: calibration.json, test's
metrics.json, the ONNX metadata, and the runtime's probabilities, malignancy, top classes and referral
flags. --compare prints the largest numeric difference and every value that differs otherwise (paths
are compared with the run folder's name taken out) and exits 1 past --tol.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# what a fitted run holds that calibrate, test and export write again
REDONE = {"calibration.json", "val_predictions.csv", "test", "export", "evaluations", "report"}


def record(run: Path, images: int) -> dict:
    import numpy as np
    import pandas as pd

    from lesion_pl.export.runtime import LesionOnnxClassifier

    with tempfile.TemporaryDirectory(prefix="behaviour-") as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=lambda d, names: [n for n in names if Path(d) == run and n in REDONE])
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        for command in (["calibrate"], ["test"], ["export"]):
            subprocess.run([sys.executable, str(ROOT / "cli.py"), *command, "--run", str(copy), "--quiet"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
        clf = LesionOnnxClassifier(copy / "export" / "model.onnx")
        from lesion_pl.data.sources.ham10000 import read_ham10000

        metrics = json.loads((copy / "test" / "metrics.json").read_text())
        test = pd.read_csv(copy / "test" / "predictions.csv").head(images)
        table = read_ham10000(metrics["data_root"]).set_index("image_id").loc[test["image_id"]]
        paths = table["path"].tolist()
        meta = [{"age": r.age, "sex": r.sex, "site": r.localization} for r in table.itertuples()]
        out = {}
        for name, kwargs in (("image_only", {}), ("with_metadata", {"metadata": meta})):
            p = clf.predict(paths, **kwargs)
            out[name] = {"probabilities": np.asarray(p.probabilities, dtype=float).tolist(),
                         "malignancy": np.asarray(p.malignancy, dtype=float).tolist(), "top_class": p.top_class,
                         "refer": None if p.refer is None else np.asarray(p.refer).tolist()}
        result = {"calibration": json.loads((copy / "calibration.json").read_text()),
                  "metrics": metrics,
                  "onnx_metadata": clf.metadata, "runtime": out}
        return json.loads(json.dumps(result).replace(str(copy), "RUN"))


def differences(a, b, path: str = "") -> tuple[float, list[str]]:
    """The largest numeric difference between two JSON values, and where they differ otherwise."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or a is None or b is None:
        return 0.0, [] if a == b else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):  # no numeric difference: say it
            return 0.0, [] if (math.isnan(a) and math.isnan(b)) or a == b else [f"{path}: {a!r} != {b!r}"]
        return abs(a - b), []
    if isinstance(a, dict) and isinstance(b, dict):
        worst, other = 0.0, [f"{path}.{k}: only in one" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            if path == "" and k == "onnx_metadata":  # metadata values are JSON text: compare them parsed
                va, vb = ({x: _parsed(y) for x, y in v.items()} for v in (a[k], b[k]))
            else:
                va, vb = a[k], b[k]
            d, o = differences(va, vb, f"{path}.{k}")
            worst, other = max(worst, d), other + o
        return worst, other
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return 0.0, [f"{path}: {len(a)} items != {len(b)}"]
        worst, other = 0.0, []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d, o = differences(x, y, f"{path}[{i}]")
            worst, other = max(worst, d), other + o
        return worst, other
    return 0.0, [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _parsed(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--record", type=Path, help="write the run's outputs here (before a change)")
    what.add_argument("--compare", type=Path, help="compare the run's outputs now with this record")
    ap.add_argument("--images", type=int, default=64, help="test images the runtime predicts")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    now = record(args.run.resolve(), args.images)
    if args.record:
        args.record.write_text(json.dumps(now, indent=1))
        print(f"recorded {args.run}'s calibration, test metrics, ONNX metadata and runtime outputs in {args.record}")
        return
    worst, other = differences(json.loads(args.compare.read_text()), now)
    print(f"largest numeric difference: {worst:.3g} (tolerance {args.tol:g})")
    for line in other:
        print("differs:", line)
    sys.exit(0 if worst <= args.tol and not other else 1)


if __name__ == "__main__":
    main()
