"""What the commands print: their results as text for the terminal. The commands compute and return plain
dicts (calibrate_run, test_run, export_run); this module only shows them."""
from __future__ import annotations

from .calibration import promise_text, referral_promise, views_note
from .ood import OUTSIDE, OodRule

# test's headline figures, in the order shown (also the image-only figures metrics.json keeps)
HEADLINE = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auroc_macro",
            "auroc_malignant", "auroc_melanoma")
# the figures on histopathology-confirmed lesions (evaluate/confirmed.py), in the order shown
CONFIRMED_FIGURES = ("auroc_malignant", "auroc_melanoma", "auroc_melanoma_vs_nevi")


def metric_text(value: float | None, spec: str = ".3f") -> str:
    """A metric as text: "n/a" where it has no value on these images (NaN; null in metrics.json)."""
    return "n/a" if value is None or value != value else format(value, spec)


def format_fit(summary: dict, out) -> str:
    """What `fit` trained: each member's best epoch (an ensemble), the best validation figure, the time."""
    lines = [f"member {i} (seed {m['seed']}): best val balanced accuracy {m['best_val_balanced_accuracy']:.4f} "
             f"(epoch {m['best_epoch']}), {m['epochs']} epochs in {m['fit_seconds']:.0f} s"
             for i, m in enumerate(summary.get("members", []))]
    what = "the ensemble's calibrated val balanced accuracy" if summary.get("members") else "best val balanced accuracy"
    best = summary["best_val_balanced_accuracy"]
    epoch = "" if summary.get("members") else f" (epoch {summary['best_epoch']})"
    lines.append(f"{what} {'n/a' if best is None else f'{best:.4f}'}{epoch}, {summary['epochs']} epochs in "
                 f"{summary['fit_seconds']:.0f} s; run folder: {out}")
    return "\n".join(lines)


def format_data_summary(d: dict) -> str:
    """`data summary`: the data, its split and the class counts per split (`data.splits.split_summary`)."""
    lines = [f"{d['root']}: {d['images']} images, {d['lesions']} lesions, {d['how']}", d["table"].to_string()]
    lines += [f"left out (data.drop_labels): {count} image(s) labelled {label}"
              for label, count in d["dropped"].items()]
    if d.get("where"):
        lines.append(rows_kept_text(d["where"]))
    lines.append(f"note: {d['note']}" if d["note"] is not None else "no lesion is in two splits")
    return "\n".join(lines)


def rows_kept_text(where: dict) -> str:
    """What data.where kept of a source."""
    return (f"data.where {where['rule']}: kept {where['kept']} image(s), left out {where['left_out']}")


