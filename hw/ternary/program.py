"""Compile a ternary `Deployment` into the accelerator's program: stages, memory contents, widths.

NumPy only (no Amaranth at import time): the cycle model (`terwin.hw.ternary.cycles`) and the
hardware (`terwin.hw.ternary.top`) read the same `TernaryProgram` (its stages, the per-stage table
the controller selects from, its memories and the pipeline latencies below).
The schedule (stages, tile counts) is computed at once; the memory contents only when asked for
(`memories()`, `words`, ...), so the cycle model stays fast on large networks.

A *stage* is one weighted layer (conv or linear, a linear layer being the conv with kernel (H, W))
with the pool that reads it fused into its output (a max-pool, or an average pool: the writer keeps
the window's maximum or sum). Stages run in layer order (a topological order of the graph): each
reads the map its layer's `source` names and writes its own map (its layer's, or its fused pool's),
and a layer with a `residual` reads that map too, in the writer (r at the same (channel, y, x), times
m_r, added before the rounding shift). Activation memory is `pe_cols` banks. A map is stored either

* banked (channels >= pe_cols): channel c in bank c % pe_cols at
  base + (c // pe_cols) * H * W + y * W + x, so every lane of a tile reads the same address; or
* replicated (channels < pe_cols, taps packed per tile): every bank holds the whole map at
  base + c * H * W + y * W + x, so each lane can read its own tap.

Regions by liveness: the banks are cut into `slots` regions of `region` words (the largest stored
map). A map lives from the stage that writes it (the network input: from the start) to its last
reader (as source or residual); each stage's output takes the lowest-numbered region no live map
holds. A sequential network gets two regions used in turn (ping-pong: stage i reads region i % 2
and writes region (i + 1) % 2), a residual block three. The last stage writes its outputs into the
score memory (index c * Ho * Wo + y * Wo + x). Signed maps (a projection shortcut: relu false, not
the last layer) are stored as act_bits two's complement and sign-extended when read as a residual.

Weight memory: one word per kept tile, in TileGrid order (out group, tap group, channel group),
holding the tile's 2-bit codes, the lane-map row of its tap group, its channel-group address offset
and a `last` flag; the tile mask is stored as the set of words (an output group whose tiles are all
pruned keeps one all-zero tile, so it still produces bias-only outputs). `og_counts` holds the
number of words per output group (memory `og_table`); the controller visits exactly those words.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d, conv_out_size
from terwin.errors import TerwinError
from terwin.intmath import signed_bits, unsigned_bits
from terwin.tiling import TileGrid

from ..common.program import MemoryImage, Program, ProgramStage

# Latencies of the datapath (cycles). The top checks that its components add up to these, and the
# cycle model (`terwin.hw.ternary.cycles`) counts with them.
DECODER_LATENCY = 2        # weight word, then its lane-map row (`TileDecoder.LATENCY`)
ACTIVATION_LATENCY = 2     # lane address -> bank read (1), activation register (1)
PARAM_READ_LATENCY = 1     # shadow channel -> its requantization constants
REQUANT_LATENCY = 4        # `Requantizer.LATENCY`


# Large arrays (pe_rows * pe_cols >= WIDE_ARRAY PEs) put a register after the lane-map row, before the
# pe_cols lane addresses (+1 activation latency). Smaller arrays keep the shorter pipeline, and so
# their cycle counts. (A register after the requantization constants was tried and dropped: no build
# showed a path through them, and it costs a cycle of every stage's tail and ~50 flip-flops a lane.)
WIDE_ARRAY = 256


def wide_pipeline(spec) -> bool:
    """Whether the array is large enough for the extra pipeline registers (`WIDE_ARRAY`)."""
    return spec.pe_rows * spec.pe_cols >= WIDE_ARRAY


def activation_latency(spec) -> int:
    """Lane-map row -> activations at the PE array: `ACTIVATION_LATENCY`, +1 on a wide array."""
    return ACTIVATION_LATENCY + int(wide_pipeline(spec))


def pe_latency(spec) -> int:
    """The PE array: products (1), then one register per adder-tree level."""
    return 1 + (spec.pe_cols - 1).bit_length()


def pipeline_depth(spec) -> int:
    """Cycles from issuing a tile to its sums reaching the accumulators: 5 + log2(pe_cols) (6 + on a
    wide array)."""
    return DECODER_LATENCY + activation_latency(spec) + pe_latency(spec)


# a stage's last shadow load -> its last channel written: pe_rows - 1 (the channels before it) + 1 (the
# drain register) + the parameter read + the requantizer = pe_rows + 5; +1 to count inclusive
REQUANT_TAIL = 1 + PARAM_READ_LATENCY + REQUANT_LATENCY
# a program with residual connections: the writer reads r (one cycle: the other operands wait in a
# register for it) and its requantizer adds r * m_r in a stage of its own (one more cycle)
RESIDUAL_READ_LATENCY = 1
RESIDUAL_ADD_LATENCY = 1
# an average pool: the window's sum goes through a second requantizer (multiply, shift, round, clamp)
AVERAGE_LATENCY = 4


@dataclass
class Stage(ProgramStage):
    """One weighted layer with the max-pool fused into its output."""
    pool_index: int | None     # position of the fused pool, if any
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
    source: str = INPUT        # the map it reads (INPUT or a layer's name)
    output: str = ""           # the map it writes: its layer's name, or its fused pool's
    residual: str | None = None  # the map its layer adds (residual connection), if any
    pool_kind: str = ""        # "max", "avg" or "" (no pool)
    avg_mult: int = 1          # average pool: y = clamp((sum * avg_mult + 2^(avg_shift-1)) >> avg_shift, 0, act_max)
    avg_shift: int = 1
    out_signed: bool = False   # writes a signed map (relu false, not the last stage): the signed clamp
    res_mode: str = ""         # the residual map's storage ("banked" / "replicated")
    res_signed: bool = False   # ... and whether it is a signed map
    in_base: int = 0
    res_base: int = 0
    out_base: int = 0
    lm_base: int = 0
    param_base: int = 0
    og_base: int = 0
    word_base: int = 0
    og_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    nonzero_weights: int = 0

    @property
    def fused(self) -> tuple[int, ...]:
        return () if self.pool_index is None else (self.pool_index,)

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

    def group_channel_step(self, rows: int, cols: int, lanes: int = 1) -> tuple[int, int]:
        """(address step, mask): the output address advances by the step at every output group g with
        (g + 1) & mask == 0 (banked outputs put pe_cols channels side by side in one address; with
        several out lanes the score memory holds `lanes` channels side by side in one row)."""
        if self.out_mode == "scores" and lanes > 1:
            return (rows // lanes) * self.out_h * self.out_w, 0
        return _channel_step(self.out_mode, self.out_h * self.out_w, rows, cols)

    def residual_channel_step(self, rows: int, cols: int) -> tuple[int, int]:
        """The same for the address of the residual map (of the conv's output shape, before any pool)."""
        return _channel_step(self.res_mode, self.conv_h * self.conv_w, rows, cols)


def _channel_step(mode: str, plane: int, rows: int, cols: int) -> tuple[int, int]:
    if mode != "banked":
        return rows * plane, 0
    if rows >= cols:
        return (rows // cols) * plane, 0
    return plane, cols // rows - 1


@dataclass(frozen=True)
class ActivationMap:
    """One map stored in the activation banks: the network input or a stage's output."""
    name: str
    shape: tuple[int, int, int]
    mode: str                  # "banked" or "replicated"
    signed: bool
    slot: int                  # its region: words slot * region ... + size - 1 of every bank
    base: int
    size: int                  # words per bank
    producer: int              # the stage writing it (-1: the network input, loaded before stage 0)
    last_reader: int           # the last stage reading it (as its source or residual)


@dataclass
class TernaryProgram(Program):
    """The ternary accelerator's program: stages, buffers, memories, widths (see the module docstring)."""
    dep: Deployment
    region: int                # words of one activation region (the largest stored map)
    bank_depth: int
    addr_bits: int             # activation bank address width
    maps: dict = field(default_factory=dict)   # name -> ActivationMap, every map the banks hold
    slots: int = 2             # activation regions

    # -- graph features: the hardware for each is built only when a stage needs it -----------------

    @property
    def has_residual(self) -> bool:
        return any(s.residual is not None for s in self.stages)

    @property
    def has_signed(self) -> bool:
        return any(s.out_signed for s in self.stages)

    @property
    def has_avgpool(self) -> bool:
        return any(s.pool_kind == "avg" for s in self.stages)

    # -- output lanes (spec.out_lanes): channels requantized and written per cycle ----------------------

    @property
    def out_lanes(self) -> int:
        return self.spec.out_lanes

    @property
    def drain_steps(self) -> int:
        """Cycles the writer takes for one job's pe_rows channels: pe_rows / out_lanes."""
        return self.spec.pe_rows // self.spec.out_lanes

    @property
    def score_depth(self) -> int:
        """Rows of the score memory: one score per row with one lane; with L lanes, channel c's pixel
        at row (c // L) * plane + pixel, lane c % L."""
        last = self.stages[-1]
        if self.out_lanes == 1:
            return max(2, self.n_scores)
        return max(2, -(-last.out_channels // self.out_lanes) * last.out_h * last.out_w)

    @property
    def requant_latency(self) -> int:
        """Channel in (with its sum) -> requantized activation out, in the writer."""
        extra = RESIDUAL_READ_LATENCY + RESIDUAL_ADD_LATENCY if self.has_residual else 0
        return PARAM_READ_LATENCY + REQUANT_LATENCY + extra

    def requant_tail(self, stage) -> int:
        """A stage's last shadow load -> the cycle after its last output is written, less pe_rows."""
        return 1 + self.requant_latency + (AVERAGE_LATENCY if stage.pool_kind == "avg" else 0)

    @property
    def input_map(self) -> ActivationMap:
        return self.maps[INPUT]

    # -- schedule ----------------------------------------------------------------------------------

    @cached_property
    def og_counts(self) -> np.ndarray:
        """Words (kept tiles, at least 1) per output group, all stages back to back."""
        return np.concatenate([s.og_counts for s in self.stages]).astype(np.int64)

    @property
    def pipeline_depth(self) -> int:
        return pipeline_depth(self.spec)

    def stage_table(self) -> dict[str, list[int]]:
        rows, cols, lanes = self.spec.pe_rows, self.spec.pe_cols, self.out_lanes
        st = self.stages
        return {
            "group_last": [s.out_groups - 1 for s in st],
            "row_last": [s.out_h - 1 for s in st],                     # output rows (after pooling)
            "col_last": [s.out_w - 1 for s in st],
            "window_last": [s.pool_k - 1 for s in st],                 # pool window positions per axis
            "pool_step": [s.pool_s * s.stride for s in st],            # input pixels between pooled outputs
            "pool_row_step": [s.pool_s * s.stride * s.in_shape[2] for s in st],  # ... as an address step
            "conv_step": [s.stride for s in st],                       # between window positions
            "conv_row_step": [s.stride * s.in_shape[2] for s in st],
            "pad": [s.padding for s in st],
            "pad_offset": [s.padding * s.in_shape[2] + s.padding for s in st],
            "in_height": [s.in_shape[1] for s in st],
            "in_width": [s.in_shape[2] for s in st],
            "in_base": [s.in_base for s in st],
            "out_base": [s.out_base for s in st],
            # address step per drain step (out_lanes channels; per channel with one lane)
            "out_plane": [s.out_h * s.out_w * (lanes if s.out_mode == "replicated" else 1) for s in st],
            "banked_out": [s.out_mode == "banked" for s in st],
            "to_scores": [s.out_mode == "scores" for s in st],
            "param_base": [s.param_base // lanes for s in st],          # params rows hold out_lanes channels
            "out_channels": [s.out_channels for s in st],
            "last_stage": [i == len(st) - 1 for i in range(len(st))],
            "group_channel_step": [s.group_channel_step(rows, cols, lanes)[0] for s in st],
            "group_channel_mask": [s.group_channel_step(rows, cols, lanes)[1] for s in st],
            **self._graph_table(),
            **self._lanes_table(),
        }

    def _lanes_table(self) -> dict[str, list[int]]:
        """With several out lanes, the writes of replicated maps: bank b holds channel b % C of a
        replicated map of C channels (the channel its MAC lane reads: lane l reads channel l % C), at
        the usual address c * H * W + y * W + x. Per bank and stage: that channel (`bank_channel{b}`)
        and its address offset (`bank_offset{b}`); with residuals, the offset of channel b in a
        replicated residual map (`res_bank_offset{b}`: the lane wanting channel c reads bank c)."""
        cols, st = self.spec.pe_cols, self.stages
        if self.out_lanes == 1:
            return {}
        table = {}
        if any(s.out_mode == "replicated" for s in st):
            for b in range(cols):
                table[f"bank_channel{b}"] = [b % s.out_channels if s.out_mode == "replicated" else 0 for s in st]
                table[f"bank_offset{b}"] = [(b % s.out_channels) * s.out_h * s.out_w if s.out_mode == "replicated"
                                            else 0 for s in st]
        if self.has_residual and any(s.residual is not None and s.res_mode == "replicated" for s in st):
            for b in range(cols):
                table[f"res_bank_offset{b}"] = [b * s.conv_h * s.conv_w if s.residual is not None
                                                and s.res_mode == "replicated" else 0 for s in st]
        return table

    def _graph_table(self) -> dict[str, list[int]]:
        """The columns of the graph features, present only in programs that use them (a sequential
        network's table, and so its hardware, is what it was before graphs)."""
        rows, cols = self.spec.pe_rows, self.spec.pe_cols
        st = self.stages
        table = {}
        if self.has_residual:
            table.update({
                "has_residual": [s.residual is not None for s in st],
                "res_base": [s.res_base for s in st],
                "res_banked": [s.res_mode == "banked" for s in st],
                "res_signed": [s.res_signed for s in st],
                "res_plane": [s.conv_h * s.conv_w * (self.out_lanes if s.res_mode != "banked" else 1)
                              for s in st],                                # ... per drain step
                "res_row": [s.conv_w for s in st],                         # between conv rows of a pool window
                "res_pool_step": [s.pool_s for s in st],                   # conv pixels between pooled outputs
                "res_pool_row_step": [s.pool_s * s.conv_w for s in st],
                "res_channel_step": [s.residual_channel_step(rows, cols)[0] for s in st],
                "res_channel_mask": [s.residual_channel_step(rows, cols)[1] for s in st],
            })
        if self.has_signed:
            table["signed_out"] = [s.out_signed for s in st]
        if self.has_avgpool:
            table.update({"avg_pool": [s.pool_kind == "avg" for s in st],
                          "avg_mult": [s.avg_mult for s in st], "avg_shift": [s.avg_shift for s in st]})
        return table

    # -- memory contents (computed when first asked for) -------------------------------------------

    @cached_property
    def _contents(self):
        return _contents(self.dep, self.stages)

    @property
    def words(self) -> list[dict]:
        """The kept tiles in weight-memory order, as dicts {codes, lm, coff, last}: the `weights` memory holds
        their headers (`layouts.weight_word_layout`), the `codes` memory their codes."""
        return self._contents[0]

    @property
    def lane_map(self) -> list[list[dict]]:
        """Rows of per-lane {ky, kx, aoff}."""
        return self._contents[1]

    @property
    def params(self) -> list[dict]:
        """Per padded output channel {bias, mult, shift} (+ res_mult, m_r, in a program with residuals)."""
        return self._contents[2]

    @property
    def weight_word_count(self) -> int:
        return len(self.words)

    # -- Huffman-coded weights (a layer with codec huffman: `terwin.hw.ternary.huffman_program`) ------

    @cached_property
    def huffman(self) -> bool:
        from .huffman_program import uses_huffman
        return uses_huffman(self.dep)

    @cached_property
    def huffman_weights(self):
        from .huffman_program import compile_huffman
        return compile_huffman(self)

    # -- widths --------------------------------------------------------------------------------------

    @property
    def acc_bits(self) -> int:
        fan_in = max(s.in_shape[0] * s.kh * s.kw for s in self.stages)
        return self.spec.accumulator_bits(fan_in=fan_in, weight_max=1)

    @property
    def score_bits(self) -> int:
        last = self.stages[-1]
        bias = self.dep.layers[last.index].bias
        return self.spec.accumulator_bits(fan_in=last.in_shape[0] * last.kh * last.kw, weight_max=1,
                                          bias_max=int(np.abs(bias).max()) if bias.size else 0)

    @property
    def bias_bits(self) -> int:
        biases = [p["bias"] for p in self.params] + [0]
        return signed_bits(min(biases), max(biases))

    @property
    def mult_bits(self) -> int:
        mults = [p["mult"] for p in self.params] + [0]
        return signed_bits(min(mults), max(mults))

    @property
    def shift_bits(self) -> int:
        return unsigned_bits(max(p["shift"] for p in self.params))

    @property
    def res_mult_bits(self) -> int | None:
        """Signed width of m_r (None: no residual in the program)."""
        if not self.has_residual:
            return None
        mults = [p["res_mult"] for p in self.params] + [0]
        return signed_bits(min(mults), max(mults))

    @property
    def avg_sum_bits(self) -> int:
        """Unsigned width of an average pool's window sum."""
        return unsigned_bits(max([self.spec.act_max * s.pool_k * s.pool_k for s in self.stages
                                  if s.pool_kind == "avg"] + [1]))

    @property
    def k_bits(self) -> int:
        return unsigned_bits(max(max(s.kh, s.kw) for s in self.stages) - 1)

    @property
    def aoff_bits(self) -> int:
        return unsigned_bits(max(lane["aoff"] for row in self.lane_map for lane in row))

    @property
    def coff_bits(self) -> int:
        return unsigned_bits(max(w["coff"] for w in self.words))

    @property
    def lm_bits(self) -> int:
        return unsigned_bits(len(self.lane_map) - 1)

    def memories(self) -> list[MemoryImage]:
        # Amaranth only here, when a top or `generate` asks: the cycle model stays NumPy-only
        from amaranth.hdl import signed, unsigned
        from amaranth.lib import data

        from ..common.requant import param_layout
        from . import layouts
        spec = self.spec
        counts = [int(v) for v in self.og_counts]
        lanes = self.out_lanes
        param = param_layout(bias_bits=self.bias_bits, mult_bits=self.mult_bits, shift_bits=self.shift_bits,
                             res_mult_bits=self.res_mult_bits)
        params, scores = self.params, signed(self.score_bits)
        if lanes > 1:   # one row per drain step: out_lanes channels side by side
            param = data.ArrayLayout(param, lanes)
            params = [params[i:i + lanes] for i in range(0, len(params), lanes)]
            scores = data.ArrayLayout(scores, lanes)
        if self.huffman:   # the Huffman weight path (`terwin.hw.ternary.huffman_program`)
            from .huffman_program import huffman_memories
            weights = huffman_memories(self)
        else:
            # a kept tile in two memories at the same address: its header (read first: the lane
            # addresses need it) and its codes (read later, when the PE array needs them: TileDecoder)
            depth = max(1, self.weight_word_count)
            header = layouts.weight_word_layout(spec, lm_bits=self.lm_bits, coff_bits=self.coff_bits)
            weights = [MemoryImage("weights", header, depth,
                                   [{k: w[k] for k in header.members} for w in self.words]),
                       MemoryImage("codes", layouts.tile_codes_layout(spec), depth, [w["codes"] for w in self.words])]
        return [
            *weights,
            MemoryImage("lane_map", layouts.lane_map_layout(spec, k_bits=self.k_bits, aoff_bits=self.aoff_bits),
                        max(1, len(self.lane_map)), self.lane_map),
            MemoryImage("params", param, len(params), params),
            # one entry more: read (and ignored) after the last output group
            MemoryImage("og_table", unsigned(unsigned_bits(max(counts))), len(counts) + 1, counts + [1]),
            MemoryImage("scores", scores, self.score_depth),
            *(MemoryImage(f"act_bank{b}", unsigned(spec.act_bits), self.bank_depth) for b in range(spec.pe_cols)),
        ]


def _stage_layers(dep: Deployment):
    """(layer index, fused pool index or None) per stage, in layer order. A pool (max or average) is
    fused into the conv or linear layer it reads, which nothing else may read (its un-pooled output is
    never stored); anything else is refused in one line naming the layer."""
    layers = list(dep.layers)
    sources = dep.sources()
    index = {layer.name: i for i, layer in enumerate(layers)}
    readers: dict[str, list[int]] = {}
    for i, (layer, source) in enumerate(zip(layers, sources)):
        readers.setdefault(source, []).append(i)
        if getattr(layer, "residual", None) is not None:
            readers.setdefault(layer.residual, []).append(i)
    fused = {}   # conv index -> pool index
    for i, (layer, source) in enumerate(zip(layers, sources)):
        if isinstance(layer, (MaxPool2d, AvgPool2d)):
            what = "a max-pool" if isinstance(layer, MaxPool2d) else "an average pool"
            j = index.get(source)
            if j is None or j >= i or not isinstance(layers[j], (Conv2d, Linear)):
                raise TerwinError(f"layer {layer.name}: the ternary engine fuses {what} into the conv or linear "
                                  f"layer it reads; {layer.name} reads {source}, which is not one (a pool cannot "
                                  f"come first or follow another pool)")
            if not layers[j].relu:
                raise TerwinError(f"layer {layer.name}: {what} after raw class scores or a signed map is not "
                                  f"supported")
            others = [layers[r].name for r in readers[source] if r != i]
            if others:
                raise TerwinError(f"layer {layer.name}: the ternary engine fuses {what} into the layer it reads, "
                                  f"but {others[0]} reads {source} too")
            fused[j] = i
        elif not isinstance(layer, (Conv2d, Linear)):
            raise TerwinError(f"layer {layer.name}: the ternary engine runs conv2d, linear, maxpool2d and avgpool2d "
                              f"layers, not {layer.kind} (use a winograd spec for Winograd layers)")
        elif layer.weight_code != "ternary":
            raise TerwinError(f"layer {layer.name}: the ternary engine needs ternary weight codes, not {layer.weight_code!r}")
    return [(i, fused.get(i)) for i, layer in enumerate(layers) if isinstance(layer, (Conv2d, Linear))]


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


def describe_spec(spec) -> str:
    """The array a spec shapes, in words (`terwin inspect`)."""
    lanes = f", {spec.out_lanes} requantizer lanes" if spec.out_lanes != 1 else ""
    return f"{spec.pe_rows}x{spec.pe_cols} PEs{lanes}"


def fit_hint(spec, family) -> str | None:
    """No engine option moves this engine's memories: a smaller array or model is the way."""
    return None


def compile_program(dep: Deployment) -> TernaryProgram:
    """The ternary accelerator's program for `dep`: stages, buffers and tile counts per output group
    now, memory contents when first asked for."""
    spec = dep.spec
    if spec.weight_format != "ternary":
        raise TerwinError(f"the ternary engine cannot run a {spec.weight_format!r} model")
    rows, cols = spec.pe_rows, spec.pe_cols
    sources = dep.sources()
    plan = _stage_layers(dep)
    stages: list[Stage] = []
    for n, (li, pi) in enumerate(plan):
        layer = dep.layers[li]
        c, h, w = layer.in_shape
        if isinstance(layer, Conv2d):
            kh = kw = layer.kernel
            stride, pad = layer.stride, layer.padding
        else:
            kh, kw, stride, pad = h, w, 1, 0
        ch, cw = conv_out_size(h, kh, stride, pad), conv_out_size(w, kw, stride, pad)
        pool_kind, avg = "", {}
        if pi is not None:
            pool = dep.layers[pi]
            pk, ps = pool.kernel, pool.stride
            oh, ow = conv_out_size(ch, pk, ps, 0), conv_out_size(cw, pk, ps, 0)
            pool_kind = "max" if isinstance(pool, MaxPool2d) else "avg"
            if pool_kind == "avg":
                avg = dict(avg_mult=pool.multiplier, avg_shift=pool.shift)
        else:
            pk = ps = 1
            oh, ow = ch, cw
        last = n == len(plan) - 1
        stages.append(Stage(index=li, pool_index=pi, name=layer.name, in_shape=(c, h, w),
                            out_channels=layer.out_channels, kh=kh, kw=kw, stride=stride, padding=pad,
                            conv_h=ch, conv_w=cw, pool_k=pk, pool_s=ps, out_h=oh, out_w=ow, relu=layer.relu,
                            in_mode=_mode(c, cols), out_mode="scores" if last else _mode(layer.out_channels, cols),
                            grid=layer.tile_grid(spec), source=sources[li],
                            output=dep.layers[pi].name if pi is not None else layer.name,
                            residual=layer.residual, pool_kind=pool_kind, out_signed=not layer.relu and not last,
                            **avg))
    assert stages[-1].output == dep.layers[-1].name, "the last layer is the last stage's"
    maps, slots = _allocate(dep, stages, cols)
    region = max(m.size for m in maps.values())
    maps = {name: dataclasses.replace(m, base=m.slot * region) for name, m in maps.items()}
    bank_depth = 1 << (slots * region - 1).bit_length()      # the next power of two of the regions
    og_base = lm_base = param_base = word_base = 0
    for s in stages:
        layer = dep.layers[s.index]
        s.in_base = maps[s.source].base
        s.out_base = maps[s.output].base if s.out_mode != "scores" else 0
        if s.residual is not None:
            r = maps[s.residual]
            s.res_base, s.res_mode, s.res_signed = r.base, r.mode, r.signed
        s.nonzero_weights = int(np.count_nonzero(layer.weight))
        s.og_counts = np.maximum(kept_tiles(layer, s.grid).sum(axis=(1, 2)), 1).astype(np.int64)
        s.og_base, s.lm_base, s.param_base, s.word_base = og_base, lm_base, param_base, word_base
        og_base += s.out_groups
        lm_base += s.grid.tap_groups
        param_base += s.out_groups * rows
        word_base += int(s.og_counts.sum())
    last = stages[-1]
    return TernaryProgram(spec=spec, input_shape=tuple(dep.input_shape),
                          layer_names=tuple(layer.name for layer in dep.layers), stages=stages,
                          n_scores=last.out_channels * last.out_h * last.out_w, dep=dep, region=region,
                          bank_depth=bank_depth, addr_bits=unsigned_bits(bank_depth - 1), maps=maps, slots=slots)


def _mode(channels: int, cols: int) -> str:
    return "banked" if channels >= cols else "replicated"


def _allocate(dep: Deployment, stages: list[Stage], cols: int):
    """Every stored map (the input, each stage's output but the last's) with its region (`slot`), by
    liveness: a map holds its region from the stage writing it to its last reader; a stage's output
    takes the lowest region no live map holds. At least two regions (a one-stage network keeps the
    two of a sequential one)."""
    last_reader: dict[str, int] = {}
    for n, s in enumerate(stages):
        last_reader[s.source] = n
        if s.residual is not None:
            last_reader[s.residual] = n

    def size(c, h, w):
        return (-(-c // cols)) * h * w if _mode(c, cols) == "banked" else c * h * w

    c, h, w = dep.input_shape
    maps = {INPUT: ActivationMap(INPUT, (c, h, w), _mode(c, cols), False, 0, 0, size(c, h, w), -1,
                                 last_reader.get(INPUT, -1))}
    for n, s in enumerate(stages):
        if s.out_mode == "scores":
            continue
        held = {m.slot for m in maps.values() if m.last_reader >= n}
        slot = next(i for i in range(len(maps) + 1) if i not in held)
        shape = (s.out_channels, s.out_h, s.out_w)
        maps[s.output] = ActivationMap(s.output, shape, s.out_mode, s.out_signed, slot, 0, size(*shape), n,
                                       last_reader[s.output])
    return maps, max(2, 1 + max(m.slot for m in maps.values()))


def _contents(dep: Deployment, stages: list[Stage]):
    """Weight words, lane-map rows and requantization constants of every stage, in memory order."""
    rows, cols = dep.spec.pe_rows, dep.spec.pe_cols
    residuals = any(s.residual is not None for s in stages)
    words, lane_map, params = [], [], []
    for s in stages:
        layer = dep.layers[s.index]
        assert (s.lm_base, s.param_base, s.word_base) == (len(lane_map), len(params), len(words))
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
        requantizes = s.out_mode != "scores" or layer.relu     # not raw class scores
        for o in range(grid.out_groups * rows):
            if o < layer.out_channels:
                params.append({"bias": int(layer.bias[o]), "mult": int(layer.multiplier[o]) if requantizes else 0,
                               "shift": int(layer.shift[o]) if requantizes else 1})
                if residuals:
                    params[-1]["res_mult"] = int(layer.residual_multiplier[o]) if s.residual is not None else 0
            else:
                params.append({"bias": 0, "mult": 0, "shift": 1, **({"res_mult": 0} if residuals else {})})
    return words, lane_map, params
