"""Torch side of the Winograd-sparse family: F(m x m, 3x3) transforms, convolution and modules.

The transform matrices come from `terwin.winograd` (one source for algo, sim and hw); the output
tile `m` is a parameter everywhere, although only F(2x2,3x3) is offered today.

Tiling (the same as `terwin.sim.reference.winograd_conv2d_acc` and the hardware): the padded input is
read in (m+2)x(m+2) tiles at stride m from the top-left corner; the last row/column of tiles may reach
past the padded input, where it reads zeros; outputs past the true output size are cropped. So odd
output sizes are handled with partial tiles.

`WinoConv` is one 3x3, stride-1 convolution with three parameterisations:

* ``"spatial"``   : parameter `weight` g [O, C, 3, 3], computed as a direct convolution of g * spatial_mask
                    (float pretraining; the joint mode's regularised training);
* ``"winograd"``  : parameter `weight_wd` U [O, C, m+2, m+2] (Liu et al.), computed in the Winograd
                    domain as U * winograd_mask;
* ``"joint"``     : parameter `weight` g, computed in the Winograd domain with
                    U = winograd_mask * G (g * spatial_mask) G^T (Choi et al.: sparse in both domains).

A weight quantizer (any callable on U, e.g. `PerChannelQuant`) can be attached for quantization-aware
training; it acts on the Winograd-domain weights, which are what the hardware multiplies.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from terwin import winograd
from terwin.algo.quant import round_half_up_ste

MODES = ("spatial", "winograd", "joint")


# -- transforms ----------------------------------------------------------------------------------

def transforms(m: int = 2, *, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B^T, G, A^T) of F(m x m, 3x3) as torch tensors (G holds halves; do not ask for an integer dtype)."""
    bt, g, at = winograd.matrices(m, 3)
    return tuple(torch.tensor(a, dtype=dtype, device=device) for a in (bt, g, at))


def integer_transforms(m: int = 2, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B^T, A^T) as int64 tensors: the input and output transforms hold only 0 and +-1."""
    bt, _, at = winograd.matrices(m, 3)
    return torch.tensor(bt, dtype=torch.int64, device=device), torch.tensor(at, dtype=torch.int64, device=device)


def kernel_to_winograd(g: torch.Tensor, *, m: int = 2) -> torch.Tensor:
    """U = G g G^T for spatial 3x3 kernels g [..., 3, 3] -> [..., m+2, m+2]."""
    _, gm, _ = transforms(m, dtype=g.dtype, device=g.device)
    return gm @ g @ gm.T


def output_size(size: int, padding: int) -> int:
    return size + 2 * padding - 2


def input_tiles(x: torch.Tensor, *, padding: int, m: int = 2) -> tuple[torch.Tensor, int, int]:
    """Input tiles d [N, C, ty, tx, m+2, m+2] of x [N, C, H, W], and the true output size (Ho, Wo)."""
    n_in = m + 2
    h, w = x.shape[-2:]
    ho, wo = output_size(h, padding), output_size(w, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"input {h}x{w} with padding {padding} has no 3x3 output")
    ty, tx = winograd.tiles_per_side(ho, m), winograd.tiles_per_side(wo, m)
    # pad left/top by `padding`, right/bottom up to the last tile's far edge (never negative: ty*m >= ho)
    xp = F.pad(x, (padding, tx * m + 2 - w - padding, padding, ty * m + 2 - h - padding))
    return xp.unfold(2, n_in, m).unfold(3, n_in, m), ho, wo


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, *, padding: int, m: int = 2) -> torch.Tensor:
    """Y = A^T [sum_c U[o, c] * (B^T d_c B)] A per m x m output tile; x [N, C, H, W], u [O, C, m+2, m+2].

    Works on float tensors (training; float64 is exact for integer data in range) and on int64
    tensors (the integer evaluation: B^T and A^T are integer, so everything stays integer).
    """
    if x.dtype.is_floating_point:
        bt, _, at = transforms(m, dtype=x.dtype, device=x.device)
    else:
        bt, at = integer_transforms(m, device=x.device)
    n_in = m + 2
    u = u.to(x.dtype)
    d, ho, wo = input_tiles(x, padding=padding, m=m)
    n, c, ty, tx = d.shape[:4]
    o = u.shape[0]
    # row-major vec(B^T d B) = (B^T kron B^T) vec(d), and likewise for A^T M A: three plain matmuls
    d = d.permute(0, 2, 3, 1, 4, 5).reshape(n * ty * tx, c, n_in * n_in)
    v = d @ torch.kron(bt, bt).T                                          # B^T d B      [T, C, n*n]
    mm = torch.bmm(v.permute(2, 0, 1), u.reshape(o, c, -1).permute(2, 1, 0))  # sum_c U * V  [n*n, T, O]
    y = mm.permute(1, 2, 0) @ torch.kron(at, at).T                        # A^T M A      [T, O, m*m]
    y = y.reshape(n, ty, tx, o, m, m).permute(0, 3, 1, 4, 2, 5).reshape(n, o, ty * m, tx * m)
    return y[:, :, :ho, :wo]


# -- quantizers (callable strategies) ------------------------------------------------------------

# the integer contract's rounding, floor(x + 1/2), with a straight-through gradient: shared with the
# ternary family so both quantize activations the same way
round_half_up = round_half_up_ste


class PerChannelQuant:
    """Symmetric signed per-output-channel fake quantization to `bits` bits, straight-through gradient.

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
        return torch.clamp(round_half_up(w / s.view(view)), -self.qmax, self.qmax) * s.view(view)


