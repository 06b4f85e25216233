"""The training loss: cross entropy over the label space (class weights, label smoothing), plus an optional
binary cross entropy of malignant vs benign on the same logits (`loss.malignant_weight`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .classes import HAM10000, LabelSpace
from .scoring import score_indices


def malignant_loss(logits: torch.Tensor, soft: torch.Tensor, space: LabelSpace = HAM10000) -> torch.Tensor:
    """Binary cross entropy of malignant vs benign, on the class logits themselves.

    The malignant logit is logsumexp(malignant logits) - logsumexp(benign logits), the log-odds of the
    summed malignant probability, the score the malignant AUROC ranks; `soft` is the class index or a
    (mixed) class distribution.
    """
    mal = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    mal[score_indices("malignant", space)] = True
    binary = torch.logsumexp(logits[:, mal], dim=1) - torch.logsumexp(logits[:, ~mal], dim=1)
    target = soft[:, mal].sum(dim=1) if soft.ndim == 2 else mal[soft].float()
    return F.binary_cross_entropy_with_logits(binary, target.to(binary.dtype))


def training_loss(logits: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None,
                  label_smoothing: float, malignant_weight: float, space: LabelSpace = HAM10000) -> torch.Tensor:
    """`loss.*` of the config on float logits (already shifted by any logit adjustment) and the class
    indices or (mixed) class distributions `soft`."""
    loss = F.cross_entropy(logits, soft, weight=class_weights, label_smoothing=label_smoothing)
    if malignant_weight:
        loss = loss + malignant_weight * malignant_loss(logits, soft, space)
    return loss
