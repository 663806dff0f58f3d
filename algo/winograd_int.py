"""Torch integer evaluation of a Winograd `Deployment` (int64 tensors throughout, no floats).

This is the torch model's integer evaluation that `terwin.sim.reference` (NumPy) must equal on every
test image. It is written independently of the reference: tiles come from `Tensor.unfold`, the
Winograd path is `terwin.algo.winograd_nn.winograd_conv2d` on int64 tensors (B^T and A^T are
integer), and the requantizer is the integer contract written with torch shifts.
"""
from __future__ import annotations

import numpy as np
import torch

from terwin.deployment import Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d

from .winograd_nn import winograd_conv2d


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def requantize(acc: torch.Tensor, *, bias, multiplier, shift, act_bits: int) -> torch.Tensor:
    """clamp(((acc + b) * m + (1 << (s - 1))) >> s, 0, 2**act_bits - 1) per channel (axis 1), int64."""
    view = (1, -1) + (1,) * (acc.dim() - 2)
    b, m, s = (_t(v).view(view) for v in (bias, multiplier, shift))
    y = torch.bitwise_right_shift((acc + b) * m + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)
    return torch.clamp(y, 0, (1 << act_bits) - 1)


def _conv_int(x: torch.Tensor, w: torch.Tensor, *, stride: int, padding: int) -> torch.Tensor:
    """Direct integer convolution by explicit windows (torch has no int64 conv2d on CPU)."""
    k = w.shape[-1]
    xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    win = xp.unfold(2, k, stride).unfold(3, k, stride)                 # N C Ho Wo k k
    return torch.einsum("nchwij,ocij->nohw", win, w)


def layer_forward(layer, x: torch.Tensor, *, act_bits: int) -> torch.Tensor:
    if isinstance(layer, MaxPool2d):
        win = x.unfold(2, layer.kernel, layer.stride).unfold(3, layer.kernel, layer.stride)
        return win.amax(dim=(-2, -1))
    w = _t(layer.weight)
    if isinstance(layer, WinogradConv2d):
        acc = winograd_conv2d(x, w, padding=layer.padding, m=layer.tile)
    elif isinstance(layer, Conv2d):
        acc = _conv_int(x, w, stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, Linear):
        acc = (x.reshape(x.shape[0], -1) @ w.T)[:, :, None, None]
    else:
        raise TypeError(f"{type(layer).__name__} is not a deployment layer")
    if not layer.relu:
        return acc + _t(layer.bias).view(1, -1, 1, 1)
    return requantize(acc, bias=layer.bias, multiplier=layer.multiplier, shift=layer.shift, act_bits=act_bits)


@torch.no_grad()
def trace(dep: Deployment, q) -> list[torch.Tensor]:
    """Every layer's int64 output for quantized inputs q [N, C, H, W]."""
    x = torch.as_tensor(np.asarray(q, dtype=np.int64))
    if x.dim() == 3:
        x = x[None]
    outs = []
    for layer in dep.layers:
        x = layer_forward(layer, x, act_bits=dep.spec.act_bits)
        outs.append(x)
    return outs


@torch.no_grad()
def forward(dep: Deployment, q, *, batch: int = 512) -> np.ndarray:
    """Class scores int64 [N, classes] (as a NumPy array, to compare with `sim.reference.forward`)."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    parts = [trace(dep, q[i:i + batch])[-1].reshape(min(batch, len(q) - i), -1).numpy()
             for i in range(0, len(q), batch)]
    return np.concatenate(parts, axis=0)
