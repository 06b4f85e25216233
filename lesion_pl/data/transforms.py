"""Training augmentation for a whole batch at once, as tensor ops on the device that trains.

One affine resample per image does the random resized crop, the rotation and both flips
(`affine_grid` + `grid_sample`), then brightness, contrast, saturation and hue jitter are a few
per-image multiplications. On 2 CPU cores this costs about 1% of a training step, where
torchvision's per-image transforms in DataLoader workers cost about 2.5 ms an image on the cores
the network needs; on a GPU it keeps a fast card fed without any CPU work per image.

The parameters are drawn as torchvision draws them (area scale, log-uniform aspect ratio, uniform
angle, fair-coin flips, uniform jitter factors), with two differences: a crop that would not fit
is clipped to the image instead of retried, and the corners a rotation uncovers show the
neighbouring image where there is one (black only outside the image).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def affine_params(n: int, aug: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output coordinates to input coordinates, both in [-1, 1]."""
    lo, hi = aug.get("scale", (1.0, 1.0))
    r0, r1 = aug.get("ratio", (1.0, 1.0))
    area = _uniform(n, lo, hi, generator)
    ratio = torch.exp(_uniform(n, math.log(r0), math.log(r1), generator))
    w = torch.sqrt(area * ratio).clamp(max=1.0)   # crop width and height as fractions of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = _uniform(n, -1.0, 1.0, generator) * (1 - w)
    cy = _uniform(n, -1.0, 1.0, generator) * (1 - h)
    if aug.get("hflip"):
        w = w * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    if aug.get("vflip"):
        h = h * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    angle = torch.deg2rad(_uniform(n, -1.0, 1.0, generator) * float(aug.get("rotation") or 0))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input = diag(w, h) @ R(angle) @ output + centre: rotate the output view, then crop/flip
    return torch.stack([torch.stack([w * cos, -w * sin, cx], 1),
                        torch.stack([h * sin, h * cos, cy], 1)], 1)


def color_jitter(x: torch.Tensor, jitter: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter on float images in 0..255 (N, 3, H, W).

    All four are linear in the pixel values, so they are composed into one 3x3 matrix and one offset
    per image and applied in a single batched matmul (clamped once, at the end).
    """
    n = len(x)
    dev, dt = x.device, x.dtype
    gray = torch.tensor(_GRAY, device=dev, dtype=dt)
    eye = torch.eye(3, device=dev, dtype=dt).expand(n, 3, 3)

    def factor(key: str) -> torch.Tensor:
        amount = float(jitter.get(key) or 0)
        return _uniform(n, max(0.0, 1 - amount), 1 + amount, generator).to(dev, dt).view(n, 1, 1)

    b, c, s = factor("brightness"), factor("contrast"), factor("saturation")
    mean_gray = torch.einsum("c,nchw->n", gray, x).view(n, 1, 1) / (x.shape[2] * x.shape[3])
    # contrast blends towards the (brightened) mean gray, saturation towards each pixel's gray
    m = eye * (b * c)
    offset = (1 - c) * b * mean_gray * torch.ones(n, 3, 1, device=dev, dtype=dt)
    sat = eye * s + (1 - s) * gray.view(1, 1, 3)
    m, offset = sat @ m, sat @ offset
    if hue := float(jitter.get("hue") or 0):
        rot = _hue_rotation(_uniform(n, -hue, hue, generator).to(dev, dt))
        m, offset = rot @ m, rot @ offset
    out = torch.baddbmm(offset, m, x.reshape(n, 3, -1)).view_as(x)
    return out.clamp_(0, 255)


def _hue_rotation(turns: torch.Tensor) -> torch.Tensor:
    """Hue shifts as rotations of the chroma plane in YIQ (a linear stand-in for HSV's hue)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=turns.device, dtype=turns.dtype)
    a = turns * 2 * math.pi
    rot = torch.zeros(len(turns), 3, 3, device=turns.device, dtype=turns.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos()
    return torch.linalg.inv(to_yiq) @ rot @ to_yiq


def augment_batch(images: torch.Tensor, aug: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> augmented float (N, 3, H, W) in 0..255, on the images' device."""
    x = images.float()
    theta = affine_params(len(x), aug, generator).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jitter = aug.get("color_jitter") or {}
    if any(jitter.values()):
        x = color_jitter(x, jitter, generator)
    return x
