"""`test`: the best checkpoint on a split of the run's data -> metrics.json, predictions, plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import ood
from ..calibration import brier_score
from ..classes import label_space
from ..config import Config
from ..errors import LesionPLError
from ..io import atomic_dir, atomic_write_json
from ..ood import OodRule
from ..run import RunDir, require_data_keys
from ..scoring import Scored, ScoringPolicy, is_positive, softmax
from ..terminal import CONFIRMED_FIGURES, HEADLINE
from .predictions import predictions_frame, write_predictions


def require_unseen(run: RunDir, table: pd.DataFrame, root: Path) -> None:
    """Another source's images may not be ones the run trained or validated on (same image id in its splits.csv):
    one line naming how many and which, before anything is scored."""
    saved = pd.read_csv(run.splits, dtype=str, usecols=["image_id", "split"])
    seen = saved.loc[saved["split"].isin(["train", "val"]), "image_id"]
    overlap = table["image_id"][table["image_id"].isin(seen)]
    if len(overlap):
        raise LesionPLError(f"{len(overlap)} image(s) in {root} are in {run.path}'s train or val split (e.g. "
                            f"{', '.join(overlap[:3])}): an evaluation on them would not be held out; keep other rows "
                            "with --set data.where={COLUMN: VALUE}")


def ood_figures(rule: OodRule, scores: np.ndarray, frame: pd.DataFrame) -> dict:
    """How many of these images the run's out-of-distribution rule lets through (they are all dermoscopy the data
    calls lesions), and which it refuses (image ids, worst first)."""
    outside = rule.outside(scores)
    order = np.argsort(-scores)
    refused = [{"image_id": str(frame["image_id"].iloc[i]), "dx": str(frame["dx"].iloc[i]),
                "ood_score": float(scores[i])} for i in order if outside[i]]
    return {"threshold": rule.threshold, "share": rule.share, "val_pass": rule.facts.get("val_pass"),
            "images": int(len(scores)), "pass": float((~outside).mean()), "refused": refused}


def _checkpoints(run: RunDir) -> dict:
    """What was evaluated: the best checkpoint, or an ensemble's members' (listed)."""
    paths = run.best_checkpoints
    if not run.members:
        return {"checkpoint": str(paths[0])}
    return {"checkpoint": str(run.members_dir), "members": [str(p) for p in paths]}


def evaluation_target(run: RunDir, data_root: Path | None, data_format: str | None, split: str,
                      name: str | None = None, out: Path | None = None) -> tuple[Path, str | None]:
    """Where an evaluation writes, and its name: RUN/test (name None) for the run's own test split, else
    RUN/evaluations/NAME (default: the split's name on the run's own data, else the data root's folder name
    and format, e.g. `isic2019-isic-csv`), or `out`."""
    from ..config import resolve_data_root
    from ..data.sources import detect_format

    own_cfg = run.load_config()
    own_root = resolve_data_root(own_cfg.data).resolve()
    root = Path(data_root).expanduser().resolve() if data_root is not None else own_root
    own = root == own_root and data_format in (None, own_cfg.data.format)
    if out is not None:
        return Path(out), name or Path(out).name
    if name is None:
        if own and split == "test":
            return run.test, None
        if own and split != "all":
            name = split
        else:
            fmt = data_format if data_format not in (None, "auto") else None
            fmt = fmt or (detect_format(root) if root.is_dir() else "auto")
            name = f"{root.name}-{fmt}"
    return run.evaluation(name), name


def test_run(run_path: Path, data_root: Path | None = None, split: str = "test", tta: bool | None = None,
             progress: bool = True, data_format: str | None = None, skip_bad_images: bool = False,
             name: str | None = None, out: Path | None = None, overwrite: bool = False,
             data_overrides: list[str] = ()) -> dict:
    """Evaluate the run on a split of its data or on another source. The run's own test split writes RUN/test;
    every other evaluation its own folder (`evaluation_target`), refused if it exists unless `overwrite`.
    Another source is read with the run's config and `data_overrides` (data.KEY=value: its columns, label map,
    rows), and may hold no image the run trained or validated on. Outputs are written into a temp folder that
    replaces the target only when all of them are done."""
    from ..checkpoint import load_run_model
    from ..config import resolve_data_root
    from .calibrate import calibration_error_floor, calibration_errors, load_calibration
    from .confirmed import by_method, confirmed_figures
    from .inference import has_features, predict_logits
    from .metrics import by_source, headline_ci, metrics_report, operating_points
    from .plots import confusion_matrix_png, reliability_png, roc_png

    run = RunDir(Path(run_path))
    run.require_fitted()
    if split not in ("train", "val", "test", "all"):
        raise LesionPLError(f"--split must be train, val, test or all, got '{split}'")
    require_data_keys(data_overrides)
    dest, evaluation = evaluation_target(run, data_root, data_format, split, name, out)
    dest = dest.resolve()
    if dest.exists() and not dest.is_dir():
        raise LesionPLError(f"evaluation folder {dest} is a file")
    if evaluation is not None and dest.exists() and any(dest.iterdir()):
        if not (dest / "metrics.json").is_file():  # --overwrite replaces the whole folder: only an evaluation's
            raise LesionPLError(f"{dest} holds files that are not an evaluation; give a new or empty folder")
        if not overwrite:
            raise LesionPLError(f"evaluation folder {dest} already exists; pass --overwrite to replace it, or "
                                "--name NAME for another")
    cfg = run.load_config(data_root, data_format, skip_bad_images, data_overrides)
    dm = run.datamodule(cfg, progress, whole=split == "all")
    ds = dm.dataset(split)
    if len(ds) == 0:
        raise LesionPLError(f"the {split} split of {dm.root} is empty")
    if split == "all" and dm.root.resolve() != resolve_data_root(run.load_config().data).resolve():
        require_unseen(run, dm.table, dm.root)

    cal = load_calibration(run, data_root, progress)
    if tta is None:  # as the run was calibrated
        tta = bool(cal.get("tta", False))
    model = load_run_model(run)
    rule = OodRule.from_record(cal.get("ood"))
    with_features = rule is not None and has_features(model) and run.ood.exists()
    out = predict_logits(model, ds, tta=tta, progress=progress, features=with_features)
    features, logits = out if with_features else (None, out)
    ood_scores = ood.load(run.ood).score(features) if with_features else None
    rows = dm.table.iloc[ds.indices]
    policy = ScoringPolicy.from_calibration(cal, label_space(cfg.data))
    space = policy.space
    scored = policy(logits, rows)
    raw, probs, pred = softmax(logits), scored.probabilities, scored.top_index
    if "melanoma_target" in rows:
        return _binary_test(run, cfg, policy, scored, rows, split, dm, tta, dest, evaluation)
    target = np.asarray(ds.labels)
    t_target = torch.from_numpy(target)
    report = metrics_report(torch.from_numpy(probs).float(), t_target, torch.from_numpy(pred), space)
    report = {"evaluation": evaluation, "out": str(dest), "split": split, "data_root": str(dm.root),
              "data_format": data_format, "data_overrides": list(data_overrides),
              "rows_kept": dm.table.attrs.get("where"), **_checkpoints(run), "tta": tta,
              "tta_calibrated": bool(cal.get("tta", False)), "skipped_bad_images": dm.skipped,
              "classes": list(space.classes), **report}
    report["ci95"] = headline_ci(probs, target, rows["group"].to_numpy(), int(cfg.calibration.bootstrap),
                                 int(cfg.seed), pred, space)
    before, after = calibration_errors(raw, target, space), calibration_errors(probs, target, space)
    floor = calibration_error_floor(probs, space, seed=int(cfg.seed))
    report["calibration"] = {
        "temperature": cal["temperature"],
        "prior_weight": cal.get("prior_weight", 0.0),
        "decision": cal.get("decision", "accuracy"),
        "ece_15_before": before["ece"], "ece_15_after": after["ece"],
        "brier_before": brier_score(raw, target), "brier_after": brier_score(probs, target),
        "malignancy_ece_15_before": before["malignancy_ece"], "malignancy_ece_15_after": after["malignancy_ece"],
        # what a perfectly calibrated model with the reported probabilities would show on this many images
        "ece_15_floor": floor["ece"], "malignancy_ece_15_floor": floor["malignancy_ece"],
    }
    if cal.get("clinical"):
        image_report = metrics_report(torch.from_numpy(scored.image_probabilities).float(), t_target,
                                      torch.from_numpy(policy.decide(scored.image_probabilities)), space)
        report["clinical"] = {"weight": cal["clinical"]["weight"], "fields": sorted(cal["clinical"]["columns"]),
                              "images_with_metadata": int(scored.with_metadata.sum()),
                              "image_only": {k: image_report[k] for k in HEADLINE if k in image_report}}
    positives = {n: is_positive(target, n, space) for n in scored.scores}
    n_boot, seed = int(cfg.calibration.bootstrap), int(cfg.seed)
    report["operating_points"] = operating_points(policy, scored, positives, rows["group"].to_numpy(), n_boot, seed)
    sources = by_source(probs, target, pred, rows, space, n_boot, seed)
    if sources is not None:
        report["by_source"] = sources
    report["histo_confirmed"] = confirmed_figures(policy, scored, target, rows, n_boot, seed)
    methods = by_method(scored, target, rows, space)
    if methods is not None:
        report["by_dx_type"] = methods
    frame = predictions_frame(rows, scored)
    if rule is not None and ood_scores is not None:
        report["ood"] = ood_figures(rule, ood_scores, frame)
        frame["ood_score"], frame["outside"] = ood_scores, rule.outside(ood_scores)

    with atomic_dir(dest) as folder:
        write_predictions(frame, folder / "predictions.csv")
        confusion_matrix_png(target, pred, folder / "confusion_matrix.png", space)
        is_mal = is_positive(target, "malignant", space).astype(int)
        roc_png(target, probs, scored.scores["malignant"], is_mal, folder / "roc.png",
                report["operating_points"].get("malignant"), space)
        reliability_png(raw, probs, target, folder / "reliability.png")
        atomic_write_json(folder / "metrics.json", report)
    _track(run, report, dest, evaluation)
    return report


def _track(run: RunDir, report: dict, dest: Path, evaluation: str | None) -> None:
    """The headline and confirmed-lesion figures, and the evaluation's files, into the run's MLflow run (where it
    has one): the run's own test split as test/..., another evaluation under its own name."""
    from ..tracking import log_to_mlflow

    figures = {k: report.get(k) for k in HEADLINE}
    h = report.get("histo_confirmed") or {}
    figures.update({f"confirmed_{k}": h.get(k) for k in CONFIRMED_FIGURES})
    if report.get("ood"):
        figures["ood_pass"] = report["ood"]["pass"]
    where = "test" if evaluation is None else f"evaluations/{evaluation}"
    files = [p for p in sorted(dest.iterdir()) if p.suffix in (".json", ".csv", ".png")]
    log_to_mlflow(run, figures, files, prefix=where, artifact_path=where)
    log_to_mlflow(run, files=[run.config, run.splits, run.calibration, run.summary])


