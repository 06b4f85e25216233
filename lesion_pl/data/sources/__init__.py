"""Readers: one per on-disk dataset format, each returning the same table.

Columns: image_id, path (absolute), dx (class code), label (class index), group (lesion or patient
id: one group never crosses splits), plus whatever metadata the source has. Rows left out on the
user's request (data.drop_labels) are counted in table.attrs["dropped"].
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import IMAGE_SUFFIXES, index_images, require_root
from .dermamnist import available_sizes, read_dermamnist
from .generic import read_folder, read_generic_csv
from .ham10000 import HOW_TO_GET as HOW_TO_GET_HAM10000
from .ham10000 import find_metadata, read_ham10000
from .isic import find_ground_truth, read_isic_csv
from .isic2020 import find_isic2020_csv, read_isic2020

READERS = {"ham10000": read_ham10000, "isic-csv": read_isic_csv, "isic2020": read_isic2020, "csv": read_generic_csv,
           "folder": read_folder, "dermamnist": read_dermamnist}


def detect_format(root: Path) -> str:
    """The format of `root` where only one fits; an error that lists the formats otherwise."""
    root = require_root(Path(root), HOW_TO_GET_HAM10000)
    if find_metadata(root):
        return "ham10000"
    if available_sizes(root):
        return "dermamnist"
    if find_ground_truth(root):
        return "isic-csv"
    if find_isic2020_csv(root):
        return "isic2020"
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if subdirs and not list(root.glob("*.csv")) and all(
            any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir()) for d in subdirs):
        return "folder"
    raise LesionPLError(f"cannot tell the format of {root}; pass --format ({', '.join(READERS)})")


def read_source(fmt: str, root: str | Path, options: dict | None = None) -> pd.DataFrame:
    if fmt == "auto":
        fmt = detect_format(Path(root))
    if fmt not in READERS:
        raise LesionPLError(f"unknown data format '{fmt}' (known: auto, {', '.join(READERS)})")
    return keep_rows(READERS[fmt](root, options), (options or {}).get("where") or {}, Path(root))


def keep_rows(table: pd.DataFrame, where: dict, root: Path) -> pd.DataFrame:
    """The rows whose column holds one of the values `data.where` names for it (compared as text); how many were
    left out is kept in attrs["where"], so that nothing is dropped without a word."""
    if not where:
        return table
    keep = pd.Series(True, index=table.index)
    for column, values in where.items():
        if column not in table:
            raise LesionPLError(f"data.where names column '{column}', which the data in {root} does not have "
                                f"(it has: {', '.join(c for c in table.columns if c not in ('path', 'label'))})")
        allowed = {str(v) for v in (values if isinstance(values, list) else [values])}
        keep &= table[column].astype(str).isin(allowed)
    if not keep.any():
        raise LesionPLError(f"data.where {where} keeps none of the {len(table)} images in {root}")
    out = table[keep].reset_index(drop=True)
    out.attrs = {**table.attrs, "where": {"rule": where, "kept": int(keep.sum()), "left_out": int((~keep).sum())}}
    return out


__all__ = ["READERS", "detect_format", "index_images", "read_source", "read_ham10000", "read_isic_csv",
           "read_generic_csv", "read_folder", "read_isic2020", "read_dermamnist", "HOW_TO_GET_HAM10000"]
