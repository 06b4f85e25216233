"""The Dataset over the image cache: (CHW uint8 tensor, label) pairs, or (row, label) pairs; with tags, each
item carries a third, {name: its value} (what the training loss needs of each image)."""
from __future__ import annotations

import torch


class CachedImages(torch.utils.data.Dataset):
    """Rows `indices` of the uint8 cache as (CHW uint8 tensor, label) pairs.

    `rows_only`: (cache row, label) pairs instead, for a cache that already lives on the device. `tags`: {name:
    one value per item}, each item's appended to it as {name: value} (batched into {name: tensor}).
    """

    def __init__(self, cache, indices, labels, rows_only: bool = False, tags: dict[str, list] | None = None):
        self.cache, self.indices, self.labels, self.rows_only = cache, list(indices), list(labels), rows_only
        self.tags = tags or None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = self.indices[i]
        image = row if self.rows_only else torch.from_numpy(self.cache[row].copy()).permute(2, 0, 1)
        if self.tags is None:
            return image, self.labels[i]
        return image, self.labels[i], {name: values[i] for name, values in self.tags.items()}
