"""The Dataset over the image cache: (CHW uint8 tensor, label) pairs, optionally augmented."""
from __future__ import annotations

import torch


class CachedImages(torch.utils.data.Dataset):
    """Rows `indices` of the uint8 cache as (CHW uint8 tensor, label) pairs, optionally augmented."""

    def __init__(self, cache, indices, labels, transform=None):
        self.cache, self.indices, self.labels, self.transform = cache, list(indices), list(labels), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.cache[self.indices[i]].copy()).permute(2, 0, 1)
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]
