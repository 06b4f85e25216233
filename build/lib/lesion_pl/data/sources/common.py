"""What every reader shares: finding images under a root, mapping labels into the label space,
and the checks that make a bad row one clear error."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...classes import LabelSpace, parse_label_space
from ...config import Data, config_from
from ...errors import LesionPLError
from ...preprocess import SUFFIXES

IMAGE_SUFFIXES = SUFFIXES  # the formats lesion-pl decodes (preprocess.FORMATS), one list everywhere
UNGROUPED = ("the source names no lesion or patient: the split is by image, so two images of one lesion may land "
             "in two splits and the test figures may be optimistic (name a group column: data.columns.group)")


def index_images(root: Path) -> dict[str, Path]:
    """image stem -> path, for every image file anywhere under `root` (first in sorted order wins)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in found:
            found[path.stem] = path
    return found


def data_options(options: Data | dict | None) -> Data:
    """What a reader reads by: the config's data section, or a dict of its keys (validated; keys it lacks take
    their defaults), e.g. read_source("csv", root, {"columns": {"label": "dx"}})."""
    if isinstance(options, Data):
        return options
    values = {k: str(v) if isinstance(v, Path) else v for k, v in (options or {}).items()}
    return config_from({"data": values}).data


def find_csv(root: Path, fits) -> Path | None:
    """The first CSV in `root` or one folder down whose set of column names `fits(columns)`."""
    for csv in sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv")):
        try:
            columns = set(pd.read_csv(csv, nrows=0).columns)
        except Exception:
            continue
        if fits(columns):
            return csv
    return None


def locate_csv(root: Path, options: Data, finder, what: str) -> Path:
    """The CSV the user named (data.csv), else the one `finder` recognises in `root`; an error naming
    what was looked for otherwise."""
    csv = Path(options.csv) if options.csv else finder(root)
    if csv is None:
        raise LesionPLError(f"no {what} in {root}; name it with --set data.csv=FILE")
    return csv


