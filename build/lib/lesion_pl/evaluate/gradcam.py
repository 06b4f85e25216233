"""Grad-CAM (Selvaraju et al., 2017) on a convolutional feature map of LesionCNN or a timm CNN (the deepest
at 1/16 of the input), and how much of its mass falls inside a lesion mask."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LesionPLError


def target_layer(net):
    """The layer whose feature map Grad-CAM weighs: the deepest one at 1/16 of the input or finer.

    A timm network names its feature maps (`feature_info`): at 128 px EfficientNet-Lite0's last one is 4x4,
    too coarse to point at a lesion; its 8x8 map at 1/16 put 43% of the Grad-CAM mass inside the lesion
    masks of 300 validation images (39% of their area), the 4x4 one 32% (benchmarks/RESULTS.md). LesionCNN's
    final map is at 1/16 already.
    """
    info = getattr(net, "feature_info", None)
    if isinstance(info, list) and info:
        fine = [f for f in info if f.get("reduction", 32) <= 16] or info[:1]
        return net.get_submodule(fine[-1]["module"])
    if hasattr(net, "features"):
        return net.features
    raise LesionPLError(f"Grad-CAM needs a CNN whose feature maps it can find; {type(net).__name__} lists none")


def gradcam(classifier, images: torch.Tensor, target: torch.Tensor | None = None):
    """uint8 NCHW images -> (maps [N, H, W] in 0..1 at input size, logits [N, C]).

    The map explains `target` (else the highest logits) through the feature map of `target_layer`; for
    an ensemble, the mean of its members' maps for the ensemble's class.
    """
    if hasattr(classifier, "members"):
        with torch.no_grad():
            logits = classifier(images).float()
        target = logits.argmax(1) if target is None else target
        cam = torch.stack([gradcam(m, images, target)[0] for m in classifier.members]).mean(0)
        return cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None], logits
    layer = target_layer(classifier.net)
    seen = {}
    hook = layer.register_forward_hook(lambda module, args, out: seen.__setitem__("map", out))
    try:
        with torch.enable_grad():
            logits = classifier(images).float()
            feats = seen["map"]
            if feats.ndim != 4:
                raise LesionPLError(f"Grad-CAM needs a 4-D feature map; {type(layer).__name__} gives "
                                    f"{tuple(feats.shape)}")
            cls = logits.argmax(1) if target is None else target
            (grads,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), feats)
    finally:
        hook.remove()
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * feats).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / peak).detach(), logits.detach()


def mass_inside(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the share of the Grad-CAM map's total that lies inside the (binary) lesion mask."""
    total = cams.reshape(len(cams), -1).sum(1)
    inside = (cams * (masks > 0)).reshape(len(cams), -1).sum(1)
    return np.where(total > 0, inside / np.maximum(total, 1e-12), np.nan)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 HWC image with the map drawn over it in the 'jet' colours."""
    import matplotlib

    heat = matplotlib.colormaps["jet"](cam)[..., :3] * 255
    return (image * (1 - alpha) + heat * alpha).clip(0, 255).astype(np.uint8)