def _binary_test(run: RunDir, cfg: Config, policy: ScoringPolicy, scored: Scored, rows: pd.DataFrame, split: str, dm,
                 tta: bool, dest: Path, evaluation: str | None) -> dict:
    """A source with only melanoma/benign labels (ISIC 2020): AUROC of the melanoma and malignancy
    outputs against them, and the run's two referral thresholds applied to them."""
    from torchmetrics.classification import BinaryAUROC

    from .metrics import operating_points

    y = rows["melanoma_target"].to_numpy().astype(int)
    groups = rows["group"].to_numpy()
    report = {"evaluation": evaluation, "out": str(dest), "split": split, "data_root": str(dm.root),
              **_checkpoints(run), "tta": tta, "skipped_bad_images": dm.skipped, "binary_target": "melanoma",
              "n_images": int(len(y)),
              "positives": int(y.sum())}
    for name in scored.scores:
        s = scored.scores[name]
        both = 0 < y.sum() < len(y)
        report[f"auroc_{name}_vs_target"] = (float(BinaryAUROC()(torch.from_numpy(s), torch.from_numpy(y))) if both
                                             else float("nan"))
    report["operating_points"] = operating_points(policy, scored, {n: y.astype(bool) for n in scored.scores}, groups,
                                                  int(cfg.calibration.bootstrap), int(cfg.seed))
    with atomic_dir(dest) as folder:
        write_predictions(predictions_frame(rows, scored, "melanoma_target"), folder / "predictions.csv")
        atomic_write_json(folder / "metrics.json", report)
    return report
