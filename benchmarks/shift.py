"""How a run holds up on other clinics' images: its test split scored as it is and under each named
acquisition shift (lesion_pl/data/shifts.py), through the exported ONNX model as an application runs it.

    python benchmarks/shift.py --run RUN [--split val] [--shift NAME ...] [--limit N] [--no-tta] [--boot 1000]

Each shift is applied to the original image file before the model's own preprocessing, with the run's
clinical metadata fused as `test` fuses it, scored on the views the run was calibrated on (8 unless
--no-tta). Prints, per shift: malignant AUROC, melanoma AUROC, balanced accuracy (the run's decision rule)
and the sensitivity of the malignant referral threshold chosen on validation, each with its drop from the
unshifted figure and the drop's 95% lesion-bootstrap interval (the same lesions resampled for both).
Writes RUN/shift.json (adding to the shifts already there when the images and settings are the same),
which `report` shows as "Under acquisition shift"; `--split val` (RUN/shift_val.json)
is the one to judge a training choice by, never the test split. Needs RUN/export/model.onnx
(`python cli.py export --run RUN`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machine import describe  # noqa: E402  (the script's own folder is on sys.path)

from lesion_pl.calibration import lesion_bootstrap  # noqa: E402
from lesion_pl.classes import CLASS_TO_INDEX  # noqa: E402
from lesion_pl.data.shifts import SHIFTS, apply_shift  # noqa: E402
from lesion_pl.errors import LesionPLError  # noqa: E402
from lesion_pl.io import atomic_write_json  # noqa: E402
from lesion_pl.preprocess import load_rgb  # noqa: E402
from lesion_pl.run import RunDir  # noqa: E402
from lesion_pl.scoring import scores_and_positives  # noqa: E402

FIGURES = ("auroc_malignant", "auroc_melanoma", "balanced_accuracy", "referral_sensitivity")


def figures(probs: np.ndarray, named: np.ndarray, refer: np.ndarray, labels: np.ndarray) -> dict:
    """The four figures of one scoring of the images (rows already picked)."""
    from lesion_pl.evaluate.metrics import balanced_accuracy, binary_auroc

    malignant = scores_and_positives(probs, labels, "malignant")
    return {"auroc_malignant": binary_auroc(*malignant),
            "auroc_melanoma": binary_auroc(*scores_and_positives(probs, labels, "melanoma")),
            "balanced_accuracy": balanced_accuracy(labels, named),
            "referral_sensitivity": float(refer[malignant[1]].mean()) if malignant[1].any() else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a fitted, calibrated and exported run folder")
    ap.add_argument("--split", choices=("test", "val"), default="test", help="the run's split to score")
    ap.add_argument("--shift", action="append", choices=list(SHIFTS), help="only these shifts (repeatable)")
    ap.add_argument("--limit", type=int, help="score only this many images (the first lesions of the split)")
    ap.add_argument("--no-tta", action="store_true", help="one view per image (8x faster; not how it was calibrated)")
    ap.add_argument("--boot", type=int, default=1000, help="lesion-bootstrap resamples for the drops' intervals")
    ap.add_argument("--seed", type=int, default=0, help="the shifts' random draws (white balance)")
    args = ap.parse_args()

    from lesion_pl.export.runtime import LesionOnnxClassifier

    run = RunDir(args.run)
    model = run.path / "export" / "model.onnx"
    if not model.is_file():
        raise SystemExit(f"error: {model} does not exist; export the run first: python cli.py export --run {run.path}")
    cfg = run.load_config()
    dm = run.datamodule(cfg, progress=False)
    rows = dm.table.iloc[dm.indices(args.split)].sort_values("group", kind="stable")
    if args.limit:
        rows = rows.iloc[:args.limit]
    labels = rows["dx"].map(CLASS_TO_INDEX).to_numpy()
    groups = rows["group"].to_numpy()
    clf = LesionOnnxClassifier(model)
    tta = clf.tta and not args.no_tta
    metadata = None
    if clf.clinical:
        columns = list(clf.clinical_fields.values())
        metadata = [{c: r[c] for c in columns if c in rows} for _, r in rows.iterrows()]
    originals = [load_rgb(p) for p in rows["path"]]
    print(describe())
    print(f"run {run.path}: {len(rows)} {args.split} images of {len(np.unique(groups))} lesions, "
          f"{'8 views' if tta else 'one view'} per image, metadata {'fused' if metadata else 'not used'}; "
          f"referral threshold {clf.referral_threshold}; intervals: {args.boot} lesion-bootstrap resamples")

    scored = {}
    names = ["none", *(args.shift or SHIFTS)]
    for name in names:
        start = time.perf_counter()
        images = (originals if name == "none"
                  else [apply_shift(name, im, args.seed, i) for i, im in enumerate(originals)])
        preds = clf.predict(images, tta=tta, metadata=metadata)
        scored[name] = (preds.probabilities.astype(np.float64), preds.top_index,
                        np.asarray(preds.refer if preds.refer is not None else np.zeros(len(rows), bool)))
        print(f"  scored {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    base = figures(*scored["none"], labels)
    results = {"run": str(run.path), "split": args.split, "images": len(rows), "lesions": int(len(np.unique(groups))),
               "tta": tta, "seed": args.seed, "bootstrap": args.boot, "none": base, "shifts": {}}
    print(f"\n{'shift':<20} " + " ".join(f"{k:>34}" for k in FIGURES))
    print(f"{'none':<20} " + " ".join(f"{base[k]:>34.4f}" for k in FIGURES))
    def drops(pick):
        """Every shift's change on one resample of lesions; the unshifted figures computed once for all."""
        b = figures(*(x[pick] for x in scored["none"]), labels[pick])
        out = {}
        for name in names[1:]:
            a = figures(*(x[pick] for x in scored[name]), labels[pick])
            out.update({(name, k): a[k] - b[k] for k in FIGURES})
        return out

    cis = lesion_bootstrap(groups, drops, args.boot, args.seed)
    for name in names[1:]:
        value = figures(*scored[name], labels)
        ci = {k: cis[name, k] for k in FIGURES}
        results["shifts"][name] = {"what": SHIFTS[name][0], **value,
                                   "drop": {k: value[k] - base[k] for k in FIGURES}, "drop_ci95": ci}
        cells = [f"{value[k]:.4f} ({value[k] - base[k]:+.4f} [{ci[k][0]:+.3f}, {ci[k][1]:+.3f}])" for k in FIGURES]
        print(f"{name:<20} " + " ".join(f"{c:>34}" for c in cells))
    out = run.path / ("shift.json" if args.split == "test" else f"shift_{args.split}.json")
    if out.is_file():  # shifts scored before on the same images and settings are kept beside the new ones
        old = json.loads(out.read_text())
        # the same unshifted figures: the same model on the same images
        if all(old.get(k) == results[k] for k in ("split", "images", "tta", "seed", "bootstrap", "none")):
            results["shifts"] = {**{n: r for n, r in old["shifts"].items() if n in SHIFTS}, **results["shifts"]}
    atomic_write_json(out, results)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    try:
        main()
    except LesionPLError as e:
        raise SystemExit(f"error: {e}") from None
