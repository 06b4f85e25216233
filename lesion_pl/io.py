"""Atomic file and folder writes (temp + rename), so an interrupted run never leaves half a file; strict
JSON; and a lock file, so processes started together (DDP under SLURM) build a shared file once."""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temp path beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: Path):
    """Yield a temp folder beside `path`; it replaces `path` (and everything it held) only if the block
    finishes, so a failed or interrupted command leaves the old folder, or none, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = path.with_name(f"{tmp.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_utf8(path: Path) -> str:
    """A text file's contents; a file that is not UTF-8 is a one-line error naming its line."""
    from .errors import LesionPLError

    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise LesionPLError(f"{path}, line {line}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                            "save it as UTF-8") from None


def read_json(path: Path) -> dict | None:
    """A JSON object a command wrote earlier (a run's summary, metrics, records), or None where the file is
    missing, unreadable or not a JSON object: the readers that show what a run has take a missing file as absent."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def require_writable(path: Path, what: str) -> Path:
    """`path` can be written as a file: its folder exists (or can be made) and takes files, and nothing that is
    not a file stands in its place; a one-line error naming it otherwise."""
    from .errors import LesionPLError

    path = Path(path)
    if path.is_dir():
        raise LesionPLError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LesionPLError(f"{what} {path}: cannot make its folder {parent} ({e.strerror or e})") from None
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise LesionPLError(f"{what} {path}: cannot write in {parent} ({e.strerror or e})") from None
    return path


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(data, **kwargs) -> str:
    """json.dumps, with null where a float has no value (NaN, infinity), e.g. the AUROC of a class the
    data lacks: Python writes those as NaN, which browsers, jq and most JSON parsers refuse."""
    return json.dumps(_finite(data), allow_nan=False, **kwargs)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet run a cell (CSV injection)


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula, kept as text (a leading apostrophe, OWASP's advice);
    numbers and other text as they are. For the CSVs written for people to open (predict, data check)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, to_json(data, indent=2) + "\n")


class LockHeld(Exception):
    """Another process holds the lock; the text is what it wrote there (its command and pid)."""


@contextmanager
def exclusive_lock(path: Path, wait: bool = True, holder: str = ""):
    """Hold an exclusive lock for the block: an flock on `path` (created for it, holding `holder`, removed on
    release); with `wait` False, LockHeld at once where another process holds it. The one lock of lesion-pl: a run
    folder's (RunDir.lock), and the image cache's and the split's, whose builders wait for each other.

    A waiter may get the lock on a file its holder has just removed: it takes it again on the one on disk, so that
    two processes never both hold it. Callers that build something re-check their target once they hold the lock
    and write it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")  # noqa: SIM115  (held past this function: closed when the lock is released)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            held_by = handle.read().strip()
            handle.close()
            raise LockHeld(held_by or "another process") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(holder)
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def file_lock(path: Path):
    """`exclusive_lock`, waiting for any other holder (the cache's and the split's builders)."""
    return exclusive_lock(path, wait=True, holder=f"lesion-pl (pid {os.getpid()})")
