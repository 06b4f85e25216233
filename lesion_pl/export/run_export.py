"""`export`: a run's best checkpoint -> RUN/export/model.onnx (+ model.int8.onnx), verified on real images."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lesion_pl.errors import LesionPLError
from lesion_pl.io import atomic_path, atomic_write_json
from lesion_pl.run import RunDir

PARITY_IMAGES = 64
CALIBRATION_IMAGES = 256


def _throughput(clf, images: np.ndarray, batch_size: int = 32, repeats: int = 3) -> float:
    """Images per second, one view each (the engine's speed; TTA costs 8 of these per image)."""
    clf.predict_arrays(images[:batch_size], tta=False)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(images), batch_size):
            clf.predict_arrays(images[i:i + batch_size], tta=False)
    return repeats * len(images) / (time.perf_counter() - start)


def _accuracy(clf, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and balanced accuracy on these images, and where the model refuses images out of distribution,
    the share its own threshold lets through: one pass."""
    from lesion_pl.evaluate.metrics import balanced_accuracy

    preds = [clf.predict_arrays(images[i:i + 64]) for i in range(0, len(images), 64)]
    pred = np.concatenate([p.top_index for p in preds])
    out = {"accuracy": float((pred == labels).mean()), "balanced_accuracy": balanced_accuracy(labels, pred)}
    if clf.ood is not None:
        out["ood_test_pass"] = float(1 - np.concatenate([p.outside for p in preds]).mean())
    return out


def int8_ood_threshold(q8: Path, val_images: np.ndarray) -> float:
    """An int8 graph scores out-of-distribution images differently from the float one (quantised features through
    a whitening matrix: several times the float score on some images), so the float threshold would refuse many
    of its own validation images. Its threshold is chosen again on validation, at the same share and views, and
    written into its metadata; returns it."""
    import onnx

    from lesion_pl import ood

    from .metadata import PREFIX
    from .runtime import LesionOnnxClassifier

    clf = LesionOnnxClassifier(q8)
    scores = np.concatenate([clf.outputs(val_images[i:i + 64]).ood_score for i in range(0, len(val_images), 64)])
    rule = ood.rethreshold(clf.ood.facts, scores, "on validation again, for this int8 graph")
    model = onnx.load(str(q8))
    next(p for p in model.metadata_props if p.key == PREFIX + "ood").value = json.dumps(rule)
    with atomic_path(q8) as tmp:
        onnx.save(model, str(tmp))
    return rule["threshold"]


def has_depthwise(classifier) -> bool:
    """Whether the network has grouped (depthwise) convolutions, whose int8 weights need a scale per channel:
    per tensor, EfficientNet-Lite0's int8 named nearly every test image naevus (benchmarks/RESULTS.md)."""
    import torch

    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in classifier.modules())


def run_gaussian(run: RunDir, calibration: dict):
    """The run's out-of-distribution Gaussian where calibrate fitted one (lesion_pl.ood), else None."""
    from lesion_pl import ood

    if not calibration.get("ood"):
        return None
    if not run.ood.exists():
        raise LesionPLError(f"{run.calibration} names an out-of-distribution threshold but {run.ood} is missing: "
                            f"run `python cli.py calibrate --run {run.path}` again")
    return ood.load(run.ood)


def export_run(run_path: Path, opset: int = 18, int8: bool = False, data_root: Path | None = None,
               progress: bool = True, per_channel: bool | None = None) -> dict:
    """`per_channel` None: per channel for a network with depthwise convolutions, per tensor otherwise."""
    from lesion_pl.checkpoint import load_run_model
    from lesion_pl.evaluate.calibrate import load_calibration
    from lesion_pl.evaluate.model_card import copy_beside_model

    from .onnx_export import PARITY_TOLERANCE, export_onnx, metadata, parity
    from .runtime import LesionOnnxClassifier

    run = RunDir(Path(run_path))
    run.require_fitted()
    cfg = run.load_config(data_root)
    summary = json.loads(run.summary.read_text()) if run.summary.exists() else {}
    classifier = load_run_model(run)
    hp = classifier.hparams
    size = int(cfg.data.image_size)
    out_dir = run.export_dir
    fp32 = run.onnx
    cal = load_calibration(run, data_root, progress)
    gaussian = run_gaussian(run, cal)
    export_onnx(classifier, cal, size, fp32, opset,
                metadata(summary, size, list(hp["mean"]), list(hp["std"]), cal, classifier.normalize.color_constancy),
                gaussian)

    dm = run.datamodule(cfg, progress)
    test_idx = dm.indices("test")
    test_images = np.asarray(dm.cache[test_idx])
    # test images first, topped up from the other splits when the test split is small
    parity_idx = np.concatenate([test_idx, dm.indices("val"), dm.indices("train")])[:PARITY_IMAGES]
    check = parity(classifier, cal, fp32, np.asarray(dm.cache[np.sort(parity_idx)]), gaussian)
    report = {"model": str(fp32), "opset": opset, "temperature": cal["temperature"],
              "class_bias": cal.get("class_bias"), "decision": cal.get("decision", "accuracy"),
              "size_bytes": fp32.stat().st_size, "parity": check}
    if check["max_abs_diff"] > PARITY_TOLERANCE or check["argmax_agree"] != check["n_images"] \
            or check.get("ood_max_rel_diff", 0.0) > PARITY_TOLERANCE:
        fp32.unlink()
        raise LesionPLError(f"ONNX output differs from PyTorch on {check['n_images']} images: max |diff| "
                            f"{check['max_abs_diff']:.2e} (limit {PARITY_TOLERANCE:.0e}), argmax agrees on "
                            f"{check['argmax_agree']}, out-of-distribution score relative difference "
                            f"{check.get('ood_max_rel_diff', 0.0):.2e}; model not written")

    q8 = run.onnx_int8
    if not int8 and q8.exists():  # quantized from the model this export replaced: it no longer matches model.onnx
        q8.unlink()
        report["removed"] = str(q8)
    if int8:
        from .quantize import quantize_int8

        train_idx = np.random.default_rng(0).permutation(dm.indices("train"))[:CALIBRATION_IMAGES]
        if per_channel is None:
            per_channel = has_depthwise(classifier)
        kind = quantize_int8(fp32, q8, np.asarray(dm.cache[np.sort(train_idx)]), per_channel)
        ood_int8 = int8_ood_threshold(q8, np.asarray(dm.cache[dm.indices("val")])) if cal.get("ood") else None
        labels = dm.table["label"].to_numpy()[test_idx]
        runtimes = {"fp32": LesionOnnxClassifier(fp32), "int8": LesionOnnxClassifier(q8)}
        bench = test_images[:256]
        report["int8"] = {"model": str(q8), "quantization": kind, "size_bytes": q8.stat().st_size,
                          "test_images": int(len(labels))}
        for name, clf in runtimes.items():
            report["int8"][name] = {**_accuracy(clf, test_images, labels),
                                    "images_per_s_batch32": round(_throughput(clf, bench), 1)}
        if ood_int8 is not None:
            report["int8"]["ood_threshold"] = ood_int8
    card = copy_beside_model(run)  # the run's model card, where `report` has written one
    if card is not None:
        report["model_card"] = str(card)
    atomic_write_json(out_dir / "export.json", report)
    from lesion_pl.tracking import log_to_mlflow

    log_to_mlflow(run, files=sorted(p for p in out_dir.iterdir() if p.is_file()), artifact_path="export")
    return report
