"""The Dataset over the image cache: (CHW uint8 tensor, label) pairs, or (row, label) pairs."""
from __future__ import annotations

import torch


class CachedImages(torch.utils.data.Dataset):
    """Rows `indices` of the uint8 cache as (CHW uint8 tensor, label) pairs.

    `rows_only`: (cache row, label) pairs instead, for a cache that already lives on the device.
    """

    def __init__(self, cache, indices, labels, rows_only: bool = False):
        self.cache, self.indices, self.labels, self.rows_only = cache, list(indices), list(labels), rows_only

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        if self.rows_only:
            return self.indices[i], self.labels[i]
        return torch.from_numpy(self.cache[self.indices[i]].copy()).permute(2, 0, 1), self.labels[i]
