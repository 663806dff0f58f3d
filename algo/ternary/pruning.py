"""PE-wise structured pruning: a group is exactly one tile of `terwin.tiling.TileGrid` for the spec.

Lifecycle (after `torch.ao.pruning`'s sparsifier): `TilePruner.prepare(model)` registers a
`TileMask` parametrization on every prunable layer; training adds `pruner.penalty()` to the loss
(Weight Penalty Clipping or plain group lasso, both callable strategies); `pruner.step()` prunes
the lowest-norm tiles of each layer to its share of the target and freezes the masks;
`pruner.tile_masks()` gives the uint8 [og, tg, cg] masks for export.

Group norms are RMS norms ‖W_g‖₂ / sqrt(n_g) (n_g = real, non-padding weights of the tile) so that
the partial tiles at the edges (the last output group of a 10-class linear layer, the last tap group
of the first layer) are compared fairly with full ones; for full tiles this is the paper's ‖W_g‖₂
up to a constant factor (a terwin choice, see docs/ternary.md).

`criterion` chooses what ranks the tiles at `step()`: "magnitude" (the RMS norm above) or
"importance" (Gao et al., ICML 2019, "Rate distortion for model compression"): the tile score
Σ_i I_i · w_i² / n_g with I_i = E[(∂ℓ/∂w_i)²], the mean over the training steps since `prepare` of
the squared gradient of the training loss with respect to the latent weight, accumulated by a
gradient hook on it (`importance()`). The pruner's own regularizer is not part of ℓ: `penalty()`
computes its gradient and the hook takes it off (else the tiles the regularizer pulls to zero would
look important).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from terwin.errors import TerwinError
from terwin.spec import HardwareSpec
from terwin.tiling import TileGrid

from .ternarize import latent_weight


class TileGroups:
    """Gathers a weight tensor into its PE tiles: `gather(w)` -> [G, rows*cols] (padding lanes 0)."""

    def __init__(self, grid: TileGrid):
        self.grid = grid
        idx = grid.index.reshape(grid.size, grid.rows * grid.cols)
        self.valid = torch.from_numpy(idx >= 0)
        self.index = torch.from_numpy(np.maximum(idx, 0))
        self.sizes = self.valid.sum(dim=1)

    @classmethod
    def for_module(cls, module: nn.Module, spec: HardwareSpec, *, in_shape=None) -> "TileGroups":
        return cls(TileGrid.for_weight(tuple(latent_weight(module).shape), spec, in_shape=in_shape))

    @property
    def count(self) -> int:
        return self.grid.size

    def gather(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(-1)[self.index] * self.valid.to(w.dtype)

    def norms(self, w: torch.Tensor, *, eps: float = 0.0) -> torch.Tensor:
        """L2 norm of every tile, [G] in (og, tg, cg) row-major order."""
        return torch.sqrt(self.gather(w).pow(2).sum(dim=1) + eps)

    def rms(self, w: torch.Tensor, *, eps: float = 0.0) -> torch.Tensor:
        """Size-normalised tile norms ‖W_g‖₂ / sqrt(n_g)."""
        return self.norms(w, eps=eps) / torch.sqrt(self.sizes.to(w.dtype))

    def expand(self, tile_values) -> np.ndarray:
        """Per-tile values [G] -> per-weight array shaped like the layer's weight."""
        return self.grid.expand(np.asarray(tile_values).reshape(self.grid.shape))


class TileMask(nn.Module):
    """Parametrization w -> w * mask, the mask expanded from per-tile keep flags."""

    def __init__(self, groups: TileGroups, weight_shape):
        super().__init__()
        self.groups = groups
        self.weight_shape = tuple(weight_shape)
        self.register_buffer("tile_keep", torch.ones(groups.count, dtype=torch.bool))
        self.register_buffer("mask", torch.ones(self.weight_shape))

    def set_keep(self, keep) -> None:
        keep = torch.as_tensor(np.asarray(keep, dtype=bool).reshape(-1))
        self.tile_keep.copy_(keep)
        full = self.groups.expand(keep.numpy().astype(np.float32)).reshape(self.weight_shape)
        self.mask.copy_(torch.from_numpy(full))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask.to(w.dtype)


# -- regularizers (strategies) -----------------------------------------------------------------
# A regularizer is called with the tiles' L2 norms ‖W_g‖ [G], their real sizes n_g [G] and the
# number of tiles the layer is to lose; it returns the penalty term of the loss.

@dataclass
class WeightPenaltyClipping:
    """λ Σ_g min(‖W_g‖, τ_g): τ is re-set at every call to the RMS tile norm at the target-sparsity
    rank (τ_g = τ · sqrt(n_g)), so only the tiles that are to be pruned are pulled to zero and the
    large weights that set the ternary scale are left alone."""
    strength: float = 1e-3
    name: str = "wpc"

    def __call__(self, norms: torch.Tensor, sizes: torch.Tensor, prune_count: int) -> torch.Tensor:
        if prune_count <= 0:
            return norms.sum() * 0
        root = torch.sqrt(sizes.to(norms.dtype))
        with torch.no_grad():
            tau = torch.sort(norms.detach() / root).values[min(prune_count, norms.numel()) - 1]
        return self.strength * torch.minimum(norms, tau * root).sum()


