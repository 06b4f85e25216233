"""ISIC 2020: `image_name` and a binary `target` (1 = melanoma), optionally `patient_id`.

It has no 7-class labels, so it serves to evaluate a model's melanoma and malignancy outputs
(`test --split all`), not to train one: the table's label is -1 and `melanoma_target` holds 0/1.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import (
    Data,
    data_options,
    find_csv,
    index_images,
    locate_csv,
    missing_files,
    read_csv,
    require_inside,
    require_root,
)

REQUIRED = ("image_name", "target")


def find_isic2020_csv(root: Path) -> Path | None:
    return find_csv(root, lambda cols: set(REQUIRED) <= cols)


def read_isic2020(root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    options = data_options(options)
    root = require_root(Path(root))
    csv = locate_csv(root, options, find_isic2020_csv, "ISIC 2020 CSV (columns image_name, target)")
    df = read_csv(csv, REQUIRED)
    target = pd.to_numeric(df["target"], errors="coerce")
    bad = ~target.isin([0, 1])
    if bad.any():
        raise LesionPLError(f"{csv}: 'target' must be 0 or 1; {int(bad.sum())} row(s) are not "
                            f"(first at line {int(df.index[bad][0]) + 2}: {df['target'][bad].iloc[0]!r})")
    paths = df["image_name"].map(index_images(root))
    missing = missing_files(df["image_name"], paths, str(csv), root, bool(options.skip_bad_images))
    df, target, paths = df[paths.notna()], target[paths.notna()], paths[paths.notna()]
    require_inside(paths, root)
    groups = df["patient_id"].fillna(df["image_name"]) if "patient_id" in df else df["image_name"]
    table = pd.DataFrame({"image_id": df["image_name"], "path": paths.map(lambda p: str(p.resolve())),
                          "dx": target.map({1: "melanoma", 0: "benign"}), "group": groups, "label": -1,
                          "melanoma_target": target.astype(int)})
    for col in df.columns:
        if col not in REQUIRED and col not in table:
            table[col] = df[col]
    table.attrs["dropped"] = {}
    table.attrs["missing"] = missing
    return table
