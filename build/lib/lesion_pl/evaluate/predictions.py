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
    """One row per image; the archive it came from (a run of several sources) and the diagnosis method (dx_type)
    beside the label where the data records them, so the per-source figures and those on histopathology-confirmed
    lesions can be recomputed from the file alone."""
    probs, classes = scored.probabilities, scored.classes
    method = {c: rows[c].to_numpy() for c in ("source", METHOD_COLUMN) if c in rows}
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "group": rows["group"].to_numpy(),
                         label_column: rows[label_column].to_numpy(), **method,
                         "pred": [classes[i] for i in scored.top_index], "malignant_prob": scored.scores["malignant"],
                         **{f"p_{c}": probs[:, i] for i, c in enumerate(classes)}})


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