def format_calibration(c: dict) -> str:
    """What `calibrate` fitted on validation, and what it did there."""
    lines = []
    lines.append(f"temperature {c['temperature']:.4f}, class-prior weight {c['prior_weight']:.2f}: "
                 f"validation NLL {c['val_nll_before']:.4f} -> {c['val_nll_after']:.4f}; classes named by the "
                 f"'{c['decision']}' rule: validation balanced accuracy {c['val_balanced_accuracy']:.4f}")
    fit = c.get("clinical_fit") or {}
    if fit.get("used"):
        lines.append(f"clinical metadata ({', '.join(fit['fields'])}) fused with weight {fit['weight']:.2f}: "
                     f"validation NLL {fit['val_nll_image_only']:.4f} -> {fit['val_nll_fused']:.4f}, balanced accuracy "
                     f"{fit['val_balanced_accuracy_image_only']:.4f} -> {c['val_balanced_accuracy']:.4f}, malignant "
                     f"AUROC {fit['val_auroc_malignant_image_only']:.4f} -> {fit['val_auroc_malignant_fused']:.4f}")
        lines += [f"  note: {note} (train and val)" for note in fit.get("read_as_unknown", [])]
    elif fit:
        lines.append(f"no clinical-metadata fusion: {fit['reason']}")
    e = c["calibration_errors"]
    lines.append(f"validation ECE {e['val_before']['ece']:.4f} -> {e['val_after']['ece']:.4f}, malignancy ECE "
                 f"{e['val_before']['malignancy_ece']:.4f} -> {e['val_after']['malignancy_ece']:.4f}"
                 + (f" (temperature scaled by {e['temperature_factor']:.3f} from the NLL fit so that neither rose)"
                    if e["temperature_factor"] != 1.0 else "")
                 + ("" if e["kept"] else "; warning: no temperature keeps both at or below the uncalibrated ones, so "
                    "the NLL fit is kept"))
    for name, op in c["operating_points"].items():
        lines.append(f"{name}: refer at p >= {op['threshold']:.4f}, {promise_text(referral_promise(op))}")
    rule = OodRule.from_record(c.get("ood"))
    if rule is not None:
        lines.append(f"{rule.describe()}, fitted on {c['ood']['n_train']} training images: above it, an image is "
                     f"{OUTSIDE}")
    lines += format_sources(c.get("by_source"), "validation")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """`test`'s metrics as a plain-text table."""
    if report.get("binary_target"):
        lines = [f"{report['n_images']} images ({report['positives']} melanoma) from {report['data_root']}: "
                 "melanoma/benign labels only",
                 f"  AUROC of the melanoma probability   {metric_text(report['auroc_melanoma_vs_target'], '.4f')}",
                 f"  AUROC of the malignancy probability {metric_text(report['auroc_malignant_vs_target'], '.4f')}"]
        for name, op in report["operating_points"].items():
            lines.append(f"  {name} referral at p >= {op['threshold']:.3f}: sensitivity "
                         f"{metric_text(op['sensitivity'])}, specificity {metric_text(op['specificity'])}")
        return "\n".join(lines)
    views = "the mean of 8 flips/rotations per image" if report["tta"] else "one view per image"
    lines = [f"{report['n_images']} images ({report['split']} split of {report['data_root']}), {views}"]
    note = views_note(report["tta"], report.get("tta_calibrated", report["tta"]))
    if note:
        lines.append(note)
    if len(report["classes_present"]) < len(report["per_class"]):
        lines.append(f"metrics are over the {len(report['classes_present'])} classes present: "
                     f"{', '.join(report['classes_present'])}")
    if report.get("skipped_bad_images"):
        lines.append(f"skipped {len(report['skipped_bad_images'])} missing or unreadable image(s) "
                     "(listed in metrics.json)")
    if report.get("rows_kept"):
        lines.append(rows_kept_text(report["rows_kept"]))
    lines.append("")
    cis = report.get("ci95", {})
    image_only = report.get("clinical", {}).get("image_only", {})
    for key in (k for k in HEADLINE if k in report):
        ci = f"  (95% CI {'-'.join(map(metric_text, cis[key]))}, lesions resampled)" if key in cis else ""
        alone = f"  [image alone {metric_text(image_only[key], '.4f')}]" if key in image_only else ""
        lines.append(f"  {key:<20} {metric_text(report[key], '.4f')}{ci}{alone}")
    if image_only:
        cl = report["clinical"]
        lines.append(f"  (image fused with {', '.join(cl['fields'])}, weight {cl['weight']:.2f}; "
                     f"{cl['images_with_metadata']} of {report['n_images']} images have metadata)")
    lines += format_sources(report.get("by_source"))
    lines += format_confirmed(report)
    lines += ["", f"  {'class':<6} {'precision':>9} {'recall':>7} {'f1':>6} {'auroc':>6} {'support':>8}"]
    for code, m in report["per_class"].items():
        lines.append(f"  {code:<6} {metric_text(m['precision']):>9} {metric_text(m['recall']):>7} "
                     f"{metric_text(m['f1']):>6} {metric_text(m['auroc']):>6} {m['support']:>8d}")
    c = report["calibration"]
    lines += ["", f"  calibration (T = {c['temperature']:.3f}, class-prior weight {c['prior_weight']:.2f}): "
                  f"ECE {c['ece_15_before']:.4f} -> {c['ece_15_after']:.4f}, "
                  f"Brier {c['brier_before']:.4f} -> {c['brier_after']:.4f}, malignancy ECE "
                  f"{c['malignancy_ece_15_before']:.4f} -> {c['malignancy_ece_15_after']:.4f}; classes named by the "
                  f"'{c.get('decision', 'accuracy')}' rule"]
    if "ece_15_floor" in c:
        lines.append(f"  a perfectly calibrated model would show ECE {c['ece_15_floor']:.4f} and malignancy ECE "
                     f"{c['malignancy_ece_15_floor']:.4f} on this many images (the floor of a binned ECE)")
    for name, op in report["operating_points"].items():
        ci = op["ci95"]
        alone = op.get("images_on_image_only_threshold")
        also = (f" ({alone} image(s) without metadata on the image-only threshold, as predict refers them)"
                if alone else "")
        lines.append(f"  {name} referral at p >= {op['threshold']:.3f}{also}, {promise_text(op)}:")
        lines.append("    on these images (95% CI, lesions resampled): "
                     + ", ".join(f"{k} {metric_text(op[k])} [{', '.join(map(metric_text, ci[k]))}]"
                                 for k in ("sensitivity", "specificity", "ppv", "npv")))
    o = report.get("ood")
    if o:
        lines.append(f"  {o['pass']:.1%} of these {o['images']} images pass the out-of-distribution threshold "
                     f"{o['threshold']:.4g} (chosen for {o['share']:.0%} of validation); {len(o['refused'])} would be "
                     f"refused as {OUTSIDE} (metrics above include them)")
    return "\n".join(lines)


