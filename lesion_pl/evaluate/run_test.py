"""`test`: the best checkpoint on a split of the run's data -> metrics.json, predictions, plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..classes import CLASSES, MALIGNANT_INDICES
from ..config import read_yaml
from ..errors import LesionPLError
from ..io import atomic_path, atomic_write_json
from ..run import RunDir


@torch.inference_mode()
def predict_probs(model, dataset, batch_size: int = 128, progress: bool = True) -> np.ndarray:
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    device = next(model.parameters()).device
    out = [model(x.to(device)).float().softmax(1).cpu()
           for x, _ in tqdm(loader, desc="predicting", unit="batch", disable=not progress)]
    return torch.cat(out).numpy()


def test_run(run_path: Path, data_root: Path | None = None, split: str = "test", progress: bool = True) -> dict:
    from ..checkpoint import load_classifier
    from ..data.datamodule import LesionDataModule
    from .metrics import metrics_report
    from .plots import confusion_matrix_png, roc_png

    run = RunDir(Path(run_path))
    run.require_fitted()
    cfg = read_yaml(run.config)
    if data_root is not None:
        cfg["data"]["root"] = str(data_root)
    dm = LesionDataModule(cfg, splits_file=run.splits, progress=progress).build()
    if split not in ("train", "val", "test", "all"):
        raise LesionPLError(f"--split must be train, val, test or all, got '{split}'")
    ds = dm.dataset(split)
    if len(ds) == 0:
        raise LesionPLError(f"the {split} split of {dm.root} is empty")

    model = load_classifier(run.best)
    probs = predict_probs(model, ds, progress=progress)
    target = np.asarray(ds.labels)
    report = metrics_report(torch.from_numpy(probs), torch.from_numpy(target))
    report = {"split": split, "data_root": str(dm.root), "checkpoint": str(run.best), **report}

    rows = dm.table.iloc[ds.indices]
    malignant_prob = probs[:, list(MALIGNANT_INDICES)].sum(1)
    preds = pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "group": rows["group"].to_numpy(),
                          "dx": rows["dx"].to_numpy(), "pred": [CLASSES[i] for i in probs.argmax(1)],
                          "malignant_prob": malignant_prob,
                          **{f"p_{c}": probs[:, i] for i, c in enumerate(CLASSES)}})
    run.test.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.test / "predictions.csv") as tmp:
        preds.to_csv(tmp, index=False, float_format="%.6f")
    confusion_matrix_png(target, probs.argmax(1), run.test / "confusion_matrix.png")
    is_mal = np.isin(target, MALIGNANT_INDICES).astype(int)
    roc_png(target, probs, malignant_prob, is_mal, run.test / "roc.png")
    atomic_write_json(run.test / "metrics.json", report)
    return report


def format_report(report: dict) -> str:
    """The metrics as a plain-text table for the terminal."""
    lines = [f"{report['n_images']} images ({report['split']} split of {report['data_root']})", ""]
    for key in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                "auroc_macro", "auroc_malignant"):
        lines.append(f"  {key:<20} {report[key]:.4f}")
    lines += ["", f"  {'class':<6} {'precision':>9} {'recall':>7} {'f1':>6} {'auroc':>6} {'support':>8}"]
    for code, m in report["per_class"].items():
        lines.append(f"  {code:<6} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} "
                     f"{m['auroc']:>6.3f} {m['support']:>8d}")
    return "\n".join(lines)
