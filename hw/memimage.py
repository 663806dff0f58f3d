"""Compile a ternary `Deployment` into the accelerator's program: stages, memory contents, widths.

NumPy only (no Amaranth at import time), so the cycle model (`terwin.sim.cycles_ternary`) and the
hardware (`terwin.hw.top`) read the same schedule from here.

A *stage* is one weighted layer (conv or linear, a linear layer being the conv with kernel (H, W))
with the max-pool that follows it fused into its output. Activation memory is `pe_cols` banks.
A stage's input map is stored either

* banked (in_channels >= pe_cols): channel c in bank c % pe_cols at
  base + (c // pe_cols) * H * W + y * W + x, so every lane of a tile reads the same address; or
* replicated (in_channels < pe_cols, taps packed per tile): every bank holds the whole map at
  base + c * H * W + y * W + x, so each lane can read its own tap.

Two regions (ping-pong): stage i reads region i % 2 and writes region (i + 1) % 2; the last stage
writes raw class scores into the score memory (index c * Ho * Wo + y * Wo + x).

Weight memory: one word per kept tile, in TileGrid order (out group, tap group, channel group),
holding the tile's 2-bit codes, the lane-map row of its tap group, its channel-group address offset
and a `last` flag; the tile mask is stored as the set of words (an output group whose tiles are all
pruned keeps one all-zero tile, so it still produces bias-only outputs). `og_counts` holds the
number of words per output group; the controller visits exactly those words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from terwin.deployment import Conv2d, Deployment, Linear, MaxPool2d, conv_out_size
from terwin.errors import TerwinError
from terwin.intmath import signed_bits
from terwin.tiling import TileGrid


def _bits(n: int) -> int:
    """Unsigned width holding 0..n."""
    return max(1, int(n).bit_length())


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


@dataclass
class Stage:
    index: int                 # position of the weighted layer in dep.layers
    pool_index: int | None     # position of the fused max-pool, if any
    name: str
    in_shape: tuple[int, int, int]
    out_channels: int
    kh: int
    kw: int
    stride: int
    padding: int
    conv_h: int                # conv output size (before pooling)
    conv_w: int
    pool_k: int                # 1 when no pool
    pool_s: int
    out_h: int                 # stored output size (after pooling)
    out_w: int
    relu: bool
    in_mode: str               # "banked" or "replicated"
    out_mode: str              # "banked", "replicated" or "scores"
    grid: TileGrid
    in_base: int = 0
    out_base: int = 0
    lm_base: int = 0
    param_base: int = 0
    og_base: int = 0
    word_base: int = 0
    og_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    nonzero_weights: int = 0

    @property
    def out_groups(self) -> int:
        return self.grid.out_groups

    @property
    def jobs_per_og(self) -> int:
        """Output pixels computed per output group (pool windows x window positions)."""
        return self.out_h * self.out_w * self.pool_k * self.pool_k

    @property
    def conv_pixels(self) -> int:
        return self.conv_h * self.conv_w


@dataclass
class Program:
    spec: object
    stages: list[Stage]
    n_layers: int
    words: list[dict]          # weight memory, as dicts for layouts.weight_word_layout
    lane_map: list[list[dict]]  # rows of per-lane {ky, kx, aoff}
    params: list[dict]         # per padded output channel {bias, mult, shift}
    og_counts: np.ndarray      # words per global output group
    bank_depth: int
    region: int
    n_scores: int
    input_shape: tuple[int, int, int]
    acc_bits: int
    bias_bits: int
    mult_bits: int
    shift_bits: int
    score_bits: int
    k_bits: int
    aoff_bits: int
    coff_bits: int
    lm_bits: int
    addr_bits: int             # activation bank address width

    @property
    def weight_word_count(self) -> int:
        return len(self.words)


def _stage_layers(dep: Deployment):
    layers = list(dep.layers)
    out = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, MaxPool2d):
            raise TerwinError(f"layer {layer.name}: the ternary engine fuses a max-pool into the conv or linear "
                              f"layer before it; a max-pool cannot come first or follow another max-pool")
        if not isinstance(layer, (Conv2d, Linear)):
            raise TerwinError(f"layer {layer.name}: the ternary engine runs conv2d, linear and maxpool2d layers, "
                              f"not {layer.kind} (use a winograd spec for Winograd layers)")
        if layer.weight_code != "ternary":
            raise TerwinError(f"layer {layer.name}: the ternary engine needs ternary weight codes, not {layer.weight_code!r}")
        pool = None
        if i + 1 < len(layers) and isinstance(layers[i + 1], MaxPool2d):
            pool = i + 1
            if not layer.relu:
                raise TerwinError(f"layer {layers[pool].name}: max-pool after raw class scores is not supported")
        out.append((i, pool))
        i += 2 if pool is not None else 1
    return out


def kept_tiles(layer, grid: TileGrid) -> np.ndarray:
    """bool [og, tg, cg]: the tiles the hardware visits (the tile mask, or occupancy without one).

    Vectorized (no per-weight Python loop), so the cycle model stays fast on large networks.
    """
    if layer.tile_mask is not None:
        return np.asarray(layer.tile_mask).astype(bool)
    o, c, t = grid.out_channels, grid.in_channels, grid.taps
    rows, cols = grid.rows, grid.cols
    nz = (np.asarray(layer.weight).reshape(o, c, t) != 0)
    og, tg, cg = grid.shape
    if c < cols:  # packed taps: lane = j * c + ch for tap tg * tpt + j
        tpt = grid.taps_per_tile
        full = np.zeros((og * rows, tg * tpt, c), dtype=bool)
        full[:o, :t, :] = nz.transpose(0, 2, 1)
        return full.reshape(og, rows, tg, tpt * c).any(axis=(1, 3))[:, :, None]
    if c % cols:
        nz = np.concatenate([nz, np.zeros((o, cg * cols - c, t), dtype=bool)], axis=1)
    per_group = nz.reshape(o, cg, cols, t).any(axis=2)          # [o, cg, t]
    if o % rows:
        per_group = np.concatenate([per_group, np.zeros((og * rows - o, cg, t), dtype=bool)], axis=0)
    return per_group.reshape(og, rows, cg, t).any(axis=1).transpose(0, 2, 1)


def plan(dep: Deployment) -> list[Stage]:
    """The stages, their buffers and tile counts per output group: the schedule without memory contents."""
    return _plan(dep)[0]


def _plan(dep: Deployment):
    spec = dep.spec
    if spec.weight_format != "ternary":
        raise TerwinError(f"the ternary engine cannot run a {spec.weight_format!r} model")
    cols = spec.pe_cols
    pairs = _stage_layers(dep)
    stages: list[Stage] = []
    for n, (li, pi) in enumerate(pairs):
        layer = dep.layers[li]
        c, h, w = layer.in_shape
        if isinstance(layer, Conv2d):
            kh = kw = layer.kernel
            stride, pad = layer.stride, layer.padding
        else:
            kh, kw, stride, pad = h, w, 1, 0
        ch, cw = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
        if pi is not None:
            pool = dep.layers[pi]
            pk, ps = pool.kernel, pool.stride
            oh, ow = conv_out_size(ch, pk, ps, 0), conv_out_size(cw, pk, ps, 0)
        else:
            pk = ps = 1
            oh, ow = ch, cw
        stages.append(Stage(index=li, pool_index=pi, name=layer.name, in_shape=(c, h, w),
                            out_channels=layer.out_channels, kh=kh, kw=kw, stride=stride, padding=pad,
                            conv_h=ch, conv_w=cw, pool_k=pk, pool_s=ps, out_h=oh, out_w=ow, relu=layer.relu,
                            in_mode="banked" if c >= cols else "replicated", out_mode="scores",
                            grid=layer.tile_grid(spec)))
    for a, b in zip(stages, stages[1:]):
        a.out_mode = b.in_mode

    def map_size(c, h, w, mode):
        return (-(-c // cols)) * h * w if mode == "banked" else c * h * w

    region = max(map_size(*s.in_shape, s.in_mode) for s in stages)
    bank_depth = _pow2_at_least(2 * region)
    addr_bits = max(1, (bank_depth - 1).bit_length())

    og_total = 0
    for n, s in enumerate(stages):
        layer = dep.layers[s.index]
        s.in_base = (n % 2) * region
        s.out_base = ((n + 1) % 2) * region if s.out_mode != "scores" else 0
        s.og_base = og_total
        og_total += s.out_groups
        s.nonzero_weights = int(np.count_nonzero(layer.weight))
        s.og_counts = np.maximum(kept_tiles(layer, s.grid).sum(axis=(1, 2)), 1).astype(np.int64)
    return stages, region, bank_depth, addr_bits


def compile_program(dep: Deployment) -> Program:
    """Schedule, memory contents and datapath widths of the ternary accelerator for `dep`."""
    spec = dep.spec
    rows, cols = spec.pe_rows, spec.pe_cols
    stages, region, bank_depth, addr_bits = _plan(dep)
    words, lane_map, params, og_counts = [], [], [], []
    k_max = max(max(s.kh, s.kw) for s in stages)
    for n, s in enumerate(stages):
        layer = dep.layers[s.index]
        s.lm_base = len(lane_map)
        s.param_base = len(params)
        s.word_base = len(words)
        grid = s.grid
        c, h, w = s.in_shape
        weight = np.asarray(layer.weight).reshape(layer.out_channels, c, s.kh, s.kw)
        # lane map: one row per tap group
        for tg in range(grid.tap_groups):
            row = []
            for lane in range(cols):
                src = grid.lane_source(tg, 0, lane)
                if s.in_mode == "banked":
                    ky, kx = divmod(tg, s.kw)
                    row.append({"ky": ky, "kx": kx, "aoff": ky * w + kx})
                elif src is None:
                    row.append({"ky": 0, "kx": 0, "aoff": 0})
                else:
                    t, ch_ = src
                    ky, kx = divmod(t, s.kw)
                    row.append({"ky": ky, "kx": kx, "aoff": ch_ * h * w + ky * w + kx})
            lane_map.append(row)
        tiles = grid.tiles(weight)                       # [og, tg, cg, rows, cols]
        mask = kept_tiles(layer, grid)
        counts = np.zeros(grid.out_groups, dtype=np.int64)
        for og in range(grid.out_groups):
            kept = [(tg, cg) for tg in range(grid.tap_groups) for cg in range(grid.channel_groups) if mask[og, tg, cg]]
            if not kept:
                kept = [(0, 0)]  # a fully pruned output group still needs one (all-zero) pass
            for j, (tg, cg) in enumerate(kept):
                codes = [[{"nonzero": int(v != 0), "negative": int(v < 0)} for v in r_] for r_ in tiles[og, tg, cg]]
                coff = cg * h * w if s.in_mode == "banked" else 0
                words.append({"codes": codes, "lm": s.lm_base + tg, "coff": coff, "last": int(j == len(kept) - 1)})
            counts[og] = len(kept)
        assert np.array_equal(counts, s.og_counts)
        og_counts.extend(counts.tolist())
        for o in range(grid.out_groups * rows):
            if o < layer.out_channels:
                params.append({"bias": int(layer.bias[o]), "mult": int(layer.multiplier[o]) if layer.relu else 0,
                               "shift": int(layer.shift[o]) if layer.relu else 1})
            else:
                params.append({"bias": 0, "mult": 0, "shift": 1})

    last = stages[-1]
    n_scores = last.out_channels * last.out_h * last.out_w
    fan_in = max(s.in_shape[0] * s.kh * s.kw for s in stages)
    acc_bits = spec.accumulator_bits(fan_in=fan_in, weight_max=1)
    biases = [p["bias"] for p in params]
    bias_bits = signed_bits(min(biases + [0]), max(biases + [0]))
    mults = [p["mult"] for p in params]
    mult_bits = signed_bits(min(mults + [0]), max(mults + [0]))
    shift_bits = _bits(max(p["shift"] for p in params))
    last_layer = dep.layers[last.index]
    score_bits = spec.accumulator_bits(fan_in=last.in_shape[0] * last.kh * last.kw, weight_max=1,
                                       bias_max=int(np.abs(last_layer.bias).max()) if last_layer.bias.size else 0)
    aoff_max = max(l["aoff"] for row in lane_map for l in row)
    coff_max = max(wd["coff"] for wd in words)
    return Program(spec=spec, stages=stages, n_layers=len(dep.layers), words=words, lane_map=lane_map,
                   params=params, og_counts=np.asarray(og_counts, dtype=np.int64), bank_depth=bank_depth,
                   region=region, n_scores=n_scores, input_shape=tuple(dep.input_shape), acc_bits=acc_bits,
                   bias_bits=bias_bits, mult_bits=mult_bits, shift_bits=shift_bits, score_bits=score_bits,
                   k_bits=_bits(k_max - 1), aoff_bits=_bits(aoff_max), coff_bits=_bits(coff_max),
                   lm_bits=_bits(len(lane_map) - 1), addr_bits=addr_bits)


# -- memory images ---------------------------------------------------------------------------

def weight_init(program: Program) -> list[int]:
    from . import layouts
    lay = layouts.weight_word_layout(program.spec, lm_bits=program.lm_bits, coff_bits=program.coff_bits)
    return [layouts.pack(lay, w) for w in program.words]


def lane_map_init(program: Program) -> list[int]:
    from . import layouts
    lay = layouts.lane_map_layout(program.spec, k_bits=program.k_bits, aoff_bits=program.aoff_bits)
    return [layouts.pack(lay, row) for row in program.lane_map]


def param_init(program: Program) -> list[int]:
    from . import layouts
    lay = layouts.param_layout(bias_bits=program.bias_bits, mult_bits=program.mult_bits, shift_bits=program.shift_bits)
    return [layouts.pack(lay, p) for p in program.params]


def write_hex(path, values, width: int) -> None:
    """One value per line, zero-padded hex (a `$readmemh` image)."""
    digits = max(1, -(-width // 4))
    with open(path, "w") as f:
        for v in values:
            f.write(f"{int(v):0{digits}x}\n")
