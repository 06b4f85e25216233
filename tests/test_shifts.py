"""The acquisition shifts of benchmarks/shift.py, on real HAM10000 images and masks: deterministic for a
seed, and each does what its name says."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lesion_pl.data.shifts import SHIFTS, apply_shift
from lesion_pl.errors import LesionPLError

IMAGES = ["ISIC_0024306", "ISIC_0024310", "ISIC_0024315"]


@pytest.fixture(scope="module")
def photos(ham_root):
    return [Image.open(next((ham_root / "images").rglob(f"{i}.jpg"))).convert("RGB") for i in IMAGES]


@pytest.fixture(scope="module")
def masks(ham_root):
    return [Image.open(ham_root / "masks" / f"{i}_segmentation.png").convert("RGB") for i in IMAGES]


def arr(img) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_is_deterministic_and_changes_the_image(photos, name):
    for i, img in enumerate(photos):
        a, b = apply_shift(name, img, 0, i), apply_shift(name, img, 0, i)
        assert a.mode == "RGB" and np.array_equal(arr(a), arr(b))
        if a.size == img.size:
            assert np.abs(arr(a) - arr(img)).mean() > 0.3, name


def test_the_squash_drops_the_aspect_ratio(photos):
    img = photos[0]
    assert img.size == (200, 150)
    assert apply_shift("squash_1.0", img, 0, 0).size == (150, 150)
    assert apply_shift("squash_1.5", img, 0, 0).size == (225, 225)


def test_the_vignette_darkens_corners_not_the_centre(photos):
    img = photos[1]
    out = arr(apply_shift("vignette_0.85", img, 0, 0))
    assert out[:8, :8].max() == 0 and out[-8:, -8:].max() == 0
    np.testing.assert_array_equal(out[60:90, 80:120], arr(img)[60:90, 80:120])


def test_the_stronger_vignette_reaches_into_the_centre_square(photos):
    from lesion_pl.preprocess import resize_center_crop

    img = photos[1]
    crop = {n: resize_center_crop(apply_shift(n, img, 0, 0), 128).astype(float)
            for n in ("vignette_0.85", "vignette_0.6")}
    plain = resize_center_crop(img, 128).astype(float)
    dark = {n: (c.sum(-1) < 1).mean() for n, c in crop.items()}  # the share of the model's input left black
    assert dark["vignette_0.85"] < 0.01 < 0.05 < dark["vignette_0.6"]
    np.testing.assert_array_equal(crop["vignette_0.6"][48:80, 48:80], plain[48:80, 48:80])


def test_zoom_in_and_out_grow_and_shrink_the_lesion(masks):
    for m in masks:
        area = (arr(m)[..., 0] > 127).mean()
        assert (arr(apply_shift("zoom_1.3", m, 0, 0))[..., 0] > 127).mean() > area * 1.2
        # zoomed out, the surround is reflected skin: the lesion itself is smaller at the centre
        small = arr(apply_shift("zoom_0.75", m, 0, 0))[..., 0] > 127
        h, w = small.shape
        inner = (slice(h // 8, -h // 8), slice(w // 8, -w // 8))
        assert small[inner].mean() < (arr(m)[..., 0] > 127)[inner].mean()


def test_tone_and_colour_shifts(photos):
    img = arr(photos[2])
    assert arr(apply_shift("gamma_0.7", photos[2], 0, 0)).mean() > img.mean() + 5
    assert arr(apply_shift("gamma_1.4", photos[2], 0, 0)).mean() < img.mean() - 5
    cast = arr(apply_shift("white_balance_0.15", photos[2], 0, 0))
    ratio = cast.reshape(-1, 3).mean(0) / img.reshape(-1, 3).mean(0)
    assert ratio.max() - ratio.min() > 0.02  # the channels moved apart ...
    assert abs(cast.mean() - img.mean()) < 0.1 * img.mean()  # ... and the brightness roughly stayed
    other = arr(apply_shift("white_balance_0.15", photos[2], 1, 0))  # another seed, another cast
    assert not np.array_equal(cast, other)


def test_resolution_shifts_remove_detail(photos):
    def detail(a):
        return np.abs(np.diff(a, axis=1)).mean()
    img = arr(photos[0])
    for name in ("down_up_2", "down_up_4", "blur_0.01"):
        assert detail(arr(apply_shift(name, photos[0], 0, 0))) < detail(img) * 0.9, name
    err = {q: np.abs(arr(apply_shift(f"jpeg_{q}", photos[0], 0, 0)) - img).mean() for q in (30, 70)}
    assert err[30] > err[70] > 0


def test_rotation_keeps_the_size_and_blackens_corners(photos):
    out = arr(apply_shift("rotate_30", photos[0], 0, 0))
    assert out.shape == arr(photos[0]).shape and out[0, 0].max() == 0


def test_an_unknown_shift_is_named():
    with pytest.raises(LesionPLError, match="unknown shift 'fisheye'.*jpeg_30"):
        apply_shift("fisheye", Image.new("RGB", (10, 10)), 0, 0)


@pytest.mark.parametrize("quality", [30, 50, 70])
def test_jpeg_shifts_are_pillows_encoding_at_their_quality(photos, quality):
    """Written out here: each image saved by Pillow as JPEG at the named quality (4:2:0) and read back."""
    import io

    for img in photos:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=2)
        expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.array_equal(np.asarray(apply_shift(f"jpeg_{quality}", img, 0, 0)), expected)
