"""Model statistics: sparsity, stored bits, compression ratio (used by `inspect`, `compress`, reports).

Stored weight bits, per layer:
* ternary / int weights: weight_bits for every real (non-padding) weight position in a kept tile
  (every position when there is no tile mask), + 1 bit per tile for the tile mask,
  + 32 bits per float scale the integer weights stand for (`weight_scale`: one per layer or per
  channel; one per output channel when the layer does not say);
* Winograd layers: weight_bits per nonzero Winograd-domain weight + a 1-bit occupancy mask per
  Winograd-domain position, + 32 bits per float scale.
The float baseline is 32 bits per spatial weight (a Winograd layer's float model has 3x3 kernels).
Biases and requantization constants (32-bit bias, 16-bit multiplier, 6-bit shift per channel, and
a 32-bit residual multiplier per channel of a layer with a residual connection) are counted apart,
as `requant_bits`. Pooling layers hold no weights.
"""
from __future__ import annotations

import numpy as np

from .deployment import INPUT, Deployment, WinogradConv2d

SCALE_BITS = 32
REQUANT_BITS_PER_CHANNEL = 32 + 16 + 6
RESIDUAL_BITS_PER_CHANNEL = 32


def layer_stats(layer, spec) -> dict:
    row = {"name": layer.name, "kind": layer.kind, "in": "x".join(map(str, layer.in_shape)),
           "out": "x".join(map(str, layer.out_shape))}
    if not hasattr(layer, "weight"):  # maxpool2d, avgpool2d
        return row
    w = layer.weight
    out = layer.out_channels
    scale_bits = SCALE_BITS * (len(layer.weight_scale) or out)
    row["weights"] = int(w.size)
    row["nonzero"] = int(np.count_nonzero(w))
    row["sparsity"] = 1.0 - row["nonzero"] / w.size
    row["requant_bits"] = (REQUANT_BITS_PER_CHANNEL + (RESIDUAL_BITS_PER_CHANNEL if layer.residual else 0)) * out
    if isinstance(layer, WinogradConv2d):
        row["float_weights"] = out * layer.in_shape[0] * 9
        row["weight_bits_stored"] = layer.weight_bits * row["nonzero"] + w.size + scale_bits
        return row
    row["float_weights"] = int(w.size)
    bits = layer.weight_bits
    mask = layer.tile_mask
    if mask is not None:
        grid = layer.tile_grid(spec)
        real = (grid.index >= 0).sum(axis=(-2, -1))
        row["tiles"] = int(mask.size)
        row["tiles_kept"] = int(mask.sum())
        row["tile_sparsity"] = 1.0 - row["tiles_kept"] / row["tiles"]
        row["weight_bits_stored"] = int(bits * real[mask.astype(bool)].sum() + mask.size + scale_bits)
    else:
        row["weight_bits_stored"] = int(bits * w.size + scale_bits)
    return row


def model_stats(dep: Deployment) -> dict:
    """Per-layer rows (`layer_stats`, and the graph: `source` where a layer reads another map than the
    previous layer's, `residual` where it adds one, `signed` for a signed map) and model totals."""
    rows = [layer_stats(layer, dep.spec) for layer in dep.layers]
    previous = INPUT
    for i, (row, layer, source) in enumerate(zip(rows, dep.layers, dep.sources())):
        if source != previous:
            row["source"] = source
        if getattr(layer, "residual", None) is not None:
            row["residual"] = layer.residual
        if not getattr(layer, "relu", True) and i < len(rows) - 1:
            row["signed"] = True
        previous = layer.name
    weighted = [r for r in rows if "weights" in r]
    totals = {k: sum(r.get(k, 0) for r in weighted)
              for k in ("weights", "nonzero", "float_weights", "weight_bits_stored", "requant_bits", "tiles", "tiles_kept")}
    totals["compression_ratio"] = 32 * totals["float_weights"] / totals["weight_bits_stored"]
    totals["tile_sparsity"] = 1.0 - totals["tiles_kept"] / totals["tiles"] if totals["tiles"] else 0.0
    return {"layers": rows, "totals": totals}
