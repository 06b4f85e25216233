"""Running a trained classifier over a dataset: logits per image, optionally for the 8 flips and
90-degree rotations of each image (test-time augmentation)."""
from __future__ import annotations

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
def batch_features(model, x: torch.Tensor, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features [N, D], logits [N, C]) of a batch; [N, 8, D] and [N, 8, C] with `tta`."""
    if not tta:
        return tuple(t.float() for t in model.features_and_logits(x))  # type: ignore[return-value]
    pairs = [model.features_and_logits(v) for v in torch_views(x)]
    return torch.stack([f.float() for f, _ in pairs], 1), torch.stack([z.float() for _, z in pairs], 1)


def has_features(model) -> bool:
    """Whether the model gives its penultimate features (`LesionClassifier`; an ensemble does not)."""
    return hasattr(model, "features_and_logits")


@torch.inference_mode()
def predict_logits(model, dataset, batch_size: int = 128, tta: bool = False, progress: bool = True,
                   features: bool = False):
    """Logits [N, C], or [N, 8, C] with `tta` (one row per view); with `features`, (features, logits)."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=0)
    device = next(model.parameters()).device
    out, feats = [], []
    for x, _ in tqdm(loader, desc="predicting" + (" (8-view TTA)" if tta else ""), unit="batch",
                     disable=not progress):
        if features:
            f, z = batch_features(model, x.to(device), tta)
            feats.append(f.cpu())
            out.append(z.cpu())
        else:
            out.append(batch_logits(model, x.to(device), tta).cpu())
    logits = torch.cat(out).numpy()
    return (torch.cat(feats).numpy(), logits) if features else logits
