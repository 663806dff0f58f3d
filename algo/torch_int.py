"""Integer evaluation of any `Deployment` in torch: the independent oracle next to `terwin.sim.reference`.

One entry point for every family, dispatching on the Deployment's layer classes:

* `Conv2d` / `Linear` (ternary or int weights): `F.conv2d` / matmul in float64 on integer-valued
  tensors, exact while every partial sum stays below 2**53 (asserted via the spec's accumulator
  width, and every result is checked to be integral);
* `WinogradConv2d`: A^T [sum_c U ⊙ (B^T d B)] A on int64 tensors (`winograd.transforms.winograd_conv2d`;
  B^T and A^T are integer), tiles by `Tensor.unfold`;
* `MaxPool2d`: max over `unfold` windows on int64; `AvgPool2d`: the int64 sum over the same windows times
  the multiplier, rounded and shifted;
* the requantizer: the integer contract (`terwin.intmath`) in int64 with an arithmetic right shift,
  with the residual term r·m_r of a residual connection, and the signed clamp of a signed map
  (relu false inside the network: a projection shortcut).

A format-version-2 model is a graph: each layer reads the map its `source` names and, for a residual
connection, the map its `residual` names (docs/deployment-format.md); `trace` keeps every map by name.
It is written independently of the NumPy reference, which it must equal on every layer output.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d

from .winograd.transforms import winograd_conv2d

EXACT_BITS = 53  # float64 mantissa


def _int64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def requantize(acc: torch.Tensor, bias, multiplier, shift, *, act_bits: int, relu: bool = True,
               signed: bool = False, residual: torch.Tensor | None = None, residual_multiplier=None) -> torch.Tensor:
    """y = ((acc + bias) * m [+ r * m_r] + (1 << (s - 1))) >> s per channel (axis 1 of [N, C, ...]), int64;
    with `relu`, clamped to [0, 2**act_bits - 1]; with `signed` (and not relu), to
    [-2**(act_bits-1), 2**(act_bits-1) - 1]; `residual` r (the shape of `acc`) times the per-channel
    `residual_multiplier` m_r is added before the shift."""
    acc = acc.to(torch.int64)
    view = (1, -1) + (1,) * (acc.ndim - 2)
    b, m, s = (_int64(v).reshape(view) for v in (bias, multiplier, shift))
    pre = (acc + b) * m
    if residual is not None:
        pre = pre + residual.to(torch.int64) * _int64(residual_multiplier).reshape(view)
    y = torch.bitwise_right_shift(pre + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)
    if relu:
        y = torch.clamp(y, 0, (1 << act_bits) - 1)
    elif signed:
        y = torch.clamp(y, -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)
    return y


def _to_int(t: torch.Tensor) -> torch.Tensor:
    r = torch.round(t)
    if not torch.equal(r, t):
        raise ArithmeticError("a float64 accumulator is not an integer: the sum left the exact range")
    return r.to(torch.int64)


def _check_exact(layer, spec) -> None:
    fan_in = int(np.prod(layer.weight.shape[1:]))
    wmax = int(np.abs(layer.weight).max()) if layer.weight.size else 0
    bits = spec.accumulator_bits(fan_in=fan_in, weight_max=max(wmax, 1))
    if bits > EXACT_BITS:
        raise ArithmeticError(f"{layer.name}: {bits}-bit accumulators are not exact in float64")


def layer_acc(layer, x: torch.Tensor) -> torch.Tensor:
    """int64 accumulators of a weight layer for int64 activations x [N, C, H, W]."""
    if isinstance(layer, WinogradConv2d):
        return winograd_conv2d(x.to(torch.int64), _int64(layer.weight), padding=layer.padding, m=layer.tile)
    w = torch.from_numpy(np.asarray(layer.weight, dtype=np.float64))
    if isinstance(layer, Conv2d):
        acc = F.conv2d(x.to(torch.float64), w, stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, Linear):
        acc = (x.to(torch.float64).flatten(1) @ w.T)[:, :, None, None]
    else:
        raise TypeError(f"{type(layer).__name__} is not a deployment weight layer")
    return _to_int(acc)


def average(x: torch.Tensor, layer: AvgPool2d, *, act_bits: int) -> torch.Tensor:
    """Integer average pooling: clamp((S * m + 2^(s-1)) >> s, 0, 2^act_bits - 1), S the window sum."""
    win = x.to(torch.int64).unfold(2, layer.kernel, layer.stride).unfold(3, layer.kernel, layer.stride)
    total = win.sum(dim=(-2, -1))
    y = torch.bitwise_right_shift(total * layer.multiplier + (1 << (layer.shift - 1)), layer.shift)
    return torch.clamp(y, 0, (1 << act_bits) - 1)


def run_layer(layer, x: torch.Tensor, *, act_bits: int, last: bool = True,
              residual: torch.Tensor | None = None) -> torch.Tensor:
    """One layer's int64 output for its input map x: max-pool, average pool, or accumulators then the
    requantizer; `residual`: the map its `residual` names. The score layer (`last`, relu false)
    outputs raw acc + bias; relu false on any other layer is a signed map."""
    if isinstance(layer, MaxPool2d):
        win = x.unfold(2, layer.kernel, layer.stride).unfold(3, layer.kernel, layer.stride)
        return win.amax(dim=(-2, -1))
    if isinstance(layer, AvgPool2d):
        return average(x, layer, act_bits=act_bits)
    acc = layer_acc(layer, x)
    if not layer.relu and last:
        return acc + _int64(layer.bias).reshape(1, -1, 1, 1)
    return requantize(acc, layer.bias, layer.multiplier, layer.shift, act_bits=act_bits, relu=layer.relu,
                      signed=not layer.relu, residual=residual, residual_multiplier=layer.residual_multiplier)


@torch.no_grad()
def trace(dep: Deployment, q) -> list[torch.Tensor]:
    """Every layer's int64 output for quantized inputs q [N, C, H, W] (or one image [C, H, W]), the
    layers run in order, each on the map its `source` names (and its `residual`'s map)."""
    x = _int64(q)
    if x.ndim == 3:
        x = x[None]
    maps = {INPUT: x}
    outs = []
    previous = INPUT
    last = len(dep.layers) - 1
    for i, layer in enumerate(dep.layers):
        if isinstance(layer, (Conv2d, Linear)):
            _check_exact(layer, dep.spec)
        source = previous if layer.source is None else layer.source
        residual = getattr(layer, "residual", None)
        y = run_layer(layer, maps[source], act_bits=dep.spec.act_bits, last=i == last,
                      residual=None if residual is None else maps[residual])
        maps[layer.name] = y
        previous = layer.name
        outs.append(y)
    return outs


@torch.no_grad()
def forward(dep: Deployment, q, *, batch: int = 512) -> torch.Tensor:
    """int64 class scores [N, classes], `batch` images at a time."""
    q = np.asarray(q, dtype=np.int64)
    if q.ndim == 3:
        q = q[None]
    parts = []
    for i in range(0, len(q), batch):
        out = trace(dep, q[i:i + batch])[-1]
        parts.append(out.reshape(out.shape[0], -1))
    return torch.cat(parts)


def quantize_input(dep: Deployment, x) -> torch.Tensor:
    """Float images -> int64 activations: clamp(floor(x / input_scale + 1/2), 0, 2**act_bits - 1)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return torch.clamp(torch.floor(x / dep.input_scale + 0.5), 0, dep.spec.act_max).to(torch.int64)


__all__ = ["requantize", "average", "layer_acc", "run_layer", "trace", "forward", "quantize_input"]
