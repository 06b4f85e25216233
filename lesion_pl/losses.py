"""The training loss: cross entropy over the label space (class weights, label smoothing), plus an optional
binary cross entropy of malignant vs benign on the same logits (`loss.malignant_weight`); with `loss.group_dro`, the
cross entropy is group DRO's weighted mean over groups instead of the batch mean."""
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


class GroupDRO:
    """Group DRO's online loss (Sagawa et al., ICLR 2020, their algorithm 1): sum over groups g of q_g times the mean
    loss of g's images in the batch, where q is a distribution over the groups that an exponentiated-gradient step,
    q_g <- q_g * exp(step * that mean), moves toward the groups the model does worst on. A group absent from a batch
    adds nothing and its weight is only renormalised. q is training state, not part of the model (no checkpoint);
    under DDP each process keeps its own."""

    def __init__(self, num_groups: int, step: float):
        self.q = torch.full((num_groups,), 1.0 / num_groups)
        self.step = float(step)

    def __call__(self, losses: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """`losses`: one per image; `groups`: each image's group index."""
        if self.q.device != losses.device:
            self.q = self.q.to(losses.device)
        n = self.q.numel()
        means = torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
        means = means / torch.bincount(groups, minlength=n).clamp(min=1).to(losses.dtype)
        with torch.no_grad():
            q = self.q * torch.exp(self.step * means.float())
            self.q = q / q.sum()
        return (self.q.to(means.dtype) * means).sum()


def training_loss(logits: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None,
                  label_smoothing: float, malignant_weight: float, space: LabelSpace = HAM10000,
                  dro: GroupDRO | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
    """`loss.*` of the config on float logits (already shifted by any logit adjustment) and the class
    indices or (mixed) class distributions `soft`; with `dro`, the images' `groups` (a mixed image counts in its
    own group, not its partner's)."""
    if dro is None or groups is None:
        loss = F.cross_entropy(logits, soft, weight=class_weights, label_smoothing=label_smoothing)
    else:
        loss = dro(F.cross_entropy(logits, soft, weight=class_weights, label_smoothing=label_smoothing,
                                   reduction="none"), groups)
    if malignant_weight:
        loss = loss + malignant_weight * malignant_loss(logits, soft, space)
    return loss
