"""A run's model card (MODEL_CARD.md): intended use, training data and its licence, label space, preprocessing,
the headline figures with their CIs (all lesions, histopathology-confirmed, each other evaluation), calibration and
the referral promise, subgroups, the out-of-distribution threshold, limitations and the code's revision.

Every figure comes from the run's own files (summary.json, calibration.json, test/metrics.json,
evaluations/*/metrics.json) through `card_facts`; `report` writes the card with the subgroup tables it computes,
`export` and `report` put a copy beside model.onnx.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..calibration import promise_text
from ..classes import LabelSpace
from ..io import atomic_write_text, read_json
from ..ood import OUTSIDE
from ..preprocess import RESIZE_POLICY
from ..provenance import code_revision
from ..run import RunDir
from ..terminal import metric_text

CARD = "MODEL_CARD.md"
# archives whose licence lesion-pl knows, by the folder name of a source's root
ARCHIVES = {
    "ham10000": ("HAM10000", "CC BY-NC 4.0 (non-commercial research)",
                 "Tschandl, P., Rosendahl, C. & Kittler, H. The HAM10000 dataset, a large collection of multi-source "
                 "dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018)"),
    "isic2017": ("ISIC 2017", "the ISIC Archive's terms (CC-0 / CC BY-NC for research)",
                 "Codella, N. et al. Skin lesion analysis toward melanoma detection: a challenge at the 2017 ISBI, "
                 "hosted by ISIC. arXiv:1710.05006 (2017)"),
}
FIGURES = (("balanced_accuracy", "balanced accuracy"), ("auroc_malignant", "malignant AUROC"),
           ("auroc_melanoma", "melanoma AUROC"), ("auroc_macro", "macro AUROC"))


def _archive(root: str) -> tuple[str, str, str] | None:
    """The archive a source's root holds: HAM10000 by its metadata file, others by the folder's name."""
    if (Path(root) / "HAM10000_metadata.csv").is_file():
        return ARCHIVES["ham10000"]
    name = Path(root).name.lower()
    return next((v for k, v in ARCHIVES.items() if k in name), None)


def card_facts(run: RunDir) -> dict:
    """What the card states, read from the run's files (None where a file is missing)."""
    summary = read_json(run.summary) or {}
    # data.sources: {name: {root, format, images}}, the run's own data among them; else its one root
    roots = [s["root"] for s in (summary.get("sources") or {}).values()] or [summary.get("data_root", "")]
    evaluations = {}
    for name in run.evaluation_names():
        m = read_json(run.evaluation(name) / "metrics.json")
        if m:
            evaluations[name] = m
    return {"run": run.path.name, "summary": summary, "calibration": read_json(run.calibration) or {},
            "test": read_json(run.test / "metrics.json"), "evaluations": evaluations,
            "ood_benchmark": read_json(run.ood_benchmark),
            "sources": [(root, _archive(root)) for root in roots], "code_revision": code_revision()}


def _figure(m: Mapping, key: str) -> str:
    ci = (m.get("ci95") or {}).get(key)
    return metric_text(m.get(key), ".4f") + (f" [{metric_text(ci[0])}, {metric_text(ci[1])}]" if ci else "")


def _figures_table(rows: dict[str, Mapping]) -> list[str]:
    out = ["| evaluated on | images | " + " | ".join(label for _, label in FIGURES) + " |",
           "|---" * (len(FIGURES) + 2) + "|"]
    for name, m in rows.items():
        out.append(f"| {name} | {m.get('n_images', m.get('images'))} | "
                   + " | ".join(_figure(m, k) for k, _ in FIGURES) + " |")
    return out


def _referral_lines(ops: Mapping) -> list[str]:
    out = []
    for name, op in ops.items():
        ci = op.get("ci95", {})
        measured = ", ".join(f"{k} {metric_text(op[k])} [{', '.join(map(metric_text, ci.get(k, [None, None])))}]"
                             for k in ("sensitivity", "specificity") if k in op)
        out.append(f"- **{name}**: refer at p >= {op['threshold']:.4f}, {promise_text(op)}. On the test split: "
                   f"{measured}.")
    return out


