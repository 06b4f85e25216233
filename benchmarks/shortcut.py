"""Where HAM10000's follow-up shortcut is gone (#38): a run's figures on histopathology-confirmed lesions and on a
second archive (ISIC 2017), and the rule that decides whether a candidate trained against the shortcut becomes
the default.

    python benchmarks/shortcut.py --run runs/default_s42 [runs/other ...]
    python benchmarks/shortcut.py --default runs/default_s42 runs/default_s1 runs/default_s2 \\
                                  --candidate runs/cand_s42 runs/cand_s1 runs/cand_s2

For each run it first scores what is missing, with the project's own commands: `cli.py test` (the run's test
split, for the figures on confirmed lesions) and `cli.py test` on $LESION_PL_DATA/isic2017 as the evaluation
`isic2017` (its train and val images together, or its val images alone where the run trained on the archive).
Then it prints, per run:
- validation, as calibrated (val_predictions.csv, calibration.json): balanced accuracy, malignant AUROC, and the
  melanoma AUROC against histopathology-confirmed nevi, the rule's figure;
- test: the same figures on all lesions and on the confirmed ones, with lesion-bootstrap 95% CIs;
- ISIC 2017: melanoma AUROC, malignant AUROC, balanced accuracy over its three classes, and the sensitivity and
  specificity of the run's validation referral thresholds, each with its 95% CI.
With --default and --candidate it applies the rule of benchmarks/RESULTS.md ("Against the shortcut: the rule"),
on validation and ISIC 2017 figures only: no test figure enters it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lesion_pl.classes import label_space  # noqa: E402
from lesion_pl.config import resolve_data_root  # noqa: E402
from lesion_pl.data.sources import read_source  # noqa: E402
from lesion_pl.evaluate.confirmed import CONFIRMED, aurocs, diagnosis_method  # noqa: E402
from lesion_pl.evaluate.metrics import balanced_accuracy, binary_auroc  # noqa: E402
from lesion_pl.run import RunDir  # noqa: E402
from lesion_pl.terminal import metric_text  # noqa: E402

ISIC2017_READ = ["--format", "csv", "--set", "data.columns={image: image, label: dx}"]
EVALUATION = "isic2017"
BAL_ACC_SLACK = 0.02  # the rule: HAM validation balanced accuracy may fall by at most this much
SEEDS = 3  # the rule compares three seeds a side
STOP_SEEDS = 2  # ... but stops after two where either AUROC's mean change is below zero


def isic2017_root() -> Path:
    return Path(os.environ.get("LESION_PL_DATA") or ROOT / "data") / "isic2017"


def cli(*args) -> None:
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], check=True)


def ensure_scored(run: Path, archive: Path) -> None:
    """`test` where the run has no figures on confirmed lesions yet; the ISIC 2017 evaluation where it has none."""
    metrics = run / "test" / "metrics.json"
    if not metrics.is_file() or "histo_confirmed" not in json.loads(metrics.read_text()):
        cli("test", "--run", run, "--quiet", *(["--overwrite"] if metrics.is_file() else []))
    if not (run / "evaluations" / EVALUATION / "metrics.json").is_file():
        labels = pd.read_csv(archive / "labels.csv", dtype=str)
        trained = pd.read_csv(run / "splits.csv", dtype=str)["image_id"]
        # a run that trained on the archive is judged on the images it never saw: the archive's own val split
        rows = ["--set", "data.where={split: val}"] if labels["image_id"].isin(trained).any() else []
        cli("test", "--run", run, "--data-root", archive, "--split", "all", "--name", EVALUATION, "--quiet",
            *ISIC2017_READ, *rows)


def with_methods(run: Path, preds: pd.DataFrame) -> pd.DataFrame:
    """`preds` with each image's dx_type from the run's own data where the file lacks it (val_predictions.csv)."""
    if "dx_type" not in preds:
        cfg = RunDir(run).load_config()
        table = read_source(cfg.data.format, resolve_data_root(cfg.data), cfg.data).set_index("image_id")
        preds = preds.assign(dx_type=preds["image_id"].map(table["dx_type"]))
    return preds


def scored(preds: pd.DataFrame, space) -> tuple[np.ndarray, dict, dict]:
    """Class indices, the malignant (and melanoma) scores, and their AUROCs on the confirmed rows alone."""
    target = preds["dx"].map(space.index).to_numpy()
    scores = {"malignant": preds["malignant_prob"].to_numpy()}
    if space.melanoma is not None:
        scores["melanoma"] = preds[f"p_{space.melanoma}"].to_numpy()
    histo = diagnosis_method(preds) == CONFIRMED
    return target, scores, aurocs({k: v[histo] for k, v in scores.items()}, target[histo], space)


def validation(run: Path) -> dict:
    """The validation figures as calibrated, with dx_type from the run's own data where the file lacks it."""
    cal = json.loads((run / "calibration.json").read_text())
    preds = with_methods(run, pd.read_csv(run / "val_predictions.csv"))
    cfg = RunDir(run).load_config()
    space = label_space(cfg.data)
    target, _, confirmed = scored(preds, space)
    balanced = cal["val_balanced_accuracy"]
    if "source" in preds:  # a run of several sources: the rule's balanced accuracy is on the run's own (HAM10000)
        own = (preds["source"] == Path(resolve_data_root(cfg.data)).name).to_numpy()
        balanced = balanced_accuracy(target[own], preds["pred"].map(space.index).to_numpy()[own])
    return {"balanced_accuracy": balanced, "auroc_malignant": cal["val_auroc_malignant"],
            "histo_auroc_malignant": confirmed["auroc_malignant"],
            "histo_auroc_melanoma_vs_nevi": confirmed.get("auroc_melanoma_vs_nevi", float("nan"))}


