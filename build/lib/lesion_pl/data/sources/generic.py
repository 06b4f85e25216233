"""Formats of the user's own making: `csv` (an image-path column, a label column, an optional group
column) and `folder` (one sub-folder per class, the ImageFolder layout)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import (
    IMAGE_SUFFIXES,
    Data,
    data_options,
    finish,
    inside_root,
    locate_csv,
    map_labels,
    read_csv,
    require_root,
)


def _only_csv(root: Path) -> Path | None:
    found = sorted(root.glob("*.csv"))
    return found[0] if len(found) == 1 else None


def read_generic_csv(root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    options = data_options(options)
    root = require_root(Path(root))
    image_col, label_col, group_col = options.columns.image, options.columns.label, options.columns.group
    csv = locate_csv(root, options, _only_csv, "single CSV file")
    df = read_csv(csv, (image_col, label_col) + ((group_col,) if group_col else ()))
    paths = pd.Series([inside_root(root, rel, str(csv)) for rel in df[image_col]], index=df.index)
    paths = paths.where(paths.map(Path.is_file))
    dx, dropped = map_labels(df[label_col], str(csv), options)
    images = df[image_col].map(lambda rel: Path(rel).stem)
    groups = df[group_col] if group_col else None
    extra = df[[col for col in df.columns if col not in (image_col, label_col, group_col)]]
    return finish(images, paths.astype(object).where(paths.notna()), dx, groups, extra, str(csv), root, dropped,
                  options)


def read_folder(root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    options = data_options(options)
    root = require_root(Path(root))
    rows = [(p, sub.name) for sub in sorted(root.iterdir()) if sub.is_dir()
            for p in sorted(sub.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise LesionPLError(f"{root} has no class sub-folders with images (expected ROOT/<class>/<image>.jpg)")
    paths = pd.Series([str(p) for p, _ in rows])
    raw = pd.Series([label for _, label in rows])
    dx, dropped = map_labels(raw, f"the sub-folders of {root}", options)
    images = pd.Series([str(p.relative_to(root).with_suffix("")) for p, _ in rows])
    return finish(images, paths, dx, None, None, str(root), root, dropped,
                  options)
