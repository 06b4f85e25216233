"""The Dataset over the image cache: (CHW uint8 tensor, label) pairs, or (row, label) pairs; with groups, each
item carries its group index third."""
from __future__ import annotations

import torch


class CachedImages(torch.utils.data.Dataset):
    """Rows `indices` of the uint8 cache as (CHW uint8 tensor, label) pairs.

    `rows_only`: (cache row, label) pairs instead, for a cache that already lives on the device. `groups`: one
    index per item, appended to each (group DRO's groups, `loss.group_dro`).
    """

    def __init__(self, cache, indices, labels, rows_only: bool = False, groups=None):
        self.cache, self.indices, self.labels, self.rows_only = cache, list(indices), list(labels), rows_only
        self.groups = None if groups is None else list(groups)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image = self.indices[i] if self.rows_only else torch.from_numpy(self.cache[self.indices[i]].copy()).permute(2, 0, 1)
        return (image, self.labels[i]) if self.groups is None else (image, self.labels[i], self.groups[i])
