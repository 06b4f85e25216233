"""The one preprocessing definition: image file -> RGB -> shorter side resized -> centre square.

Training (through the cache), evaluation, export and the torch-free ONNX runtime all call these
functions, so a model sees the same pixels everywhere. Imports only numpy and Pillow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESIZE_POLICY = "shorter side to SIZE (bilinear, antialiased), then centre crop SIZE x SIZE"
# the only formats lesion-pl decodes, wherever an image comes from (data, predict, the service): Pillow is never
# asked to try another plugin (EPS would run Ghostscript on the file, a PostScript program)
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")
SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
FORMAT_NAMES = "JPEG, PNG, TIFF, BMP, WebP or GIF"
# bytes a pixel takes decoded, by Pillow mode (others: 4)
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
              "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2,
              "I;16N": 2}
# what converting a pixel to RGB allocates beyond its decoded bytes (to_rgb): the RGB result, and for modes with
# transparency the RGBA copy, the white background and the composite
# (16-bit: the array Pillow hands numpy, the 8-bit result and its image, then RGB)
CONVERSION_BYTES = {"RGB": 0, "LA": 15, "PA": 15, "P": 15, "RGBA": 11, "RGBa": 11, "I": 9, "I;16": 7, "I;16B": 7,
                    "I;16L": 7, "I;16N": 7}


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def open_image(source, name: str | None = None) -> Image.Image:
    """Pillow's lazy open (the header only), restricted to FORMATS; anything else is an ImageReadError."""
    from PIL import UnidentifiedImageError

    try:
        return Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageReadError(f"{name or source}: not a {FORMAT_NAMES} image") from None


EXIF_IN_HEADER = ("JPEG", "MPO", "TIFF", "WEBP")  # formats whose EXIF Pillow reads without decoding the pixels


def decoded_bytes(img: Image.Image) -> int:
    """The memory decoding `img` and converting it to RGB takes, from its header alone, with one more copy where
    its EXIF orientation may turn it: what a per-image memory budget is checked against. Nothing is decoded here:
    a PNG's eXIf chunk may follow its pixels (Pillow decodes the image to find it), so a PNG is counted as turned;
    BMP and GIF have no orientation."""
    w, h = img.size
    per_pixel = MODE_BYTES.get(img.mode, 4) + CONVERSION_BYTES.get(img.mode, 3)
    turned = img.getexif().get(274, 1) not in (1, None) if img.format in EXIF_IN_HEADER else img.format == "PNG"
    return w * h * (per_pixel + (MODE_BYTES.get(img.mode, 4) if turned else 0))


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; grayscale, palette, RGBA, CMYK and 16-bit images converted to RGB."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # scaled by the bit depth (16 bits: Pillow reads 16-bit PNGs as I;16 or I), not by the image's own
        # maximum, so the 8-bit and 16-bit versions of one image are the same pixels: round(v * 255 / 65535) in
        # integers (never exactly half), a band of rows at a time so that no full-size wide copy is made
        arr = np.asarray(img)
        out = np.empty(arr.shape, dtype=np.uint8)
        for top in range(0, arr.shape[0], 256):
            band = np.clip(arr[top:top + 256].astype(np.int64), 0, 65535)
            out[top:top + 256] = (band * 255 + 32767) // 65535
        return Image.fromarray(out).convert("RGB")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully (truncated files fail here, not later) and return it as RGB."""
    path = Path(path)
    try:
        with open_image(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except ImageReadError as e:
        raise ImageReadError(f"cannot read image {e}") from None
    except Exception as e:  # Pillow raises many types for bad files
        reason = str(e) or type(e).__name__
        raise ImageReadError(f"cannot read image {path}: {reason}") from None


MIN_SIDE = 32  # px: below this an image has too little detail to say anything about, whatever the model


BLANK_STD = 1.0  # grey levels: a channel spread below this on the model's input is one colour
THUMBNAIL = 64  # px: the input the blank check looks at where there is no model (data check)


def image_warning(img: Image.Image, size: int | None = None, pixels: np.ndarray | None = None) -> str | None:
    """Why a readable RGB image should not be trusted to a diagnosis, or None: far smaller than the model's input
    (it is upscaled from a few pixels) or no content at all (one colour: blank, a failed capture), judged on what
    the model sees (`pixels`: `resize_center_crop(img, size)` where the caller has it). The offline page's
    `imageWarning` (lesion_pl/export/web/lesion.js) is the same rule."""
    w, h = img.size
    floor = max(MIN_SIDE, (size or 0) // 2)
    if min(w, h) < floor:
        model = f", far below the model's {size} px input" if size else ""
        return f"only {w}x{h} px{model}"
    seen = resize_center_crop(img, size or THUMBNAIL) if pixels is None else pixels
    if float(seen.reshape(-1, 3).std(axis=0).max()) < BLANK_STD:
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


def dihedral_views(images, turn, mirror) -> list:
    """The 8 views test-time augmentation averages, in the one order used everywhere (lesion_pl/export/web/lesion.js's
    `ttaViews` too): the images turned by 0, 90, 180 and 270 degrees counter-clockwise, then each of those
    mirrored left to right. `turn(images, k)` and `mirror(images)` do it for the array type at hand."""
    turned = [turn(images, k) for k in range(4)]
    return turned + [mirror(v) for v in turned]


def numpy_views(batch: np.ndarray) -> list[np.ndarray]:
    """`dihedral_views` of uint8 NHWC images (the ONNX runtime's)."""
    return dihedral_views(batch, lambda a, k: np.rot90(a, k, axes=(1, 2)), lambda a: a[:, :, ::-1])


def preprocess_file(path: str | Path, size: int) -> np.ndarray:
    return resize_center_crop(load_rgb(path), size)
