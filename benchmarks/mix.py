"""Would two networks together keep one's HAM10000 figures and the other's on ISIC 2017? (#38, a diagnostic)

    python benchmarks/mix.py runs/default_s42u runs/pretrained_s42
    python benchmarks/mix.py --default runs/default_s42u runs/default_s1 runs/default_s2 \\
                             --with runs/pretrained10_s42 runs/pretrained10_s1 runs/pretrained10_s2

Reads what the runs already wrote (val_predictions.csv as calibrated, test/predictions.csv and the ISIC 2017
evaluation of benchmarks/shortcut.py, evaluations/isic2017/predictions.csv) and prints, for each run and for the
equal-weight mean of their probabilities, the rule's figures ("Against the shortcut: the rule" in RESULTS): the
validation balanced accuracy and melanoma AUROC against histopathology-confirmed nevi, and the ISIC 2017 melanoma
AUROC, with the test figures beside them. Every balanced accuracy here is that of the most probable class, the mix's
and each run's alike, so the rows compare with each other (a run's own figure names its classes by its calibrated
rule, which shortcut.py prints). The runs must share their split and label space. No weight is fitted: the mean is
the rule written before the figures.

With --default and --with, each default run is averaged with its partner (seed with seed), and shortcut.py's rule
("Against the shortcut: the rule", candidate `mix10`) judges the means against the default's runs, the balanced
accuracy that of the most probable class on both sides.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe
from shortcut import EVALUATION, decide, scored, show_rule, trained_on_archive, with_methods

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


def rule_input(figs: dict, trained: bool) -> dict:
    """A run's or a mean's figures as shortcut.py's `decide` reads them, every balanced accuracy that of the most
    probable class. A run that trained on the archive was scored on its val images alone, so that AUROC is the
    val one."""
    v, e = figs["val"], figs["isic2017"]
    return {"val": {"balanced_accuracy": v["balanced_accuracy"],
                    "histo_auroc_melanoma_vs_nevi": v["confirmed_auroc_melanoma_vs_nevi"]},
            "isic2017": {"auroc_melanoma": e["auroc_melanoma"]}, "trained_on_archive": trained,
            "isic2017_val_melanoma": e["auroc_melanoma"] if trained else None}


def show(rows: dict[str, dict], space) -> dict[str, dict]:
    """Print each row's figures (a run's, or a mean's) in one table; return them by row."""
    out = {name: {k: figures(r[k], space) for k in FILES} for name, r in rows.items()}
    width = max(len(name) for name in rows)
    print(f"\n{'':<{width}} {'val bal acc':>11} {'val mel vs conf nevi':>20} {'ISIC 2017 mel':>13} "
          f"{'test bal acc':>12} {'test mal AUROC':>14} {'test mel vs conf nevi':>21}")
    for name, f in out.items():
        v, t, e = (f[k] for k in FILES)
        print(f"{name:<{width}} {v['balanced_accuracy']:>11.4f} {v['confirmed_auroc_melanoma_vs_nevi']:>20.4f} "
              f"{e['auroc_melanoma']:>13.4f} {t['balanced_accuracy']:>12.4f} {t['auroc_malignant']:>14.4f} "
              f"{t['confirmed_auroc_melanoma_vs_nevi']:>21.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="runs of one split and label space, scored by shortcut.py")
    ap.add_argument("--default", nargs="*", type=Path, default=[], help="the rule: the default's runs, one a seed")
    ap.add_argument("--with", dest="partners", nargs="*", type=Path, default=[],
                    help="the rule: the runs each --default run is averaged with, the same seeds in the same order")
    args = ap.parse_args()
    if args.runs and (args.default or args.partners):
        raise SystemExit("give runs to mix, or --default and --with runs for the rule, not both")
    if len(args.default) != len(args.partners):
        raise SystemExit(f"--default has {len(args.default)} runs and --with {len(args.partners)}: give one partner "
                         "a seed, in the same order")
    every = args.runs or args.default + args.partners
    if not every:
        raise SystemExit("give runs to mix, or --default and --with runs")
    if len({r.resolve() for r in every}) < len(every):
        raise SystemExit("a run is named twice: give each run once")
    print(describe())
    names = [r.name for r in every]
    shown = dict(zip(every, names if len(set(names)) == len(names) else map(str, every), strict=True))
    space = label_space(RunDir(every[0]).load_config().data)
    if space.melanoma is None:
        raise SystemExit(f"{every[0]}: its label space has no melanoma class")
    frames = {}
    for run in every:
        if label_space(RunDir(run).load_config().data).classes != space.classes:
            raise SystemExit(f"{run}: its label space differs from {every[0]}'s")
        frames[run] = {name: read(run, name) for name in FILES}

    def mean_row(runs: list[Path]) -> tuple[str, dict]:
        return "mean of " + " and ".join(shown[r] for r in runs), {
            name: mean_of([frames[r][name] for r in runs], space) for name in FILES}

    if args.runs:
        show({**{shown[r]: frames[r] for r in every}, **dict([mean_row(every)])}, space)
        return
    pairs = list(zip(args.default, args.partners, strict=True))
    means = dict(mean_row(list(p)) for p in pairs)
    figs = show({**{shown[r]: frames[r] for r in every}, **means}, space)
    trained = {r: trained_on_archive(json.loads((r / f"evaluations/{EVALUATION}/metrics.json").read_text()))
               for r in every}
    show_rule(decide([rule_input(figs[shown[d]], trained[d]) for d in args.default],
                     [rule_input(figs[name], trained[d] or trained[w]) for name, (d, w) in zip(means, pairs,
                                                                                                strict=True)]))


if __name__ == "__main__":
    main()
