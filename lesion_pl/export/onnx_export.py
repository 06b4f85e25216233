"""Checkpoint -> model.onnx: uint8 NHWC images in, probabilities and logits out, normalisation in the
graph, metadata that makes the file self-describing, and a parity check against PyTorch."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lesion_pl import __version__, ood
from lesion_pl.calibration import referral_promise
from lesion_pl.classes import LabelSpace
from lesion_pl.errors import LesionPLError
from lesion_pl.io import atomic_path, to_json
from lesion_pl.models.ood_features import ood_features_and_logits
from lesion_pl.preprocess import RESIZE_POLICY
from lesion_pl.scoring import ScoringPolicy, describe

from .metadata import PREFIX

MIN_OPSET = 17
PARITY_TOLERANCE = 1e-4


class OnnxWrapper(nn.Module):
    """uint8 images [N, H, W, 3] -> (calibrated probabilities [N, C], logits [N, C]), C the run's classes, and
    with `gaussian` (lesion_pl.ood) the out-of-distribution score of each image [N] as a third output.

    The probabilities are softmax(logits / T + class_bias), with T and the class-prior bias from the
    run's calibration.json (none given: plain softmax).
    """

    def __init__(self, classifier: nn.Module, calibration: dict | None = None, gaussian: ood.Gaussian | None = None):
        super().__init__()
        cal = calibration or {}
        self.classifier = classifier
        self.classifier.channels_last = False  # a memory layout hint means nothing in ONNX
        self.temperature = float(cal.get("temperature", 1.0))
        bias = cal.get("class_bias") or [0.0] * ScoringPolicy.from_calibration(cal).space.num_classes
        self.register_buffer("class_bias", torch.tensor(bias, dtype=torch.float32))
        self.ood = gaussian is not None
        if gaussian is not None:  # ood.Gaussian.score in the graph: ||f W - mu W||^2, the nearest class
            self.register_buffer("whiten", torch.tensor(gaussian.whiten, dtype=torch.float32))
            self.register_buffer("centres", torch.tensor(gaussian.means @ gaussian.whiten, dtype=torch.float32))

    def forward(self, images: torch.Tensor):
        # normalised before the transpose, where onnxruntime's int8 graph does it anyway (Normalize.nhwc)
        x = self.classifier.normalize.nhwc(images).permute(0, 3, 1, 2)
        if not self.ood:
            logits = self.classifier.forward_normalized(x)
            return (logits / self.temperature + self.class_bias).softmax(dim=1), logits
        features, logits = ood_features_and_logits(self.classifier.net, x, images.permute(0, 3, 1, 2))
        z = features @ self.whiten
        score = ((z.unsqueeze(1) - self.centres) ** 2).sum(-1).amin(1)
        return (logits / self.temperature + self.class_bias).softmax(dim=1), logits, score


def _operating_points(points: dict | None, space: LabelSpace) -> dict:
    return {name: {**referral_promise(op), "score": describe(name, space)}
            for name, op in (points or {}).items()}


def metadata(run_summary: dict, image_size: int, mean: list, std: list, calibration: dict,
             color_constancy: float | None = None) -> dict[str, str]:
    space = ScoringPolicy.from_calibration(calibration).space  # the space calibrate recorded (older: HAM10000's)
    zeros = [0.0] * space.num_classes
    meta = {
        "classes": to_json(list(space.classes)),
        "display_names": to_json([space.name(c) for c in space.classes]),
        "malignant": to_json(list(space.malignant)),
        "melanoma": to_json(space.melanoma),
        "input_height": str(image_size),
        "input_width": str(image_size),
        "input_layout": "NHWC",
        "input_dtype": "uint8 RGB 0..255 (normalisation is inside the graph)",
        "resize_policy": RESIZE_POLICY.replace("SIZE", str(image_size)),
        "normalization": to_json({"mean": mean, "std": std, "scale": "0..1"}),
        "color_constancy": to_json(color_constancy),
        "version": __version__,
        "model": str(run_summary.get("model", "")),
        "members": str(len(run_summary.get("members", [])) or 1),  # >1: one graph averaging an ensemble
        "val_metrics": to_json(run_summary.get("best_val_metrics", {})),
        "temperature": repr(float(calibration["temperature"])),
        "class_bias": to_json(calibration.get("class_bias") or zeros),
        "decision_rule": calibration.get("decision", "accuracy"),
        "decision_bias": to_json(calibration.get("decision_bias") or zeros),
        # the thresholds and metadata weight were fitted on 8-view TTA scores: the runtime's default
        "tta": to_json(bool(calibration.get("tta", False))),
        "clinical": to_json(calibration.get("clinical")),  # metadata model (lesion_pl.clinical) or null
        "operating_points": to_json(_operating_points(calibration["operating_points"], space)),
        # thresholds for images predicted without metadata, where the run fused it
        "operating_points_image_only": to_json(_operating_points(calibration.get("operating_points_image_only"),
                                                                 space)),
        # the out-of-distribution rule (lesion_pl.ood): the output ood_score's threshold and what chose it
        "ood": to_json(calibration.get("ood")),
    }
    return {PREFIX + k: v for k, v in meta.items()}


def export_onnx(classifier: nn.Module, calibration: dict, image_size: int, path: Path, opset: int,
                meta: dict[str, str], gaussian: ood.Gaussian | None = None) -> Path:
    import onnx

    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise LesionPLError(f"--opset {opset} is not supported: use {MIN_OPSET} to {max_opset}")
    wrapper = OnnxWrapper(classifier, calibration, gaussian).eval()
    example = (torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8),)
    outputs = ["probabilities", "logits"] + (["ood_score"] if gaussian is not None else [])
    names = dict(input_names=["images"], output_names=outputs)
    with tempfile.TemporaryDirectory() as scratch:  # the exporter may write weights to a side file
        raw = str(Path(scratch) / "raw.onnx")
        if opset >= 18:  # the torch.export-based exporter starts at opset 18
            torch.onnx.export(wrapper, example, raw, opset_version=opset, dynamo=True, verbose=False,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, **names)
        else:
            torch.onnx.export(wrapper, example, raw, opset_version=opset, dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]}, **names)
        model = onnx.load(raw)  # with its weights, so the saved file is one self-contained model
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    with atomic_path(Path(path)) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)


@torch.inference_mode()
def parity(classifier: nn.Module, calibration: dict, onnx_path: Path, images: np.ndarray,
           gaussian: ood.Gaussian | None = None) -> dict:
    """onnxruntime vs PyTorch on the same uint8 images: max |probability difference|, argmax agreement; with
    `gaussian`, the graph's ood_score against `ood.Gaussian.score` of PyTorch's features (relative difference)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = OnnxWrapper(classifier, calibration).eval()
    x = torch.from_numpy(np.ascontiguousarray(images))
    torch_probs = wrapper(x)[0].numpy()
    onnx_probs = session.run(["probabilities"], {"images": images})[0]
    out = {"n_images": int(len(images)),
           "max_abs_diff": float(np.abs(torch_probs - onnx_probs).max()),
           "argmax_agree": int((torch_probs.argmax(1) == onnx_probs.argmax(1)).sum())}
    if gaussian is not None:
        features = classifier.features_and_logits(x.permute(0, 3, 1, 2))[0].float().numpy()
        expected = gaussian.score(features)
        got = session.run(["ood_score"], {"images": images})[0]
        out["ood_max_rel_diff"] = float((np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)).max())
    return out
