"""The per-image predictions table that `test` (RUN/test/predictions.csv) and `calibrate`
(RUN/val_predictions.csv) write: image, lesion, label, the class named, the malignancy and every
class probability, as the run reports them (calibrated, fused with the metadata)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import CLASSES
from ..io import atomic_path
from ..scoring import referral_score


def predictions_frame(rows: pd.DataFrame, probs: np.ndarray, pred: np.ndarray,
                      label_column: str = "dx") -> pd.DataFrame:
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "group": rows["group"].to_numpy(),
                         label_column: rows[label_column].to_numpy(), "pred": [CLASSES[i] for i in pred],
                         "malignant_prob": referral_score(probs, "malignant"),
                         **{f"p_{c}": probs[:, i] for i, c in enumerate(CLASSES)}})


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
