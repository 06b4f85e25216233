"""int8 quantisation with onnxruntime: static (QDQ, calibrated on training images), dynamic as fallback."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lesion_pl.io import atomic_path


class _Calibration:
    """onnxruntime's CalibrationDataReader over uint8 image batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 16):
        self.batches = iter([{"images": images[i:i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def only_for(model, outputs: set[str]) -> list[str]:
    """The names of the graph's nodes that compute nothing but `outputs` (e.g. the out-of-distribution score): the
    nodes that no other output depends on."""
    producer = {o: n for n in model.graph.node for o in n.output}
    needed: set[str] = set()
    stack = [o.name for o in model.graph.output if o.name not in outputs]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and node.name not in needed:
            needed.add(node.name)
            stack.extend(node.input)
    return [n.name for n in model.graph.node if n.name not in needed]


def quantize_int8(fp32_path: Path, out_path: Path, calibration_images: np.ndarray, per_channel: bool = False) -> str:
    """Write an int8 model; returns 'static', 'static per-channel' or 'dynamic' (static failed on some op).

    `per_channel`: one weight scale per output channel instead of per tensor, for networks whose
    depthwise convolutions lose accuracy with one scale a tensor (EfficientNet-Lite; benchmarks/RESULTS.md)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, atomic_path(Path(out_path)) as target:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # the out-of-distribution score stays in float: squared distances after a whitening matrix and the
        # image's statistics lose most of what they tell in int8 (benchmarks/RESULTS.md, "Out of distribution")
        keep_float = only_for(onnx.load(str(prepared)), {"ood_score"})
        try:
            # per-tensor QDQ with signed activations measured fastest here (benchmarks/inference.py);
            # reduce_range (7-bit weights) avoids the int16 saturation of AVX2's u8 x s8 products
            # without VNNI: on the 64 px model -0.35 instead of -1.17 points, at the same speed
            quantize_static(str(prepared), str(target), _Calibration(calibration_images),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=keep_float)
            kind = "static per-channel" if per_channel else "static"
        except Exception:
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
            kind = "dynamic"
        # quantisation tools drop custom metadata: copy the lesion-pl keys over
        src, dst = onnx.load(str(fp32_path)), onnx.load(str(target))
        del dst.metadata_props[:]
        dst.metadata_props.extend(src.metadata_props)
        entry = dst.metadata_props.add()
        entry.key, entry.value = "lesion_pl.quantization", f"int8 {kind}"
        onnx.save(dst, str(target))
    return kind
