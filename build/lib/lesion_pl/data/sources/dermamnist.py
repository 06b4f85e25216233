"""DermaMNIST (MedMNIST v2): `dermamnist[_SIZE].npz` read through the medmnist package, with its
official train/val/test split. Its arrays are written once as PNG files beside the image cache, so
the rest of the pipeline (cache, transforms, runtime) treats them like any other images.

DermaMNIST has no lesion ids, and its official split is by image, not by lesion: the summary says so.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ...errors import LesionPLError
from .common import Data, labelled, map_labels, require_root

SIZES = (28, 64, 128, 224)
# medmnist's INFO["dermamnist"]["label"] names -> our codes (checked against INFO at read time)
NAMES = {"actinic keratoses and intraepithelial carcinoma": "akiec", "basal cell carcinoma": "bcc",
         "benign keratosis-like lesions": "bkl", "dermatofibroma": "df", "melanoma": "mel",
         "melanocytic nevi": "nv", "vascular lesions": "vasc"}
SPLIT_NOTE = "DermaMNIST's official split is by image (it has no lesion ids), so one lesion can be in two splits"


def npz_name(size: int) -> str:
    return "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"


def available_sizes(root: Path) -> list[int]:
    return [s for s in SIZES if (root / npz_name(s)).is_file()]


def read_dermamnist(root: str | Path, options: Data | None = None) -> pd.DataFrame:
    import medmnist
    from PIL import Image

    from ..cache import default_cache_dir

    options = options or {}
    root = require_root(Path(root), "get it with `python cli.py data download dermamnist --to DIR`")
    sizes = available_sizes(root)
    size = options.dermamnist_size or (max(sizes) if sizes else None)
    if size not in sizes:
        found = ", ".join(map(npz_name, sizes)) or "none"
        raise LesionPLError(f"no {npz_name(size or 28)} in {root} (found: {found}); "
                            "get it with `python cli.py data download dermamnist --to DIR`")
    labels = medmnist.INFO["dermamnist"]["label"]
    codes = {int(k): NAMES[v] for k, v in labels.items()}
    npz = root / npz_name(size)
    st = npz.stat()
    out_dir = Path(options.cache_dir or default_cache_dir()) / f"dermamnist_{size}_{st.st_size}_{st.st_mtime_ns}"
    rows = []
    for split in ("train", "val", "test"):
        try:
            ds = medmnist.DermaMNIST(split=split, root=str(root), size=size, download=False, mmap_mode="r")
        except Exception as e:
            raise LesionPLError(f"cannot read {npz} with medmnist: {e}") from None
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(len(ds.imgs)):
            path = folder / f"{split}_{i:05d}.png"
            if not path.is_file():
                tmp = path.with_suffix(".tmp.png")
                Image.fromarray(ds.imgs[i]).save(tmp)
                os.replace(tmp, path)
            image_id = f"dermamnist_{split}_{i:05d}"
            rows.append((image_id, str(path), codes[int(ds.labels[i][0])], image_id, split))
    table = pd.DataFrame(rows, columns=["image_id", "path", "dx", "group", "official_split"])
    table["dx"], dropped = map_labels(table["dx"], str(npz), options)  # into the run's space
    table = labelled(table[table["dx"].notna()].reset_index(drop=True), options)
    table.attrs["dropped"] = dropped
    table.attrs["note"] = SPLIT_NOTE
    return table
