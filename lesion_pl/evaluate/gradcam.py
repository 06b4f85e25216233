"""Grad-CAM (Selvaraju et al., 2017) on the last convolutional feature map of LesionCNN or a timm CNN,
and how much of its mass falls inside a lesion mask."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LesionPLError


def gradcam(classifier, images: torch.Tensor, target: torch.Tensor | None = None):
    """uint8 NCHW images -> (maps [N, H, W] in 0..1 at input size, logits [N, C]).

    The map explains `target` (else the highest logits) through the network's final feature map; for
    an ensemble, the mean of its members' maps for the ensemble's class.
    """
    if hasattr(classifier, "members"):
        with torch.no_grad():
            logits = classifier(images).float()
        target = logits.argmax(1) if target is None else target
        cam = torch.stack([gradcam(m, images, target)[0] for m in classifier.members]).mean(0)
        return cam / cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None], logits
    net = classifier.net
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise LesionPLError(f"Grad-CAM needs a CNN with forward_features/forward_head; {type(net).__name__} has none")
    with torch.enable_grad():
        feats = net.forward_features(classifier.normalize(images))
        if feats.ndim != 4:
            raise LesionPLError(f"Grad-CAM needs a 4-D feature map; {type(net).__name__} gives {tuple(feats.shape)}")
        feats = feats.detach().requires_grad_(True)
        logits = net.forward_head(feats)
        cls = logits.argmax(1) if target is None else target
        (grads,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), feats)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * feats).sum(1, keepdim=True))
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
