"""LesionCNN: a plain conv/pool/FC network, small enough to train on HAM10000 on a laptop CPU.

A strided stem, then stages of two (conv 3x3, batch norm, ReLU) and a 2x2 max pool, then global
average pooling, dropout and a fully connected layer.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LesionCNN(nn.Module):
    def __init__(self, num_classes: int = 7, widths=(32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(3, widths[0], stride=2)]
        cin = widths[0]
        for i, w in enumerate(widths):
            layers += [conv_bn_relu(cin, w), conv_bn_relu(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    # forward_features/forward_head as in timm, so Grad-CAM treats both alike
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pool(x).flatten(1)  # the penultimate features (pre_logits: as timm's)
        return pooled if pre_logits else self.fc(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
