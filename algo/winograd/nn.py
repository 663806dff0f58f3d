"""Torch modules of the Winograd-sparse family: `WinoConv`, `MaskedLinear`, `WinogradNet`.

`WinoConv` is one 3x3, stride-1 convolution with three parameterisations:

* ``"spatial"``   : parameter `weight` g [O, C, 3, 3], computed as a direct convolution of g * spatial_mask
                    (float pretraining; the joint mode's regularised training);
* ``"winograd"``  : parameter `weight_wd` U [O, C, m+2, m+2] (Liu et al.), computed in the Winograd
                    domain as U * winograd_mask;
* ``"joint"``     : parameter `weight` g, computed in the Winograd domain with
                    U = winograd_mask * G (g * spatial_mask) G^T (Choi et al.: sparse in both domains).

A weight quantizer (any callable on U, e.g. `terwin.algo.quant.PerChannelQuant`) can be attached for
quantization-aware training; it acts on the Winograd-domain weights, which are what the hardware
multiplies.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from terwin.deployment import Linear, MaxPool2d, WinogradConv2d

from ..data import INPUT_SCALE
from ..quant import ActQuant, InputQuant
from .transforms import kernel_to_winograd, winograd_conv2d

MODES = ("spatial", "winograd", "joint")

# (layer name in the model file, Deployment layer kind, size): out channels of a 3x3 conv, pool size, classes
DEFAULT_TOPOLOGY = (("wconv0", WinogradConv2d.kind, 16), ("wconv1", WinogradConv2d.kind, 32),
                    ("pool2", MaxPool2d.kind, 2), ("wconv3", WinogradConv2d.kind, 32),
                    ("pool4", MaxPool2d.kind, 2), ("linear5", Linear.kind, 10))


class WinoConv(nn.Module):
    """A 3x3, stride-1 convolution trainable in the spatial domain, the Winograd domain, or jointly."""

    def __init__(self, in_channels: int, out_channels: int, *, padding: int = 1, m: int = 2):
        super().__init__()
        self.in_channels, self.out_channels, self.padding, self.m = in_channels, out_channels, padding, m
        n = m + 2
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        self.weight_wd: nn.Parameter | None = None
        self.register_buffer("spatial_mask", torch.ones(out_channels, in_channels, 3, 3))
        self.register_buffer("winograd_mask", torch.ones(out_channels, in_channels, n, n))
        self.mode = "spatial"
        self.weight_quant = None  # callable on U, or None

    def set_mode(self, mode: str) -> None:
        """Switch parameterisation; "winograd" starts U from G (g * spatial_mask) G^T and drops g."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "winograd" and self.weight_wd is None:
            with torch.no_grad():
                u = kernel_to_winograd(self.weight * self.spatial_mask, m=self.m) * self.winograd_mask
            self.weight_wd = nn.Parameter(u.clone())
            self.weight.requires_grad_(False)
        self.mode = mode

    def spatial_weight(self) -> torch.Tensor:
        return self.weight * self.spatial_mask

    def winograd_weight(self) -> torch.Tensor:
        """Masked float Winograd-domain weights U [O, C, m+2, m+2] (before weight quantization)."""
        if self.mode == "winograd":
            return self.weight_wd * self.winograd_mask
        return kernel_to_winograd(self.spatial_weight(), m=self.m) * self.winograd_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "spatial":
            return F.conv2d(x, self.spatial_weight(), self.bias, padding=self.padding)
        u = self.winograd_weight()
        if self.weight_quant is not None:
            u = self.weight_quant(u)
        return winograd_conv2d(x, u, padding=self.padding, m=self.m) + self.bias.view(1, -1, 1, 1)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned parameters (kept at zero so exported weights and statistics are exact)."""
        self.weight.mul_(self.spatial_mask)
        if self.weight_wd is not None:
            self.weight_wd.mul_(self.winograd_mask)


class MaskedLinear(nn.Linear):
    """Linear layer with a magnitude-pruning mask and optional weight fake quantization."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", torch.ones(out_features, in_features))
        self.weight_quant = None

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_weight()
        if self.weight_quant is not None:
            w = self.weight_quant(w)
        return F.linear(x, w, self.bias)

    @torch.no_grad()
    def apply_masks(self) -> None:
        self.weight.mul_(self.mask)


class WinogradNet(nn.Module):
    """The digits CNN of the Winograd family: 3x3 convs (WinoConv) with ReLU, 2x2 max-pools, one linear.

    `topology`: (name, kind, size) per layer, kind one of the Deployment's layer kinds it exports to —
    `WinogradConv2d.kind` (size: out channels), `MaxPool2d.kind` (size: pool size), `Linear.kind`
    (size: classes; last). The names are the layer names of the exported model file. Every conv and
    the input of every later layer sees unsigned activations.
    """

    def __init__(self, *, topology=DEFAULT_TOPOLOGY, input_shape=(1, 8, 8), m: int = 2, act_bits: int = 8,
                 input_scale: float = INPUT_SCALE):
        super().__init__()
        self.topology = tuple((str(name), str(kind), int(size)) for name, kind, size in topology)
        self.input_shape = tuple(input_shape)
        self.input_scale = input_scale
        self.input_quant = InputQuant(input_scale, act_bits)   # off until quantization-aware training
        c, h, w = self.input_shape
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList()   # ActQuant after each ReLU (indexed like layers; Identity elsewhere)
        for i, (_, kind, size) in enumerate(self.topology):
            last = i == len(self.topology) - 1
            if kind == WinogradConv2d.kind:
                self.layers.append(WinoConv(c, size, padding=1, m=m))
                c = size
            elif kind == MaxPool2d.kind:
                self.layers.append(nn.MaxPool2d(size, size))
                h, w = h // size, w // size
            elif kind == Linear.kind:
                if not last:
                    raise ValueError("the linear layer must be the last layer")
                self.layers.append(MaskedLinear(c * h * w, size))
            else:
                raise ValueError(f"a WinogradNet layer kind must be {WinogradConv2d.kind}, {MaxPool2d.kind} "
                                 f"or {Linear.kind}, not {kind!r}")
            needs_act = kind == WinogradConv2d.kind
            self.acts.append(ActQuant(act_bits, calibration="percentile") if needs_act else nn.Identity())
        if self.topology[-1][1] != Linear.kind:
            raise ValueError("the last layer must be linear (raw class scores)")

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.topology)

    def convs(self) -> list[WinoConv]:
        return [layer for layer in self.layers if isinstance(layer, WinoConv)]

    def linears(self) -> list[MaskedLinear]:
        return [layer for layer in self.layers if isinstance(layer, MaskedLinear)]

    def set_mode(self, mode: str) -> None:
        for conv in self.convs():
            conv.set_mode(mode)

    def apply_masks(self) -> None:
        for layer in self.layers:
            if hasattr(layer, "apply_masks"):
                layer.apply_masks()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        for layer, act in zip(self.layers, self.acts):
            if isinstance(layer, MaskedLinear):
                x = layer(x.flatten(1))
            else:
                x = layer(x)
                if isinstance(layer, WinoConv):
                    x = act(F.relu(x))
        return x


__all__ = ["MODES", "DEFAULT_TOPOLOGY", "WinoConv", "MaskedLinear", "WinogradNet"]