def trained_on_archive(external: dict) -> bool:
    """Whether the ISIC 2017 evaluation (its metrics.json) kept the archive's val images alone: the run trained on
    its train images."""
    return external.get("rows_kept") is not None


def figures(run: Path, archive: Path) -> dict:
    """What the run's files say; `isic2017_val_melanoma`: the melanoma AUROC on the archive's val images alone,
    the figure the rule compares when a run trained on the archive's train images."""
    test = json.loads((run / "test" / "metrics.json").read_text())
    folder = run / "evaluations" / EVALUATION
    external = json.loads((folder / "metrics.json").read_text())
    preds = pd.read_csv(folder / "predictions.csv", dtype={"image_id": str})
    val_ids = pd.read_csv(archive / "labels.csv", dtype=str).query("split == 'val'")["image_id"]
    val = preds[preds["image_id"].isin(val_ids)]
    return {"val": validation(run), "test": test, "isic2017": external,
            "trained_on_archive": trained_on_archive(external),
            "isic2017_val_melanoma": binary_auroc(val["p_mel"].to_numpy(), (val["dx"] == "mel").to_numpy())}


def ci(value, interval) -> str:
    """A figure and its interval; n/a where the images cannot give it (null in metrics.json)."""
    return f"{metric_text(value, '.4f')} [{', '.join(map(metric_text, interval))}]"


def show(run: Path, f: dict) -> None:
    summary = json.loads((run / "summary.json").read_text())
    v, t, e = f["val"], f["test"], f["isic2017"]
    h = t["histo_confirmed"]
    print(f"\n{run}: {summary['model']} at {summary['image_size']} px, {summary['precision']}, {summary['epochs']} "
          f"epochs, fit {summary['fit_seconds'] / 60:.1f} min")
    print(f"  val   balanced accuracy {v['balanced_accuracy']:.4f}, malignant AUROC {v['auroc_malignant']:.4f}; "
          f"confirmed: malignant AUROC {metric_text(v['histo_auroc_malignant'], '.4f')}, melanoma vs nevi "
          f"{metric_text(v['histo_auroc_melanoma_vs_nevi'], '.4f')}")
    print(f"  test  balanced accuracy {ci(t['balanced_accuracy'], t['ci95']['balanced_accuracy'])}, malignant "
          f"AUROC {ci(t['auroc_malignant'], t['ci95']['auroc_malignant'])}, melanoma AUROC "
          f"{ci(t['auroc_melanoma'], t['ci95']['auroc_melanoma'])}")
    print(f"  test, confirmed ({h['images']} images, {h['benign_images']} benign): malignant AUROC "
          f"{ci(h['auroc_malignant'], h['ci95']['auroc_malignant'])}, melanoma vs nevi "
          f"{ci(h['auroc_melanoma_vs_nevi'], h['ci95']['auroc_melanoma_vs_nevi'])}")
    for name, op in h["operating_points"].items():
        every = t["operating_points"][name]
        print(f"    {name} referral: sensitivity {ci(op['sensitivity'], op['ci95']['sensitivity'])}, specificity "
              f"on confirmed benign {ci(op['specificity'], op['ci95']['specificity'])} (all lesions "
              f"{ci(every['specificity'], every['ci95']['specificity'])})")
    for r in t.get("by_dx_type", []):
        print(f"    dx_type {r['dx_type']:<10} {r['images']:>5} images: malignant vs these benign "
              f"{metric_text(r['auroc_malignant_vs_these_benign'], '.4f')}, melanoma vs these nevi "
              f"{metric_text(r.get('auroc_melanoma_vs_these_nevi'), '.4f')}")
    kept = e.get("rows_kept")
    print(f"  ISIC 2017 ({e['n_images']} images{', its val split' if kept else ', train and val'}): melanoma AUROC "
          f"{ci(e['auroc_melanoma'], e['ci95']['auroc_melanoma'])}, malignant AUROC "
          f"{ci(e['auroc_malignant'], e['ci95']['auroc_malignant'])}, balanced accuracy "
          f"{ci(e['balanced_accuracy'], e['ci95']['balanced_accuracy'])}; melanoma AUROC on its val images "
          f"{metric_text(f['isic2017_val_melanoma'], '.4f')}")
    for name, op in e["operating_points"].items():
        print(f"    {name} referral at {op['threshold']:.4f}: sensitivity "
              f"{ci(op['sensitivity'], op['ci95']['sensitivity'])}, specificity "
              f"{ci(op['specificity'], op['ci95']['specificity'])}")


