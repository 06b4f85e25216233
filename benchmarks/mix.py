"""Would two networks together keep one's HAM10000 figures and the other's on ISIC 2017? (#38, a diagnostic)

    python benchmarks/mix.py runs/default_s42u runs/pretrained_s42

Reads what the runs already wrote (val_predictions.csv as calibrated, test/predictions.csv and the ISIC 2017
evaluation of benchmarks/shortcut.py, evaluations/isic2017/predictions.csv) and prints, for each run and for the
equal-weight mean of their probabilities, the rule's figures ("Against the shortcut: the rule" in RESULTS): the
validation balanced accuracy and melanoma AUROC against histopathology-confirmed nevi, and the ISIC 2017 melanoma
AUROC, with the test figures beside them. Every balanced accuracy here is that of the most probable class, the mix's
and each run's alike, so the rows compare with each other (a run's own figure names its classes by its calibrated
rule, which shortcut.py prints). The runs must share their split and label space. No weight is fitted: the mean is
the rule written before the figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe
from shortcut import EVALUATION, scored, with_methods

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lesion_pl.classes import label_space  # noqa: E402
from lesion_pl.evaluate.confirmed import aurocs  # noqa: E402
from lesion_pl.evaluate.metrics import balanced_accuracy  # noqa: E402
from lesion_pl.run import RunDir  # noqa: E402

FILES = {"val": "val_predictions.csv", "test": "test/predictions.csv",
         "isic2017": f"evaluations/{EVALUATION}/predictions.csv"}


def read(run: Path, name: str) -> pd.DataFrame:
    rows = with_methods(run, pd.read_csv(run / FILES[name], dtype={"image_id": str}))
    return rows.set_index("image_id")


def figures(rows: pd.DataFrame, space) -> dict:
    """Balanced accuracy of the most probable class, and the AUROCs on all rows and on the confirmed ones."""
    target, scores, confirmed = scored(rows.reset_index(), space)
    probs = rows[[f"p_{c}" for c in space.classes]].to_numpy()
    return {"balanced_accuracy": balanced_accuracy(target, probs.argmax(1)), **aurocs(scores, target, space),
            **{f"confirmed_{k}": v for k, v in confirmed.items()}}


def mean_of(frames: list[pd.DataFrame], space) -> pd.DataFrame:
    """The equal-weight mean of the runs' probabilities, on the images every run scored."""
    common = frames[0].index
    for f in frames[1:]:
        common = common.intersection(f.index)
    if any(len(f) != len(common) for f in frames):
        raise SystemExit(f"the runs scored different images ({[len(f) for f in frames]} rows, {len(common)} shared): "
                         "they must share their split")
    out = frames[0].loc[common].copy()
    columns = [f"p_{c}" for c in space.classes] + ["malignant_prob"]
    out[columns] = np.mean([f.loc[common, columns].to_numpy() for f in frames], axis=0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="runs of one split and label space, scored by shortcut.py")
    args = ap.parse_args()
    if len({r.resolve() for r in args.runs}) < len(args.runs):
        raise SystemExit("a run is named twice: give each run once")
    print(describe())
    names = [r.name for r in args.runs]
    names = names if len(set(names)) == len(names) else [str(r) for r in args.runs]  # folders of one name
    cfg = RunDir(args.runs[0]).load_config()
    space = label_space(cfg.data)
    if space.melanoma is None:
        raise SystemExit(f"{args.runs[0]}: its label space has no melanoma class")
    rows = {}
    for run, shown in zip(args.runs, names, strict=True):
        if label_space(RunDir(run).load_config().data).classes != space.classes:
            raise SystemExit(f"{run}: its label space differs from {args.runs[0]}'s")
        rows[shown] = {name: read(run, name) for name in FILES}
    rows["mean of " + " and ".join(rows)] = {name: mean_of([r[name] for r in list(rows.values())], space)
                                             for name in FILES}
    width = max(len(name) for name in rows)
    print(f"\n{'':<{width}} {'val bal acc':>11} {'val mel vs conf nevi':>20} {'ISIC 2017 mel':>13} "
          f"{'test bal acc':>12} {'test mal AUROC':>14} {'test mel vs conf nevi':>21}")
    for name, r in rows.items():
        v, t, e = (figures(r[k], space) for k in FILES)
        print(f"{name:<{width}} {v['balanced_accuracy']:>11.4f} {v['confirmed_auroc_melanoma_vs_nevi']:>20.4f} "
              f"{e['auroc_melanoma']:>13.4f} {t['balanced_accuracy']:>12.4f} {t['auroc_malignant']:>14.4f} "
              f"{t['confirmed_auroc_melanoma_vs_nevi']:>21.4f}")


if __name__ == "__main__":
    main()
