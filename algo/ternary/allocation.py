"""Per-layer tile budgets: how many PE tiles each layer loses for one network-wide tile sparsity.

`TilePruner.prepare` starts from the uniform allocation (`pruning.allocate`: every prunable layer at
one common rate, the first layer dense). At high sparsity that starves the small layers everything
depends on (at 87.5 % on pe8x8, conv2 keeps 8 of its 72 tiles). `sensitivity_allocation` spends the
same total budget — the same number of pruned tiles, so the same weight compression — where it hurts
least, judged on the validation images (never the test images):

1. per prunable layer and per count n = 0 .. all of its tiles, the validation cross-entropy of the
   model with only that layer's n lowest-RMS tiles masked (the others dense): the layer's
   sensitivity curve, made monotone (running maximum) so that noise cannot buy a deeper cut;
2. one loss level λ for all layers (Han et al. 2015's sensitivity analysis, with the threshold found
   by bisection): each layer prunes the most tiles whose curve stays at or below λ; the smallest λ
   that reaches the budget is taken, the surplus handed back by the layers whose last tiles cost most;
   no layer keeps fewer than `KEEP_FLOOR` of the tiles the uniform allocation keeps it.

`docs/ternary.md` ("Per-layer tile budgets") has the measurements.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from .ternarize import latent_weight

ALLOCATIONS = ("uniform", "sensitivity")
# every layer keeps at least this share of the tiles the uniform allocation keeps: one-layer curves
# at extreme cuts mislead (an empty classifier scores a loss of ln 10, below what a starved conv layer
# scores, so without a floor the whole classifier went)
KEEP_FLOOR = 0.5


@torch.no_grad()
def _loss(model, x, y) -> float:
    was = model.training
    model.eval()
    loss = float(F.cross_entropy(model(x).double(), y))
    model.train(was)
    return loss


@torch.no_grad()
def sensitivity_curves(model, pruner, x_val, y_val) -> dict[str, np.ndarray]:
    """{layer name: validation loss with its n lowest-RMS tiles masked, n = 0 .. tiles} for every
    prunable layer of `pruner` (prepared, masks all kept); every mask is restored afterwards."""
    curves = {}
    for i, layer in enumerate(pruner.layers):
        if i in pruner.dense:
            continue
        saved = layer.mask.tile_keep.numpy().copy()
        rms = layer.groups.rms(latent_weight(layer.module) * layer.mask.mask).numpy()
        order = np.argsort(rms, kind="stable")
        losses = []
        for n in range(layer.groups.count + 1):
            keep = saved.copy()
            keep[order[:n]] = False
            layer.mask.set_keep(keep)
            losses.append(_loss(model, x_val, y_val))
        layer.mask.set_keep(saved)
        curves[layer.name] = np.asarray(losses)
    return curves


def budget_from_curves(curves: list[np.ndarray], want: int, caps: list[int] | None = None) -> list[int]:
    """Tiles to prune per curve (curve[n]: loss with n pruned) so that they sum to `want`, every
    layer cut to one common loss level (the smallest that reaches `want`); caps: the most each may lose."""
    caps = [len(c) - 1 for c in curves] if caps is None else caps
    env = [np.maximum.accumulate(np.asarray(c)[:cap + 1]) for c, cap in zip(curves, caps)]
    capacity = sum(len(c) - 1 for c in env)
    if want > capacity:
        raise ValueError(f"{want} tiles to prune, only {capacity} prunable")

    def counts(level: float) -> list[int]:
        return [int(np.searchsorted(e, level, side="right")) - 1 for e in env]

    levels = np.unique(np.concatenate(env))
    lo, hi = 0, len(levels) - 1   # counts(levels[hi]) prunes everything
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(counts(levels[mid])) >= want:
            hi = mid
        else:
            lo = mid + 1
    out = counts(levels[lo])
    while sum(out) > want:   # hand back the costliest last tiles (ties: the later layer)
        j = max((i for i in range(len(out)) if out[i] > 0), key=lambda i: (env[i][out[i]], i))
        out[j] -= 1
    return out


def sensitivity_allocation(model, pruner, x_val, y_val) -> dict:
    """Re-assign the pruner's per-layer counts (same total) by validation sensitivity; returns
    {layer: tiles to prune} for the record."""
    curves = sensitivity_curves(model, pruner, x_val, y_val)
    prunable = [layer for i, layer in enumerate(pruner.layers) if i not in pruner.dense]
    want = sum(layer.final_count for layer in pruner.layers)
    caps = [layer.groups.count - math.ceil(KEEP_FLOOR * (layer.groups.count - layer.final_count)) for layer in prunable]
    counts = budget_from_curves([curves[layer.name] for layer in prunable], want, caps)
    pruner.assign({layer.name: n for layer, n in zip(prunable, counts)})
    return {layer.name: layer.final_count for layer in pruner.layers}


__all__ = ["ALLOCATIONS", "sensitivity_curves", "budget_from_curves", "sensitivity_allocation"]
