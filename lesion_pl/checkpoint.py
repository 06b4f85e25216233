"""Load a LesionClassifier from a checkpoint with torch.load(weights_only=True): no pickled code runs."""
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
