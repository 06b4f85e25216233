"""The features the out-of-distribution score (lesion_pl.ood) reads, defined once for PyTorch and the ONNX graph:
the network's penultimate features and eight statistics of the image itself (per-channel mean, log spread, log
colourfulness, log edge energy). The network's features alone let a retina photo, grey faces and blurred
lesions pass; the statistics catch grey, flat and smooth images (benchmarks/RESULTS.md, "Out of distribution").
All eight are unchanged by the flips and rotations of TTA."""
from __future__ import annotations

import torch
from torch import nn


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255) NCHW RGB images -> [N, 8]."""
    x = images.float() / 255.0
    mean = x.mean((2, 3))
    spread = ((x - mean[:, :, None, None]) ** 2).mean((2, 3)).sqrt()
    colour = (x.amax(1) - x.amin(1)).mean((1, 2))
    edges = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    return torch.cat([mean, torch.log(spread + 0.01), torch.log(colour + 0.01)[:, None],
                      torch.log(edges + 1e-3)[:, None]], 1)


def ood_features_and_logits(net: nn.Module, normalized: torch.Tensor,
                            images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, D + 8], logits [N, C]) in one pass of a timm-style network (`forward_features`,
    `forward_head(..., pre_logits=True)`): `normalized` is what the network reads, `images` the uint8 NCHW
    images it was made from."""
    f = net.forward_features(normalized)
    pooled = net.forward_head(f, pre_logits=True).float()
    return torch.cat([pooled, image_statistics(images)], 1), net.forward_head(f)
