"""Load a LesionClassifier from a checkpoint (safe_load.torch_load: no pickled code runs), and a run's model,
one classifier or the ensemble of its members."""
from __future__ import annotations

from pathlib import Path

from .errors import LesionPLError
from .safe_load import torch_load


def load_classifier(path: Path, map_location: str = "cpu"):
    from .module import LesionClassifier

    ckpt = torch_load(path, "checkpoint", map_location)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not hp or "config" not in hp:
        raise LesionPLError(f"{path} is not a lesion-pl checkpoint (no hyper_parameters.config)")
    from .config import config_from

    hp = dict(hp)
    config = config_from(hp["config"])  # through the typed models: keys an older lesion-pl lacked take defaults
    config.model.pretrained, config.model.weights = False, None  # the weights are in the checkpoint itself
    hp["config"] = config
    model = LesionClassifier(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_run_model(run, map_location: str = "cpu"):
    """The model a run evaluates: its best checkpoint, or the Ensemble of its members' best ones."""
    from .ensemble import Ensemble

    if not run.members:
        return load_classifier(run.best, map_location)
    return Ensemble([load_classifier(p, map_location) for p in run.best_checkpoints]).eval()
