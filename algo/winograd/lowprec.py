"""The learnable low-precision regularizer of Choi, El-Khamy and Lee, "Learning low precision deep
neural networks through regularization" (arXiv 1809.00095), for the Winograd family's weights
(`terwin compress --family winograd --lowprec-lambda F`).

The cost is E + e^α · R − λ · α with α learnable: at its optimum e^α = λ / R, so the pull towards the
grid grows as the weights converge to it (the weight of the penalty grows over training without a
schedule). R is the mean squared quantization error of the weights the engine multiplies (the masked
Winograd-domain weights U of every Winograd layer and the classifier's weights), each measured in its
own grid step, on the grid the export uses: `terwin.algo.quant.PerChannelQuant` of the layer's bits
(per output channel, step max|w[o]| / (2^(bits−1) − 1)). Measuring in steps makes R independent of
the layers' scales (a terwin choice; the paper's R is in the weights' units, with learnable cell
sizes — here the cell size is the export's, so what the regularizer pulls the weights to is exactly
the grid they are exported on). The gradient flows to the weights through w − Q(w) with Q(w)
constant (its rounding has no gradient); the step is computed from the detached weights.

Only weights: the activations already train through an 8-bit fake quantizer (`ActQuant`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..quant import PerChannelQuant


class LowPrecisionRegularizer(nn.Module):
    """Called with no arguments: e^α · R − λ · α for the net's Winograd layers (at `bits`) and linear
    layers (at `linear_bits`). `parameters()` is α (train it with its own learning rate)."""

    def __init__(self, net, *, bits: int, lam: float, linear_bits: int = 8):
        super().__init__()
        if not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"lambda must be a positive number, not {lam!r}")
        self.net = [net]  # not a submodule: parameters() is α alone
        self.lam = float(lam)
        self.conv_quant, self.linear_quant = PerChannelQuant(bits), PerChannelQuant(linear_bits)
        self.alpha = nn.Parameter(torch.zeros(()))

    def error(self) -> torch.Tensor:
        """R: the mean over all weights of ((w − Q(w)) / step)², each layer's own per-channel step."""
        net = self.net[0]
        total, count = torch.zeros((), dtype=torch.float64), 0
        for weights, quant in [(c.winograd_weight(), self.conv_quant) for c in net.convs()] + \
                              [(fc.masked_weight(), self.linear_quant) for fc in net.linears()]:
            step = quant.scale(weights).view((-1,) + (1,) * (weights.dim() - 1))
            q, _ = quant.codes(weights)
            total = total + (((weights - q * step) / step) ** 2).sum().double()
            count += weights.numel()
        return total / max(count, 1)

    def forward(self) -> torch.Tensor:
        return (self.alpha.exp() * self.error() - self.lam * self.alpha).float()

    def figures(self) -> dict:
        with torch.no_grad():
            return {"lambda": self.lam, "exp_alpha": float(self.alpha.exp()), "grid_error": float(self.error())}


__all__ = ["LowPrecisionRegularizer"]
