"""The one preprocessing definition: image file -> RGB -> shorter side resized -> centre square.

Training (through the cache), evaluation, export and the torch-free ONNX runtime all call these
functions, so a model sees the same pixels everywhere. Imports only numpy and Pillow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESIZE_POLICY = "shorter side to SIZE (bilinear, antialiased), then centre crop SIZE x SIZE"


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; grayscale, palette, RGBA, CMYK and 16-bit images converted to RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # scaled by the bit depth (16 bits: Pillow reads 16-bit PNGs as I;16 or I), not by the image's own
        # maximum, so the 8-bit and 16-bit versions of one image are the same pixels
        arr = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully (truncated files fail here, not later) and return it as RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except Exception as e:  # Pillow raises many types for bad files
        reason = str(e) or type(e).__name__
        raise ImageReadError(f"cannot read image {path}: {reason}") from None


MIN_SIDE = 32  # px: below this an image has too little detail to say anything about, whatever the model


def image_warning(img: Image.Image, size: int | None = None) -> str | None:
    """Why a readable image should not be trusted to a diagnosis, or None: far smaller than the model's input
    (it is upscaled from a few pixels) or no content at all (one colour: blank, a failed capture)."""
    w, h = img.size
    floor = max(MIN_SIDE, (size or 0) // 2)
    if min(w, h) < floor:
        model = f", far below the model's {size} px input" if size else ""
        return f"only {w}x{h} px{model}"
    small = np.asarray(img.convert("RGB").resize((min(w, 64), min(h, 64))), dtype=np.float32)
    if float(small.std(axis=(0, 1)).max()) < 1.0:
        return "no content: the image is a single colour"
    return None


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size`, then the centre `size` x `size` square, as uint8 HWC."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def preprocess_file(path: str | Path, size: int) -> np.ndarray:
    return resize_center_crop(load_rgb(path), size)