@dataclass
class GroupLasso:
    """λ Σ_g ‖W_g‖ (the unclipped ablation): every tile is shrunk, kept or not."""
    strength: float = 1e-3
    name: str = "group-lasso"

    def __call__(self, norms: torch.Tensor, sizes: torch.Tensor, prune_count: int) -> torch.Tensor:
        return self.strength * norms.sum()


REGULARIZERS = {"wpc": WeightPenaltyClipping, "group-lasso": GroupLasso}
CRITERIA = ("magnitude", "importance")


# -- sparsity allocation -----------------------------------------------------------------------

def allocate(tile_counts: list[int], target: float, *, dense: tuple[int, ...] = (0,)) -> list[int]:
    """Tiles to prune per layer so that the pruned fraction of all tiles is ceil(target * total) / total.

    Layers listed in `dense` (the first layer: 1 input channel, a handful of tiles that every later
    layer depends on) keep all their tiles; the others are pruned at one common rate, remainders
    given by largest fraction.
    """
    if not 0 <= target < 1:
        raise TerwinError(f"tile sparsity must lie in [0, 1), not {target!r}")
    total = sum(tile_counts)
    want = math.ceil(target * total - 1e-9)  # never below the target
    prunable = [i for i in range(len(tile_counts)) if i not in dense]
    capacity = sum(tile_counts[i] for i in prunable)
    if want > capacity:
        raise TerwinError(f"tile sparsity {target} needs {want} pruned tiles but only {capacity} "
                          f"of {total} can be pruned with the first layer dense")
    rate = want / capacity if capacity else 0.0
    exact = {i: rate * tile_counts[i] for i in prunable}
    counts = {i: math.floor(v) for i, v in exact.items()}
    rest = want - sum(counts.values())
    for i in sorted(prunable, key=lambda i: (counts[i] - exact[i], i))[:rest]:
        counts[i] += 1
    return [counts.get(i, 0) for i in range(len(tile_counts))]


# -- the pruner --------------------------------------------------------------------------------

@dataclass
class PrunableLayer:
    name: str
    module: nn.Module
    groups: TileGroups
    mask: TileMask
    prune_count: int = 0
    final_count: int = 0
    grad_sq: torch.Tensor | None = None     # Σ (∂ℓ/∂w)² over the steps seen (criterion "importance")
    steps: int = 0
    penalty_grad: torch.Tensor | None = None  # the regularizer's part of the next gradient