class ActQuant(nn.Module):
    """Unsigned activation fake quantization after a ReLU: clamp(floor(y/s + 1/2), 0, 2**bits - 1) * s.

    Disabled until `calibrate` sets the scale; the gradient passes inside the range (STE).
    """

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = bits
        self.qmax = (1 << bits) - 1
        self.register_buffer("scale", torch.tensor(0.0))
        self.enabled = False
        self.observe = False
        self.observed: list[torch.Tensor] = []

    def calibrate(self, percentile: float = 99.99) -> float:
        """Set the scale so that the given percentile of the observed activations maps to the top code."""
        values = torch.cat([v.reshape(-1) for v in self.observed])
        self.observed = []
        top = float(torch.quantile(values[:1 << 24].double(), percentile / 100.0)) if values.numel() else 1.0
        if not top > 0:
            top = float(values.max()) if values.numel() and float(values.max()) > 0 else 1.0
        self.scale.fill_(top / self.qmax)
        self.enabled = True
        return float(self.scale)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self.observed.append(y.detach())
        if not self.enabled:
            return y
        s = self.scale
        return torch.clamp(round_half_up(y / s), 0, self.qmax) * s


# -- layers --------------------------------------------------------------------------------------

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

    `topology` uses the `terwin.synthetic` vocabulary: ("wconv", out_channels), ("pool", 2),
    ("linear", classes) last. Every conv and the input of every later layer sees unsigned activations.
    """

    def __init__(self, *, topology=(("wconv", 16), ("wconv", 32), ("pool", 2), ("wconv", 32), ("pool", 2),
                                    ("linear", 10)),
                 input_shape=(1, 8, 8), m: int = 2, act_bits: int = 8):
        super().__init__()
        self.topology = tuple((str(k), int(a)) for k, a in topology)
        self.input_shape = tuple(input_shape)
        c, h, w = self.input_shape
        self.layers = nn.ModuleList()
        self.acts = nn.ModuleList()   # ActQuant after each ReLU (indexed like layers; Identity elsewhere)
        for i, (kind, arg) in enumerate(self.topology):
            last = i == len(self.topology) - 1
            if kind == "wconv":
                self.layers.append(WinoConv(c, arg, padding=1, m=m))
                c = arg
            elif kind == "pool":
                self.layers.append(nn.MaxPool2d(arg, arg))
                h, w = h // arg, w // arg
            elif kind == "linear":
                if not last:
                    raise ValueError("the linear layer must be the last layer")
                self.layers.append(MaskedLinear(c * h * w, arg))
            else:
                raise ValueError(f"unknown layer kind {kind!r}")
            needs_act = kind == "wconv"
            self.acts.append(ActQuant(act_bits) if needs_act else nn.Identity())
        if self.topology[-1][0] != "linear":
            raise ValueError("the last layer must be linear (raw class scores)")

    def convs(self) -> list[WinoConv]:
        return [layer for layer in self.layers if isinstance(layer, WinoConv)]

    def act_quants(self) -> list[ActQuant]:
        return [a for a in self.acts if isinstance(a, ActQuant)]

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
        for layer, act in zip(self.layers, self.acts):
            if isinstance(layer, MaskedLinear):
                x = layer(x.flatten(1))
            else:
                x = layer(x)
                if isinstance(layer, WinoConv):
                    x = act(F.relu(x))
        return x


# -- pruning and regularisation strategies ------------------------------------------------------

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

    def __call__(self, net: "WinogradNet", sparsity: float) -> None:
        with torch.no_grad():
            for conv in net.convs():
                if conv.mode != "winograd":
                    raise ValueError("Winograd-domain pruning needs the layers in mode 'winograd'")
                conv.winograd_mask.copy_(magnitude_mask(conv.winograd_weight(), sparsity))
                conv.apply_masks()


class JointPruner:
    """Choi et al.: prune the spatial weights g by magnitude, then the Winograd-domain weights
    U = G (g * spatial_mask) G^T by magnitude; the layers then compute in mode "joint"."""

    def __call__(self, net: "WinogradNet", *, spatial_sparsity: float, winograd_sparsity: float) -> None:
        with torch.no_grad():
            for conv in net.convs():
                conv.spatial_mask.copy_(magnitude_mask(conv.weight, spatial_sparsity))
                conv.winograd_mask.fill_(1.0)
                conv.winograd_mask.copy_(magnitude_mask(conv.winograd_weight(), winograd_sparsity))
                conv.apply_masks()
                conv.set_mode("joint")


def linear_prune(net: "WinogradNet", sparsity: float) -> None:
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

    def terms(self, net: "WinogradNet") -> tuple[torch.Tensor, torch.Tensor]:
        r_wd, r_sd, n_wd, n_sd = 0.0, 0.0, 0, 0
        for conv in net.convs():
            g = conv.spatial_weight()
            u = kernel_to_winograd(g, m=conv.m)
            r_sd = r_sd + partial_l2(g, self.spatial_sparsity)
            r_wd = r_wd + partial_l2(u, self.winograd_sparsity)
            n_sd += g.numel()
            n_wd += u.numel()
        return r_wd / n_wd, r_sd / n_sd

    def forward(self, net: "WinogradNet") -> torch.Tensor:
        r_wd, r_sd = self.terms(net)
        return (torch.exp(self.alpha) * r_wd + torch.exp(self.beta) * r_sd
                - self.lam * (self.alpha + self.beta))
