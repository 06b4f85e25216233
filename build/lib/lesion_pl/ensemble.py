"""An ensemble of classifiers trained on the same split: the mean of their log-probabilities,
usable wherever one trained classifier is (calibrate, test, explain, report, export)."""
from __future__ import annotations

import torch
from torch import nn


class Ensemble(nn.Module):
    """uint8 NCHW images -> the members' mean log-softmax [N, C], which calibration treats as logits.

    The mean of log-probabilities (a geometric mean of the probabilities) is itself a set of logits,
    so the run's temperature and prior correction are fitted on it as on one model's. Members share
    the training split, so their normalisation statistics are the same.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    @property
    def hparams(self):
        return self.members[0].hparams

    @property
    def channels_last(self) -> bool:
        return all(m.channels_last for m in self.members)

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        for m in self.members:
            m.channels_last = value

    @property
    def normalize(self) -> nn.Module:
        return self.members[0].normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(self.normalize(images))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.forward_normalized(x).float().log_softmax(dim=1) for m in self.members]).mean(dim=0)
