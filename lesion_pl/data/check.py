"""Find the images that cannot be decoded: every file opened in parallel, each failure with its reason.

The result for a list of files is remembered beside the image cache (keyed like the cache), so a
run with --skip-bad-images decodes everything only the first time.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..io import atomic_write_json
from ..preprocess import ImageReadError, image_warning, load_rgb
from .cache import cache_key, default_cache_dir


def _check(path: str) -> tuple[str | None, str | None]:
    """(why it cannot be read, why it should not be trusted), each None where it does not apply."""
    try:
        img = load_rgb(path)
    except ImageReadError as e:
        return str(e), None
    return None, image_warning(img)


def check_images(paths: list[str], workers: int | None = None, progress: bool = True):
    """({path: reason} for the files that cannot be read as images, {path: warning} for those that can but are
    tiny or blank)."""
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(tqdm(pool.map(_check, paths), total=len(paths), disable=not progress,
                            desc="checking images", unit="img"))
    bad = {p: r for p, (r, _) in zip(paths, results, strict=True) if r is not None}
    return bad, {p: w for p, (_, w) in zip(paths, results, strict=True) if w is not None}


def find_bad_images(paths: list[str], workers: int | None = None, progress: bool = True) -> dict[str, str]:
    """{path: reason} for every file in `paths` that cannot be read as an image."""
    return check_images(paths, workers, progress)[0]


def bad_images_cached(paths: list[str], cache_dir: Path | None = None, progress: bool = True) -> dict[str, str]:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    record = cache_dir / f"bad_images_{len(paths)}_{cache_key(paths, 0)}.json"
    if record.is_file():
        return json.loads(record.read_text())
    bad = find_bad_images(paths, progress=progress)
    atomic_write_json(record, bad)
    return bad
