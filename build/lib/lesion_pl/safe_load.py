"""torch.load with weights_only=True: tensors and plain containers, never pickled code (checkpoints,
weights files)."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import LesionPLError


def torch_load(path: Path, what: str, map_location: str = "cpu"):
    """torch.load with weights_only=True (tensors and plain containers, never pickled code); a file that cannot
    be read so is one line naming it and why, not torch's advice to turn the protection off."""
    path = Path(path)
    if not path.is_file():
        raise LesionPLError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e).strip()
        if any(k in text for k in ("Unsupported operand", "invalid load key", "magic number", "EOF", "zip archive")):
            reason = "not a PyTorch checkpoint (truncated, or another kind of file)"
        elif "weights_only" in text or "Unpickl" in type(e).__name__:
            reason = "it holds pickled Python objects, which lesion-pl never loads"
        else:
            reason = (text.splitlines() or [type(e).__name__])[0][:160]
        raise LesionPLError(f"cannot read {what} {path}: {reason}") from None
