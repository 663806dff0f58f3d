"""The learnable low-precision regularizer of Choi, El-Khamy and Lee, "Learning low precision deep
neural networks through regularization" (arXiv 1809.00095), for the Winograd family's weights
(`terwin compress --family winograd --lowprec-lambda F`) and activations (`--lowprec-act-lambda F`).

The cost is E + e^α · R − λ · α with α learnable: at its optimum e^α = λ / R, so the pull towards the
grid grows as the values converge to it (the weight of the penalty grows over training without a
schedule). R is a mean squared quantization error measured in grid steps, on the grid the export uses
(`grid_error`); the two regularizers differ only in what they measure, and each has its own λ and α:

* weights (`LowPrecisionRegularizer`): the weights the engine multiplies (the masked Winograd-domain
  weights U of every Winograd layer and the classifier's weights) on
  `terwin.algo.quant.PerChannelQuant` of the layer's bits (per output channel, step
  max|w[o]| / (2^(bits−1) − 1)).
* activations (`ActivationRegularizer`): the inputs of the net's activation quantizers (the ReLU
  outputs of every Winograd layer, which the integer model holds as unsigned `act_bits` codes) on
  their calibrated grid: step = the `ActQuant`'s scale, levels 0 .. 2^act_bits − 1, so a value above
  the top level is measured to the top level (its clipping error counts, as in the paper's
  quantization error). The values are those of the training step's own forward pass (recorded by
  forward hooks while `recording()` is on), so the term is the mean over that batch. The scales
  exist only after calibration: the flow applies it in the quantization-aware stage.

Measuring in steps makes R independent of the layers' scales (a terwin choice; the paper's R is in
the values' units, with learnable cell sizes — here the cell size is the export's, so what the
regularizer pulls the values to is exactly the grid they are exported on). The gradient flows to the
values through x − Q(x) with Q(x) constant (its rounding has no gradient); the steps are constants
(computed from the detached weights; the activation scales are calibrated, not trained).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from ..quant import ActQuant, PerChannelQuant


def grid_error(x: torch.Tensor, step: torch.Tensor | float, lo: float, hi: float) -> torch.Tensor:
    """Σ ((x − Q(x)) / step)² in float64, Q(x) = clamp(floor(x / step + 1/2), lo, hi) · step (the
    export's round-half-up) held constant: the gradient reaches x through x − Q(x) alone."""
    q = torch.clamp(torch.floor(x.detach() / step + 0.5), lo, hi)
    return (((x - q * step) / step) ** 2).sum().double()


class _LearnableGridPenalty(nn.Module):
    """e^α · R − λ · α with α learnable; subclasses give R (`error`). Called with no arguments;
    `parameters()` is α (train it with its own learning rate)."""

    def __init__(self, net, *, lam: float):
        super().__init__()
        if not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"lambda must be a positive number, not {lam!r}")
        self.net = [net]  # not a submodule: parameters() is α alone
        self.lam = float(lam)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.last_error = math.nan  # R of the last call (float), for the report

    def error(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        r = self.error()
        self.last_error = float(r.detach())
        return (self.alpha.exp() * r - self.lam * self.alpha).float()

    def figures(self) -> dict:
        with torch.no_grad():
            return {"lambda": self.lam, "exp_alpha": float(self.alpha.exp()), "grid_error": self.final_error()}

    def final_error(self) -> float:
        return self.last_error


class LowPrecisionRegularizer(_LearnableGridPenalty):
    """The weights' regularizer: the net's Winograd layers at `bits`, its linear layers at `linear_bits`."""

    def __init__(self, net, *, bits: int, lam: float, linear_bits: int = 8):
        super().__init__(net, lam=lam)
        self.conv_quant, self.linear_quant = PerChannelQuant(bits), PerChannelQuant(linear_bits)

    def error(self) -> torch.Tensor:
        """R: the mean over all weights of ((w − Q(w)) / step)², each layer's own per-channel step."""
        net = self.net[0]
        total, count = torch.zeros((), dtype=torch.float64), 0
        for weights, quant in [(c.winograd_weight(), self.conv_quant) for c in net.convs()] + \
                              [(fc.masked_weight(), self.linear_quant) for fc in net.linears()]:
            step = quant.scale(weights).view((-1,) + (1,) * (weights.dim() - 1))
            total = total + grid_error(weights, step, -quant.qmax, quant.qmax)
            count += weights.numel()
        return total / max(count, 1)

    def final_error(self) -> float:
        """The weights' R now (not the last training step's)."""
        with torch.no_grad():
            return float(self.error())


class ActivationRegularizer(_LearnableGridPenalty):
    """The activations' regularizer: the inputs of every enabled `ActQuant` of the net (calibrated),
    recorded during the training forward passes inside `recording()`; each call measures and then
    forgets what was recorded since the last call (zero if nothing was)."""

    def __init__(self, net, *, lam: float):
        super().__init__(net, lam=lam)
        self._seen: list[tuple[torch.Tensor, ActQuant]] = []
        self._measuring = False
        self.measured_error = math.nan

    def quantizers(self) -> list[ActQuant]:
        return [m for m in self.net[0].modules() if isinstance(m, ActQuant)]

    @contextlib.contextmanager
    def recording(self):
        """Record the activation quantizers' inputs of forward passes in training mode with gradients on."""
        def hook(module, args):
            if module.enabled and (self._measuring or (module.training and torch.is_grad_enabled())):
                self._seen.append((args[0], module))
        handles = [q.register_forward_pre_hook(hook) for q in self.quantizers()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._seen = []

    @torch.no_grad()
    def measure(self, x: torch.Tensor, batch: int = 512) -> float:
        """R over the activations of the net (in eval mode) on the inputs `x`; `figures` reports it."""
        net = self.net[0]
        was = net.training
        net.eval()
        total, count = 0.0, 0
        self._measuring = True
        try:
            with self.recording():
                for i in range(0, len(x), batch):
                    net(x[i:i + batch])
                    n = sum(v.numel() for v, _ in self._seen)
                    total += float(self.error()) * n
                    count += n
        finally:
            self._measuring = False
            net.train(was)
        self.measured_error = total / max(count, 1)
        return self.measured_error

    def final_error(self) -> float:
        """R of the last `measure`, else of the last training step."""
        return self.last_error if math.isnan(self.measured_error) else self.measured_error

    def error(self) -> torch.Tensor:
        """R: the mean over the recorded activations of ((x − Q(x)) / scale)², Q the quantizer's grid."""
        total, count = torch.zeros((), dtype=torch.float64), 0
        for x, quant in self._seen:
            lo, hi = (-quant.qmax - 1, quant.qmax) if quant.signed else (0, quant.qmax)
            total = total + grid_error(x, quant.scale, lo, hi)
            count += x.numel()
        self._seen = []
        return total / max(count, 1)


def combined(regularizers):
    """One penalty (the sum) and its parameters for `terwin.algo.train.train`, from the regularizers
    that are on (None where off); (None, []) when none is."""
    regs = [r for r in regularizers if r is not None]
    if not regs:
        return None, []
    return (lambda: sum(r() for r in regs)), [p for r in regs for p in r.parameters()]


__all__ = ["grid_error", "LowPrecisionRegularizer", "ActivationRegularizer", "combined"]
