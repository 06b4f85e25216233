"""Train/val/test splits grouped by lesion, stratified by class, seeded, and kept as a file.

A split is made once (scikit-learn's StratifiedGroupKFold over 20 folds, folds handed out to the
splits by their fractions), written to splits.csv, and read back by every later command. The folds
take scikit-learn about 30 s for HAM10000's 7,470 lesions, so they are also kept in the image cache
folder, keyed by the labels, groups and seed: a new run on the same data starts at once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Data, Splits
from ..errors import LesionPLError
from ..io import atomic_path, file_lock

SPLITS = ("train", "val", "test")
N_FOLDS = 20  # fractions are rounded to multiples of 1/20 = 5%


def lesion_folds(table: pd.DataFrame, seed: int, cache_dir: Path | None = None) -> np.ndarray:
    """The fold (0..N_FOLDS-1) of each row: StratifiedGroupKFold by label, grouped by group."""
    if not cache_dir:
        return _sgkf_folds(table, seed)
    key = hashlib.sha1(f"{N_FOLDS}|{seed}|".encode())
    key.update("|".join(map(str, table["group"])).encode())
    key.update(np.asarray(table["label"], dtype=np.int64).tobytes())
    stored = Path(cache_dir) / f"folds_{len(table)}_{key.hexdigest()[:16]}.npy"
    if not stored.is_file():
        with file_lock(stored.with_name(stored.name + ".lock")):  # DDP tasks started together: one computes
            if not stored.is_file():
                fold_of = _sgkf_folds(table, seed)
                with atomic_path(stored) as tmp, open(tmp, "wb") as f:
                    np.save(f, fold_of)
    return np.load(stored)


def _sgkf_folds(table: pd.DataFrame, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedGroupKFold

    if table["group"].nunique() < N_FOLDS:
        raise LesionPLError(f"need at least {N_FOLDS} lesions to split, got {table['group'].nunique()}")
    sgkf = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    fold_of = np.empty(len(table), dtype=int)
    try:
        for k, (_, idx) in enumerate(sgkf.split(np.zeros(len(table)), table["label"], table["group"])):
            fold_of[idx] = k
    except ValueError as e:
        raise LesionPLError(f"cannot split {len(table)} images into {N_FOLDS} stratified lesion folds ({e}); "
                            "use more images or give a splits file (data.splits_file)") from None
    return fold_of


def split_seed(data: Data, seed: int) -> int:
    """The split's seed: data.splits.seed, else the run's."""
    return int(seed if data.splits.seed is None else data.splits.seed)


def make_splits(table: pd.DataFrame, fractions: Splits | dict, seed: int, cache_dir: Path | None = None) -> pd.Series:
    """A 'train'/'val'/'test' label per row of `table`; all images of one group share a split. A table of several
    sources (column `source`) is split source by source, each by its own groups and fractions."""
    if "source" in table and table["source"].nunique() > 1:
        return pd.concat([make_splits(rows.drop(columns="source"), fractions, seed, cache_dir)
                          for _, rows in table.groupby("source", sort=False)]).reindex(table.index)
    given = fractions.model_dump() if isinstance(fractions, Splits) else fractions
    fr = {s: float(given.get(s, 0.0)) for s in SPLITS}
    if any(v < 0 for v in fr.values()) or abs(sum(fr.values()) - 1.0) > 1e-6:
        raise LesionPLError(f"split fractions must be >= 0 and sum to 1, got {fr}")
    folds = {s: round(fr[s] * N_FOLDS) for s in SPLITS}
    folds["train"] = N_FOLDS - folds["val"] - folds["test"]
    fold_of = lesion_folds(table, seed, cache_dir)
    order = np.random.default_rng(seed).permutation(N_FOLDS)  # which folds go where, seeded
    name_of_fold = {}
    start = 0
    for s in ("test", "val", "train"):
        for f in order[start:start + folds[s]]:
            name_of_fold[int(f)] = s
        start += folds[s]
    return pd.Series([name_of_fold[f] for f in fold_of], index=table.index, name="split")


def check_no_leak(table: pd.DataFrame, split: pd.Series) -> None:
    per_group = split.groupby(table["group"]).nunique()
    leaked = per_group[per_group > 1]
    if len(leaked):
        raise LesionPLError(f"{len(leaked)} lesion(s) are in more than one split, e.g. {leaked.index[0]}")


def write_splits(table: pd.DataFrame, split: pd.Series, path: Path) -> None:
    out = pd.DataFrame({"image_id": table["image_id"], "group": table["group"],
                        "dx": table["dx"], "split": split})
    if "source" in table:  # a run of several sources: which archive each row came from
        out.insert(3, "source", table["source"])
    with atomic_path(Path(path)) as tmp:
        out.to_csv(tmp, index=False)


def read_splits(table: pd.DataFrame, path: Path) -> pd.Series:
    """The split of every row of `table`, read from a splits.csv; every image must be listed."""
    path = Path(path)
    try:
        saved = pd.read_csv(path, dtype=str)
    except Exception as e:
        raise LesionPLError(f"cannot read splits file {path}: {e}") from None
    for col in ("image_id", "split"):
        if col not in saved.columns:
            raise LesionPLError(f"splits file {path} is missing column '{col}'")
    bad = sorted(set(saved["split"]) - set(SPLITS))
    if bad:
        raise LesionPLError(f"splits file {path}: unknown split name(s) {bad} (known: {', '.join(SPLITS)})")
    split = table["image_id"].map(saved.set_index("image_id")["split"])
    if split.isna().any():
        missing = table["image_id"][split.isna()]
        raise LesionPLError(f"{len(missing)} image(s) of the data are not in splits file {path}, "
                            f"e.g. {', '.join(missing[:3])}")
    split.name = "split"
    return split


def summarize(table: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """Images per class and split, plus image and lesion totals, as a printable table (the 'all'
    column alone for data evaluated whole, as one split)."""
    columns = list(SPLITS) if split.isin(SPLITS).any() else []
    counts = pd.crosstab(table["dx"], split).reindex(columns=columns, fill_value=0)
    counts["all"] = table["dx"].value_counts()
    counts.loc["images"] = counts.sum()
    counts.loc["lesions"] = [table["group"][split == s].nunique() for s in columns] + [table["group"].nunique()]
    if "source" in table and table["source"].nunique() > 1:  # a run of several sources: images per source
        for name in table["source"].unique():
            mine = table["source"] == name
            counts.loc[f"images: {name}"] = [int((mine & (split == s)).sum()) for s in columns] + [int(mine.sum())]
    return counts


def split_summary(data: Data, seed: int, splits_file: Path | None = None) -> dict:
    """`data summary`: the config's data read and split (from `splits_file`, the source's official split, or made
    here as fit would), its class counts per split, what was left out, and the leak check (raises on a leak)."""
    from ..config import resolve_data_root
    from .cache import default_cache_dir
    from .sources import read_sources

    root = resolve_data_root(data)
    table = read_sources(data, root)
    if splits_file:
        split, how = read_splits(table, splits_file), f"split from {splits_file}"
    elif "official_split" in table:
        split, how = table["official_split"].rename("split"), "the source's official split"
    else:
        seed = split_seed(data, seed)
        split = make_splits(table, data.splits, seed, data.cache_dir or default_cache_dir())
        how = f"split seed {seed}"
    note = table.attrs.get("note")
    if note is None:
        check_no_leak(table, split)
    return {"root": root, "images": len(table), "lesions": int(table["group"].nunique()), "how": how,
            "table": summarize(table, split), "dropped": dict(table.attrs.get("dropped", {})),
            "where": table.attrs.get("where"), "note": note}
