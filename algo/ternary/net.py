"""The ternary family's digits CNN.

DigitsNet (1x8x8 input, channel counts multiples of 16 so pe4x4/pe8x8/pe8x16 tile without padding):

    conv1 3x3 1->16 pad 1, BN, ReLU, quant      8x8
    conv2 3x3 16->32 pad 1, BN, ReLU, quant     8x8
    pool2 max 2x2                               4x4
    conv3 3x3 32->64 pad 1, BN, ReLU, quant     4x4
    pool3 max 2x2                               2x2
    fc    linear 256->10 (raw class scores)

25,744 weights: 51.5 kbit at 2 bits each before pruning (iCE40 UP5K: ~120 kbit block RAM).
Convolutions carry no bias (the batch norm that follows holds it); batch norm is folded into the
requantizer at export. The exporter walks `model.blocks`: a `ConvBlock` becomes a Deployment `Conv2d`,
a `PoolBlock` a `MaxPool2d`, the `LinearHead` a `Linear`.
"""
from __future__ import annotations

import numpy as np
from torch import nn
from torch.nn import functional as F

from ..data import INPUT_SCALE
from ..quant import ActQuant, InputQuant

DEFAULT_CHANNELS = (16, 32, 64)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, *, act_bits: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = ActQuant(act_bits, calibration="ema-max")

    def forward(self, x):
        return self.act(F.relu(self.bn(self.conv(x))))


class PoolBlock(nn.Module):
    def __init__(self, size: int = 2):
        super().__init__()
        self.size = size

    def forward(self, x):
        return F.max_pool2d(x, self.size)


class LinearHead(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], classes: int):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.fc = nn.Linear(int(np.prod(in_shape)), classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class DigitsNet(nn.Module):
    def __init__(self, *, channels=DEFAULT_CHANNELS, classes: int = 10, act_bits: int = 8,
                 input_shape=(1, 8, 8), input_scale: float = INPUT_SCALE):
        super().__init__()
        c1, c2, c3 = channels
        cin, h, w = input_shape
        self.input_shape = tuple(input_shape)
        self.input_scale = input_scale
        self.input_quant = InputQuant(input_scale, act_bits)
        self.blocks = nn.ModuleList([
            ConvBlock(cin, c1, act_bits=act_bits),
            ConvBlock(c1, c2, act_bits=act_bits),
            PoolBlock(2),
            ConvBlock(c2, c3, act_bits=act_bits),
            PoolBlock(2),
            LinearHead((c3, h // 4, w // 4), classes),
        ])
        self.block_names = ("conv1", "conv2", "pool2", "conv3", "pool3", "fc")

    def forward(self, x):
        x = self.input_quant(x)
        for block in self.blocks:
            x = block(x)
        return x

    def weighted_layers(self) -> list[tuple[str, nn.Module, tuple | None]]:
        """[(name, conv/linear module, linear in_shape or None)] in network order."""
        out = []
        for name, block in zip(self.block_names, self.blocks):
            if isinstance(block, ConvBlock):
                out.append((name, block.conv, None))
            elif isinstance(block, LinearHead):
                out.append((name, block.fc, block.in_shape))
        return out


__all__ = ["DigitsNet", "ConvBlock", "PoolBlock", "LinearHead", "DEFAULT_CHANNELS"]
