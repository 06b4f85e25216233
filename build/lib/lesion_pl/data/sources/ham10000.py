"""HAM10000: the official metadata CSV plus images found by image_id anywhere under the root
(one folder, or the Dataverse/Kaggle HAM10000_images_part_1/ and _part_2/)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import Data, data_options, finish, index_images, map_labels, read_csv, require_root

METADATA = "HAM10000_metadata.csv"
REQUIRED = ("lesion_id", "image_id", "dx")

HOW_TO_GET = (
    "Get HAM10000 (Tschandl et al., Sci. Data 2018, CC BY-NC) with `python cli.py data download ham10000 --to data` "
    "(about 3 GB from https://doi.org/10.7910/DVN/DBW86T), or put HAM10000_metadata.csv and the image folders "
    "(HAM10000_images_part_1/, _part_2/) in DIR and pass --data-root DIR, or set LESION_PL_DATA to the folder "
    "holding ham10000/ (see data/README.md)"
)


def find_metadata(root: Path) -> Path | None:
    direct = root / METADATA
    if direct.is_file():
        return direct
    nested = sorted(root.glob(f"*/{METADATA}"))
    return nested[0] if nested else None


def read_ham10000(root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    options = data_options(options)
    root = require_root(Path(root), HOW_TO_GET)
    csv = find_metadata(root)
    if csv is None:
        raise LesionPLError(f"no {METADATA} in {root}. {HOW_TO_GET}")
    meta = read_csv(csv, REQUIRED)
    dx, dropped = map_labels(meta["dx"], str(csv), options)
    images = index_images(root)
    extra = meta[[c for c in meta.columns if c not in REQUIRED]].copy()
    if "age" in extra:
        extra["age"] = pd.to_numeric(extra["age"], errors="coerce")
    return finish(meta["image_id"], meta["image_id"].map(images), dx, meta["lesion_id"], extra, str(csv), root, dropped,
                  options)
