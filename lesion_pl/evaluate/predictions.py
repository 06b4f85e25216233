"""The per-image predictions table that `test` (RUN/test/predictions.csv) and `calibrate`
(RUN/val_predictions.csv) write: image, lesion, label, the class named, the malignancy and every
class probability, as the run reports them (calibrated, fused with the metadata)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_path
from ..scoring import Scored


def predictions_frame(rows: pd.DataFrame, scored: Scored, label_column: str = "dx") -> pd.DataFrame:
    probs, classes = scored.probabilities, scored.classes
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "group": rows["group"].to_numpy(),
                         label_column: rows[label_column].to_numpy(), "pred": [classes[i] for i in scored.top_index],
                         "malignant_prob": scored.scores["malignant"],
                         **{f"p_{c}": probs[:, i] for i, c in enumerate(classes)}})


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