def rule_figures(runs: list[dict]) -> dict:
    """The rule's three figures; ISIC 2017 on its train and val images, or on its val images alone where any of
    the compared runs trained on the archive."""
    isic = ("ISIC 2017 val melanoma AUROC", lambda f: f["isic2017_val_melanoma"]) if any(
        f.get("trained_on_archive") for f in runs) else ("ISIC 2017 melanoma AUROC",
                                                          lambda f: f["isic2017"]["auroc_melanoma"])
    return {"val melanoma vs confirmed nevi": lambda f: f["val"]["histo_auroc_melanoma_vs_nevi"], isic[0]: isic[1],
            "val balanced accuracy": lambda f: f["val"]["balanced_accuracy"]}


def decide(default: list[dict], candidate: list[dict]) -> dict:
    """The rule: both AUROCs' means rise by more than the seeds' spread (the larger max - min of the two sides),
    and the validation balanced accuracy's mean falls by at most BAL_ACC_SLACK. After STOP_SEEDS seeds a side, a
    mean change below zero in either AUROC already answers no (the third seed is not run)."""
    out = {}
    figures_of = rule_figures(default + candidate)
    for name, get in figures_of.items():
        d, c = np.array([get(f) for f in default]), np.array([get(f) for f in candidate])
        out[name] = {"default": float(d.mean()), "candidate": float(c.mean()), "change": float(c.mean() - d.mean()),
                     "spread": float(max(np.ptp(d), np.ptp(c)))}
    aurocs = list(figures_of)[:2]
    rises = all(out[n]["change"] > out[n]["spread"] for n in aurocs)
    kept = out["val balanced accuracy"]["change"] >= -BAL_ACC_SLACK
    seeds = min(len(default), len(candidate))
    stopped = seeds >= STOP_SEEDS and any(out[n]["change"] < 0 for n in aurocs)
    # one seed a side has no spread: the rule is over three, and says nothing before them but the stop
    adopt = False if stopped else (rises and kept) if seeds >= SEEDS else None
    return {"figures": out, "aurocs_rise": rises, "balanced_accuracy_kept": kept, "seeds": seeds,
            "stopped": stopped, "adopt": adopt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs="*", type=Path, default=[], help="runs to score and show")
    ap.add_argument("--default", nargs="*", type=Path, default=[], help="the default's runs, one per seed")
    ap.add_argument("--candidate", nargs="*", type=Path, default=[], help="the candidate's runs, the same seeds")
    ap.add_argument("--isic2017", type=Path, default=isic2017_root(), help="the second archive (labels.csv, images/)")
    args = ap.parse_args()
    if bool(args.default) != bool(args.candidate):
        raise SystemExit("give both --default and --candidate runs (the same seeds), or --run alone")
    print(describe())
    found = {}
    for run in dict.fromkeys(args.run + args.default + args.candidate):
        ensure_scored(run, args.isic2017)
        found[run] = figures(run, args.isic2017)
        show(run, found[run])
    if args.default:
        show_rule(decide([found[r] for r in args.default], [found[r] for r in args.candidate]))


def show_rule(out: dict) -> None:
    """`decide`'s answer, a line per figure and the verdict."""
    print("\nthe rule (means over seeds; spread: the larger max - min of the two sides):")
    for name, x in out["figures"].items():
        print(f"  {name:<32} default {x['default']:.4f}  candidate {x['candidate']:.4f}  change "
              f"{x['change']:+.4f}  spread {x['spread']:.4f}")
    print(f"  both AUROCs rise by more than the spread: {out['aurocs_rise']}; balanced accuracy falls by at most "
          f"{BAL_ACC_SLACK}: {out['balanced_accuracy_kept']} -> candidate becomes the default: {verdict(out)}")


def verdict(out: dict) -> str:
    """`decide`'s answer in words."""
    if out["adopt"] is None:
        return f"no answer yet: {out['seeds']} seed(s) a side, the rule needs {SEEDS}"
    if out["adopt"]:
        return "yes"
    if out["stopped"] and out["seeds"] < SEEDS:
        return f"no (after {out['seeds']} seeds an AUROC's mean change is below zero: the rule stops here)"
    return "no"


if __name__ == "__main__":
    main()
