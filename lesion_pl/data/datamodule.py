"""The LightningDataModule: source table -> splits -> image cache -> DataLoaders -> device batches.

`build()` does all the checking (data root, CSV, images, splits, decoding) before anything is
written, so a bad dataset fails with one message and no half-made run folder. The loaders only
copy cached uint8 rows; training batches are augmented after they reach the device
(`on_after_batch_transfer`, see transforms.py), or, with `data.cache_on_device`, the whole
cache lives on the GPU and the loaders hand over row numbers only.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from ..classes import label_space
from ..config import Data, Loss, balance_power, resolve_data_root
from ..errors import LesionPLError
from ..evaluate.confirmed import CONFIRMED, METHOD_COLUMN, diagnosis_method
from .cache import build_cache, default_cache_dir
from .check import bad_images_cached
from .dataset import CachedImages
from .sources import read_source, read_sources
from .splits import SPLITS, check_no_leak, make_splits, read_splits, split_seed
from .transforms import augment_batch


class EpochWeightedSampler(WeightedRandomSampler):
    """Draws with replacement with per-image weights that may change with the epoch: Lightning calls
    `set_epoch` before every training epoch (through its DDP wrapper too)."""

    def __init__(self, weights_at, num_samples: int, generator: torch.Generator):
        self.weights_at = weights_at
        super().__init__(weights_at(0).tolist(), num_samples=num_samples, replacement=True, generator=generator)

    def set_epoch(self, epoch: int) -> None:
        self.weights = torch.as_tensor(self.weights_at(epoch), dtype=torch.double)


def channel_stats(cache: np.ndarray, indices: np.ndarray, chunk: int = 512) -> tuple[list, list]:
    """Per-channel mean and std (0..1 scale) of the cached images `indices`."""
    s = np.zeros(3)
    ss = np.zeros(3)
    n = 0
    for start in range(0, len(indices), chunk):
        block = cache[np.sort(indices[start:start + chunk])].reshape(-1, 3).astype(np.float64) / 255.0
        s += block.sum(0)
        ss += (block ** 2).sum(0)
        n += len(block)
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean ** 2, 1e-12))
    return mean.tolist(), std.tolist()


class LesionDataModule(pl.LightningDataModule):
    def __init__(self, data: Data, seed: int, splits_file: Path | None = None, progress: bool = True,
                 whole: bool = False, loss: Loss | None = None):
        """`data`: the config's data section, its image size resolved (`hardware.resolve_auto`); `seed`: the run's
        (the split's where data.splits names none, and the sampler's). `whole`: every image in one 'all' split
        and no split file (evaluating a model on other data). `loss`: the config's loss section, where training
        images carry what it needs of each (`tags`: group DRO's groups, the confirmed lesions)."""
        super().__init__()
        self.data, self.seed = data, int(seed)
        self.loss = loss
        self.whole = whole
        self.splits_file = splits_file or data.splits_file
        self.progress = progress
        self.table: pd.DataFrame | None = None
        self.split: pd.Series | None = None
        self.cache: np.ndarray | None = None
        self._on_device: torch.Tensor | None = None

    def build(self) -> LesionDataModule:
        """The table, the split and the image cache at `data.image_size`, every data check on the way."""
        self.build_split()
        if self.cache is None:
            d = self.data
            if d.image_size == "auto":
                raise LesionPLError("data.image_size is auto: resolve it for this machine first "
                                    "(hardware.resolve_auto)")
            self.cache = build_cache(self.table["path"].tolist(), int(d.image_size), d.cache_dir,
                                     progress=self.progress, in_memory_max_gb=float(d.cache_in_memory_max_gb))
        return self

    def build_split(self) -> LesionDataModule:
        """The table and the split, with every check that needs no image at a size (what `trainer.budget` plans
        with, before the size is chosen)."""
        if self.table is not None:
            return self
        d = self.data
        self.root = resolve_data_root(d)
        # the run's own sources together; evaluating other data (`whole`), that data alone
        table = read_source(d.format, self.root, d) if self.whole else read_sources(d, self.root)
        if "melanoma_target" in table and not self.whole:
            raise LesionPLError(f"{self.root} has only melanoma/benign labels (ISIC 2020): it cannot train or be "
                                "split; evaluate a run on it with `python cli.py test --run RUN --data-root DIR "
                                "--split all`")
        self.skipped: dict[str, str] = dict(table.attrs.get("missing", {}))  # listed but not on disk (skipped)
        if d.skip_bad_images:
            unreadable = bad_images_cached(table["path"].tolist(), d.cache_dir, self.progress)
            table = table[~table["path"].isin(unreadable)].reset_index(drop=True)
            self.skipped.update(unreadable)
        if self.whole:
            split = pd.Series("all", index=table.index, name="split")
        elif self.splits_file:
            split = read_splits(table, Path(self.splits_file))
        elif "official_split" in table:  # a source that comes with its own split (DermaMNIST)
            split = table["official_split"].rename("split")
        else:
            split = make_splits(table, d.splits, split_seed(d, self.seed), d.cache_dir or default_cache_dir())
        if not self.whole and "official_split" not in table:
            check_no_leak(table, split)
            for name in SPLITS:
                if not (split == name).any():
                    raise LesionPLError(f"the {name} split is empty ({len(table)} images, "
                                        f"fractions {d.splits.model_dump(exclude={'seed'})})")
            space = label_space(d)
            trained = set(table["dx"][(split == "train").to_numpy()])
            unseen = [c for c in space.classes if c not in trained]
            if unseen and d.classes is not None:  # a space the user named: each class must be learnt
                raise LesionPLError(f"no training image of class(es) {', '.join(unseen)} of data.classes "
                                    f"({', '.join(space.classes)}) in {self.root}: map labels into them with "
                                    "data.label_map, or leave them out of data.classes")
        self.table, self.split = table, split
        self.tags()  # a column the loss needs and the data lacks: an error before anything is written
        return self

    def for_seed(self, seed: int) -> LesionDataModule:
        """The same data (table, split, cache: shared, not copied) with another seed for the sampler: an ensemble's
        member."""
        other = copy.copy(self)
        other.seed = int(seed)
        return other

    def train_stats(self) -> tuple[list, list]:
        """Per-channel mean and std of the training split (normalisation for a new model)."""
        return channel_stats(self.cache, self.indices("train"))

    def indices(self, split: str) -> np.ndarray:
        if split == "all":
            return np.arange(len(self.table))
        return np.flatnonzero((self.split == split).to_numpy())

    def class_counts(self, split: str = "train") -> np.ndarray:
        labels = self.table["label"].to_numpy()[self.indices(split)]
        return np.bincount(labels, minlength=label_space(self.data).num_classes)

    def class_weights(self, loss: Loss) -> list[float] | None:
        """The loss section's class weights for this training split: count^-p, scaled to average 1 over the
        training images (None: unweighted)."""
        p = balance_power(loss.class_weights, "loss.class_weights")
        if p == 0:
            return None
        counts = np.maximum(self.class_counts(), 1)
        w = counts.astype(float) ** -p
        w *= counts.sum() / (w * counts).sum()
        return w.tolist()

    def sampler_power(self, epoch: int | None = None) -> float:
        """The power p of the training sampler's count^-p at this epoch (None: once any ramp is over).

        With `data.sampler_start`, p moves linearly from that sampler's power to `data.sampler`'s over
        the first `data.sampler_ramp_epochs` epochs."""
        d = self.data
        end = balance_power(d.sampler, "data.sampler")
        if d.sampler_start is None:
            return end
        start = balance_power(d.sampler_start, "data.sampler_start")
        ramp = d.sampler_ramp_epochs
        return end if epoch is None else start + (end - start) * min(1.0, epoch / ramp)

    def row_weights(self, split: str = "train") -> np.ndarray:
        """Each image's own weight in the sampler (`data.sample_weights`: {column: {value: weight}}, 1 elsewhere),
        e.g. {dx_type: {follow_up: 0.25}}: a follow-up image is drawn a quarter as often as another of its class."""
        rows = self.table.iloc[self.indices(split)]
        weight = np.ones(len(rows))
        if self.data.balance_sources and "source" in rows:  # each source's images weigh as much in all
            per_source = rows["source"].map(rows["source"].value_counts()).to_numpy(dtype=float)
            weight *= len(rows) / (rows["source"].nunique() * per_source)
        for column, by_value in (self.data.sample_weights or {}).items():
            values = self._column(column, "data.sample_weights", split)
            for value, w in by_value.items():
                weight[(values == str(value)).to_numpy()] *= float(w)
        return weight

    def _column(self, column: str, key: str, split: str = "train") -> pd.Series:
        """The `split` rows' values of `column` as text (a row without one: 'unknown'); a column the data lacks is
        an error naming the config key that asked for it."""
        if column not in self.table:
            raise LesionPLError(f"{key} names column '{column}', which the data in {self.root} does not have "
                                f"(it has: {', '.join(map(str, self.table.columns))})")
        return self.table[column].iloc[self.indices(split)].fillna("unknown").astype(str)

    def groups(self) -> pd.Categorical | None:
        """Each training image's group for group DRO, the pair of its `loss.group_dro` column's value and its class
        ('value/class'; the categories: the pairs the training split holds, sorted). None: no group DRO."""
        column = self.loss.group_dro if self.loss is not None else None
        if column is None:
            return None
        classes = np.asarray(label_space(self.data).classes)
        labels = self.table["label"].to_numpy()[self.indices("train")]
        return pd.Categorical(self._column(column, "loss.group_dro") + "/" + classes[labels])

    def tags(self) -> dict[str, list] | None:
        """What the training loss needs of each training image beyond its class (None: nothing): 'group', its group
        DRO group's index; 'confirmed', whether histopathology confirmed its diagnosis (`loss.confirmed_weight`)."""
        tags = {}
        groups = self.groups()
        if groups is not None:
            tags["group"] = groups.codes.tolist()
        if self.loss is not None and self.loss.confirmed_weight:
            self._column(METHOD_COLUMN, "loss.confirmed_weight")  # the data must say how each diagnosis was made
            tags["confirmed"] = (diagnosis_method(self.table.iloc[self.indices("train")]) == CONFIRMED).tolist()
        return tags or None

    def _effective_counts(self) -> np.ndarray:
        """Training images per class, each counted by its row weight; a class missing from train keeps a count of
        1 (log(0) would make the smoothed loss infinite)."""
        labels = self.table["label"].to_numpy()[self.indices("train")]
        counts = np.bincount(labels, weights=self.row_weights(), minlength=label_space(self.data).num_classes)
        return np.where(counts > 0, counts, 1.0)

    def _sampler_weights(self, epoch: int | None = None) -> np.ndarray:
        """Per-class sampling weight of one training image: count^-p, the count as the row weights make it."""
        return self._effective_counts() ** -self.sampler_power(epoch)

    def sampled_class_prior(self, epoch: int | None = None) -> list[float]:
        """The class distribution of training batches: the train split's counts as the sampler reweights them."""
        drawn = self._effective_counts() * self._sampler_weights(epoch)
        return (drawn / drawn.sum()).tolist()

    def setup(self, stage: str | None = None) -> None:
        self.build()

    def dataset(self, split: str, rows_only: bool = False, tags: dict[str, list] | None = None) -> CachedImages:
        idx = self.indices(split)
        labels = self.table["label"].to_numpy()[idx]
        return CachedImages(self.cache, idx, labels.tolist(), rows_only=rows_only, tags=tags)

    def _fit_dataset(self, split: str) -> CachedImages:
        return self.dataset(split, rows_only=bool(self.data.cache_on_device),
                            tags=self.tags() if split == "train" else None)

    def _device_cache(self, device: torch.device) -> torch.Tensor:
        if self._on_device is None or self._on_device.device != device:
            self._on_device = torch.from_numpy(np.array(self.cache)).to(device)
        return self._on_device

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, *rest = batch  # (images, target) or, with tags, (images, target, tags)
        if self.data.cache_on_device:  # the loader sent cache rows
            images = self._device_cache(images.device)[images].permute(0, 3, 1, 2)
        if self.trainer is not None and self.trainer.training:
            images = augment_batch(images, self.data.augment)
        return (images, *rest)

    def _loader(self, ds, shuffle=False, sampler=None, drop_last=False) -> DataLoader:
        workers = int(self.data.num_workers)
        return DataLoader(ds, batch_size=int(self.data.batch_size), shuffle=shuffle, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=torch.cuda.is_available(), drop_last=drop_last)

    def _eval_loader(self, split: str) -> DataLoader:
        ds = self._fit_dataset(split)
        t = self.trainer
        if t is not None and t.world_size > 1:
            # each process scores its own share, none twice (Lightning's default sampler pads with repeats),
            # and torchmetrics gathers the shares: the metrics equal a one-process evaluation
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
            return self._loader(ds, sampler=UnrepeatedDistributedSampler(ds, num_replicas=t.world_size,
                                                                         rank=t.global_rank, shuffle=False))
        return self._loader(ds)

    def train_dataloader(self) -> DataLoader:
        ds = self._fit_dataset("train")
        ramp = self.data.sampler_start is not None
        rows = self.row_weights()
        if self.sampler_power() == 0 and not ramp and (rows == 1).all():
            return self._loader(ds, shuffle=True, drop_last=True)
        labels = np.asarray(ds.labels)
        gen = torch.Generator().manual_seed(int(self.seed))
        sampler = EpochWeightedSampler(lambda epoch: rows * self._sampler_weights(epoch if ramp else None)[labels],
                                       num_samples=len(ds), generator=gen)
        return self._loader(ds, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")
