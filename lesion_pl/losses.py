"""The training loss: cross entropy over the label space (class weights, label smoothing), plus optional binary
cross entropies of malignant vs benign on the same logits, over all images (`loss.malignant_weight`) and over the
malignant and the histopathology-confirmed benign ones (`loss.confirmed_weight`); with `loss.group_dro`, the cross
entropy is group DRO's weighted mean over groups instead of the batch mean."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .classes import HAM10000, LabelSpace
from .config import Loss
from .scoring import score_indices


def malignant_loss(logits: torch.Tensor, soft: torch.Tensor, space: LabelSpace = HAM10000,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross entropy of malignant vs benign, on the class logits themselves.

    The malignant logit is logsumexp(malignant logits) - logsumexp(benign logits), the log-odds of the
    summed malignant probability, the score the malignant AUROC ranks; `soft` is the class index or a
    (mixed) class distribution. `rows`: a mask of the images it is the mean over (all where None; 0 where none).
    """
    mal = malignant_mask(space, logits.device)
    binary = torch.logsumexp(logits[:, mal], dim=1) - torch.logsumexp(logits[:, ~mal], dim=1)
    target = soft[:, mal].sum(dim=1) if soft.ndim == 2 else mal[soft].float()
    if rows is not None:
        if not rows.any():
            return binary.sum() * 0.0
        binary, target = binary[rows], target[rows]
    return F.binary_cross_entropy_with_logits(binary, target.to(binary.dtype))


def malignant_mask(space: LabelSpace, device: torch.device | None = None) -> torch.Tensor:
    """True at the space's malignant classes."""
    mal = torch.zeros(space.num_classes, dtype=torch.bool, device=device)
    mal[score_indices("malignant", space)] = True
    return mal


class GroupDRO:
    """Group DRO's online loss (Sagawa et al., ICLR 2020, their algorithm 1): sum over groups g of q_g times the mean
    loss of g's images in the batch, where q is a distribution over the groups that an exponentiated-gradient step,
    q_g <- q_g * exp(step * that mean), moves toward the groups the model does worst on. A group absent from a batch
    adds nothing and its weight is only renormalised. q is training state, not part of the model: the checkpoint
    keeps it beside the weights for --resume (LesionClassifier.on_save_checkpoint); under DDP each process keeps its
    own."""

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


def training_loss(logits: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None, loss: Loss,
                  space: LabelSpace = HAM10000, target: torch.Tensor | None = None, tags: dict | None = None,
                  dro: GroupDRO | None = None) -> torch.Tensor:
    """The config's `loss` on float logits (already shifted by any logit adjustment) and the class indices or
    (mixed) class distributions `soft`. `target`: the images' own class indices (a mixed image counts as its own
    class and group, not its partner's); `tags`: what the data module hands over with each training image,
    'group' (group DRO's, used with `dro`) and 'confirmed' (histopathology-confirmed, for `loss.confirmed_weight`);
    validation batches have none, and their loss is the plain one."""
    tags = {} if tags is None else tags
    smoothing = float(loss.label_smoothing)
    if dro is not None and "group" in tags:
        total = dro(F.cross_entropy(logits, soft, weight=class_weights, label_smoothing=smoothing, reduction="none"),
                    tags["group"])
    else:
        total = F.cross_entropy(logits, soft, weight=class_weights, label_smoothing=smoothing)
    if loss.malignant_weight:
        total = total + loss.malignant_weight * malignant_loss(logits, soft, space)
    if loss.confirmed_weight and "confirmed" in tags:  # malignant images against the excised benign ones
        rows = tags["confirmed"].bool() | malignant_mask(space, logits.device)[target]
        total = total + loss.confirmed_weight * malignant_loss(logits, soft, space, rows)
    return total
