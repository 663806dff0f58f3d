"""A LeNet-5-style network for 32x32 images, in the shape the Winograd engine runs: LeNet-5's two
convolution stages (6 and 16 channels, each followed by a 2x2 max-pool) as 3x3 convolutions, its
hidden fully connected layers replaced by a third 3x3 convolution stage (32 channels; the engine
runs one linear layer, the last) and a linear classifier over the 32 x 4 x 4 map. Plain PyTorch.

    terwin compress --family winograd --model examples/lenet5.py:lenet5 --data digits32 --out runs/lenet5

It also goes through the ternary family (`--family ternary`).
"""
from __future__ import annotations

from torch import nn


def lenet5(classes: int = 10) -> nn.Module:
    """The network, untrained (the factory `terwin compress --model` calls)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 32 -> 16
        nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 16 -> 8
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 8 -> 4
        nn.Flatten(), nn.Linear(32 * 4 * 4, classes),
    )
