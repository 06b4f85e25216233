"""Build the classification network a config names: `lesion_cnn`, or any timm model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..classes import NUM_CLASSES
from ..errors import LesionPLError
from .lesion_cnn import LesionCNN


class Normalize(nn.Module):
    """uint8 (or 0..255 float) NCHW images -> standardised floats with the training split's mean/std."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """The same for [N, H, W, 3] images. The statistics are repeated along a whole row (W x 3):
        onnxruntime's int8 graph normalises in this layout, and there it broadcasts a 3-wide last axis
        one pixel at a time: 29% of its time at batch 32 and 128 px (benchmarks/inference.py --profile)."""
        width = x.shape[2]
        mean, std = (t.view(1, 3).expand(width, 3) for t in (self.mean, self.std))
        return (x.float() - mean) / std


def _load_weights(net: nn.Module, path: str) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise LesionPLError(f"model.weights file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(p))
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = net.state_dict()
    # A classifier head for another number of classes is left as initialised.
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not state:
        raise LesionPLError(f"model.weights file {p} has no tensor that fits the model")
    net.load_state_dict(state, strict=False)


def build_network(model_cfg: dict, num_classes: int = NUM_CLASSES) -> nn.Module:
    name = model_cfg["name"]
    if name == "lesion_cnn":
        net = LesionCNN(num_classes, widths=tuple(model_cfg["widths"]), dropout=float(model_cfg["dropout"]))
    else:
        import timm
        if not timm.is_model(name):
            raise LesionPLError(f"unknown model '{name}': not lesion_cnn and not a timm model name")
        try:
            net = timm.create_model(name, pretrained=bool(model_cfg["pretrained"]), num_classes=num_classes,
                                    drop_rate=float(model_cfg["dropout"]))
        except OSError as e:  # the weights are downloaded (Hugging Face Hub): no network, no cached copy
            raise LesionPLError(f"could not get the pretrained weights of {name} ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160]}); without internet, download them elsewhere and "
                                "pass model.weights=FILE, or set model.pretrained=false") from None
    if model_cfg.get("weights"):
        _load_weights(net, model_cfg["weights"])
    return net
