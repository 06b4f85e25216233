"""Augmentation: torchvision.transforms.v2 on the cached uint8 images, train split only.

Evaluation needs no transform: the cache already holds the resized, centre-cropped image, and
normalisation (the training split's mean/std) happens inside the model, as in the ONNX graph.
"""
from __future__ import annotations

from torchvision.transforms import v2


def train_transform(aug: dict, size: int) -> v2.Compose:
    steps: list = [v2.RandomResizedCrop(size, scale=tuple(aug["scale"]), ratio=tuple(aug["ratio"]),
                                        antialias=True)]
    if aug.get("hflip"):
        steps.append(v2.RandomHorizontalFlip())
    if aug.get("vflip"):
        steps.append(v2.RandomVerticalFlip())
    if aug.get("rotation"):
        steps.append(v2.RandomRotation(aug["rotation"]))
    cj = aug.get("color_jitter") or {}
    if any(cj.values()):
        steps.append(v2.ColorJitter(**cj))
    return v2.Compose(steps)

