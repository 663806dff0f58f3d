"""Ternary weights (He et al., WACV 2019; docs/ternary.md).

    Δ = t · max|W|,   α = mean{|w| : |w| ≥ Δ},   w_t = α · sign(w) · [|w| ≥ Δ]

with a straight-through gradient that is zero where |w| ≥ `clip` (1 by default).
`Ternarizer` is the strategy (a small callable); `TernaryWeight` is the
`torch.nn.utils.parametrize` parametrization that applies it in the forward pass. Lifecycle:
`prepare_ternary(model)` registers it on every conv/linear layer, training then updates the latent
float weights, and `ternary_codes(module)` freezes a layer to integer codes + scale for export.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize


@dataclass(frozen=True)
class Ternarizer:
    """Threshold rule Δ = threshold · max|W|; scale α = mean |w| over the weights at or above Δ.

    per_channel: one (Δ, α) per output channel instead of one per layer.
    clip: the straight-through gradient is zeroed where |w| >= clip.
    zero_budget: (terwin, for the PE array) cap Δ at the `zero_budget` quantile of the nonzero |w|,
    so at most about that fraction of the unpruned weights become 0 (pruned weights are exactly 0
    and stay 0). 1.0: no cap, the paper's rule.
    """
    threshold: float = 0.05
    per_channel: bool = False
    clip: float = 1.0
    zero_budget: float = 1.0

    def __post_init__(self):
        if not 0 <= self.threshold < 1:
            raise ValueError(f"ternary threshold must lie in [0, 1), not {self.threshold!r}")
        if not 0 <= self.zero_budget <= 1:
            raise ValueError(f"zero budget must lie in [0, 1], not {self.zero_budget!r}")

    def delta(self, w: torch.Tensor) -> torch.Tensor:
        """The threshold Δ: a scalar, or [out, 1, ...] per channel."""
        mag = w.abs()
        dims = self._reduce_dims(w)
        delta = self.threshold * mag.amax(dim=dims, keepdim=self.per_channel)
        if self.zero_budget < 1:
            rows = mag.reshape(mag.shape[0], -1) if self.per_channel else mag.reshape(1, -1)
            caps = []
            for row in rows:
                nz = row[row > 0]
                caps.append(torch.quantile(nz, self.zero_budget) if nz.numel() else row.new_zeros(()))
            cap = torch.stack(caps).reshape(delta.shape)
            delta = torch.minimum(delta, cap)
        return delta

    def _reduce_dims(self, w: torch.Tensor):
        return tuple(range(1, w.ndim)) if self.per_channel else tuple(range(w.ndim))

    def __call__(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes in {-1, 0, +1} as w's dtype, alpha) — alpha has shape [out, 1, ...] or []."""
        with torch.no_grad():
            dims = self._reduce_dims(w)
            mag = w.abs()
            delta = self.delta(w)
            keep = (mag >= delta) & (mag > 0)
            count = keep.sum(dim=dims, keepdim=self.per_channel).clamp_min(1)
            alpha = (mag * keep).sum(dim=dims, keepdim=self.per_channel) / count
            codes = torch.sign(w) * keep
        return codes, alpha


class _TernarySTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, codes, alpha, clip):
        ctx.save_for_backward(w)
        ctx.clip = clip
        return codes * alpha

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() < ctx.clip).to(grad.dtype), None, None, None


class TernaryWeight(nn.Module):
    """Parametrization: latent float weight -> α · ternary codes, straight-through gradient."""

    def __init__(self, ternarizer: Ternarizer):
        super().__init__()
        self.ternarizer = ternarizer

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes, alpha = self.ternarizer(w)
        return _TernarySTE.apply(w, codes, alpha, self.ternarizer.clip)


TERNARY_LAYERS = (nn.Conv2d, nn.Linear)


def ternary_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, TERNARY_LAYERS)]


def prepare_ternary(model: nn.Module, ternarizer: Ternarizer) -> None:
    """Register `TernaryWeight` on the weight of every conv and linear layer (after any mask)."""
    for module in ternary_layers(model):
        if is_ternary(module):
            continue
        parametrize.register_parametrization(module, "weight", TernaryWeight(ternarizer))


def is_ternary(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, TernaryWeight) for p in module.parametrizations.weight)


def latent_weight(module: nn.Module) -> torch.Tensor:
    """The trained float weight under any parametrizations."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def ternary_codes(module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Freeze a ternary layer: (int8 codes with the layer's masks applied, float64 alpha per layer or channel)."""
    params = module.parametrizations.weight
    w = params.original.detach()
    ternarizer = None
    for p in params:
        if isinstance(p, TernaryWeight):
            ternarizer = p.ternarizer
            break
        w = p(w)  # masks registered before the ternarizer
    if ternarizer is None:
        raise ValueError(f"{type(module).__name__} is not ternarized")
    codes, alpha = ternarizer(w)
    return codes.to(torch.int8).numpy(), alpha.double().reshape(-1).numpy()


__all__ = ["Ternarizer", "TernaryWeight", "prepare_ternary", "is_ternary", "latent_weight", "ternary_codes",
           "ternary_layers"]
