"""Which code made a file: the git revision of the checkout lesion_pl runs from (with "-dirty" where it has
uncommitted changes), or the installed version where it is not a checkout."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__


@lru_cache(maxsize=1)
def code_revision() -> str:
    """e.g. "8d649be", "8d649be-dirty", or "lesion-pl 0.4.0 (not a git checkout)"."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        rev = top = None
    # only this project's own checkout: a wheel unpacked inside some other repository is not one
    if rev is not None and top is not None and rev.returncode == 0 and top.returncode == 0 \
            and (Path(top.stdout.strip()) / "lesion_pl").resolve() == here:
        return rev.stdout.strip()
    return f"lesion-pl {__version__} (not a git checkout)"
