"""LesionCNN: a plain conv/pool/FC network, small enough to train on HAM10000 on a laptop CPU.

A stem of strided convolutions, then stages of two (conv 3x3, batch norm, ReLU) and a 2x2 max pool,
then global average pooling, dropout and a fully connected layer. Each stem convolution halves the
input: with two, a 128 px image costs about what a 64 px one costs with one, yet the network, not a
bilinear resize, decides what detail to keep.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LesionCNN(nn.Module):
    def __init__(self, num_classes: int = 7, widths=(32, 64, 128, 256), dropout: float = 0.3,
                 stem_convs: int = 1):
        super().__init__()
        if stem_convs < 1:
            raise ValueError(f"stem_convs must be >= 1, got {stem_convs}")
        # channels double up to widths[0]: 16 -> 32 for two stem convolutions and widths[0] = 32
        stem = [max(widths[0] >> (stem_convs - 1 - i), 4) for i in range(stem_convs)]
        layers: list[nn.Module] = [conv_bn_relu(cin, cout, stride=2) for cin, cout in zip([3, *stem], stem)]
        cin = stem[-1]
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

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
