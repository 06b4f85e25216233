"""Load a LesionClassifier from a checkpoint with torch.load(weights_only=True): no pickled code runs;
and a run's model, one classifier or the ensemble of its members."""
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


def load_classifier(path: Path, map_location: str = "cpu"):
    from .module import LesionClassifier

    ckpt = torch_load(path, "checkpoint", map_location)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "config" not in hp:
        raise LesionPLError(f"{path} is not a lesion-pl checkpoint (no hyper_parameters.config)")
    from .config import with_defaults

    hp = dict(hp)
    config = with_defaults(hp["config"])  # a checkpoint of an older lesion-pl lacks the newer keys
    hp["config"] = dict(config, model=dict(config["model"], pretrained=False, weights=None))
    model = LesionClassifier(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_run_model(run, map_location: str = "cpu"):
    """The model a run evaluates: its best checkpoint, or the Ensemble of its members' best ones."""
    from .ensemble import Ensemble

    if not run.members:
        return load_classifier(run.best, map_location)
    return Ensemble([load_classifier(p, map_location) for p in run.best_checkpoints]).eval()