def require_found(images: pd.Series, paths: pd.Series, where: str, root: Path) -> None:
    """Every listed image has a file: else one error naming how many are missing and the first few."""
    if paths.isna().any():
        absent = images[paths.isna()].tolist()
        raise LesionPLError(f"{len(absent)} image(s) listed in {where} not found under {root}: "
                            f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")


def require_root(root: Path, how_to_get: str = "") -> Path:
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise LesionPLError(f"data root {root} is a file, not a folder of images")
    if not root.is_dir():
        raise LesionPLError(f"data root {root} does not exist. {how_to_get}".strip())
    return root


def read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    import io

    from ...io import read_utf8

    try:
        text = read_utf8(path)
    except OSError as e:
        raise LesionPLError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str)
    except Exception as e:
        raise LesionPLError(f"cannot read {path}: {e}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LesionPLError(f"{path} is missing column(s) {', '.join(missing)} "
                            f"(has: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise LesionPLError(f"{path} lists no images")
    for col in required:
        blank = df[col].isna()
        if blank.any():
            raise LesionPLError(f"{path}: {int(blank.sum())} row(s) with an empty '{col}' "
                                f"(lines {(df.index[blank][:5] + 2).tolist()})")
    return df


def space_of(options: Data) -> LabelSpace:
    """The label space a reader maps into: the run's `data.classes` (HAM10000's seven by default)."""
    return parse_label_space(options.classes)


def map_labels(raw: pd.Series, where: str, options: Data, source_map: dict | None = None) -> tuple[pd.Series, dict]:
    """Source labels -> the run's class codes (case-insensitive): `data.label_map` first, then the reader's
    `source_map` and the space's own (HAM10000's codes into a coarser space). Labels in `data.drop_labels` are
    removed (returned as {label: count}); any other label outside the space is an error naming it."""
    space = space_of(options)
    codes = space.classes
    lmap = {str(k).strip().lower(): str(v).strip().lower() for k, v in (options.label_map or {}).items()}
    for k, v in lmap.items():
        if v not in codes:
            raise LesionPLError(f"data.label_map maps '{k}' to '{v}', which is not a class ({', '.join(codes)})")
    # a reader's or the space's mapping applies only where it lands in the space
    lmap = {**{k.lower(): v for k, v in {**(source_map or {}), **space.source_map}.items() if v in codes}, **lmap}
    norm = raw.astype(str).str.strip().str.lower()
    dropping = {str(d).strip().lower() for d in options.drop_labels or ()}
    dropped = norm.isin(dropping) & ~norm.isin(lmap)
    dx = norm.map(lambda v: lmap.get(v, v))
    unknown = sorted(set(dx[~dropped]) - set(codes))
    if unknown:
        bad = dx.isin(unknown) & ~dropped
        first = int(raw.index[bad][0]) + 2  # header line, 1-based
        raise LesionPLError(f"{where}: unknown label(s) {', '.join(map(repr, unknown))} in {int(bad.sum())} row(s) "
                            f"(first at line {first}); known: {', '.join(codes)}; map them with "
                            "--set data.label_map={LABEL: code} or leave them out with --set data.drop_labels=[LABEL]")
    counts = raw[dropped].astype(str).value_counts().to_dict()
    return dx.where(~dropped), counts


def labelled(table: pd.DataFrame, options: Data) -> pd.DataFrame:
    """`table` with its class index (`label`) in the run's space."""
    table["label"] = table["dx"].map(space_of(options).index).astype(int)
    return table


def inside_root(root: Path, rel: str, where: str) -> Path:
    """A path from a data file, resolved under `root`; one that leaves the root is refused."""
    path = (root / rel).resolve()
    if root.resolve() not in path.parents:
        raise LesionPLError(f"{where}: image path '{rel}' points outside the data root {root}")
    return path


def require_inside(paths: pd.Series, root: Path) -> None:
    """Every image file, symbolic links followed, lies inside the data root: one rule for every reader, so
    a link in the data never makes lesion-pl read (or print the contents of) a file elsewhere."""
    inside = Path(root).resolve()
    outside = [p for p in paths if inside not in Path(p).resolve().parents]
    if outside:
        raise LesionPLError(f"{len(outside)} image(s) under {root} are symbolic links to files outside it, e.g. "
                            f"{outside[0]}: refused (copy the files into the data root)")


def missing_files(images: pd.Series, paths: pd.Series, where: str, root: Path, skip: bool) -> dict[str, str]:
    """Listed images with no file: an error naming them, or with `skip` (--skip-bad-images) {image: reason}
    for the caller to leave out and list, as for the images that cannot be read."""
    if not skip:
        require_found(images, paths, where, root)
        return {}
    return {str(i): f"image not found: {i} is listed in {where} but is not under {root}" for i in images[paths.isna()]}


def finish(images: pd.Series, paths: pd.Series, dx: pd.Series, groups: pd.Series | None, meta: pd.DataFrame | None,
           where: str, root: Path, dropped: dict, options: Data) -> pd.DataFrame:
    """The reader's table, with missing files reported together (or, with data.skip_bad_images, left out and listed in
    attrs["missing"]) and dropped rows recorded in attrs. `groups` None: each image its own group, and
    attrs["note"] says the split may leak."""
    missing = missing_files(images[dx.notna()], paths[dx.notna()], where, root, bool(options.skip_bad_images))
    keep = dx.notna() & paths.notna()
    require_inside(paths[keep], root)
    dup = images[keep].duplicated()
    if dup.any():
        raise LesionPLError(f"{where}: image listed twice: {', '.join(images[keep][dup][:5])}")
    table = pd.DataFrame({"image_id": images, "path": paths.map(lambda p: str(Path(p).resolve()) if pd.notna(p) else p),
                          "dx": dx, "group": images if groups is None else groups})
    if meta is not None:
        for col in meta.columns:
            table[col] = meta[col]
    table = table[keep].reset_index(drop=True)
    table = labelled(table, options)
    table.attrs["dropped"] = dropped
    table.attrs["missing"] = missing
    if groups is None:
        table.attrs["note"] = UNGROUPED
    return table
