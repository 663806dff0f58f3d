"""Freeze a trained `WinogradNet` into an integer `Deployment` (spec.weight_format == "winograd").

Per layer, with s_in the float value of one input activation unit (1/16 for the digits input, the
previous ActQuant's scale afterwards):

* WinoConv -> `WinogradConv2d`: U (masked, float, Winograd domain) is quantized per output channel
  to signed `weight_bits` integers U_q = round(U / s_w[o]). Since A^T [U (.) B^T d B] A of integer U_q
  and integer activations d approximates conv(d, g) / s_w[o], the float pre-activation is
  s_in * s_w[o] * (acc + bias_q) with bias_q = round(b / (s_in s_w[o])); the requantizer maps it to the
  next activation scale s_out with m / 2**s = s_in * s_w[o] / s_out (`fit_multiplier`).
* nn.MaxPool2d -> `MaxPool2d` (max commutes with the monotone quantizer, so it runs on integers).
* MaskedLinear -> `Linear` (weight_code "int", 8 bits, magnitude-pruned, no tile mask); it is the
  last layer: relu=False, outputs acc + bias_q (raw class scores). Its multiplier/shift hold the float
  value of one score unit (s_in * s_w[o]) for information; the reference does not apply them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from terwin import intmath, winograd
from terwin.deployment import Deployment, Linear, MaxPool2d, WinogradConv2d
from terwin.spec import HardwareSpec

from ..quant import PerChannelQuant
from .nn import MaskedLinear, WinoConv, WinogradNet


def _int_array(q: torch.Tensor, bits: int) -> np.ndarray:
    dtype = np.int8 if bits <= 8 else np.int16
    return q.detach().to(torch.int64).numpy().astype(dtype)


def _requant(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ms = [intmath.fit_multiplier(float(s)) for s in scales]
    return (np.array([m for m, _ in ms], dtype=np.int64), np.array([s for _, s in ms], dtype=np.int64))


@torch.no_grad()
def export(net: WinogradNet, spec: HardwareSpec, *, input_scale: float, linear_bits: int = 8, class_names=(),
           meta=None) -> Deployment:
    """The integer model of `net` (whose ActQuant scales must be calibrated) for `spec`; the
    Winograd-domain weights get the spec's `winograd_weight_bits`."""
    if spec.weight_format != "winograd":
        raise ValueError(f"a Winograd model needs a spec with weight_format 'winograd', not {spec.weight_format!r}")
    bits = spec.winograd_weight_bits
    wquant, lquant = PerChannelQuant(bits), PerChannelQuant(linear_bits)
    s_in = float(input_scale)
    shape = tuple(net.input_shape)
    layers = []
    n = len(net.layers)
    for i, (name, layer, act) in enumerate(zip(net.layer_names, net.layers, net.acts)):
        if isinstance(layer, WinoConv):
            if layer.m != spec.winograd_tile:
                raise ValueError(f"{name}: tile F({layer.m}x{layer.m},3x3) does not match the spec's {spec.winograd_tile}")
            if not act.enabled:
                raise ValueError(f"{name}: activation scale not calibrated")
            q, s_w = wquant.codes(layer.winograd_weight().double())
            s_w = s_w.numpy()
            unit = s_in * s_w                                    # float value of one accumulator unit
            bias = np.floor(layer.bias.double().numpy() / unit + 0.5).astype(np.int64)
            s_out = float(act.scale)
            mult, shift = _requant(unit / s_out)
            out = WinogradConv2d(name=name, in_shape=shape, out_channels=layer.out_channels, padding=layer.padding,
                                 tile=layer.m, weight=_int_array(q, bits), weight_bits=bits, bias=bias,
                                 multiplier=mult, shift=shift, relu=True,
                                 weight_scale=tuple(float(v) for v in s_w))
            s_in = s_out
        elif isinstance(layer, nn.MaxPool2d):
            k = int(layer.kernel_size) if not isinstance(layer.kernel_size, tuple) else int(layer.kernel_size[0])
            st = int(layer.stride) if not isinstance(layer.stride, tuple) else int(layer.stride[0])
            out = MaxPool2d(name=name, in_shape=shape, kernel=k, stride=st)
        elif isinstance(layer, MaskedLinear):
            if i != n - 1:
                raise ValueError(f"{name}: the linear layer must be last")
            q, s_w = lquant.codes(layer.masked_weight().double())
            s_w = s_w.numpy()
            unit = s_in * s_w
            bias = np.floor(layer.bias.double().numpy() / unit + 0.5).astype(np.int64)
            mult, shift = _requant(unit)
            out = Linear(name=name, in_shape=shape, out_channels=layer.out_features, weight=_int_array(q, linear_bits),
                         weight_code="int", weight_bits=linear_bits, tile_mask=None, bias=bias,
                         multiplier=mult, shift=shift, relu=False, weight_scale=tuple(float(v) for v in s_w))
        else:
            raise TypeError(f"cannot export {type(layer).__name__}")
        layers.append(out)
        shape = out.out_shape
    dep = Deployment(spec=spec, input_shape=tuple(net.input_shape), input_scale=float(input_scale),
                     layers=tuple(layers), class_names=tuple(class_names),
                     meta=dict(meta or {"family": "winograd"}))
    return dep.validate()


def accumulator_bound(layer: WinogradConv2d, spec: HardwareSpec) -> int:
    """Largest |acc| a Winograd layer can reach for any unsigned act_bits input.

    V = B^T d B: each entry sums +-d over (nonzeros in a row of B^T)^2 taps, so |V| <= bt_row^2 * act_max;
    M[o] = sum_c U[o,c] * V: |M[o,i,j]| <= |V|max * sum_c |U[o,c,i,j]|; Y = A^T M A: |Y| <= sum_ij |A^T|-weighted |M|.
    Bounded per output channel exactly through the transforms' absolute values.
    """
    bt, _, at = winograd.matrices(layer.tile, 3)
    v_max = int(np.abs(bt).sum(axis=1).max()) ** 2 * spec.act_max       # |B^T d B| bound per entry
    m_abs = np.abs(layer.weight.astype(np.int64)).sum(axis=1) * v_max    # [O, n, n]
    aa = np.abs(at)
    y_abs = np.einsum("ij,ojk,lk->oil", aa, m_abs, aa)                   # [O, m, m]
    return int(y_abs.max()) + int(np.abs(layer.bias).max())


def accumulator_bits(layer: WinogradConv2d, spec: HardwareSpec) -> int:
    """Signed accumulator width a Winograd layer needs (`accumulator_bound`, plus the sign)."""
    bound = accumulator_bound(layer, spec)
    return intmath.signed_bits(-bound, bound)


__all__ = ["export", "accumulator_bound", "accumulator_bits"]
