"""Readers: one per on-disk dataset format, each returning the same table.

Columns: image_id, path (absolute), dx (class code), label (class index), group (lesion or patient
id: one group never crosses splits), plus whatever metadata the source has. Rows left out on the
user's request (data.drop_labels) are counted in table.attrs["dropped"].
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...config import Columns, Data
from ...errors import LesionPLError
from .common import IMAGE_SUFFIXES, data_options, index_images, require_root
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


def read_source(fmt: str, root: str | Path, options: Data | dict | None = None) -> pd.DataFrame:
    """One source read into the run's table; `options`: the config's data section (or a dict of its keys)."""
    options = data_options(options)
    if fmt == "auto":
        fmt = detect_format(Path(root))
    if fmt not in READERS:
        raise LesionPLError(f"unknown data format '{fmt}' (known: auto, {', '.join(READERS)})")
    return keep_rows(READERS[fmt](root, options), options.where, Path(root))


def source_root(root: str | Path) -> Path:
    """Another source's root: as given where absolute, else under the data folder ($LESION_PL_DATA, else data/)."""
    from ...config import default_data_root

    path = Path(root).expanduser()
    return path if path.is_absolute() else default_data_root().parent / path


def read_sources(data: Data, root: Path) -> pd.DataFrame:
    """The run's data as one table: its own source (data.root, data.format, ...) and each of `data.sources`, read
    with its own format, columns, label map and rows, in the run's label space. Column `source` names each row's
    archive (the run's own: its root's folder name); another source's groups are prefixed with its name, so that
    two archives' lesions never merge. A source that cannot be read is one error naming it, before anything is
    written; an image id in two sources too. attrs["sources"]: per source, its root, format and images."""
    table = read_source(data.format, root, data)
    if not data.sources:
        return table
    own = Path(root).name or "data"
    parts = [table.assign(source=own)]
    info = {own: {"root": str(root), "format": data.format, "images": len(table)}}
    attrs = {"dropped": dict(table.attrs.get("dropped", {})), "missing": dict(table.attrs.get("missing", {})),
             "notes": [f"{own}: {table.attrs['note']}"] if table.attrs.get("note") else []}
    for i, src in enumerate(data.sources):
        name, where = src.name, source_root(src.root)
        if name == own:
            raise LesionPLError(f"data.sources[{i}] is named '{name}', as the run's own data: name it otherwise")
        # what a source does not say is the default's, not the run's own; the label space and skipping are the run's
        options = Data(classes=data.classes, skip_bad_images=data.skip_bad_images, format=src.format, csv=src.csv,
                       columns=src.columns or Columns(), label_map=src.label_map, drop_labels=src.drop_labels,
                       where=src.where, image_size=data.image_size, cache_dir=data.cache_dir)
        try:
            part = read_source(options.format, where, options)
        except LesionPLError as e:
            raise LesionPLError(f"data.sources[{i}] ({name}, {where}): {e}") from None
        parts.append(part.assign(group=name + "/" + part["group"].astype(str), source=name))
        info[name] = {"root": str(where), "format": options.format, "images": len(part),
                      "rows_kept": part.attrs.get("where")}
        attrs["dropped"].update({f"{name}: {label}": n for label, n in part.attrs.get("dropped", {}).items()})
        attrs["missing"].update(part.attrs.get("missing", {}))
        if part.attrs.get("note"):
            attrs["notes"].append(f"{name}: {part.attrs['note']}")
    out = pd.concat(parts, ignore_index=True)
    twice = out["image_id"][out["image_id"].duplicated()]
    if len(twice):
        raise LesionPLError(f"{twice.nunique()} image id(s) are in two of the run's sources, e.g. "
                            f"{', '.join(twice.unique()[:3])}: an image may be in one source only")
    out.attrs = {"dropped": attrs["dropped"], "missing": attrs["missing"], "where": table.attrs.get("where"),
                 "sources": info, **({"note": "; ".join(attrs["notes"])} if attrs["notes"] else {})}
    return out


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


__all__ = ["READERS", "detect_format", "index_images", "read_source", "read_sources", "source_root", "read_ham10000",
           "read_isic_csv", "read_generic_csv", "read_folder", "read_isic2020", "read_dermamnist",
           "HOW_TO_GET_HAM10000"]
