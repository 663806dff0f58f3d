"""Freeze a trained ternary `DigitsNet` into a `terwin.deployment.Deployment`.

Per conv block (conv -> BN -> ReLU -> quant), with s_in the input activation scale, α the layer's
ternary scale, (k, c) the eval-mode batch norm as y = k·x + c and s_out the output scale:

    float output / s_out = (k α s_in / s_out) · (acc + c / (k α s_in))

so multiplier/shift = fit_multiplier(k α s_in / s_out) and bias = round(c / (k α s_in)) in
accumulator units: the batch norm is folded into the requantizer, the weights stay ternary.
The linear head outputs raw scores acc + round(b / (α s_in)) (relu=False); its multiplier/shift
hold α s_in, the float value of one score unit, for information only.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from terwin.deployment import Conv2d, Deployment, Linear, MaxPool2d
from terwin.spec import HardwareSpec

from ..quant import bn_affine, fit_requant
from .net import ConvBlock, LinearHead, PoolBlock
from .ternarize import ternary_codes


def export_ternary(model, spec: HardwareSpec, *, tile_masks: dict[str, np.ndarray] | None = None,
                   meta: dict | None = None, class_names=tuple(str(i) for i in range(10))) -> Deployment:
    """The integer model of a trained, ternarized `DigitsNet` (eval-mode batch norm, frozen scales).

    tile_masks: uint8 [og, tg, cg] per layer name (from `TilePruner.tile_masks()`); kept tiles whose
    ternary codes are all zero are dropped from the mask too (the controller skips them for free).
    Layers without a mask get one computed from their codes.
    """
    tile_masks = tile_masks or {}
    layers = []
    shape = tuple(model.input_shape)
    s_in = float(model.input_scale)
    for name, block in zip(model.block_names, model.blocks):
        if isinstance(block, PoolBlock):
            layer = MaxPool2d(name=name, in_shape=shape, kernel=block.size, stride=block.size)
        elif isinstance(block, ConvBlock):
            codes, alpha = ternary_codes(block.conv)
            k, c = bn_affine(block.bn)
            k = live_slopes(k, codes)
            s_out = block.act.scale
            alpha_ch = np.broadcast_to(alpha, k.shape)
            bias, mult, shift = fit_requant(k / s_out, c / s_out, acc_scale=alpha_ch * s_in)
            proto = Conv2d(name=name, in_shape=shape, out_channels=codes.shape[0], kernel=3, stride=1, padding=1,
                           weight=codes, bias=bias, multiplier=mult, shift=shift, relu=True,
                           weight_scale=tuple(float(a) for a in alpha))
            layer = with_tile_mask(proto, spec, tile_masks.get(name))
            s_in = s_out
        elif isinstance(block, LinearHead):
            codes, alpha = ternary_codes(block.fc)
            fc_bias = block.fc.bias.detach().double().numpy() if block.fc.bias is not None else np.zeros(codes.shape[0])
            alpha_ch = np.broadcast_to(alpha, fc_bias.shape)
            bias, mult, shift = fit_requant(np.ones_like(fc_bias), fc_bias, acc_scale=alpha_ch * s_in)
            proto = Linear(name=name, in_shape=shape, out_channels=codes.shape[0], weight=codes, bias=bias,
                           multiplier=mult, shift=shift, relu=False, weight_scale=tuple(float(a) for a in alpha))
            layer = with_tile_mask(proto, spec, tile_masks.get(name))
        else:
            raise TypeError(f"cannot export a {type(block).__name__}")
        layers.append(layer)
        shape = layer.out_shape
    meta = {"family": "ternary", **(meta or {})}
    dep = Deployment(spec=spec, input_shape=tuple(model.input_shape), input_scale=float(model.input_scale),
                     layers=tuple(layers), class_names=tuple(class_names), meta=meta)
    return dep.validate()


@torch.no_grad()
def sync_activation_scales(model) -> list[float]:
    """Make every conv block's output scale at least max_o |k_o| · α · s_in (k: folded batch norm).

    The requantizer adds the bias in accumulator units. When one accumulator unit is worth more than
    one output unit (multiplier > 1: the first layer, 1 input channel, integer pixels), the bias
    rounding alone would shift outputs by up to multiplier/2 units, and the finer output grid is never
    reached anyway (outputs only take values multiplier apart). With the scale raised to that grid
    the multiplier is <= 1 and the integer model follows the float one within one unit.
    Returns the lower bounds set, per conv block.
    """
    bounds = []
    s_in = float(model.input_scale)
    for block in model.blocks:
        if not isinstance(block, ConvBlock):
            continue
        codes, alpha = ternary_codes(block.conv)
        k = live_slopes(bn_affine(block.bn)[0], codes)
        bound = float(np.max(np.abs(k) * np.broadcast_to(alpha, k.shape))) * s_in
        block.act.min_scale.fill_(bound)
        bounds.append(bound)
        s_in = block.act.scale
    return bounds


def live_slopes(k: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The folded batch-norm slopes k with every dead channel's (all ternary codes 0: its accumulator
    is 0 on every input and its output the constant c) replaced by the largest live |k| (1 if none).

    A dead channel — all the tiles of its output group pruned — has a running variance of ~0, so its
    k = γ/sqrt(var + ε) is ~300·γ and means nothing; left in, it set the layer's smallest output scale
    (`sync_activation_scales`) so high that every activation of the layer rounded to 0 and training
    could never recover (the pe8x16 collapses at 87.5 % tile sparsity, docs/ternary.md). Any slope
    gives a dead channel the same output c, so the integer model is unchanged in what it computes.
    """
    k = np.asarray(k, dtype=np.float64)
    live = np.asarray(codes).reshape(len(k), -1).any(axis=1)
    if live.all():
        return k
    fill = float(np.max(np.abs(k[live]))) if live.any() else 1.0
    return np.where(live, k, fill)


def with_tile_mask(layer, spec: HardwareSpec, mask):
    """`layer` with its tile mask: `mask` (the pruner's, or None: all kept) and "the tile holds a nonzero code"."""
    grid = layer.tile_grid(spec)
    occupied = grid.occupied(layer.weight)
    keep = occupied if mask is None else (np.asarray(mask).astype(bool) & occupied)
    return dataclasses.replace(layer, tile_mask=keep.astype(np.uint8))


__all__ = ["export_ternary", "sync_activation_scales", "live_slopes", "with_tile_mask"]
