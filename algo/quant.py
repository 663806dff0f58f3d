"""Quantization pieces shared by the compression families: activation fake quantization (one
`ActQuant`, its calibration rule a parameter), per-channel weight quantization, batch-norm folding
and requantization fitting.

The integer contract (docs/architecture.md, `terwin.intmath`) rounds half up: q = floor(x / scale + 1/2).
The fake quantizers here round the same way, so the float model in quantized mode sees the values
the integer model will compute (up to the requantizer's 16-bit multiplier).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from terwin import intmath


class _RoundHalfUpSTE(torch.autograd.Function):
    """floor(x + 1/2) forward; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_half_up_ste(x: torch.Tensor) -> torch.Tensor:
    return _RoundHalfUpSTE.apply(x)


def fake_quantize(x: torch.Tensor, scale: float | torch.Tensor, *, bits: int, signed: bool = False) -> torch.Tensor:
    """Unsigned fake quantization: clamp(floor(x / scale + 1/2), 0, 2**bits - 1) * scale; `signed`:
    clamped to -2**(bits-1) .. 2**(bits-1) - 1 instead (a signed map: a projection shortcut).

    Straight-through: the gradient passes where the value lies inside the range and is zero where
    the clamp cut it.
    """
    if signed:
        q = torch.clamp(round_half_up_ste(x / scale), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    else:
        q = torch.clamp(round_half_up_ste(x / scale), 0, (1 << bits) - 1)
    return q * scale


CALIBRATIONS = ("ema-max", "percentile")


class ActQuant(nn.Module):
    """Unsigned `bits`-bit activation fake quantizer after a ReLU, with one scale per layer:
    clamp(floor(x / scale + 1/2), 0, 2**bits - 1) · scale, straight-through inside the range.

    `calibration` is how the scale is found (the two families differ here, on purpose):

    * ``"ema-max"`` (ternary): scale = running_max / (2**bits - 1), running_max an exponential moving
      average (`momentum`) of the batch maximum, updated in training mode while `calibrating` is on
      (on from the start, so switching quantization on starts from a calibrated scale). The scale
      is computed in float64 from the float32 running maximum.
    * ``"percentile"`` (Winograd): `calibrate_activations(model, x)` observes the activations of `x`
      and sets scale = (`percentile`-th percentile) / (2**bits - 1), stored as float32; until then the
      quantizer is off.

    `min_scale` (set by the ternary exporter's `sync_activation_scales`) keeps the scale from being
    finer than the grid the integer model can reach. With `enabled` off the module is the identity.

    `signed` (a projection shortcut's map, which has no ReLU): the range is -2**(bits-1) .. 2**(bits-1) - 1
    and the ema-max rule follows the batch maximum of |x|.
    """

    def __init__(self, bits: int, *, calibration: str = "ema-max", momentum: float = 0.1,
                 percentile: float = 99.99, signed: bool = False):
        super().__init__()
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
        self.bits = bits
        self.signed = signed
        self.calibration = calibration
        self.momentum = momentum
        self.percentile = percentile
        self.enabled = False
        self.calibrating = calibration == "ema-max"
        self.observed: list[torch.Tensor] = []
        self.register_buffer("running_max", torch.zeros(()))               # ema-max
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("calibrated_scale", torch.zeros(()))          # percentile
        self.register_buffer("min_scale", torch.zeros(()))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """Float value of one activation unit, at least `min_scale`."""
        if self.calibration == "percentile":
            scale = float(self.calibrated_scale)
        else:
            top = float(self.running_max)
            scale = (top if top > 0 else 1.0) / self.qmax
        return max(scale, float(self.min_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            if self.calibration == "percentile":
                self.observed.append(x.detach().abs() if self.signed else x.detach())
            elif self.training:
                with torch.no_grad():
                    batch_max = x.detach().abs().max() if self.signed else x.detach().max()
                    if not bool(self.initialized):
                        self.running_max.copy_(batch_max)
                        self.initialized.fill_(True)
                    else:
                        self.running_max.lerp_(batch_max, self.momentum)
        if not self.enabled:
            return x
        return fake_quantize(x, self.scale, bits=self.bits, signed=self.signed)

    def finish_calibration(self) -> float:
        """Percentile rule: set the scale from the observed activations, stop observing, switch on."""
        values = torch.cat([v.reshape(-1) for v in self.observed]) if self.observed else torch.zeros(0)
        self.observed = []
        self.calibrating = False
        top = float(torch.quantile(values[:1 << 24].double(), self.percentile / 100.0)) if values.numel() else 1.0
        if not top > 0:
            top = float(values.max()) if values.numel() and float(values.max()) > 0 else 1.0
        self.calibrated_scale.fill_(top / self.qmax)
        self.enabled = True
        return float(self.calibrated_scale)

    def extra_repr(self) -> str:
        signed = ", signed" if self.signed else ""
        return f"bits={self.bits}{signed}, calibration={self.calibration}, enabled={self.enabled}, scale={self.scale:.4g}"


@torch.no_grad()
def calibrate_activations(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Set the scale of every percentile-rule `ActQuant` of `model` from one eval-mode pass over `x`
    and switch them on; returns the scales in module order."""
    acts = [m for m in model.modules() if isinstance(m, ActQuant) and m.calibration == "percentile"]
    for a in acts:
        a.enabled, a.calibrating, a.observed = False, True, []
    model.eval()
    model(x)
    return [a.finish_calibration() for a in acts]


class InputQuant(nn.Module):
    """The network input's fixed quantization (scale 1/16 for the digits: q = pixel exactly)."""

    def __init__(self, scale: float, bits: int):
        super().__init__()
        self.scale = scale
        self.bits = bits
        self.enabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.scale, bits=self.bits) if self.enabled else x


class PerChannelQuant:
    """Symmetric signed per-output-channel fake quantization of weights to `bits` bits, straight-through.

    scale[o] = max |w[o]| / (2**(bits-1) - 1); q = round(w / scale) (half up), within the signed range.
    """

    def __init__(self, bits: int = 8):
        if not 2 <= bits <= 16:
            raise ValueError(f"weight bits must be from 2 to 16, not {bits}")
        self.bits = bits
        self.qmax = (1 << (bits - 1)) - 1

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
        return torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax))

    def codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes (as a float tensor, exact) and per-channel scales."""
        s = self.scale(w)
        view = (-1,) + (1,) * (w.dim() - 1)
        q = torch.clamp(torch.floor(w.detach() / s.view(view) + 0.5), -self.qmax, self.qmax)
        return q, s

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        s = self.scale(w)
        view = (-1,) + (1,) * (w.dim() - 1)
        return torch.clamp(round_half_up_ste(w / s.view(view)), -self.qmax, self.qmax) * s.view(view)


def set_quantization(model: nn.Module, *, enabled: bool, calibrating: bool | None = None) -> None:
    """Switch every activation/input quantizer of `model` on or off (and freeze or free its scale)."""
    for m in model.modules():
        if isinstance(m, (ActQuant, InputQuant)):
            m.enabled = enabled
        if isinstance(m, ActQuant) and calibrating is not None:
            m.calibrating = calibrating


# -- batch norm ------------------------------------------------------------------------------

def bn_affine(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode batch norm as a per-channel affine map y = k * x + c, in float64."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    k = gamma / torch.sqrt(var + bn.eps)
    c = beta - mean * k
    return k.numpy(), c.numpy()


def fold_bn(weight, bias, bn) -> tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode batch norm into the preceding conv/linear: returns float64 (weight, bias)
    such that conv(x, weight) + bias == bn(conv(x, W) + b)."""
    k, c = bn_affine(bn)
    w = np.asarray(weight.detach().double() if isinstance(weight, torch.Tensor) else weight, dtype=np.float64)
    if bias is None:
        b = np.zeros(w.shape[0])
    else:
        b = np.asarray(bias.detach().double() if isinstance(bias, torch.Tensor) else bias, dtype=np.float64)
    return w * k.reshape(-1, *([1] * (w.ndim - 1))), k * b + c


# -- requantization ----------------------------------------------------------------------------

BIAS_LIMIT = 1 << 40  # Deployment.validate's bound on |bias|


def fit_requant(scale, shift_float, *, acc_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer (bias, multiplier, shift) per channel for the float map out = scale * acc_float + shift_float.

    `acc_scale` is the float value of one accumulator unit (input scale x weight scale), `scale` the
    per-channel factor applied to the float accumulator (folded batch norm / output scale), so the
    requantizer computes q = ((acc + bias) * m + 2**(s-1)) >> s with
    m / 2**s ~ scale * acc_scale and bias = round(shift_float / (scale * acc_scale)) in accumulator units.
    """
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    shift_float = np.broadcast_to(np.asarray(shift_float, dtype=np.float64), scale.shape)
    total = scale * acc_scale
    ms = [intmath.fit_multiplier(float(t)) for t in total]
    m = np.array([v for v, _ in ms], dtype=np.int64)
    s = np.array([v for _, v in ms], dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(total != 0, shift_float / np.where(total != 0, total, 1.0), 0.0)
    b = np.clip(np.floor(b + 0.5), -BIAS_LIMIT, BIAS_LIMIT).astype(np.int64)
    return b, m, s


__all__ = ["ActQuant", "CALIBRATIONS", "calibrate_activations", "InputQuant", "PerChannelQuant", "fake_quantize",
           "round_half_up_ste", "set_quantization", "bn_affine", "fold_bn", "fit_requant"]
