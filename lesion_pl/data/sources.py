"""Readers: one per on-disk dataset format, each returning the same table.

Columns of the table: image_id, path (absolute), dx (class code), label (class index),
group (lesion id: images of one lesion never cross splits), plus any metadata the source has.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..classes import CLASS_TO_INDEX, CLASSES
from ..errors import LesionPLError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HAM_METADATA = "HAM10000_metadata.csv"
HAM_REQUIRED = ("lesion_id", "image_id", "dx")

HOW_TO_GET_HAM10000 = (
    "HAM10000 (Tschandl et al., Sci. Data 2018, CC BY-NC) is at https://doi.org/10.7910/DVN/DBW86T: "
    "put HAM10000_metadata.csv and the image folders (HAM10000_images_part_1/, _part_2/) in DIR and "
    "pass --data-root DIR, or set LESION_PL_DATA to the folder holding ham10000/ (see data/README.md)"
)


def index_images(root: Path) -> dict[str, Path]:
    """image stem -> path, for every image file anywhere under `root` (first in sorted order wins)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in found:
            found[path.stem] = path
    return found


def _find_metadata(root: Path) -> Path:
    direct = root / HAM_METADATA
    if direct.is_file():
        return direct
    nested = sorted(root.glob(f"*/{HAM_METADATA}"))
    if nested:
        return nested[0]
    raise LesionPLError(f"no {HAM_METADATA} in {root}. {HOW_TO_GET_HAM10000}")


def read_ham10000(root: str | Path) -> pd.DataFrame:
    """HAM10000: the official metadata CSV plus images found by image_id anywhere under `root`
    (one folder, or Kaggle's/Dataverse's HAM10000_images_part_1/ and _part_2/)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LesionPLError(f"data root {root} does not exist. {HOW_TO_GET_HAM10000}")
    csv = _find_metadata(root)
    try:
        meta = pd.read_csv(csv, dtype={"lesion_id": str, "image_id": str, "dx": str})
    except Exception as e:
        raise LesionPLError(f"cannot read {csv}: {e}") from None
    missing_cols = [c for c in HAM_REQUIRED if c not in meta.columns]
    if missing_cols:
        raise LesionPLError(f"{csv} is missing column(s) {', '.join(missing_cols)} "
                            f"(has: {', '.join(map(str, meta.columns))})")
    if meta.empty:
        raise LesionPLError(f"{csv} lists no images")
    for col in HAM_REQUIRED:
        blank = meta[col].isna()
        if blank.any():
            rows = (meta.index[blank][:5] + 2).tolist()  # +2: header line, 1-based
            raise LesionPLError(f"{csv}: {int(blank.sum())} row(s) with an empty '{col}' (lines {rows})")
    dup = meta["image_id"].duplicated()
    if dup.any():
        raise LesionPLError(f"{csv}: image_id listed twice: {', '.join(meta['image_id'][dup][:5])}")

    dx = meta["dx"].str.strip().str.lower()
    unknown = sorted(set(dx) - set(CLASSES))
    if unknown:
        bad = dx.isin(unknown)
        raise LesionPLError(f"{csv}: unknown dx label(s) {', '.join(map(repr, unknown))} in "
                            f"{int(bad.sum())} row(s) (first at line {int(meta.index[bad][0]) + 2}); "
                            f"known: {', '.join(CLASSES)}")

    images = index_images(root)
    paths = meta["image_id"].map(images)
    if paths.isna().any():
        absent = meta["image_id"][paths.isna()].tolist()
        raise LesionPLError(f"{len(absent)} image(s) listed in {csv} not found under {root}: "
                            f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")

    table = pd.DataFrame({
        "image_id": meta["image_id"],
        "path": paths.map(lambda p: str(p.resolve())),
        "dx": dx,
        "label": dx.map(CLASS_TO_INDEX).astype(int),
        "group": meta["lesion_id"],
    })
    for col in meta.columns:
        if col not in HAM_REQUIRED:
            table[col] = meta[col]
    return table.reset_index(drop=True)


READERS = {"ham10000": read_ham10000}


def read_source(fmt: str, root: str | Path) -> pd.DataFrame:
    if fmt not in READERS:
        raise LesionPLError(f"unknown data format '{fmt}' (known: {', '.join(READERS)})")
    return READERS[fmt](root)
