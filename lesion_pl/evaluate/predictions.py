"""The per-image predictions table that `test` (RUN/test/predictions.csv) and `calibrate`
(RUN/val_predictions.csv) write: image, lesion, label (and dx_type where the source has it), the class named, the
malignancy and every class probability, as the run reports them (calibrated, fused with the metadata)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_path
from ..scoring import Scored
from .confirmed import METHOD_COLUMN


def predictions_frame(rows: pd.DataFrame, scored: Scored, label_column: str = "dx") -> pd.DataFrame:
    """One row per image; the source's diagnosis method (dx_type) beside the label where it records one, so the
    figures on histopathology-confirmed lesions can be recomputed from the file alone."""
    probs, classes = scored.probabilities, scored.classes
    method = {METHOD_COLUMN: rows[METHOD_COLUMN].to_numpy()} if METHOD_COLUMN in rows else {}
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "group": rows["group"].to_numpy(),
                         label_column: rows[label_column].to_numpy(), **method,
                         "pred": [classes[i] for i in scored.top_index], "malignant_prob": scored.scores["malignant"],
                         **{f"p_{c}": probs[:, i] for i, c in enumerate(classes)}})


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
