"""Load a LesionClassifier from a checkpoint with torch.load(weights_only=True): no pickled code runs;
and a run's model, one classifier or the ensemble of its members."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import LesionPLError


def load_classifier(path: Path, map_location: str = "cpu"):
    from .module import LesionClassifier

    try:
        ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as e:
        raise LesionPLError(f"cannot load checkpoint {path}: {e}") from None
    hp = ckpt.get("hyper_parameters")
    if not hp or "config" not in hp:
        raise LesionPLError(f"{path} is not a lesion-pl checkpoint (no hyper_parameters.config)")
    hp = dict(hp)
    hp["config"] = dict(hp["config"], model=dict(hp["config"]["model"], pretrained=False, weights=None))
    model = LesionClassifier(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_run_model(run, map_location: str = "cpu"):
    """The model a run evaluates: its best checkpoint, or the Ensemble of its members' best ones."""
    from .ensemble import Ensemble

    if not run.members:
        return load_classifier(run.best, map_location)
    return Ensemble([load_classifier(p, map_location) for p in run.best_checkpoints]).eval()
