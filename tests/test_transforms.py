"""Augmentation on cached uint8 images: shape and dtype kept, images changed, train split only."""
from __future__ import annotations

import numpy as np
import torch

from lesion_pl.config import load_config
from lesion_pl.data.dataset import CachedImages
from lesion_pl.data.transforms import train_transform
from lesion_pl.preprocess import preprocess_file


def test_train_transform_changes_images_keeps_shape(ham_root):
    img = preprocess_file(next((ham_root / "images").glob("*.jpg")), 64)
    cache = np.stack([img, img])
    tf = train_transform(load_config()["data"]["augment"], 64)
    train = CachedImages(cache, [0, 1], [5, 5], tf)
    evaluation = CachedImages(cache, [0, 1], [5, 5], None)
    torch.manual_seed(0)
    a, label = train[0]
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8 and label == 5
    b, _ = train[1]
    assert not torch.equal(a, b)  # two draws of the same image differ
    e, _ = evaluation[0]
    assert torch.equal(e, torch.from_numpy(img).permute(2, 0, 1))
