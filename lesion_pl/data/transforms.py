"""Training augmentation for a whole batch at once, as tensor ops on the device that trains (and
`batch_mixer`: MixUp/CutMix over a batch's images and labels).

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

from ..config import Augment, ColorJitter

_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def as_augment(aug: Augment | dict) -> Augment:
    """The augment section, or a dict of its keys (validated; keys it lacks take the training defaults)."""
    return aug if isinstance(aug, Augment) else Augment.model_validate(aug)


def affine_params(n: int, aug: Augment | dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output coordinates to input coordinates, both in [-1, 1]."""
    aug = as_augment(aug)
    lo, hi = aug.scale
    r0, r1 = aug.ratio
    area = _uniform(n, lo, hi, generator)
    ratio = torch.exp(_uniform(n, math.log(r0), math.log(r1), generator))
    w = torch.sqrt(area * ratio).clamp(max=1.0)   # crop width and height as fractions of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = _uniform(n, -1.0, 1.0, generator) * (1 - w)
    cy = _uniform(n, -1.0, 1.0, generator) * (1 - h)
    if aug.hflip:
        w = w * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    if aug.vflip:
        h = h * (torch.randint(0, 2, (n,), generator=generator) * 2 - 1)
    angle = torch.deg2rad(_uniform(n, -1.0, 1.0, generator) * float(aug.rotation))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # input = diag(w, h) @ R(angle) @ output + centre: rotate the output view, then crop/flip
    return torch.stack([torch.stack([w * cos, -w * sin, cx], 1),
                        torch.stack([h * sin, h * cos, cy], 1)], 1)


def color_jitter(x: torch.Tensor, jitter: ColorJitter | dict,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter on float images in 0..255 (N, 3, H, W).

    All four are linear in the pixel values, so they are composed into one 3x3 matrix and one offset
    per image and applied in a single batched matmul (clamped once, at the end).
    """
    jitter = jitter.model_dump() if isinstance(jitter, ColorJitter) else jitter
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


def channel_gain(x: torch.Tensor, spread: float, generator=None) -> torch.Tensor:
    """A white-balance cast: each channel times a gain in [1 - spread, 1 + spread], the gains' mean 1."""
    g = _uniform(3 * len(x), 1 - spread, 1 + spread, generator).view(len(x), 3, 1, 1).to(x.device, x.dtype)
    return (x * (g / g.mean(dim=1, keepdim=True))).clamp_(0, 255)


def gamma(x: torch.Tensor, low: float, high: float, generator=None) -> torch.Tensor:
    """Another tone curve: 255 * (x / 255) ** g, g log-uniform in [low, high] per image."""
    g = torch.exp(_uniform(len(x), math.log(low), math.log(high), generator)).view(-1, 1, 1, 1).to(x.device, x.dtype)
    return 255.0 * (x / 255.0).clamp_min(1e-6) ** g


def blur(x: torch.Tensor, max_sigma: float, generator=None) -> torch.Tensor:
    """Gaussian blur, sigma uniform in [0, max_sigma * image side] per image: separable, one grouped conv
    per axis for the whole batch."""
    n, c, h, w = x.shape
    sigma = (_uniform(n, 0.0, max_sigma * min(h, w), generator).clamp_min(1e-3)).to(x.device, x.dtype)
    radius = max(1, int(math.ceil(3 * max_sigma * min(h, w))))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, 2r + 1)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def vignette(x: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """With probability p per image, a round lens's field: black outside a circle of radius uniform in
    [0.7, 0.95] of the half-diagonal (the corners always dark), a soft edge, the centre untouched (as
    lesion_pl.data.shifts.vignette)."""
    n, _, h, w = x.shape
    on = torch.rand(n, generator=generator) < p
    radius = torch.where(on, _uniform(n, 0.7, 0.95, generator), torch.full((n,), 10.0)).to(x.device, x.dtype)
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    r = torch.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2) / (math.hypot(w, h) / 2)
    mask = ((radius.view(-1, 1, 1) - r) / 0.06 + 0.5).clamp(0, 1)
    return x * mask.unsqueeze(1)


def downscale(x: torch.Tensor, max_factor: float, generator=None) -> torch.Tensor:
    """Down- then upscaled by one factor drawn in [1, max_factor] for the whole batch: a low-resolution
    camera or an archive's thumbnail."""
    f = float(_uniform(1, 1.0, max_factor, generator))
    h, w = x.shape[2:]
    if f < 1.05:
        return x
    small = F.interpolate(x, size=(max(1, round(h / f)), max(1, round(w / f))), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def jpeg(x: torch.Tensor, low: float, high: float, generator=None) -> torch.Tensor:
    """Each image re-encoded as JPEG at a quality drawn in [low, high] (4:2:0 chroma, as
    lesion_pl.data.shifts.jpeg): the blocks and ringing of a web upload or an archive. libjpeg on the CPU,
    one image at a time (about 0.2 ms each at 128 px)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = _uniform(len(x), low, high, generator).round().int().tolist()
    rows = x.detach().round().clamp(0, 255).to("cpu", torch.uint8)
    out = [decode_jpeg(encode_jpeg(row, quality=q)) for row, q in zip(rows, quality, strict=True)]
    return torch.stack(out).to(x.device, x.dtype)


def augment_batch(images: torch.Tensor, aug: Augment | dict,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> augmented float (N, 3, H, W) in 0..255, on the images' device.

    After the geometry and the colour jitter, the acquisition augmentations that mimic other clinics'
    images (benchmarks/shift.py), each off unless configured: `channel_gain`, `gamma`, `blur`,
    `vignette`, `downscale`, `jpeg` (last: it encodes the image as it would reach the model)."""
    aug = as_augment(aug)
    x = images.float()
    theta = affine_params(len(x), aug, generator).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jitter = aug.color_jitter.model_dump()
    if any(jitter.values()):
        x = color_jitter(x, jitter, generator)
    if aug.channel_gain:
        x = channel_gain(x, float(aug.channel_gain), generator)
    if aug.gamma:
        x = gamma(x, *map(float, aug.gamma), generator)
    if aug.blur:
        x = blur(x, float(aug.blur), generator)
    if aug.vignette:
        x = vignette(x, float(aug.vignette), generator)
    if aug.downscale:
        x = downscale(x, float(aug.downscale), generator)
    if aug.jpeg:
        x = jpeg(x, *map(float, aug.jpeg), generator)
    return x


def batch_mixer(augment: Augment, num_classes: int):
    """torchvision's MixUp and/or CutMix on whole training batches (None when both alphas are 0);
    with both, each batch gets one of the two at random, as in timm."""
    from torchvision.transforms import v2

    mixers = [cls(alpha=float(alpha), num_classes=num_classes)
              for cls, alpha in ((v2.MixUp, augment.mixup), (v2.CutMix, augment.cutmix))
              if alpha and float(alpha) > 0]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
