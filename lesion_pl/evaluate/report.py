"""`report`: one self-contained HTML page (images embedded) about a tested run: summary, training
curves, test metrics, ROC/PR, calibration, galleries with Grad-CAM, error analysis and findings."""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..calibration import promise_text
from ..classes import LabelSpace, label_space
from ..clinical import age_years
from ..config import Config
from ..errors import LesionPLError
from ..io import atomic_path, atomic_write_text
from ..ood import OUTSIDE
from ..run import RunDir
from ..scoring import is_positive
from ..terminal import CONFIRMED_FIGURES, HEADLINE, metric_text
from . import report_figures as figs
from .model_card import CARD, write_model_card

AGE_BANDS = [(0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+")]
MIN_SUBGROUP = 20  # findings only name subgroups with at least this many test images


def _age_band(age) -> str:
    age = age_years(age)  # infinite, negative or absurd: unknown, as the metadata model reads it
    if age is None:
        return "unknown"
    return next(label for lo, hi, label in AGE_BANDS if lo <= age < hi)


def error_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Error rate per value of each metadata column present (localization, age band, sex, dx_type)."""
    frame = frame.copy()
    if "age" in frame:
        frame["age band"] = frame["age"].map(_age_band)
    tables = {}
    for col in ("localization", "age band", "sex", "dx_type"):
        if col in frame:
            g = frame.groupby(frame[col].fillna("unknown").astype(str))["wrong"]
            t = pd.DataFrame({"images": g.size(), "errors": g.sum().astype(int), "error_rate": g.mean()})
            tables[col] = t.sort_values("error_rate", ascending=False)
    return tables


def lesion_masks(root: Path, image_ids, size: int) -> dict[str, np.ndarray]:
    """Binary masks (`<image_id>_segmentation.png` anywhere under root), preprocessed like the images."""
    from PIL import Image

    from ..preprocess import resize_center_crop

    found = {p.name[: -len("_segmentation.png")]: p for p in root.rglob("*_segmentation.png")}
    out = {}
    for image_id in image_ids:
        if image_id in found:
            with Image.open(found[image_id]) as m:
                out[image_id] = resize_center_crop(m.convert("RGB"), size)[..., 0] > 127
    return out


def text(value) -> str:
    """Any value as HTML text: every value the page shows goes through here (class codes, file and folder names
    and evaluation names come from the user's data and may hold markup)."""
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{text(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(df: pd.DataFrame, floats: str = "{:.3f}") -> str:
    return df.to_html(classes="t", border=0, float_format=lambda v: floats.format(v), na_rep="", escape=True)


@dataclass
class Tested:
    """What the last `test` of an evaluation scored, with the images it read: the report's input."""
    source: Path  # the evaluation's folder (RUN/test or RUN/evaluations/NAME)
    metrics: dict
    preds: pd.DataFrame  # its predictions.csv
    cfg: Config
    dm: object  # the datamodule that read the images
    images: np.ndarray  # [N, S, S, 3] uint8, as the model saw them
    probs: np.ndarray  # [N, C] as test reported them
    target: np.ndarray
    pred: np.ndarray  # the classes test named, by the run's decision rule (not always the most probable)
    frame: pd.DataFrame  # the data table's rows with pred and wrong
    space: LabelSpace  # the run's classes


def _tested(run: RunDir, data_root: Path | None, progress: bool, evaluation: str | None) -> Tested:
    source = run.evaluation(evaluation)
    if evaluation is not None and not (source / "metrics.json").is_file():
        known = ", ".join(run.evaluation_names()) or "none yet"
        raise LesionPLError(f"{run.path} has no evaluation '{evaluation}' (its evaluations: {known}); "
                            f"`python cli.py test --run {run.path} --data-root DIR --split all --name {evaluation}` "
                            "makes one")
    test_cmd = f"python cli.py test --run {run.path}"
    metrics = json.loads(run.require(source / "metrics.json", test_cmd).read_text())
    preds = pd.read_csv(run.require(source / "predictions.csv", test_cmd))
    if "per_class" not in metrics:
        raise LesionPLError(f"the report covers a test on the seven classes, and {source} holds a test that "
                            f"scored melanoma vs the rest; report on a seven-class evaluation")
    # the images the last `test` scored: the run's split, or (--split all) every image of the data it read
    whole = metrics.get("split") == "all"
    if whole and data_root is None:
        data_root = Path(metrics["data_root"])
    cfg = run.load_config(data_root, metrics.get("data_format"), bool(metrics.get("skipped_bad_images")),
                          metrics.get("data_overrides") or [])
    try:
        dm = run.datamodule(cfg, progress, whole=whole)
    except LesionPLError as e:
        raise LesionPLError(f"{e} (the run's images are read from {cfg.data.root or 'the default data root'}; "
                            f"the last `test` read {metrics.get('data_root')}: pass --data-root DIR)") from None
    row_of = pd.Series(np.arange(len(dm.table)), index=dm.table["image_id"])
    missing = preds["image_id"][~preds["image_id"].isin(row_of.index)]
    if len(missing):
        raise LesionPLError(f"{len(missing)} tested image(s) are not in the data at {dm.root}, e.g. "
                            f"{missing.iloc[0]}; rerun `{test_cmd}`")
    rows = row_of[preds["image_id"]].to_numpy()
    space = label_space(cfg.data)
    target = preds["dx"].map(space.index).to_numpy()
    pred = preds["pred"].map(space.index).to_numpy(dtype=np.int64, copy=True)
    frame = dm.table.iloc[rows].reset_index(drop=True).assign(pred=[space.classes[i] for i in pred],
                                                               wrong=pred != target)
    return Tested(source, metrics, preds, cfg, dm, np.asarray(dm.cache[rows]),
                  preds[[f"p_{c}" for c in space.classes]].to_numpy(), target, pred, frame, space)


def _gradcams(run: RunDir, t: Tested) -> np.ndarray:
    """Grad-CAM of the class named, for every tested image, in batches."""
    from ..checkpoint import load_run_model
    from .gradcam import gradcam

    model = load_run_model(run)
    cams = []
    for i in range(0, len(t.images), 64):
        x = torch.from_numpy(np.ascontiguousarray(t.images[i:i + 64])).permute(0, 3, 1, 2)
        cams.append(gradcam(model, x, target=torch.from_numpy(t.pred[i:i + 64]))[0].numpy())
    return np.concatenate(cams)


def _galleries(t: Tested, cams: np.ndarray, per_class: int, per_confusion: int):
    """A seeded sample per class, then the most confident errors of the largest confusions: (pngs, the
    confusions' counts, [(true, predicted, count, png key)])."""
    from .gradcam import overlay

    classes, index = t.space.classes, t.space.index

    def item(k: int) -> dict:
        return {"overlay": overlay(t.images[k], cams[k]), "true": classes[t.target[k]], "pred": classes[t.pred[k]],
                "probs": t.probs[k], "image_id": t.preds["image_id"][k]}

    rng = np.random.default_rng(int(t.cfg.seed))
    sample = []
    for c in range(len(classes)):
        idx = np.flatnonzero(t.target == c)
        sample += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    pngs = {"gallery": figs.gallery([item(k) for k in sample], f"Test images, {per_class} per class, with Grad-CAM "
                                    "of the predicted class and the top-3 probabilities", space=t.space)}
    confusions = t.frame[t.frame["wrong"]].groupby(["dx", "pred"]).size().sort_values(ascending=False)
    sections = []
    for n, ((true, named), count) in enumerate(confusions.head(3).items()):
        idx = np.flatnonzero((t.target == index[true]) & (t.pred == index[named]))
        idx = idx[np.argsort(-t.probs[idx, index[named]])][:per_confusion]
        key = f"errors_{n + 1}_{true}_as_{named}"
        pngs[key] = figs.gallery([item(k) for k in idx], f"{true} predicted as {named}: the {len(idx)} most "
                                 f"confident of {count} errors", columns=3, space=t.space)
        sections.append((true, named, int(count), key))
    return pngs, confusions, sections


def _cam_stats(t: Tested, cams: np.ndarray) -> dict | None:
    """How much of the Grad-CAM mass falls on the lesion (its mask), overall and for right and wrong calls;
    None where the data has no masks."""
    from .gradcam import mass_inside

    ids = t.preds["image_id"]
    masks = lesion_masks(t.dm.root, ids, t.images.shape[1])
    if not masks:
        return None
    have = np.array([i in masks for i in ids])
    share = mass_inside(cams[have], np.stack([masks[i] for i in ids[have]]))
    wrong = t.frame["wrong"].to_numpy()[have]
    return {"images": int(have.sum()), "overall": float(np.nanmean(share)),
            "correct": float(np.nanmean(share[~wrong])) if (~wrong).any() else float("nan"),
            "wrong": float(np.nanmean(share[wrong])) if wrong.any() else float("nan"),
            "lesion_area": float(np.mean([masks[i].mean() for i in ids[have]]))}


def build_report(run_path: Path, data_root: Path | None = None, progress: bool = True,
                 per_class: int = 4, per_confusion: int = 6, evaluation: str | None = None) -> Path:
    """The report of one evaluation: the run's own test split (RUN/report/index.html), or evaluation NAME
    (RUN/evaluations/NAME/report/index.html); the page lists the run's other evaluations."""
    from ..data.splits import summarize

    run = RunDir(Path(run_path))
    run.require_fitted()
    t = _tested(run, data_root, progress, evaluation)
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    cams = _gradcams(run, t)
    pngs, confusions, conf_sections = _galleries(t, cams, per_class, per_confusion)
    for n, trained in enumerate(run.members or [run]):  # an ensemble: each member's curves
        log_path = trained.log
        if log_path.exists():
            pngs[f"training_curves{'_member' + str(n) if run.members else ''}"] = figs.training_curves(
                pd.read_csv(log_path))
    pngs["precision_recall"] = figs.precision_recall(t.target, t.probs, t.preds["malignant_prob"].to_numpy(),
                                                     is_positive(t.target, "malignant", t.space).astype(int), t.space)
    overall_error = float(t.frame["wrong"].mean())
    tables = error_tables(t.frame)
    if tables:
        pngs["subgroup_errors"] = figs.subgroup_errors(tables, overall_error)
    cam_stats = _cam_stats(t, cams)
    test_cmd = f"python cli.py test --run {run.path}"
    for name in ("confusion_matrix", "roc", "reliability"):  # made by `test` (ROC with the operating point)
        pngs[name] = run.require(t.source / f"{name}.png", test_cmd).read_bytes()

    out_dir = run.report if evaluation is None else t.source / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        with atomic_path(out_dir / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    shift_path = run.shift  # benchmarks/shift.py, on the run's own test split
    shift = json.loads(shift_path.read_text()) if evaluation is None and shift_path.is_file() else None
    findings = _findings(t.metrics, t.frame, confusions, tables, overall_error, cam_stats, t.space, shift)
    others = (["the run's own test split (report --run RUN)"] if evaluation is not None else [])
    others += [f"'{name}'" for name in run.evaluation_names() if name != evaluation]
    page = _html(run, t.cfg, summary, t.metrics, summarize(t.dm.table, t.dm.split), tables, conf_sections, cam_stats,
                 findings, pngs, others, shift, t.space, Path(os.path.relpath(run.path / CARD, out_dir)).as_posix())
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    if evaluation is None:  # the card speaks for the run: its own test split, every evaluation listed in it
        write_model_card(run, t.space, tables)
    from ..tracking import log_to_mlflow

    where = "report" if evaluation is None else f"evaluations/{evaluation}/report"
    log_to_mlflow(run, files=sorted(out_dir.iterdir()), artifact_path=where)
    if evaluation is None:
        log_to_mlflow(run, files=[run.path / CARD])
        log_to_mlflow(run, files=[run.export_dir / CARD], artifact_path="export")  # where the card went beside a model
    return index


def _scored(metrics: dict) -> str:
    """What the evaluation scored, in words."""
    split = metrics.get("split", "test")
    name = metrics.get("evaluation")
    if split == "all":
        named = f", evaluation '{name}'" if name else ""
        return f"all {metrics['n_images']} images of {metrics.get('data_root')} (test --split all{named})"
    scored = "the held-out test split" if split == "test" else f"the {split} split"
    return f"{scored} (evaluation '{name}')" if name else scored


SHIFT_FIGURES = {"auroc_malignant": "malignant AUROC", "auroc_melanoma": "melanoma AUROC",
                 "balanced_accuracy": "balanced accuracy", "referral_sensitivity": "referral sensitivity"}


def shift_table(shift: dict) -> pd.DataFrame:
    """benchmarks/shift.py's figures: per shift, each figure with its drop from the unshifted and the drop's CI."""
    rows = {"none": {"what": "the test images as they are",
                     **{label: f"{shift['none'][k]:.3f}" for k, label in SHIFT_FIGURES.items()}}}
    for name, r in shift["shifts"].items():
        rows[name] = {"what": r["what"], **{
            label: f"{r[k]:.3f} ({r['drop'][k]:+.3f} [{r['drop_ci95'][k][0]:+.3f}, {r['drop_ci95'][k][1]:+.3f}])"
            for k, label in SHIFT_FIGURES.items()}}
    return pd.DataFrame(rows).T


def confirmed_tables(metrics: dict) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """The figures on histopathology-confirmed lesions beside the all-lesion ones (with their CIs), and the table
    by diagnosis method; None where the evaluation has no such figures."""
    h = metrics.get("histo_confirmed") or {}
    if not h.get("available"):
        return None

    def cell(value, ci):
        return f"{metric_text(value)} [{', '.join(map(metric_text, ci))}]" if ci else metric_text(value)
    rows = {key: {"all lesions": cell(metrics.get(key), metrics.get("ci95", {}).get(key)),
                  f"{h['column']} = {h['value']}": cell(h[key], h["ci95"][key])}
            for key in CONFIRMED_FIGURES if key in h}
    for name, op in h["operating_points"].items():
        every = metrics["operating_points"][name]
        for k in ("sensitivity", "specificity"):
            rows[f"{name} referral {k}"] = {"all lesions": cell(every[k], every["ci95"][k]),
                                            f"{h['column']} = {h['value']}": cell(op[k], op["ci95"][k])}
    methods = pd.DataFrame(metrics["by_dx_type"]).set_index(h["column"]) if metrics.get("by_dx_type") else None
    return pd.DataFrame(rows).T, methods


def sources_table(metrics: dict) -> pd.DataFrame:
    """A run of several sources: each one's test figures with their CIs, a row each."""
    def cell(f, k):
        return f"{metric_text(f[k])} [{', '.join(map(metric_text, f['ci95'][k]))}]"
    keys = ("balanced_accuracy", "auroc_malignant", "auroc_melanoma")
    return pd.DataFrame({name: {"images": f["n_images"], **{k: cell(f, k) for k in keys if k in f}}
                         for name, f in metrics["by_source"].items()}).T


def confirmed_section(metrics: dict) -> list[str]:
    """The report's section on the lesions that were excised, or a line saying the source cannot tell them."""
    h = metrics.get("histo_confirmed")
    if h is None:
        return []
    head = "<h3>Where the shortcut is gone: histopathology-confirmed lesions</h3>"
    if not h["available"]:
        return [head, f"<p class='note'>{text(h['reason'])}.</p>"]
    tables = confirmed_tables(metrics)
    out = [head, f"<p class='note'>{text(h['images'])} images of {text(h['lesions'])} lesions whose diagnosis was "
           f"made by histopathology ({text(h['benign_images'])} benign): the lesions a clinician excised, where "
           "follow-up images of nevi, which a model tells from melanoma almost perfectly, are absent. 95% intervals "
           "resample lesions.</p>", _table(tables[0])]
    if tables[1] is not None:
        out += ["<p class='note'>By how each diagnosis was made: every malignant image (melanoma) against that "
                "method's benign images (nevi).</p>", _table(tables[1])]
    return out


def ood_section(metrics: dict, shown: int = 20) -> list[str]:
    """The out-of-distribution refusal on these images: its threshold, how many pass, and those it refuses."""
    o = metrics.get("ood")
    if not o:
        return []
    refused = o["refused"]
    out = ["<h2>Outside what this model was trained on</h2>",
           f"<p class='note'>predict, the service and the pages give no diagnosis and no referral for an image whose "
           f"out-of-distribution score (lesion_pl/ood.py: how far its features lie from the training images') is "
           f"above {o['threshold']:.4g}, the threshold that {o['share']:.0%} of validation's images pass. Of these "
           f"{text(o['images'])} images, {o['pass']:.1%} pass; {text(len(refused))} would be refused as "
           f"{text(OUTSIDE)}. The figures above include every image.</p>"]
    if refused:
        table = pd.DataFrame(refused[:shown]).set_index("image_id")
        first = f" (the first {shown})" if len(refused) > shown else ""
        out += [f"<p class='note'>The refused images, the farthest first{first}:</p>", _table(table, "{:.1f}")]
    return out


def _findings(metrics, frame, confusions, tables, overall_error, cam_stats, space, shift=None) -> list[str]:
    out = []
    h = metrics.get("histo_confirmed") or {}
    if h.get("available"):
        out.append(f"On the {h['images']} histopathology-confirmed images alone, the malignant AUROC is "
                   f"{metric_text(h['auroc_malignant'])} (all lesions {metric_text(metrics['auroc_malignant'])})"
                   + (f" and melanoma against nevi {metric_text(h['auroc_melanoma_vs_nevi'])}"
                      if "auroc_melanoma_vs_nevi" in h else "") + ": the figure for the lesions a clinician "
                   "would consider excising.")
    support = frame["dx"].value_counts()
    for (t, p), count in confusions.head(3).items():
        out.append(f"{count} of {support[t]} {t} test images ({count / support[t]:.1%}) were predicted as {p}.")
    recalls = {c: v["recall"] for c, v in metrics["per_class"].items() if v["support"] > 0}
    worst = min(recalls, key=recalls.get)
    out.append(f"Lowest recall: {worst} ({space.name(worst)}) {recalls[worst]:.3f} over "
               f"{metrics['per_class'][worst]['support']} images; highest: {max(recalls, key=recalls.get)} "
               f"{max(recalls.values()):.3f}.")
    for name, t in tables.items():
        big = t[t["images"] >= MIN_SUBGROUP]
        if len(big):
            g = big.index[0]
            out.append(f"Highest error rate by {name} (groups of >= {MIN_SUBGROUP} images): {g}, "
                       f"{big['error_rate'].iloc[0]:.3f} over {int(big['images'].iloc[0])} images, against "
                       f"{overall_error:.3f} overall.")
    op = metrics.get("operating_points", {}).get("malignant")
    if op:
        sens, spec = (f"{metric_text(op[k])} (95% CI {'-'.join(map(metric_text, op['ci95'][k]))})"
                      for k in ("sensitivity", "specificity"))
        out.append(f"The malignant referral threshold, {op['threshold']:.3f}, was {promise_text(op)}. On the test "
                   f"images its sensitivity is {sens} and its specificity {spec}.")
    cal = metrics.get("calibration")
    if cal:
        out.append(f"Calibration on validation (T = {cal['temperature']:.3f}, class-prior weight "
                   f"{cal.get('prior_weight', 0.0):.2f}) moved the test ECE from "
                   f"{cal['ece_15_before']:.4f} to {cal['ece_15_after']:.4f}"
                   + (f" and that of the malignancy probability from {cal['malignancy_ece_15_before']:.4f} to "
                      f"{cal['malignancy_ece_15_after']:.4f}" if "malignancy_ece_15_after" in cal else "")
                   + (f" (a perfectly calibrated model would show {cal['ece_15_floor']:.4f} and "
                      f"{cal['malignancy_ece_15_floor']:.4f} on this many images)" if "ece_15_floor" in cal else "")
                   + (f"; classes are named by the '{cal['decision']}' rule" if "decision" in cal else "") + ".")
    cl = metrics.get("clinical")
    if cl:
        alone = cl["image_only"]
        out.append(f"The probabilities fuse the image with {', '.join(cl['fields'])} (weight {cl['weight']:.2f}, "
                   f"fitted on validation; {cl['images_with_metadata']} of {metrics['n_images']} test images have "
                   f"metadata). The image alone: balanced accuracy {alone['balanced_accuracy']:.3f} (fused "
                   f"{metrics['balanced_accuracy']:.3f}), malignant AUROC {metric_text(alone['auroc_malignant'])} "
                   f"(fused {metric_text(metrics['auroc_malignant'])}).")
    if shift and shift["shifts"]:
        worst = min(shift["shifts"], key=lambda n: shift["shifts"][n]["drop"]["referral_sensitivity"])
        w = shift["shifts"][worst]
        out.append(f"Under acquisition shift (benchmarks/shift.py, {len(shift['shifts'])} shifts) the referral "
                   f"sensitivity falls most under {worst} ({w['what']}): {w['referral_sensitivity']:.3f}, "
                   f"{w['drop']['referral_sensitivity']:+.3f} from {shift['none']['referral_sensitivity']:.3f}; the "
                   f"malignant AUROC there is {w['auroc_malignant']:.3f} ({w['drop']['auroc_malignant']:+.3f}).")
    if cam_stats:
        out.append(f"On average {cam_stats['overall']:.1%} of the Grad-CAM mass lies inside the lesion mask "
                   f"(the lesion covers {cam_stats['lesion_area']:.1%} of the image): {cam_stats['correct']:.1%} for "
                   f"correct and {cam_stats['wrong']:.1%} for wrong predictions ({cam_stats['images']} images).")
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;height:auto;display:block;margin:1em 0}
table.t{border-collapse:collapse;font-size:.9em;margin:.5em 0;display:block;overflow-x:auto;max-width:100%}
table.t td,table.t th{padding:.25em .7em;border-bottom:1px solid #e3e3e3;text-align:right}
table.t th{background:#f4f4f4}
.note{color:#666;font-size:.9em} pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.8em}
.grid{display:flex;flex-wrap:wrap;gap:2em} li{margin:.3em 0}
"""


def _html(run, cfg, summary, metrics, split_table, tables, conf_sections, cam_stats, findings, pngs,
          others=(), shift=None, space: LabelSpace | None = None, card: str = "../MODEL_CARD.md") -> str:
    import yaml

    from .. import __version__

    overall = pd.DataFrame({k: [metrics[k]] for k in HEADLINE if k in metrics},
                           index=[f"test ({metrics['n_images']} images)"])
    per_class = pd.DataFrame(metrics["per_class"]).T
    space = space or label_space(cfg.data)
    per_class.insert(0, "diagnosis", [space.name(c) for c in per_class.index])
    per_class["support"] = per_class["support"].astype(int)
    members = len(summary.get("members", []))
    facts = {"trained on": summary.get("data_root", str(cfg.data.root)), "tested on": _scored(metrics),
             "model": cfg.model.name + (f", an ensemble of {members}" if members else ""),
             "input size": f"{cfg.data.image_size} px", "epochs run": summary.get("epochs"),
             "best epoch (validation)": summary.get("best_epoch"),
             "training wall time": f"{summary['fit_seconds'] / 60:.1f} min" if "fit_seconds" in summary else "",
             "checkpoint": metrics.get("checkpoint", ""), "test-time augmentation": metrics.get("tta", False)}
    s = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
         f"<title>lesion-pl report: {text(run.path.name)}</title><style>{CSS}</style></head><body>",
         f"<h1>lesion-pl report: {text(run.path.name)}</h1>",
         f"<p class='note'>lesion-pl {__version__}. A research tool, not a diagnostic device. All figures are on "
         f"{text(_scored(metrics))} unless marked; thresholds and calibration were chosen on the validation "
         "split.</p>",
         f"<p class='note'>This run's model card: <a href='{text(card)}'>MODEL_CARD.md</a> (intended use, "
         "training data and its licence, figures with their intervals, limitations).</p>",
         *([("<p class='note'>Other evaluations of this run (<code>python cli.py report --run RUN --evaluation "
             "NAME</code> reports on one): " + ", ".join(text(n) for n in others) + ".</p>")] if others else []),
         "<h2>Findings</h2><ul>" + "".join(f"<li>{text(f)}</li>" for f in findings) + "</ul>",
         "<h2>Run</h2><div class='grid'>",
         _table(pd.DataFrame({"": list(map(str, facts.values()))}, index=list(facts))),
         "<div><b>Images per class and split</b>" + _table(split_table) + "</div></div>"]
    curves = [k for k in pngs if k.startswith("training_curves")]
    if curves:
        s.append("<h2>Training</h2>")
        for k in curves:
            title = f"member {k.rsplit('member', 1)[1]}" if "member" in k else ""
            s += ([f"<h3>{text(title)}</h3>"] if title else []) + [_img(pngs[k], f"training curves {title}".strip())]
    s += ["<h2>Test metrics</h2>", _table(overall, "{:.4f}"), _table(per_class)]
    s.append(_img(pngs["confusion_matrix"], "confusion matrix"))
    if metrics.get("by_source"):  # a run of several sources: each one's figures beside the pooled ones
        s += ["<h3>By source</h3>", "<p class='note'>Each archive's test images alone (95% CI: bootstrap over "
              "lesions); balanced accuracy over the classes each has.</p>", _table(sources_table(metrics))]
    s += confirmed_section(metrics)
    s += ["<h2>ROC and precision-recall</h2>", _img(pngs["roc"], "ROC curves"),
          _img(pngs["precision_recall"], "precision-recall curves")]
    ops = metrics.get("operating_points", {})
    if ops:
        rows = {name: {"threshold": op["threshold"], "target": op["target_sensitivity"],
                       "confidence": "point estimate" if op.get("confidence") is None else f"{op['confidence']:.0%}",
                       "val sensitivity": op["val_sensitivity"],
                       "val lower bound": metric_text(op.get("val_lower_bound")),
                       **{f"test {k}": f"{metric_text(op[k])} [{', '.join(map(metric_text, op['ci95'][k]))}]"
                          for k in ("sensitivity", "specificity", "ppv", "npv")}} for name, op in ops.items()}
        s += ["<h3>Referral operating points (95% CI: bootstrap over lesions)</h3>", _table(pd.DataFrame(rows).T)]
    if shift:
        s += ["<h2>Under acquisition shift</h2>",
              f"<p class='note'>benchmarks/shift.py: {text(shift['images'])} test images of "
              f"{text(shift['lesions'])} lesions, each shift applied to the original image before preprocessing, "
              f"scored by the exported model ({'8 views' if shift['tta'] else 'one view'}); each figure with its "
              f"change from the unshifted one and that change's 95% interval ({text(shift['bootstrap'])} lesion "
              "resamples). Referral sensitivity is at the threshold chosen on validation.</p>",
              _table(shift_table(shift))]
    s += ood_section(metrics)
    cal = metrics.get("calibration")
    if cal:
        s += ["<h2>Calibration</h2>", _table(pd.DataFrame({"": list(cal.values())}, index=list(cal)), "{:.4f}")]
        s.append(_img(pngs["reliability"], "reliability diagram"))
    s += ["<h2>Prediction gallery</h2>", _img(pngs["gallery"], "prediction gallery")]
    s.append("<h2>Misclassified</h2>")
    for t, p, count, key in conf_sections:
        s += [f"<h3>{text(t)} predicted as {text(p)} ({text(count)} images)</h3>",
              _img(pngs[key], f"{t} predicted as {p}")]
    if tables:
        s += ["<h3>Error rate by subgroup (from the metadata)</h3>", _img(pngs["subgroup_errors"], "subgroup errors"),
              "<div class='grid'>"
              + "".join(f"<div><b>{text(n)}</b>{_table(t)}</div>" for n, t in tables.items()) + "</div>"]
    if cam_stats:
        s += ["<h3>Where the model looks: Grad-CAM mass inside the lesion mask</h3>",
              _table(pd.DataFrame({k: [v] for k, v in cam_stats.items()}))]
    s += ["<h2>Config</h2>", f"<pre>{text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))}</pre>",
          "<p class='note'>Data: HAM10000 (Tschandl et al., Sci. Data 2018), CC BY-NC.</p></body></html>"]
    return "\n".join(s)
