"""Build the classification network a config names: `lesion_cnn`, or any timm model, with its weights."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..classes import NUM_CLASSES
from ..errors import LesionPLError
from .lesion_cnn import LesionCNN
from .weights import LoadedWeights, load_backbone, load_hub, load_package, no_weights_message, read_state

if TYPE_CHECKING:
    from ..config import Model


def shades_of_gray(x: torch.Tensor, p: float, dims: tuple[int, int], channel: int) -> torch.Tensor:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) on 0..255 images: each image's illuminant
    per channel is the p-norm mean of that channel, e_c = mean(x_c^p)^(1/p), and each channel is scaled by
    mean(e) / e_c, so the illuminant becomes grey, then clipped to 0..255. p = 6 is the ISIC winners' choice
    (Barata et al. 2015). A graph op here, so training, test, the ONNX graph and predict all apply it."""
    v = (x / 255.0).clamp_min(1e-6)
    e = v.pow(p).mean(dim=dims, keepdim=True).pow(1.0 / p)
    return (x * (e.mean(dim=channel, keepdim=True) / e)).clamp(0.0, 255.0)


class Normalize(nn.Module):
    """uint8 (or 0..255 float) NCHW images -> standardised floats with the given mean/std (0..1 scale): the
    pretrained weights' own, or the training split's; `color_constancy`: Shades of Gray with this p first."""

    def __init__(self, mean, std, color_constancy: float | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.color_constancy = None if color_constancy is None else float(color_constancy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.color_constancy:
            x = shades_of_gray(x, self.color_constancy, (2, 3), 1)
        return (x - self.mean) / self.std

    def nhwc(self, x: torch.Tensor) -> torch.Tensor:
        """The same for [N, H, W, 3] images. The statistics are repeated along a whole row (W x 3):
        onnxruntime's int8 graph normalises in this layout, and there it broadcasts a 3-wide last axis
        one pixel at a time: 29% of its time at batch 32 and 128 px (benchmarks/inference.py --profile)."""
        width = x.shape[2]
        mean, std = (t.view(1, 3).expand(width, 3) for t in (self.mean, self.std))
        x = x.float()
        if self.color_constancy:
            x = shades_of_gray(x, self.color_constancy, (1, 2), 3)
        return (x - mean) / std


def uses_weights(model: Model) -> bool:
    """Whether the network starts from pretrained or given weights (else from a random initialisation)."""
    return bool(model.pretrained) or bool(model.weights)


def normalization_stats(model: Model, dataset_stats) -> tuple[list | None, list | None]:
    """The mean/std the network's inputs are normalised with (0..1 scale); (None, None): the weights' own,
    known once they are loaded (`model.normalization: auto` with weights). `dataset_stats()` gives the
    training split's, for a network trained from scratch or `model.normalization: dataset`."""
    norm = model.normalization
    if isinstance(norm, dict):
        return list(norm["mean"]), list(norm["std"])
    if norm == "auto" and uses_weights(model) and model.name != "lesion_cnn":
        return None, None
    return dataset_stats()


def weights_normalization(net: nn.Module) -> tuple[list, list]:
    """The mean/std that `net`'s loaded weights were trained with (`normalization_stats` gave None for them)."""
    loaded = getattr(net, "loaded_weights", None)
    if loaded is None or loaded.mean is None:
        raise LesionPLError("model.normalization: auto needs weights that name their mean and std; "
                            "give model.normalization={mean: [...], std: [...]} or dataset")
    return list(loaded.mean), list(loaded.std)


def _create_timm(name: str, num_classes: int, dropout: float):
    import timm

    if not timm.is_model(name):
        raise LesionPLError(f"unknown model '{name}': not lesion_cnn and not a timm model name")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=dropout)


def _pretrained_timm(name: str, num_classes: int, dropout: float):
    """A timm network with ImageNet weights: from an installed weights package where one exists for it (no
    network, the same weights on every machine), else timm's download (the Hub, or its local cache)."""
    net = _create_timm(name, num_classes, dropout)
    loaded = load_package(net, name)
    if loaded is not None:
        return net, loaded
    try:
        return load_hub(name, num_classes, drop_rate=dropout)
    except (OSError, RuntimeError, ValueError) as e:  # no network and no cached copy, or no weights at all
        raise LesionPLError(no_weights_message(name, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")) from None


def build_network(model: Model, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The network; with weights, `net.loaded_weights` (a LoadedWeights) says where they came from."""
    name = model.name
    dropout = float(model.dropout)
    loaded: LoadedWeights | None = None
    if name == "lesion_cnn":
        net = LesionCNN(num_classes, widths=tuple(model.widths), dropout=dropout)
    elif model.pretrained and not model.weights:
        net, loaded = _pretrained_timm(name, num_classes, dropout)
    else:
        net = _create_timm(name, num_classes, dropout)
    if model.weights:
        path = Path(model.weights).expanduser()
        loaded = load_backbone(net, read_state(path, "model.weights file"), f"model.weights file {path}")
        timm_defaults = getattr(net, "pretrained_cfg", None) or {}
        if timm_defaults.get("mean"):  # a timm architecture's file: its usual preprocessing (normalization overrides)
            loaded.mean, loaded.std = tuple(timm_defaults["mean"]), tuple(timm_defaults["std"])
    net.loaded_weights = loaded
    return net