def format_sources(sources: dict | None, what: str = "") -> list[str]:
    """Each source's figures (a run of several sources), with their 95% CIs; `what`: whose (e.g. "validation")."""
    if not sources:
        return []
    lines = ["", f"  {what + ' ' if what else ''}by source (95% CI, lesions resampled):"]
    for name, f in sources.items():
        lines.append(f"  {name:<16} {f['n_images']:>5} images: " + ", ".join(
            f"{k} {metric_text(f[k], '.4f')} [{', '.join(map(metric_text, f['ci95'][k]))}]"
            for k in ("balanced_accuracy", "auroc_malignant", "auroc_melanoma") if k in f))
    return lines


def format_confirmed(report: dict) -> list[str]:
    """`test`'s figures on histopathology-confirmed lesions beside the all-lesion ones, and its table by how each
    diagnosis was made; or why there are none."""
    h = report.get("histo_confirmed")
    if h is None:
        return []
    if not h["available"]:
        return ["", f"  no figures on histopathology-confirmed lesions: {h['reason']}"]
    lines = ["", f"  on the histopathology-confirmed lesions alone ({h['column']} = {h['value']}: {h['images']} images "
                 f"of {h['lesions']} lesions, {h['benign_images']} benign; the others' diagnoses were not excised):"]
    for key in (k for k in CONFIRMED_FIGURES if k in h):
        every = f"  [all lesions {metric_text(report[key], '.4f')}]" if key in report else ""
        lines.append(f"  {key:<22} {metric_text(h[key], '.4f')}  (95% CI {'-'.join(map(metric_text, h['ci95'][key]))}, "
                     f"lesions resampled){every}")
    for name, op in h["operating_points"].items():
        lines.append(f"  {name} referral on them: " + ", ".join(
            f"{k} {metric_text(op[k])} [{', '.join(map(metric_text, op['ci95'][k]))}]"
            for k in ("sensitivity", "specificity")))
    table = report.get("by_dx_type")
    if table:
        lines += ["", "  by how the diagnosis was made: each method's benign images (nevi) against every malignant "
                      "image (melanoma)",
                  f"  {'dx_type':<10} {'images':>6} {'benign':>6} {'error':>6} {'AUROC mal':>9} {'nevi':>5} "
                  f"{'AUROC mel':>9} {'spec':>6}"]
        for r in table:
            lines.append(f"  {r['dx_type']:<10} {r['images']:>6d} {r['benign_images']:>6d} "
                         f"{metric_text(r['error_rate']):>6} {metric_text(r['auroc_malignant_vs_these_benign']):>9} "
                         f"{r.get('nevus_images', 0):>5d} {metric_text(r.get('auroc_melanoma_vs_these_nevi')):>9} "
                         f"{metric_text(r.get('malignant_referral_specificity')):>6}")
    return lines


def format_export(r: dict) -> str:
    """What `export` wrote and how it compared with PyTorch (and fp32 with int8)."""
    lines = []
    p = r["parity"]
    lines.append(f"wrote {r['model']} (opset {r['opset']}, {r['size_bytes'] / 1e6:.2f} MB)")
    lines.append(f"parity on {p['n_images']} real images: max |onnxruntime - PyTorch| probability "
                 f"{p['max_abs_diff']:.2e}, same top class on {p['argmax_agree']}/{p['n_images']}")
    if "removed" in r:
        lines.append(f"removed {r['removed']}: it was quantized from the model this export replaced (--int8 makes "
                     "a new one)")
    if "int8" in r:
        q = r["int8"]
        lines.append(f"wrote {q['model']} ({q['quantization']} int8, {q['size_bytes'] / 1e6:.2f} MB); "
                     f"on {q['test_images']} test images:")
        for name in ("fp32", "int8"):
            m = q[name]
            lines.append(f"  {name}: accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
                         f"{m['images_per_s_batch32']:.0f} images/s at batch 32"
                         + (f", {m['ood_test_pass']:.1%} within its out-of-distribution threshold"
                            if "ood_test_pass" in m else ""))
        if "ood_threshold" in q:
            lines.append(f"  the int8 graph's out-of-distribution threshold, chosen again on validation: "
                         f"{q['ood_threshold']:.4g}")
    return "\n".join(lines)
