"""The image cache: every image decoded and resized once into one uint8 array on disk.

The array (N, SIZE, SIZE, 3) is a .npy file, so no epoch after the first decodes a JPEG. Up to
`in_memory_max_gb` it is read into memory; a larger one (it grows as N x SIZE x SIZE x 3 bytes)
stays memory-mapped on disk, and the OS keeps in RAM what fits. Its name is a hash of the image
files (name, size, mtime), the size and the preprocessing version, so changed data or size gives
a new cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import LesionPLError
from ..io import atomic_path, file_lock
from ..preprocess import ImageReadError, preprocess_file

PREPROCESS_VERSION = 2  # 2: 16-bit images scaled by their bit depth, not their own maximum


def default_cache_dir() -> Path:
    env = os.environ.get("LESION_PL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lesion_pl"


def cache_key(paths: list[str], size: int) -> str:
    h = hashlib.sha1(f"v{PREPROCESS_VERSION}|{size}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _available_memory() -> float:
    """Bytes of memory free now (the OS's figure; inf where it gives none)."""
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def _open(target: Path, in_memory_max_gb: float) -> np.ndarray:
    arr = np.load(target, mmap_mode="r")
    # read into RAM only what fits the limit and the memory free now; else it stays memory-mapped
    fits = arr.nbytes <= in_memory_max_gb * 1e9 and arr.nbytes <= 0.8 * _available_memory()
    return np.array(arr) if fits else arr  # np.array: a copy in RAM


def _require_space(target: Path, nbytes: int, count: int, size: int) -> None:
    """The cache is allocated only where the disk can hold it (a sparse file would fail half-way, or fill it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if nbytes * 1.05 > free:
        raise LesionPLError(f"the image cache of {count} images at {size} px needs {nbytes / 1e9:.1f} GB in "
                            f"{target.parent}, which has {free / 1e9:.1f} GB free: choose a smaller data.image_size, "
                            "or point data.cache_dir (or $LESION_PL_CACHE) at a larger disk")


def cache_file(paths: list[str], size: int, cache_dir: Path | None = None) -> Path:
    """Where the cache of `paths` at `size` px is (or will be)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    return cache_dir / f"images_{size}px_{len(paths)}_{cache_key(paths, size)}.npy"


def seconds_to_cache(paths: list[str], size: int, cache_dir: Path | None = None, sample: int = 8) -> float:
    """About how long `build_cache` would take: 0 where the cache exists, else `sample` images decoded and timed."""
    if cache_file(paths, size, cache_dir).is_file() or not paths:
        return 0.0
    picked = paths[:: max(1, len(paths) // sample)][:sample]
    start = time.perf_counter()
    for path in picked:
        with contextlib.suppress(ImageReadError):  # a bad image is the cache's to report, by name
            preprocess_file(path, size)
    return (time.perf_counter() - start) / len(picked) * len(paths) / (os.cpu_count() or 1)


def build_cache(paths: list[str], size: int, cache_dir: Path | None = None,
                workers: int | None = None, progress: bool = True, in_memory_max_gb: float = 0.0) -> np.ndarray:
    """Return the (N, size, size, 3) uint8 array for `paths`, building it on first use."""
    target = cache_file(paths, size, cache_dir)
    if not target.is_file():
        with file_lock(target.with_name(target.name + ".lock")):  # one builder; the others wait, then read
            if not target.is_file():
                _build(paths, size, target, workers, progress)
    return _open(target, in_memory_max_gb)


def _build(paths: list[str], size: int, target: Path, workers: int | None, progress: bool) -> None:
    from tqdm.auto import tqdm

    errors: list[str] = []
    _require_space(target, len(paths) * size * size * 3, len(paths), size)
    with atomic_path(target) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))

        def fill(i: int) -> None:
            try:
                arr[i] = preprocess_file(paths[i], size)
            except ImageReadError as e:
                errors.append(str(e))

        # Pillow releases the GIL while decoding, so threads use every core.
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            list(tqdm(pool.map(fill, range(len(paths))), total=len(paths), disable=not progress,
                      desc=f"caching images at {size}px", unit="img"))
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise LesionPLError(f"{len(errors)} bad image(s): {sorted(errors)[0]}{more}")
        arr.flush()
