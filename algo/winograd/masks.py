"""Pruning and regularisation strategies of the Winograd-sparse family: magnitude masks (Liu et al.),
joint spatial + Winograd pruning and the learnable partial-L2 regulariser (Choi, El-Khamy, Lee)."""
from __future__ import annotations

import torch
from torch import nn

from .nn import WinogradNet
from .transforms import kernel_to_winograd


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """0/1 mask (same dtype as w) zeroing exactly round(sparsity * numel) entries of smallest |w|.

    Ties are broken by position (stable sort), so the kept fraction is exact and deterministic.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), not {sparsity}")
    flat = w.detach().abs().reshape(-1)
    k = int(round(sparsity * flat.numel()))
    mask = torch.ones_like(flat)
    if k:
        order = torch.sort(flat, stable=True).indices
        mask[order[:k]] = 0
    return mask.reshape(w.shape)


class WinogradMagnitudePruner:
    """Liu et al.: prune the Winograd-domain weights U of every WinoConv (mode "winograd") by magnitude.

    `step(sparsity)` recomputes each layer's mask from |U * mask| at the given per-layer sparsity
    (pruned weights stay pruned because their magnitude is zero), then zeroes the pruned parameters.
    """

    def __call__(self, net: WinogradNet, sparsity: float) -> None:
        with torch.no_grad():
            for conv in net.convs():
                if conv.mode != "winograd":
                    raise ValueError("Winograd-domain pruning needs the layers in mode 'winograd'")
                conv.winograd_mask.copy_(magnitude_mask(conv.winograd_weight(), sparsity))
                conv.apply_masks()


class JointPruner:
    """Choi et al.: prune the spatial weights g by magnitude, then the Winograd-domain weights
    U = G (g * spatial_mask) G^T by magnitude; the layers then compute in mode "joint"."""

    def __call__(self, net: WinogradNet, *, spatial_sparsity: float, winograd_sparsity: float) -> None:
        with torch.no_grad():
            for conv in net.convs():
                conv.spatial_mask.copy_(magnitude_mask(conv.weight, spatial_sparsity))
                conv.winograd_mask.fill_(1.0)
                conv.winograd_mask.copy_(magnitude_mask(conv.winograd_weight(), winograd_sparsity))
                conv.apply_masks()
                conv.set_mode("joint")


def linear_prune(net: WinogradNet, sparsity: float) -> None:
    with torch.no_grad():
        for fc in net.linears():
            fc.mask.copy_(magnitude_mask(fc.masked_weight(), sparsity))
            fc.apply_masks()


def partial_l2(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Sum of w**2 over the entries whose |w| lies below the `sparsity` percentile of |w| (the ones that
    pruning at that sparsity would remove); the selection is recomputed on every call."""
    mask = 1.0 - magnitude_mask(w, sparsity)
    return (w * w * mask).sum()


class JointRegularizer(nn.Module):
    """cost = E + e^alpha R_WD + e^beta R_SD - lam (alpha + beta)  (Choi, El-Khamy, Lee).

    R_SD: partial L2 of the spatial weights g below their spatial-sparsity percentile;
    R_WD: partial L2 of the Winograd-domain weights G g G^T below their Winograd-sparsity percentile;
    both summed over the Winograd layers and divided by the number of weights. alpha and beta are
    learnable: at their optimum e^alpha = lam / R_WD, so the pull grows as the small weights shrink.
    """

    def __init__(self, *, spatial_sparsity: float, winograd_sparsity: float, lam: float, init: float = 0.0):
        super().__init__()
        self.spatial_sparsity = spatial_sparsity
        self.winograd_sparsity = winograd_sparsity
        self.lam = lam
        self.alpha = nn.Parameter(torch.tensor(float(init)))
        self.beta = nn.Parameter(torch.tensor(float(init)))

    def terms(self, net: WinogradNet) -> tuple[torch.Tensor, torch.Tensor]:
        r_wd, r_sd, n_wd, n_sd = 0.0, 0.0, 0, 0
        for conv in net.convs():
            g = conv.spatial_weight()
            u = kernel_to_winograd(g, m=conv.m)
            r_sd = r_sd + partial_l2(g, self.spatial_sparsity)
            r_wd = r_wd + partial_l2(u, self.winograd_sparsity)
            n_sd += g.numel()
            n_wd += u.numel()
        return r_wd / n_wd, r_sd / n_sd

    def forward(self, net: WinogradNet) -> torch.Tensor:
        r_wd, r_sd = self.terms(net)
        return (torch.exp(self.alpha) * r_wd + torch.exp(self.beta) * r_sd
                - self.lam * (self.alpha + self.beta))


__all__ = ["magnitude_mask", "WinogradMagnitudePruner", "JointPruner", "linear_prune", "partial_l2", "JointRegularizer"]
