"""Running a trained classifier over a dataset: logits per image, optionally for the 8 flips and
90-degree rotations of each image (test-time augmentation)."""
from __future__ import annotations

import numpy as np
import torch

from ..preprocess import dihedral_views


def torch_views(x: torch.Tensor) -> list[torch.Tensor]:
    """`preprocess.dihedral_views` of NCHW images (or NHWC: height and width are dims 1 and 2)."""
    dims = (-2, -1) if x.shape[1] in (1, 3) else (1, 2)
    return dihedral_views(x, lambda a, k: torch.rot90(a, k, dims), lambda a: torch.flip(a, (dims[1],)))


@torch.inference_mode()
def batch_logits(model, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits [N, C] of a batch, or [N, 8, C] with `tta` (one row per view)."""
    if tta:
        return torch.stack([model(v).float() for v in torch_views(x)], dim=1)
    return model(x).float()


@torch.inference_mode()
def predict_logits(model, dataset, batch_size: int = 128, tta: bool = False, progress: bool = True) -> np.ndarray:
    """Logits [N, C], or [N, 8, C] with `tta` (one row per view)."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    device = next(model.parameters()).device
    out = []
    for x, _ in tqdm(loader, desc="predicting" + (" (8-view TTA)" if tta else ""), unit="batch",
                     disable=not progress):
        out.append(batch_logits(model, x.to(device), tta).cpu())
    return torch.cat(out).numpy()
