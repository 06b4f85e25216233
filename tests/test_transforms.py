"""Batched training augmentation on real images: identity when off, flips, crops, jitter, seeds,
and the DataModule applying it to training batches only."""
from __future__ import annotations

import numpy as np
import torch

from lesion_pl.config import load_config
from lesion_pl.data.transforms import affine_params, augment_batch, color_jitter
from lesion_pl.preprocess import preprocess_file

OFF = {"scale": [1.0, 1.0], "ratio": [1.0, 1.0], "rotation": 0, "hflip": False, "vflip": False,
       "color_jitter": {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}}


def real_batch(ham_root, n: int = 16, size: int = 64) -> torch.Tensor:
    files = sorted((ham_root / "images").glob("*.jpg"))[:n]
    return torch.from_numpy(np.stack([preprocess_file(f, size) for f in files])).permute(0, 3, 1, 2).contiguous()


def test_everything_off_is_the_identity(ham_root):
    x = real_batch(ham_root)
    out = augment_batch(x, OFF)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.allclose(out, x.float(), atol=1e-3)


def test_flips_give_the_mirror_images_both_ways(ham_root):
    x = real_batch(ham_root, n=32)
    out = augment_batch(x, {**OFF, "hflip": True}, torch.Generator().manual_seed(0))
    same = [torch.allclose(o, i.float(), atol=1e-3) for o, i in zip(out, x, strict=True)]
    mirrored = [torch.allclose(o, i.float().flip(-1), atol=1e-3) for o, i in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 4 < sum(mirrored) < 28  # a fair coin over 32 images
    out = augment_batch(x, {**OFF, "vflip": True}, torch.Generator().manual_seed(1))
    assert all(torch.allclose(o, i.float(), atol=1e-3) or torch.allclose(o, i.float().flip(-2), atol=1e-3)
               for o, i in zip(out, x, strict=True))


def test_crops_keep_area_and_ratio_and_stay_inside():
    aug = {**OFF, "scale": [0.25, 0.25], "ratio": [1.0, 1.0]}
    theta = affine_params(500, aug, torch.Generator().manual_seed(0))
    half = torch.full((500,), 0.5)
    assert torch.allclose(theta[:, 0, 0], half) and torch.allclose(theta[:, 1, 1], half)
    assert theta[:, :, 2].abs().max() <= 0.5 + 1e-6  # the half-size crop never leaves the image
    theta = affine_params(500, {**OFF, "scale": [0.5, 1.0], "ratio": [0.75, 4 / 3]}, torch.Generator().manual_seed(0))
    area = theta[:, 0, 0] * theta[:, 1, 1]
    assert area.min() >= 0.5 - 1e-6 and area.max() <= 1.0 + 1e-6
    ratio = theta[:, 0, 0] / theta[:, 1, 1]
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5


def test_rotation_turns_the_image_about_its_centre():
    theta = affine_params(1, {**OFF, "rotation": 90}, torch.Generator().manual_seed(0))
    angle = torch.rad2deg(torch.atan2(theta[0, 1, 0], theta[0, 0, 0]))
    assert 0 < abs(angle) <= 90 and torch.allclose(theta[0, :, 2], torch.zeros(2))


def test_color_jitter_equals_the_stepwise_definition(ham_root):
    x = real_batch(ham_root).float()
    jitter = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}
    out = color_jitter(x, jitter, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    b, c, s = (0.7 + 0.6 * torch.rand(len(x), generator=g).view(-1, 1, 1, 1) for _ in range(3))
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    ref = x * b
    mean = (ref * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    ref = (ref - mean) * c + mean
    gray = (ref * gray_w).sum(1, keepdim=True)
    ref = (gray + (ref - gray) * s).clamp(0, 255)
    assert (out - ref).abs().max() < 1e-2
    assert out.min() >= 0 and out.max() <= 255


def test_hue_rotation_keeps_gray_pixels_gray():
    gray = torch.full((4, 3, 8, 8), 100.0)
    out = color_jitter(gray, {"hue": 0.5}, torch.Generator().manual_seed(0))
    assert torch.allclose(out, gray, atol=1e-3)


def test_same_seed_same_batch_default_config(ham_root):
    x = real_batch(ham_root)
    aug = load_config().data.augment
    a = augment_batch(x, aug, torch.Generator().manual_seed(3))
    b = augment_batch(x, aug, torch.Generator().manual_seed(3))
    c = augment_batch(x, aug, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_datamodule_augments_training_batches_only(small_ham):
    from types import SimpleNamespace

    from lesion_pl.data.datamodule import LesionDataModule

    cfg = load_config(None, [f"data.root={small_ham}", "data.image_size=48", "data.batch_size=8"])
    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 48, 48)
    dm.trainer = SimpleNamespace(training=True, world_size=1)
    out, target = dm.on_after_batch_transfer((x, y), 0)
    assert out.dtype == torch.float32 and out.shape == x.shape and torch.equal(target, y)
    assert not torch.allclose(out, x.float())
    dm.trainer = SimpleNamespace(training=False, world_size=1)
    v, _ = next(iter(dm.val_dataloader()))
    same, _ = dm.on_after_batch_transfer((v, y), 0)
    assert torch.equal(same, v)


def test_cache_on_device_sends_rows_and_gathers_them(small_ham):
    from types import SimpleNamespace

    from lesion_pl.data.datamodule import LesionDataModule

    cfg = load_config(None, [f"data.root={small_ham}", "data.image_size=48", "data.batch_size=8",
                             "data.cache_on_device=true"])
    dm = LesionDataModule(cfg.data, cfg.seed, progress=False).build()
    dm.trainer = SimpleNamespace(training=False, world_size=1)
    rows, y = next(iter(dm.val_dataloader()))
    assert rows.dtype == torch.int64 and rows.shape == (8,)
    images, _ = dm.on_after_batch_transfer((rows, y), 0)
    expected = torch.from_numpy(np.stack([dm.cache[int(r)] for r in rows])).permute(0, 3, 1, 2)
    assert torch.equal(images, expected)


def _off(**on) -> dict:
    """No geometry, no jitter: only the acquisition augmentations given."""
    return {**OFF, **on}


def test_acquisition_augmentations_do_what_they_are_named(ham_root):
    x = real_batch(ham_root, 6, 128)
    plain = augment_batch(x, _off(), torch.Generator().manual_seed(0))
    cast = augment_batch(x, _off(channel_gain=0.15), torch.Generator().manual_seed(0))
    ratio = cast.mean(dim=(2, 3)) / plain.mean(dim=(2, 3))
    assert (ratio.max(1).values - ratio.min(1).values).min() > 0.005  # each image's channels moved apart
    assert ((cast.mean(dim=(1, 2, 3)) / plain.mean(dim=(1, 2, 3))) - 1).abs().max() < 0.1
    dark = augment_batch(x, _off(gamma=[1.5, 1.5]), torch.Generator().manual_seed(0))
    assert (dark.mean(dim=(1, 2, 3)) < plain.mean(dim=(1, 2, 3)) - 5).all()
    blurred = augment_batch(x, _off(blur=0.03), torch.Generator().manual_seed(0))

    def detail(t):
        return (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))
    # sigma is drawn in [0, 0.03 * side] per image: some blur little, none sharpens, most blur a lot
    assert (detail(blurred) <= detail(plain) + 1e-3).all() and detail(blurred).mean() < 0.8 * detail(plain).mean()
    np.testing.assert_allclose(blurred.mean(dim=(1, 2, 3)), plain.mean(dim=(1, 2, 3)), rtol=0.02)  # blur keeps the mean
    lens = augment_batch(x, _off(vignette=1.0), torch.Generator().manual_seed(0))
    assert lens[:, :, :2, :2].max() == 0 and torch.equal(lens[:, :, 40:88, 40:88], plain[:, :, 40:88, 40:88])
    low = augment_batch(x, _off(downscale=4.0), torch.Generator().manual_seed(3))
    assert (detail(low) < detail(plain)).all()


def test_acquisition_augmentations_are_seeded_and_off_by_default(ham_root):
    x = real_batch(ham_root, 4)
    cfg = load_config().data.augment
    on = {**cfg.model_dump(), "channel_gain": 0.1, "gamma": [0.8, 1.25], "blur": 0.01, "vignette": 0.5,
          "downscale": 2.0}
    a = augment_batch(x, on, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment_batch(x, on, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment_batch(x, on, torch.Generator().manual_seed(6)))
    # the default config draws nothing for them: its batch is the geometry and the colour jitter alone, written out
    g = torch.Generator().manual_seed(5)
    xf = x.float()
    grid = torch.nn.functional.affine_grid(affine_params(len(xf), cfg, g), list(xf.shape), align_corners=False)
    manual = color_jitter(torch.nn.functional.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros",
                                                          align_corners=False), cfg.color_jitter, g)
    assert torch.equal(augment_batch(x, cfg, torch.Generator().manual_seed(5)), manual)


def test_jpeg_augmentation_re_encodes_as_the_shift_does(ham_root):
    from lesion_pl.data.transforms import jpeg

    x = real_batch(ham_root, 4, 128)
    plain = augment_batch(x, _off(), torch.Generator().manual_seed(0))
    coarse = augment_batch(x, _off(jpeg=[30, 30]), torch.Generator().manual_seed(0))
    fine = augment_batch(x, _off(jpeg=[95, 95]), torch.Generator().manual_seed(0))
    assert coarse.shape == plain.shape and coarse.dtype == plain.dtype
    err_coarse, err_fine = (coarse - plain).abs().mean(), (fine - plain).abs().mean()
    assert 0 < err_fine < err_coarse < 10  # lossy, more so at low quality, still the same image
    # the same quality gives PIL's bytes: libjpeg at 4:2:0 either way (lesion_pl.data.shifts.jpeg)
    from PIL import Image

    from lesion_pl.data.shifts import SHIFTS

    img = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    ours = jpeg(x[:1].float(), 30, 30)[0].permute(1, 2, 0).numpy()
    pil = np.asarray(SHIFTS["jpeg_30"][1](img, None), dtype=np.float32)
    assert np.abs(ours - pil).mean() < 1.0
    a = augment_batch(x, _off(jpeg=[30, 100]), torch.Generator().manual_seed(1))
    assert torch.equal(a, augment_batch(x, _off(jpeg=[30, 100]), torch.Generator().manual_seed(1)))
