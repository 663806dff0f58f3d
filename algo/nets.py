"""The reference digits CNN and the small training loop the compression flows share.

DigitsNet (1x8x8 input, channel counts multiples of 16 so pe4x4/pe8x8/pe8x16 tile without padding):

    conv1 3x3 1->16 pad 1, BN, ReLU, quant      8x8
    conv2 3x3 16->32 pad 1, BN, ReLU, quant     8x8
    pool2 max 2x2                               4x4
    conv3 3x3 32->64 pad 1, BN, ReLU, quant     4x4
    pool3 max 2x2                               2x2
    fc    linear 256->10 (raw class scores)

25,744 weights: 51.5 kbit at 2 bits each before pruning (iCE40 UP5K: ~120 kbit block RAM).
Convolutions carry no bias (the batch norm that follows holds it); batch norm is folded into the
requantizer at export. Each block is tagged with `kind` so that exporters can walk `model.blocks`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import INPUT_SCALE
from .quant import ActQuant, InputQuant

DEFAULT_CHANNELS = (16, 32, 64)


class ConvBlock(nn.Module):
    kind = "conv"

    def __init__(self, cin: int, cout: int, *, act_bits: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = ActQuant(act_bits)

    def forward(self, x):
        return self.act(F.relu(self.bn(self.conv(x))))


class PoolBlock(nn.Module):
    kind = "pool"

    def __init__(self, size: int = 2):
        super().__init__()
        self.size = size

    def forward(self, x):
        return F.max_pool2d(x, self.size)


class LinearHead(nn.Module):
    kind = "linear"

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
            if block.kind == "conv":
                out.append((name, block.conv, None))
            elif block.kind == "linear":
                out.append((name, block.fc, block.in_shape))
        return out


# -- training ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @classmethod
    def from_split(cls, split) -> "Tensors":
        return cls(*(torch.from_numpy(np.ascontiguousarray(a)) for a in
                     (split.x_train, split.y_train, split.x_test, split.y_test)))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    acc = float((model(x).argmax(dim=1) == y).float().mean())
    model.train(was)
    return acc


def train(model: nn.Module, data: Tensors, *, epochs: int, lr: float, batch_size: int = 64,
          optimizer: str = "adam", weight_decay: float = 0.0, penalty: Callable[[], torch.Tensor] | None = None,
          generator: torch.Generator, progress=None, augment: bool = True,
          on_epoch: Callable[[int, int], None] | None = None, teacher: nn.Module | None = None,
          distill_weight: float = 0.0, temperature: float = 4.0) -> None:
    """Mini-batch training with a cosine learning-rate schedule.

    penalty: extra loss term (pruning regularizer), called every step. progress(epoch, epochs, **m).
    on_epoch(epoch, epochs): called before each epoch (e.g. to anneal a threshold).
    teacher, distill_weight, temperature: knowledge distillation from a (float) teacher in eval mode,
    loss += distill_weight * T² * KL(teacher_T || student_T).
    augment: random shifts by up to one pixel (zero fill), a cheap regularizer for 8x8 digits.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    n = data.x_train.shape[0]
    steps = epochs * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    model.train()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch, epochs)
        order = torch.randperm(n, generator=generator)
        total, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if augment:
                xb = random_shift(xb, generator=generator)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None and distill_weight > 0:
                with torch.no_grad():
                    soft = F.softmax(teacher(xb) / temperature, dim=1)
                loss = loss + distill_weight * temperature ** 2 * F.kl_div(
                    F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        if progress is not None:
            progress(epoch + 1, epochs, loss=total / seen)


def random_shift(x: torch.Tensor, *, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    n = x.shape[0]
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h)[None, :])               # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None, :])               # [n, w]
    batch = torch.arange(n)[:, None, None]
    # advanced indices around a slice: the result is [n, h, w, C]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


__all__ = ["DigitsNet", "ConvBlock", "PoolBlock", "LinearHead", "Tensors", "evaluate", "train", "random_shift"]
