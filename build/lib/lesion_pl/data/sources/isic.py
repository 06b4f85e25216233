"""ISIC challenge ground truth: an `image` column and one 0/1 column per class (2018 Task 3: MEL, NV,
BCC, AKIEC, BKL, DF, VASC; 2019 adds SCC and UNK, and writes AK for AKIEC). Images <image>.jpg
anywhere under the root. A `lesion_id` column (ISIC 2019's metadata has one) groups the splits."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import Data, data_options, find_csv, finish, index_images, locate_csv, map_labels, read_csv, require_root

# column -> class code, where the run's space has that code (AK is akiec in HAM10000's space, ak in isic2019's)
ISIC_CODES = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "AK": "akiec", "BKL": "bkl",
              "DF": "df", "VASC": "vasc", "SCC": "scc", "UNK": "unk"}


def find_ground_truth(root: Path) -> Path | None:
    return find_csv(root, lambda cols: "image" in cols and len(cols & set(ISIC_CODES)) >= 3)


def read_isic_csv(root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    options = data_options(options)
    root = require_root(Path(root))
    csv = locate_csv(root, options, find_ground_truth,
                     "ISIC ground-truth CSV (an 'image' column and class columns MEL, NV, ...)")
    gt = read_csv(csv, ("image",))
    classes = [c for c in gt.columns if c in ISIC_CODES]
    onehot = gt[classes].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    bad = onehot.sum(axis=1) != 1
    if bad.any():
        first = int(bad.argmax())
        raise LesionPLError(f"{csv}: {int(bad.sum())} row(s) without exactly one class set to 1 "
                            f"(first at line {first + 2}, image {gt['image'][first]})")
    raw = pd.Series([classes[i] for i in onehot.argmax(axis=1)], index=gt.index)
    dx, dropped = map_labels(raw, str(csv), options, ISIC_CODES)
    groups = gt["lesion_id"].fillna(gt["image"]) if "lesion_id" in gt else None
    images = index_images(root)
    extra = gt[[c for c in gt.columns if c not in classes and c not in ("image", "lesion_id")]]
    return finish(gt["image"], gt["image"].map(images), dx, groups, extra, str(csv), root, dropped,
                  options)