def render(facts: dict, space: LabelSpace, subgroups: Mapping[str, pd.DataFrame] | None = None) -> str:
    s, cal, test = facts["summary"], facts["calibration"], facts["test"]
    members = len(s.get("members", []))
    lines = [f"# Model card: {facts['run']}", "",
             "A skin-lesion classifier trained with lesion-pl. **A research tool, not a diagnostic device.**", "",
             "## Model", "",
             f"- Network: {s.get('model', '?')}" + (f", an ensemble of {members}" if members else "")
             + f", {s.get('image_size', '?')} px input, {s.get('precision', '?')} precision, "
               f"{s.get('epochs', '?')} epochs (best epoch {s.get('best_epoch', '?')}); weights started from "
               f"{s.get('weights') or 'a random initialisation'}.",
             f"- Trained by the code at revision `{s.get('code_revision', 'not recorded')}`; this card written by "
             f"`{facts['code_revision']}`.",
             "- Label space (output order): " + ", ".join(f"{c} ({space.name(c)})" for c in space.classes)
             + f". Malignant: {', '.join(space.malignant) or 'none'}; melanoma: {space.melanoma or 'none'}.",
             "", "## Intended use", "",
             "- Research on dermoscopic images of skin lesions: second reading, triage studies, teaching, comparing "
             "methods. Its scores are to be read beside a clinician's judgement.",
             "- Input: one dermoscopic image of one lesion (a contact or polarised dermatoscope photograph).",
             "", "## Not intended use", "",
             "- Diagnosing or ruling out cancer for a patient without a clinician: it is not a medical device.",
             "- Clinical (non-dermoscopic) photographs, other body imaging, lesions of skin types or sites absent "
             f"from its training data. Images far from its training data are refused as \"{OUTSIDE}\", but not all "
             "of them (see below).",
             "- Commercial use where its training data's licence forbids it (see Training data).",
             "", "## Training data", ""]
    images = s.get("images") or {}
    lines.append(f"- Images per split: train {images.get('train', '?')}, validation {images.get('val', '?')}, test "
                 f"{images.get('test', '?')}; split by lesion (no lesion in two splits).")
    for root, known in facts["sources"]:
        if known:
            lines.append(f"- {known[0]} (`{root}`). Licence: {known[1]}. Cite: {known[2]}.")
        else:
            lines.append(f"- `{root}`: lesion-pl does not know this data's licence; state it here before sharing.")
    if any(k and "NC" in k[1] for _, k in facts["sources"]):
        lines.append("- **The weights inherit the non-commercial terms of their training data**: this model and "
                     "anything derived from it may be used for non-commercial research only.")
    lines += ["", "## Preprocessing", "",
              f"- {RESIZE_POLICY.replace('SIZE', str(s.get('image_size', '?')))}; uint8 RGB in, normalisation inside "
              f"the model (mean {s.get('train_mean')}, std {s.get('train_std')}, 0..1 scale).",
              f"- Each image scored as the mean of its 8 flips/90-degree rotations: {bool(cal.get('tta', False))}.",
              ""]
    lines += ["## Evaluation", ""]
    if test is None:
        lines.append("Not tested yet: `lesion-pl test --run RUN` writes test/metrics.json.")
    else:
        lines += ["95% intervals resample lesions. The test split was never used to train or to choose anything.", ""]
        rows = {"test split, all lesions": test}
        h = test.get("histo_confirmed") or {}
        if h.get("available"):
            rows["test split, histopathology-confirmed"] = {**h, "n_images": h["images"]}
        rows.update({f"evaluation '{n}' ({m.get('data_root')})": m for n, m in facts["evaluations"].items()})
        lines += _figures_table(rows)
        if h and not h.get("available"):
            lines += ["", f"No figures on histopathology-confirmed lesions: {h.get('reason')}."]
        c = test.get("calibration") or {}
        lines += ["", "## Calibration and the referral promise", "",
                  f"- Temperature {c.get('temperature', 0):.4f} and class-prior weight {c.get('prior_weight', 0):.2f}, "
                  f"fitted on validation. Test ECE {c.get('ece_15_before', 0):.4f} -> {c.get('ece_15_after', 0):.4f}, "
                  f"malignancy ECE {c.get('malignancy_ece_15_before', 0):.4f} -> "
                  f"{c.get('malignancy_ece_15_after', 0):.4f} (a perfectly calibrated model would show "
                  f"{metric_text(c.get('ece_15_floor'), '.4f')} and "
                  f"{metric_text(c.get('malignancy_ece_15_floor'), '.4f')} on this many images)."]
        lines += _referral_lines(test.get("operating_points") or {})
    if subgroups:
        lines += ["", "## Subgroups (test split error rate)", ""]
        for name, table in subgroups.items():
            if name == "dx_type":
                continue
            lines += [f"**{name}**", "", "| value | images | errors | error rate |", "|---|---|---|---|"]
            lines += [f"| {value} | {int(r['images'])} | {int(r['errors'])} | {r['error_rate']:.3f} |"
                      for value, r in table.iterrows()]
            lines.append("")
    lines += ["", "## Out of distribution", ""]
    o = cal.get("ood")
    if o:
        lines.append(f"- An image whose score ({o['measure']}) is above {o['threshold']:.4g} is refused as "
                     f"\"{OUTSIDE}\": no class, no referral. The threshold lets {o['share']:.0%} of validation "
                     f"pass ({o['val_pass']:.1%} of {o['n_val']} did); the score was fitted on {o['n_train']} "
                     "training images.")
        for name, m in [("the test split", test), *facts["evaluations"].items()]:
            if m and m.get("ood"):
                lines.append(f"- On {name if m is test else repr(name)}: {m['ood']['pass']:.1%} of "
                             f"{m['ood']['images']} dermoscopic images pass.")
        bench = facts.get("ood_benchmark")
        if bench:
            lines.append(f"- benchmarks/ood.py: {bench['non_dermoscopic_refused']:.1%} of "
                         f"{bench['non_dermoscopic_images']} non-dermoscopic images refused (photos, a retina, "
                         f"histology, faces, text, generated images), {bench['degraded_refused']:.1%} of degraded "
                         "lesion photos (heavy blur, 8x down and up); by group:")
            lines += [f"  - {name}: {g['images']} images, "
                      + (f"{g['pass']:.1%} pass" if g["in_distribution"] else f"{g['refused']:.1%} refused")
                      for name, g in bench["groups"].items()]
        else:
            lines.append("- What it catches of non-dermoscopic images: `python benchmarks/ood.py --run RUN` measures "
                         "it, and this card then says.")
    else:
        lines.append("- None: this run refuses no image (calibration.ood_pass is null, or an ensemble).")
    lines += ["", "## Limitations", ""]
    if test and (test.get("histo_confirmed") or {}).get("available"):
        h = test["histo_confirmed"]
        lines.append(f"- On histopathology-confirmed lesions, the ones a clinician found suspicious enough to excise, "
                     f"the malignant AUROC is {metric_text(h.get('auroc_malignant'), '.4f')} against "
                     f"{metric_text(test.get('auroc_malignant'), '.4f')} on all test lesions: much of the headline "
                     "rests on easy benign images (HAM10000's follow-up nevi).")
    for name, m in facts["evaluations"].items():
        lines.append(f"- On evaluation '{name}' (other clinics and cameras) the melanoma AUROC is "
                     f"{metric_text(m.get('auroc_melanoma'), '.4f')}: expect lower figures on data unlike the "
                     "training data, and referral thresholds that no longer keep their promise there.")
    lines += ["- Thresholds, calibration and the out-of-distribution rule were chosen on validation images from the "
              "same archive(s) as the training data; their promises hold for images like those.",
              "- The training data's population (skin types, ages, sites, dermatoscopes) bounds where it can be "
              "trusted; the subgroup table shows where its errors concentrate.", ""]
    return "\n".join(lines)


def write_model_card(run: RunDir, space: LabelSpace, subgroups: Mapping[str, pd.DataFrame] | None = None) -> Path:
    """RUN/MODEL_CARD.md, and a copy beside RUN/export/model.onnx where the run was exported."""
    path = run.path / CARD
    atomic_write_text(path, render(card_facts(run), space, subgroups))
    copy_beside_model(run)
    return path


def copy_beside_model(run: RunDir) -> Path | None:
    """RUN/MODEL_CARD.md copied into RUN/export/ where both exist (export and report each do it: either may run
    last)."""
    card = run.path / CARD
    if not (card.is_file() and run.onnx.is_file()):
        return None
    shutil.copyfile(card, run.export_dir / CARD)
    return run.export_dir / CARD
