"""Named acquisition shifts: what another clinic's camera, archive or software does to an image before
lesion-pl sees it. Each takes the original RGB image (any size) and a numpy Generator and returns a new
RGB image; strengths are relative to the image's size, so 200x150 and 600x450 copies shift alike.
Used by benchmarks/shift.py on the test split; deterministic for a seed. Imports only numpy and Pillow.
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ..errors import LesionPLError


def _array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def _image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")


def squash(side_of_shorter: float):
    """Resized to a square (aspect ratio not kept), its side this many times the shorter side."""
    def shift(img, rng):
        side = max(8, round(min(img.size) * side_of_shorter))
        return img.resize((side, side), Image.BILINEAR)
    return shift


def down_up(factor: int):
    """Downscaled by `factor` and upscaled back: a low-resolution camera or an archive's thumbnail."""
    def shift(img, rng):
        w, h = img.size
        small = img.resize((max(1, w // factor), max(1, h // factor)), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)
    return shift


def jpeg(quality: int):
    """Re-encoded as JPEG at this quality (4:2:0 chroma, as cameras and web uploads do)."""
    def shift(img, rng):
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=quality, subsampling=2)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return shift


def white_balance(spread: float):
    """Each channel multiplied by its own gain, drawn per image in [1 - spread, 1 + spread] (then the mean
    gain set to 1, so the cast changes the colour, not the brightness)."""
    def shift(img, rng):
        gains = rng.uniform(1 - spread, 1 + spread, 3)
        return _image(_array(img) * (gains / gains.mean()))
    return shift


def gamma(g: float):
    """Intensities raised to the power g (> 1 darker mid-tones, < 1 lighter): another tone curve."""
    def shift(img, rng):
        return _image(255.0 * (_array(img) / 255.0) ** g)
    return shift


def blur(sigma_of_shorter: float):
    """Gaussian blur, sigma this fraction of the shorter side: focus, motion, a cheap lens."""
    def shift(img, rng):
        return img.filter(ImageFilter.GaussianBlur(sigma_of_shorter * min(img.size)))
    return shift


def vignette(radius_of_half_diagonal: float):
    """A round lens's field: black outside a circle of this radius (a fraction of half the diagonal), with
    a soft edge, the centre untouched."""
    def shift(img, rng):
        w, h = img.size
        y, x = np.mgrid[0:h, 0:w]
        r = np.hypot(x - (w - 1) / 2, y - (h - 1) / 2) / (np.hypot(w, h) / 2)
        edge = 0.06
        mask = np.clip((radius_of_half_diagonal - r) / edge + 0.5, 0, 1)[..., None]
        return _image(_array(img) * mask)
    return shift


def zoom(factor: float):
    """Zoomed in (factor > 1: the centre 1/factor enlarged) or out (< 1: shrunk, the skin around it
    continued by reflection), the image size kept."""
    def shift(img, rng):
        w, h = img.size
        if factor >= 1:
            cw, ch = w / factor, h / factor
            box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
            return img.resize((w, h), Image.BILINEAR, box=box)
        sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
        small = np.asarray(img.convert("RGB").resize((sw, sh), Image.BILINEAR))
        top, left = (h - sh) // 2, (w - sw) // 2
        return Image.fromarray(np.pad(small, ((top, h - sh - top), (left, w - sw - left), (0, 0)), mode="symmetric"))
    return shift


def rotate(degrees: float):
    """Rotated by a non-right angle about the centre, the size kept, the corners left black."""
    def shift(img, rng):
        return img.rotate(degrees, resample=Image.BILINEAR)
    return shift


# name -> (what it does, the shift); the benchmark runs them in this order
SHIFTS: dict[str, tuple[str, Callable]] = {
    "squash_1.0": ("resized to a square of the shorter side, aspect ratio not kept", squash(1.0)),
    "squash_1.5": ("resized to a square of 1.5x the shorter side, aspect ratio not kept", squash(1.5)),
    "down_up_2": ("downscaled 2x, then upscaled back", down_up(2)),
    "down_up_4": ("downscaled 4x, then upscaled back", down_up(4)),
    "jpeg_30": ("JPEG re-encoded at quality 30", jpeg(30)),
    "jpeg_50": ("JPEG re-encoded at quality 50", jpeg(50)),
    "jpeg_70": ("JPEG re-encoded at quality 70", jpeg(70)),
    "white_balance_0.15": ("a colour cast: channel gains drawn in [0.85, 1.15] per image", white_balance(0.15)),
    "gamma_0.7": ("tone curve: intensities to the power 0.7 (lighter)", gamma(0.7)),
    "gamma_1.4": ("tone curve: intensities to the power 1.4 (darker)", gamma(1.4)),
    "blur_0.01": ("Gaussian blur, sigma 1% of the shorter side", blur(0.01)),
    "vignette_0.85": ("black outside a circle of 0.85 of the half-diagonal (dark corners)", vignette(0.85)),
    # 0.85 leaves most of its black outside the centre square a 4:3 image is cropped to; 0.6 reaches into it
    "vignette_0.6": ("black outside a circle of 0.6 of the half-diagonal (a round field inside the frame)",
                     vignette(0.6)),
    "zoom_1.3": ("zoomed in 1.3x", zoom(1.3)),
    "zoom_0.75": ("zoomed out to 0.75x, the surround reflected", zoom(0.75)),
    "rotate_30": ("rotated 30 degrees, corners black", rotate(30)),
}


def apply_shift(name: str, img: Image.Image, seed: int, index: int) -> Image.Image:
    """Shift `name` applied to image number `index` (its own random draws, the same for every run)."""
    if name not in SHIFTS:
        raise LesionPLError(f"unknown shift '{name}': choose from {', '.join(SHIFTS)}")
    return SHIFTS[name][1](img.convert("RGB"), np.random.default_rng([seed, index]))
