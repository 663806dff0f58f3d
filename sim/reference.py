"""Golden integer reference: runs a `Deployment` in NumPy, integers only.

It reads nothing but the `Deployment` (no torch, no Amaranth) and implements the integer contract
of docs/architecture.md. `forward` returns the last layer's outputs; `trace` returns every layer's.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from terwin import intmath, winograd
from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d


def quantize_input(dep: Deployment, x) -> np.ndarray:
    """Float images [N, C, H, W] (or [C, H, W]) -> int64 activations per the deployment's input scale."""
    return intmath.quantize_input(x, scale=dep.input_scale, act_bits=dep.spec.act_bits)


def conv2d_acc(x: np.ndarray, weight: np.ndarray, *, stride: int, padding: int) -> np.ndarray:
    """Integer convolution accumulators: x [N, C, H, W], weight [O, C, kh, kw] -> int64 [N, O, Ho, Wo]."""
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(weight, dtype=np.int64)
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    kh, kw = w.shape[2:]
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N C Ho Wo kh kw
    n, c, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    acc = cols @ w.reshape(w.shape[0], -1).T
    return acc.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)


def winograd_conv2d_acc(x: np.ndarray, u: np.ndarray, *, padding: int, m: int = 2) -> np.ndarray:
    """F(m x m, 3x3) on integers: x [N, C, H, W], Winograd-domain weights u [O, C, m+2, m+2].

    V = B^T d B per input tile, M = sum_c U * V, Y = A^T M A; tiles past the edge read zeros.
    """
    bt, _, at = winograd.matrices(m, 3)
    n_in = m + 2
    x = np.asarray(x, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    n, c, h, w = x.shape
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    ty, tx = winograd.tiles_per_side(ho, m), winograd.tiles_per_side(wo, m)
    xp = np.zeros((n, c, ty * m + 2, tx * m + 2), dtype=np.int64)
    xp[:, :, padding:padding + h, padding:padding + w] = x
    d = sliding_window_view(xp, (n_in, n_in), axis=(2, 3))[:, :, ::m, ::m]  # N C ty tx 4 4
    v = np.einsum("ij,nctxjk,lk->nctxil", bt, d, bt)                        # B^T d B
    mm = np.einsum("ocij,nctxij->notxij", u, v)                             # sum over c of U * V
    y = np.einsum("ij,notxjk,lk->notxil", at, mm, at)                       # A^T M A  (m x m)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, u.shape[0], ty * m, tx * m)
    return y[:, :, :ho, :wo]


def maxpool2d(x: np.ndarray, *, kernel: int, stride: int) -> np.ndarray:
    win = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.max(axis=(-2, -1))


def sumpool2d(x: np.ndarray, *, kernel: int, stride: int) -> np.ndarray:
    win = sliding_window_view(np.asarray(x, dtype=np.int64), (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.sum(axis=(-2, -1))


def layer_acc(layer, x: np.ndarray) -> np.ndarray:
    """Accumulators (before bias and requantization) of a weighted layer."""
    if isinstance(layer, Conv2d):
        return conv2d_acc(x, layer.weight, stride=layer.stride, padding=layer.padding)
    if isinstance(layer, WinogradConv2d):
        return winograd_conv2d_acc(x, layer.weight, padding=layer.padding, m=layer.tile)
    if isinstance(layer, Linear):
        flat = np.asarray(x, dtype=np.int64).reshape(x.shape[0], -1)
        return (flat @ layer.weight.astype(np.int64).T)[:, :, None, None]
    raise TypeError(f"{type(layer).__name__} has no accumulator")


def run_layer(layer, x: np.ndarray, *, act_bits: int, last: bool = True, residual=None) -> np.ndarray:
    """One layer's integer output for its input map x [N, C, H, W]; `residual`: the map its
    `residual` names, when it has one. `last`: the score layer (relu false outputs acc + bias)."""
    if isinstance(layer, MaxPool2d):
        return maxpool2d(x, kernel=layer.kernel, stride=layer.stride)
    if isinstance(layer, AvgPool2d):
        return intmath.average(sumpool2d(x, kernel=layer.kernel, stride=layer.stride), layer.multiplier,
                               layer.shift, act_bits=act_bits)
    acc = layer_acc(layer, x)
    if not layer.relu and last:
        return acc + layer.bias.astype(np.int64).reshape(1, -1, 1, 1)
    r = None if residual is None else np.asarray(residual, dtype=np.int64).transpose(1, 0, 2, 3)
    y = intmath.requantize(acc.transpose(1, 0, 2, 3), layer.bias, layer.multiplier, layer.shift,
                           act_bits=act_bits, relu=layer.relu, signed=not layer.relu,
                           residual=r, residual_multiplier=layer.residual_multiplier)
    return y.transpose(1, 0, 2, 3)


def trace(dep: Deployment, q: np.ndarray) -> list[np.ndarray]:
    """Every layer's integer output for quantized inputs q [N, C, H, W] (or one image [C, H, W]),
    running the layers in order, each on the map its `source` names."""
    x = np.asarray(q, dtype=np.int64)
    if x.ndim == 3:
        x = x[None]
    if tuple(x.shape[1:]) != dep.input_shape:
        raise ValueError(f"input shape {tuple(x.shape[1:])} does not match the model's {dep.input_shape}")
    maps = {INPUT: x}
    outs = []
    last = len(dep.layers) - 1
    for i, (layer, source) in enumerate(zip(dep.layers, dep.sources())):
        residual = maps[layer.residual] if getattr(layer, "residual", None) is not None else None
        y = run_layer(layer, maps[source], act_bits=dep.spec.act_bits, last=i == last, residual=residual)
        maps[layer.name] = y
        outs.append(y)
    return outs


def forward(dep: Deployment, q: np.ndarray) -> np.ndarray:
    """Class scores int64 [N, classes] for quantized inputs."""
    out = trace(dep, q)[-1]
    return out.reshape(out.shape[0], -1)


def predict(dep: Deployment, q: np.ndarray) -> np.ndarray:
    return forward(dep, q).argmax(axis=1)