class TilePruner:
    """PE-tile pruner for a model's conv/linear layers.

    layers: [(name, module, in_shape or None)] in network order; in_shape is the (C, H, W) input of a
    linear layer. regularizer: a strategy from REGULARIZERS (or None). criterion: one of CRITERIA.
    """

    def __init__(self, spec: HardwareSpec, *, target: float, regularizer=None, dense: tuple[int, ...] = (0,),
                 criterion: str = "magnitude"):
        if not 0 <= target < 1:
            raise TerwinError(f"tile sparsity must lie in [0, 1), not {target!r}")
        if criterion not in CRITERIA:
            raise TerwinError(f"--prune-criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")
        self.criterion = criterion
        self._penalty_pass = False
        self.spec = spec
        self.target = target
        self.regularizer = regularizer
        self.dense = dense
        self.layers: list[PrunableLayer] = []
        self.frozen = False

    def prepare(self, layers) -> "TilePruner":
        for name, module, in_shape in layers:
            groups = TileGroups.for_module(module, self.spec, in_shape=in_shape)
            mask = TileMask(groups, latent_weight(module).shape)
            parametrize.register_parametrization(module, "weight", mask)
            layer = PrunableLayer(name, module, groups, mask)
            if self.criterion == "importance":
                latent_weight(module).register_hook(self._accumulate(layer))
            self.layers.append(layer)
        counts = allocate([layer.groups.count for layer in self.layers], self.target, dense=self.dense)
        for layer, n in zip(self.layers, counts):
            layer.prune_count = layer.final_count = n
        return self

    def _accumulate(self, layer: PrunableLayer):
        def hook(grad: torch.Tensor) -> None:
            if not self.frozen and not self._penalty_pass:
                g = grad.detach().double()
                if layer.penalty_grad is not None:
                    g = g - layer.penalty_grad
                    layer.penalty_grad = None
                g = g * g
                layer.grad_sq = g if layer.grad_sq is None else layer.grad_sq + g
                layer.steps += 1
        return hook

    def importance(self, layer: PrunableLayer) -> torch.Tensor:
        """I_i = E[(∂ℓ/∂w_i)²] of the layer's latent weights over the steps seen (zeros before any)."""
        w = latent_weight(layer.module)
        if layer.grad_sq is None:
            return torch.zeros(w.shape, dtype=torch.float64)
        return layer.grad_sq / layer.steps

    def scores(self, layer: PrunableLayer) -> np.ndarray:
        """Each tile's score for `step()` (the lowest are pruned): its RMS norm ("magnitude"), or
        Σ I_i · w_i² / n_g ("importance")."""
        return self._scores(layer, latent_weight(layer.module).detach() * layer.mask.mask)

    def _scores(self, layer: PrunableLayer, w: torch.Tensor) -> np.ndarray:
        if self.criterion == "magnitude":
            return layer.groups.rms(w).numpy()
        saliency = self.importance(layer) * w.double() ** 2
        return (layer.groups.gather(saliency).sum(dim=1) / layer.groups.sizes.double()).numpy()

    def assign(self, counts: dict[str, int]) -> None:
        """Set the named layers' final prune counts (a per-layer budget, `allocation.py`)."""
        for layer in self.layers:
            if layer.name in counts:
                n = int(counts[layer.name])
                if not 0 <= n <= layer.groups.count:
                    raise TerwinError(f"{layer.name}: cannot prune {n} of {layer.groups.count} tiles")
                layer.prune_count = layer.final_count = n

    def ramp(self, fraction: float) -> None:
        """Gradual pruning: the regularizer aims at round(fraction · final count) tiles per layer
        (fraction in [0, 1]); `step()` always prunes the final counts."""
        f = min(1.0, max(0.0, fraction))
        for layer in self.layers:
            layer.prune_count = round(f * layer.final_count)

    def gradual(self, fraction: float, *, masks: bool = False):
        """The joint stage's `on_epoch(epoch, epochs)` callback for gradual pruning: the target count
        ramps up as 1 − (1 − t)³ over the first `fraction` of the epochs (0: the final count from the
        start, one-shot); with `masks` the tiles aimed at are also masked at every epoch
        (`mask_lowest`, gradual hard pruning)."""
        def on_epoch(epoch: int, epochs: int) -> None:
            if fraction > 0:
                span = max(1, round(fraction * epochs))
                self.ramp(1 - (1 - min(1.0, (epoch + 1) / span)) ** 3)
            if masks:
                self.mask_lowest()
        return on_epoch

    @torch.no_grad()
    def mask_lowest(self) -> None:
        """Gradual hard pruning (`Schedule.ramp_masks`): mask each layer's current `prune_count`
        lowest-scoring tiles under the pruner's criterion (of the latent weights, so a masked tile may
        return at the next call while its weights are not yet the smallest); the masks stay open until
        `step()`."""
        if self.frozen:
            return
        for layer in self.layers:
            keep = np.ones(layer.groups.count, dtype=bool)
            if layer.prune_count:
                score = self._scores(layer, latent_weight(layer.module).detach())
                keep[np.argsort(score, kind="stable")[:layer.prune_count]] = False
            layer.mask.set_keep(keep)

    def penalty(self) -> torch.Tensor:
        """The regularizer summed over the layers (zero once the masks are frozen)."""
        total = torch.zeros(())
        if self.regularizer is None or self.frozen:
            return total
        for layer in self.layers:
            if layer.prune_count == 0:
                continue
            norms = layer.groups.norms(latent_weight(layer.module), eps=1e-12)
            total = total + self.regularizer(norms, layer.groups.sizes, layer.prune_count)
        if self.criterion == "importance" and total.requires_grad:
            weights = [latent_weight(layer.module) for layer in self.layers]
            self._penalty_pass = True            # the hooks fire for this gradient too: not a training step
            try:
                grads = torch.autograd.grad(total, weights, retain_graph=True, allow_unused=True)
            finally:
                self._penalty_pass = False
            for layer, g in zip(self.layers, grads):
                layer.penalty_grad = None if g is None else g.detach().double()
        return total

    @torch.no_grad()
    def step(self) -> None:
        """Prune each layer's final count of lowest-scoring tiles (`scores`) and freeze the masks."""
        for layer in self.layers:
            layer.prune_count = layer.final_count
            score = self.scores(layer)
            keep = np.ones(layer.groups.count, dtype=bool)
            if layer.prune_count:
                order = np.argsort(score, kind="stable")
                keep[order[:layer.prune_count]] = False
            layer.mask.set_keep(keep)
            # pruned latent weights are zeroed too, so that nothing revives them
            latent_weight(layer.module).mul_(layer.mask.mask)
        self.frozen = True

    def tile_masks(self) -> dict[str, np.ndarray]:
        return {layer.name: layer.mask.tile_keep.numpy().astype(np.uint8).reshape(layer.groups.grid.shape)
                for layer in self.layers}


__all__ = ["TileGroups", "TileMask", "WeightPenaltyClipping", "GroupLasso", "REGULARIZERS", "CRITERIA", "allocate",
           "TilePruner"]
