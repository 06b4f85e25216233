"""`data download`: fetch public datasets from their official homes, with a progress bar, checksum
verification and resumption of a partial download, laid out so that `fit` finds them.

- ham10000: the Harvard Dataverse record doi:10.7910/DVN/DBW86T. The file list, ids and MD5
  checksums come from Dataverse's dataset API; the image zips are unpacked into ham10000/.
- dermamnist: MedMNIST's Zenodo files, URLs and MD5s from the medmnist package's INFO table.

`base_url` replaces the scheme and host of every URL (a mirror, or a local server in the tests).
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from ..errors import LesionPLError

DATAVERSE = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
HAM10000_FILES = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", "HAM10000_metadata")
TIMEOUT = 20
RETRIES = 3
CHUNK = 1 << 16


def rebase(url: str, base_url: str | None) -> str:
    if not base_url:
        return url
    parts = urllib.parse.urlsplit(url)
    return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _open(url: str, start: int = 0):
    headers = {"User-Agent": "lesion-pl", **({"Range": f"bytes={start}-"} if start else {})}
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        raise LesionPLError(f"{url} answered HTTP {e.code} {e.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
        host = urllib.parse.urlsplit(url).netloc
        raise ConnectionError(f"cannot reach {host}: {getattr(e, 'reason', e)}") from None


def file_hash(path: Path, algorithm: str):
    """The hashlib object of a file's bytes, read in blocks (downloads are GBs)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def md5_of(path: Path) -> str:
    return file_hash(path, "md5").hexdigest()


def fetch(url: str, dest: Path, md5: str | None, progress: bool = True, manual_hint: str = "") -> Path:
    """Download `url` to `dest` (via dest.part, resumed where a previous try stopped), check its MD5."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5_of(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(RETRIES + 1):
        have = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, have)
        except ConnectionError as e:
            if attempt == 0:  # nothing answers at all: offline, fail fast
                raise LesionPLError(f"{e}. Offline? Download {url} by hand and put it at {dest}. "
                                    f"{manual_hint}".strip()) from None
            continue
        with resp:
            if have and resp.status != 206:  # the server ignored the range: start again
                have = 0
            total = resp.length + have if resp.length is not None else None
            try:
                with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                                   desc=dest.name, disable=not progress) as bar:
                    for block in iter(functools.partial(resp.read, CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
            except (TimeoutError, ConnectionError, OSError, http.client.IncompleteRead):
                continue  # resume from what arrived
        if total is not None and part.stat().st_size < total:
            continue
        break
    else:
        raise LesionPLError(f"download of {url} kept breaking off after {RETRIES} retries; run the command again "
                            f"to resume ({part} is kept)")
    if md5 is not None:
        got = md5_of(part)
        if got != md5:
            part.unlink()
            raise LesionPLError(f"checksum mismatch for {dest.name} from {url}: expected MD5 {md5}, got {got}; "
                                "the file was removed, run the command again")
    os.replace(part, dest)
    return dest


def _dataverse_files(base_url: str | None) -> list[dict]:
    url = rebase(f"{DATAVERSE}/api/datasets/:persistentId/?persistentId={HAM10000_DOI}", base_url)
    try:
        with _open(url) as resp:
            listing = json.load(resp)
    except ConnectionError as e:
        raise LesionPLError(f"{e}. Offline? Get HAM10000 by hand from https://doi.org/10.7910/DVN/DBW86T "
                            "(see data/README.md)") from None
    return [f["dataFile"] for f in listing["data"]["latestVersion"]["files"]]


def download_ham10000(to: Path, base_url: str | None = None, progress: bool = True) -> Path:
    target = Path(to) / "ham10000"
    wanted = {}
    for f in _dataverse_files(base_url):
        name = f.get("originalFileName") or f["filename"]
        for want in HAM10000_FILES:
            if name.startswith(want) or f["filename"].startswith(want):
                wanted[want] = f
    missing = [w for w in HAM10000_FILES if w not in wanted]
    if missing:
        raise LesionPLError(f"the Dataverse record {HAM10000_DOI} no longer lists {', '.join(missing)}")
    for want, f in wanted.items():
        tabular = "originalFileFormat" in f  # Dataverse serves ingested CSVs as .tab unless asked for the original
        url = rebase(f"{DATAVERSE}/api/access/datafile/{f['id']}" + ("?format=original" if tabular else ""), base_url)
        md5 = f.get("md5") or (f.get("checksum") or {}).get("value")
        dest = target / ("HAM10000_metadata.csv" if want == "HAM10000_metadata" else want)
        fetch(url, dest, md5, progress)
        if dest.suffix == ".zip":
            folder = target / dest.stem
            if not folder.is_dir():
                with zipfile.ZipFile(dest) as z:
                    for member in z.namelist():  # refuse members that would land outside the folder
                        if not (folder / member).resolve().is_relative_to(folder.resolve()):
                            raise LesionPLError(f"{dest} holds a path outside its folder: {member}")
                    z.extractall(folder.with_name(folder.name + ".part"))
                os.replace(folder.with_name(folder.name + ".part"), folder)
    return target


def download_dermamnist(to: Path, size: int = 28, base_url: str | None = None, progress: bool = True) -> Path:
    import medmnist

    info = medmnist.INFO["dermamnist"]
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in info:
        raise LesionPLError(f"DermaMNIST comes in sizes 28, 64, 128 and 224, not {size}")
    target = Path(to) / "dermamnist"
    fetch(rebase(info[f"url{suffix}"], base_url), target / f"dermamnist{suffix}.npz", info[f"MD5{suffix}"], progress)
    return target
