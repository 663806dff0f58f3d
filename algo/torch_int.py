"""Integer evaluation of a `Deployment` in torch: the independent oracle next to `terwin.sim.reference`.

Activations are int64 tensors; convolutions and the linear layer run in float64 on integer-valued
tensors (`torch.nn.functional.conv2d` / matmul), which is exact while every partial sum stays below
2**53 (asserted via the spec's accumulator width); the requantizer is the integer contract
(DESIGN.md) in int64 with an arithmetic right shift.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from terwin.deployment import Conv2d, Deployment, Linear, MaxPool2d

EXACT_BITS = 53  # float64 mantissa


def requantize(acc: torch.Tensor, bias, multiplier, shift, *, act_bits: int, relu: bool = True) -> torch.Tensor:
    """y = clamp(((acc + bias) * m + (1 << (s - 1))) >> s, 0, 2**act_bits - 1), channel axis 1 of [N, C, ...]."""
    acc = acc.to(torch.int64)
    view = (1, -1) + (1,) * (acc.ndim - 2)
    b = torch.as_tensor(np.asarray(bias), dtype=torch.int64).reshape(view)
    m = torch.as_tensor(np.asarray(multiplier), dtype=torch.int64).reshape(view)
    s = torch.as_tensor(np.asarray(shift), dtype=torch.int64).reshape(view)
    y = torch.bitwise_right_shift((acc + b) * m + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)
    if relu:
        y = torch.clamp(y, 0, (1 << act_bits) - 1)
    return y


def _exact_float(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


def _to_int(t: torch.Tensor) -> torch.Tensor:
    r = torch.round(t)
    if not torch.equal(r, t):
        raise ArithmeticError("a float64 accumulator is not an integer: the sum left the exact range")
    return r.to(torch.int64)


def _check_exact(layer, dep: Deployment) -> None:
    fan_in = int(np.prod(layer.weight.shape[1:]))
    wmax = int(np.abs(layer.weight).max()) if layer.weight.size else 0
    bits = dep.spec.accumulator_bits(fan_in=fan_in, weight_max=max(wmax, 1))
    if bits > EXACT_BITS:
        raise ArithmeticError(f"{layer.name}: {bits}-bit accumulators are not exact in float64")


def layer_acc(layer, x: torch.Tensor) -> torch.Tensor:
    """int64 accumulators of a conv or linear layer for int64 activations x [N, C, H, W]."""
    w = torch.from_numpy(np.asarray(layer.weight, dtype=np.float64))
    if isinstance(layer, Conv2d):
        acc = F.conv2d(_exact_float(x), w, stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, Linear):
        acc = (_exact_float(x).flatten(1) @ w.T)[:, :, None, None]
    else:
        raise TypeError(f"{type(layer).__name__} is not a ternary/int weight layer")
    return _to_int(acc)


def run_layer(layer, x: torch.Tensor, *, act_bits: int) -> torch.Tensor:
    if isinstance(layer, MaxPool2d):
        # max-pool on integers: exact in float64 for these ranges
        return _to_int(F.max_pool2d(_exact_float(x), layer.kernel, layer.stride))
    acc = layer_acc(layer, x)
    if not layer.relu:
        return acc + torch.from_numpy(np.asarray(layer.bias, dtype=np.int64)).reshape(1, -1, 1, 1)
    return requantize(acc, layer.bias, layer.multiplier, layer.shift, act_bits=act_bits, relu=True)


def trace(dep: Deployment, q) -> list[torch.Tensor]:
    """Every layer's int64 output for quantized inputs q [N, C, H, W]."""
    x = torch.as_tensor(np.asarray(q), dtype=torch.int64)
    if x.ndim == 3:
        x = x[None]
    outs = []
    for layer in dep.layers:
        if not isinstance(layer, MaxPool2d):
            _check_exact(layer, dep)
        x = run_layer(layer, x, act_bits=dep.spec.act_bits)
        outs.append(x)
    return outs


def forward(dep: Deployment, q) -> torch.Tensor:
    """int64 class scores [N, classes]."""
    out = trace(dep, q)[-1]
    return out.reshape(out.shape[0], -1)


def quantize_input(dep: Deployment, x) -> torch.Tensor:
    """Float images -> int64 activations: clamp(floor(x / input_scale + 1/2), 0, 2**act_bits - 1)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return torch.clamp(torch.floor(x / dep.input_scale + 0.5), 0, dep.spec.act_max).to(torch.int64)


__all__ = ["requantize", "layer_acc", "run_layer", "trace", "forward", "quantize_input"]
