"""Compile a Winograd `Deployment` into the Winograd engine's program: weight streams, schedule, widths.

NumPy only (no Amaranth at import time): the cycle model (`terwin.hw.winograd.cycles`) and the
hardware (`terwin.hw.winograd.top`) read the same `WinogradProgram` (the schedule of phases, the
per-stage table, the memories), so they cannot drift apart.

Compressed weight stream (one per multiplier lane)
---------------------------------------------------
A *target* is one accumulator the multiply stage produces per output tile:

* `WinogradConv2d`: target t = o * 16 + i * 4 + j, the Winograd-domain sum M[o, i, j] = sum_c U[o, c, i, j] * V[c, i, j];
* `Linear` (sparse integer MAC on the same multipliers): target t = o, the dot product sum_n W[o, n] * x[n].

Only nonzero weights are stored. Each is one *item* `(w, addr, last)`: the signed weight, the
address of its operand in the operand memory (V[c, i, j] at c * 16 + i * 4 + j for Winograd layers,
activation n at n for linear layers) and a flag marking the last item of a (partial) sum. The items
of all targets, in target order and channels ascending within a target, are dealt onto the
`mult_lanes` lanes by McNaughton's wrap-around rule: ceil(nnz / mult_lanes) items a lane, so the
lanes finish together; a target crossing a lane boundary is split into pieces (at most one per
lane). Lane l's weight memory holds its items of every layer one after the other
(`item_base[layer][l]`, `len(lane_items[l])`). A lane writes the partial sum of its k-th piece into
its own accumulator bank at rank k; the *target map* (one entry per target: for every lane,
present and k) tells the output side which bank entries to add to get M[t] (a target without
nonzero weights reads as 0). A map word holds MAP_WIDTH consecutive targets of one layer, read in one
cycle. With spec.bank_layout "copies" (the default) a lane's bank is one memory with MAP_WIDTH read
ports (synthesis makes a copy per port) and the word holds, per target and lane, (present, k). With
"quarters" it is four interleaved quarter memories, one read port each: sum k lives in quarter k % 4
at k // 4; a lane's pieces in a word have consecutive ranks, so they are in distinct quarters
(`_map_word` checks it), and the word as stored (`WinogradProgram.map_words`) gives per lane each
quarter's address and per target the quarter it takes its sum from.

Schedule (a list of steps, each a fixed number of cycles)
----------------------------------------------------------
Three units work side by side on double-buffered memories: the input side (IN) fills one half of
the operand memory while the multiply lanes (MULT) read the other half and write one half of their
accumulator banks, while the output side (OUT) reads the other half of the banks. A step runs up to
one tile in each unit; its length is the longest of them. For a Winograd layer with T output tiles
(ceil(Ho/2) * ceil(Wo/2), row-major), step s runs IN(s), MULT(s - 1) and OUT(s - 2):

    [IN(0)]  [IN(1) MULT(0)]  [IN(2) MULT(1) OUT(0)]  ...  [MULT(T-1) OUT(T-2)]  [OUT(T-1)]

and tile t uses operand half t % 2 and bank half t % 2.

* IN(t): 16 * C / IN_PIXELS + IN_TAIL cycles: read the 4x4 input tile of every channel (IN_PIXELS
  pixels of a row a cycle, zeros outside the map), V = B^T d B, write V into the operand memory
  (IN_PIXELS values a word, a word a cycle);
* MULT(t): the largest lane item count (`issue`): every lane issues one item a cycle, from the
  step's first cycle (the decoders are started in the last cycle of the step before, `arm`);
  its last products reach the banks MULT_LATENCY cycles into the next step, whose OUT reads the
  banks through read ports transparent to the lanes' writes, so no step waits for them;
* OUT(t): OUT_START + OUT_READS_W * O + OUT_TAIL_W cycles: read M[o] (one row of 4 targets a cycle),
  Y = A^T M A, requantize and write the 2x2 outputs inside the map; a 2x2 max-pool (stride 2)
  after the layer is fused into it (the maximum of the four requantized outputs is written).
  The output side is a stream whose outputs carry their tile, so only the layer's last tile counts
  its tail (OUT_TAIL_W) in its step: for t < T - 1 the step needs OUT_START + OUT_READS_W * O cycles
  and the tail runs on during the next step (which reads tile t + 1 of the same layer).

Between two Winograd layers the next layer's IN(0) runs in this layer's last step (OUT(T - 1)) when
its first window reads none of the tiles still in the output pipeline (`_overlap_layers`,
`Phase.in_next`).

A linear layer is one tile in three steps: IN (copy the N input activations into the operand
memory, IN_PIXELS a cycle, ceil(N / IN_PIXELS) + IN_TAIL_L cycles), MULT, OUT (OUT_START + O + OUT_TAIL_L cycles; the last layer pushes
raw scores into the output FIFO). A max-pool layer not fused into a convolution is one POOL step of
(outputs * k * k + 1) cycles.
`mac_cycles` of a layer = the cycles in which the lanes issue items: issue per MULT step.

The engine runs a chain: each layer reads the one before it (two ping-pong activation buffers). A
graph (format version 2: a `source` other than the layer before, a `residual`, a signed map, an
`avgpool2d`) is refused, in one line naming the layer and the feature (`_refuse_graph_features`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from terwin import winograd
from terwin.deployment import INPUT, AvgPool2d, Deployment, Linear, MaxPool2d, WinogradConv2d
from terwin.errors import TerwinError
from terwin.intmath import MULTIPLIER_BITS, signed_bits, unsigned_bits
from terwin.spec import ceil_div

from ..common.program import MemoryImage, Program, ProgramStage
from ..common.requant_tables import split

# Fixed latencies of the datapath (cycles); the RTL is written to exactly these numbers.
# Each tail counts the cycles after a unit's last read (its pipeline), so the unit's last write lands in
# the last cycle of its length; the RTL asserts these against its register stages.
IN_PIXELS = 2       # the input side reads this many pixels a cycle (two read ports on the activation buffers)
                    # and writes this many operands a cycle (an operand-memory word holds IN_PIXELS values)
IN_TAIL = 3 + 2 + 16 // IN_PIXELS - 1 + 1   # after the last pixel issue: read address register 1, read 1, window
                    # register 1, transform 2, 16 / IN_PIXELS operand-word writes (the first in the cycle the
                    # transform's output appears: -1), the operand memory's write register 1
IN_TAIL_L = 4       # linear: read address register 1, read 1, data register 1, write register 1
MULT_LATENCY = 4    # after an item's issue: address register 1, operand read 1, operand register 1, product register 1
                    # (the bank is written at its end)
BANK_READ_OFFSET = 2  # output side: target map 1, bank-address register 1, then the banks are read
M_READ_LATENCY = 5  # output side's sum read: target map 1, bank-address register 1, banks 1, masked-partial
                    # register 1, the sums of groups of 4 lanes 1 (then the adder trees over the groups)
OUT_START = MULT_LATENCY - BANK_READ_OFFSET - 1   # the output side's first map read: its bank read,
                    # BANK_READ_OFFSET cycles later, then sees (through the transparent bank port) the lanes' last
                    # write of the tile, MULT_LATENCY - 1 cycles into the step
OUT_READS_W = 4     # cycles per output channel on the output side: M read one row (4 targets) a cycle
OUT_TAIL_W = 15     # after the last M read: M read 5, window 1, transform 2, the other 3 outputs, requantizer 4
OUT_TAIL_L = 10     # linear: M read 5, select register 1, requantizer 4
POOL_TAIL = 1       # read latency
MAP_WIDTH = 4       # targets per target-map word (one row of an M tile)
FINE_PART_DEPTH = 512   # spec.requant "threshold": the fine table is split by h's top bits into parts of at
                    # most this many words (an ECP5 block RAM's depth at its widest, 36 bits), so a part's
                    # read data goes from one block straight into a register, without a depth multiplexer

# what a step runs: flags of the schedule entry (`layouts.phase_layout`)
UNITS = ("in_w", "in_l", "mult", "out_w", "out_l", "pool")


@dataclass
class Stage(ProgramStage):
    """One layer as the engine runs it."""
    kind: str                        # its layer's kind (`layer.kind`): winograd_conv2d, linear, maxpool2d
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    src: int                         # activation buffer read (0/1)
    dst: int                         # activation buffer written (0/1); -1: output FIFO (raw scores)
    padding: int = 0
    pool_k: int = 1
    pool_s: int = 1
    tiles_y: int = 1
    tiles_x: int = 1
    targets_per_out: int = 1         # 16 (Winograd) or 1 (linear)
    pool_index: int = -1             # a 2x2 stride-2 max-pool fused into this Winograd layer (its layer index)
    pool_shape: tuple = ()           # ... and its output shape (what the stage writes)
    issue: int = 0                   # max lane item count: the cycles a MULT step issues items
    mult_extra: int = 0              # MULT cycles before the first item (Huffman: `huffman_program.MULT_EXTRA`)
    nonzero: int = 0                 # nonzero weights (Winograd: nnz(U))
    lane_items: list = field(default_factory=list)    # per lane: list of (w, addr, last)
    lane_targets: list = field(default_factory=list)  # per lane: list of target ids
    item_base: list = field(default_factory=list)     # per lane
    map_base: int = 0
    param_base: int = 0
    operand_max: int = 0             # bound on |operand|
    acc_max: int = 0                 # bound on |M|
    y_max: int = 0                   # bound on |Y| (the requantizer's input)
    raw: bool = False

    @property
    def tiles(self) -> int:
        return self.tiles_y * self.tiles_x

    @property
    def fused(self) -> tuple[int, ...]:
        return (self.pool_index,) if self.pool_index >= 0 else ()

    @property
    def written_shape(self) -> tuple[int, int, int]:
        """The map the stage writes: its layer's output, or the fused pool's."""
        return tuple(self.pool_shape) if self.pool_index >= 0 else self.out_shape

    @property
    def out_channels(self) -> int:
        return self.out_shape[0]

    @property
    def nonzero_multiplies(self) -> int:
        """Multiplies the layer needs: nnz(U) x output tiles (Winograd), nnz(W) (linear)."""
        return self.nonzero * self.tiles


@dataclass(frozen=True)
class Phase:
    """One step of the schedule: the units it runs (flags `UNITS`), their tiles and buffer halves."""
    stage: int
    length: int
    in_w: int = 0    # IN of a Winograd layer: tile (in_ty, in_tx) into operand half in_buf
    in_l: int = 0    # IN of a linear layer
    mult: int = 0    # the lanes multiply operand half mult_buf into bank half mult_buf
    out_w: int = 0   # OUT of a Winograd layer: tile (out_ty, out_tx) from bank half out_buf
    out_l: int = 0   # OUT of a linear layer
    pool: int = 0    # a max-pool layer
    in_ty: int = 0
    in_tx: int = 0
    out_ty: int = 0
    out_tx: int = 0
    in_buf: int = 0
    mult_buf: int = 0
    out_buf: int = 0
    arm: int = 0     # start the lanes' decoders in this step's last cycle (the next step multiplies)
    in_next: int = 0  # the IN of this step is the next stage's first tile (`_overlap_layers`)


@dataclass
class WinogradProgram(Program):
    """The Winograd engine's program: stages, the schedule of phases, memories, widths."""
    phases: list[Phase]
    lanes: int
    items: list                # per lane: list of (w, addr, last) for every layer
    target_map: list           # per word (MAP_WIDTH targets) of every layer: per target, per lane (present, k)
                               # (as the memory holds it: `map_words`)
    params: list               # {bias, mult, shift} per output channel of every weighted layer
    act_bits: int
    act_depth: int             # values each of the two activation buffers holds
    operand_depth: int
    operand_bits: int          # signed
    weight_bits: int           # signed
    acc_bits: int              # signed, lane accumulators and banks
    y_bits: int                # signed, requantizer input
    bias_bits: int
    mult_bits: int
    shift_bits: int
    bank_depth: int
    huffman: bool = False      # the weights come from Huffman-coded streams (`huffman_program`)
    # spec.requant "threshold": per params entry its direction and coarse thresholds, and per (entry, h)
    # the fine thresholds (`terwin.hw.common.requant_tables`); empty with "multiply"
    coarse: list = field(default_factory=list)
    fine: list = field(default_factory=list)
    fine_bits: int = 0         # the low bits of each threshold the fine table keeps (`requant_tables.fine_bits`)

    @property
    def threshold(self) -> bool:
        """Whether the outputs are requantized by threshold tables (no multiplier)."""
        return self.spec.requant == "threshold"

    @property
    def logic_multiplier(self) -> bool:
        """Whether the requantizer's multiply is carry-save adders in logic (spec.requant "logic": params
        carry bias * m)."""
        return self.spec.requant == "logic"

    @property
    def fine_parts(self) -> int:
        """The fine table's parts (a power of two, at most 2^hb): part p holds the rows whose h has top
        bits p, each part at most FINE_PART_DEPTH words where the table allows."""
        hb, _ = split(self.act_bits)
        rows = max(1, len(self.params)) << hb
        parts = 1
        while parts < (1 << hb) and -(-rows // parts) > FINE_PART_DEPTH:
            parts *= 2
        return parts

    @property
    def channel_bits(self) -> int:
        """Address bits of a params entry (the fine table's row is (entry, h))."""
        return unsigned_bits(max(1, len(self.params)) - 1)

    @property
    def addr_bits(self) -> int:
        return unsigned_bits(self.operand_depth - 1)

    @property
    def in_pixels(self) -> int:
        """Values per operand-memory word (= pixels the input side reads a cycle)."""
        return IN_PIXELS

    @property
    def word_bits(self) -> int:
        """Address bits of an operand-memory word within a half (the item's addr without its low bits)."""
        return max(1, self.addr_bits - (IN_PIXELS.bit_length() - 1))

    @property
    def k_bits(self) -> int:
        return unsigned_bits(self.bank_depth - 1)

    # -- accumulator banks: spec.bank_layout "quarters" interleaves each lane's bank over quarter memories --
    @property
    def quartered(self) -> bool:
        """Whether each lane's bank is interleaved quarter memories (else one memory, MAP_WIDTH read ports)."""
        return self.spec.bank_layout == "quarters"

    @property
    def quarter_bits(self) -> int:
        """log2 of the interleave: sum k of a lane lives in quarter k % 2^quarter_bits, at k >> quarter_bits
        (2 for a bank of 3 or more sums, so MAP_WIDTH reads of a word never meet in one quarter; 0 with
        bank_layout "copies": one memory)."""
        return (min(MAP_WIDTH, self.bank_depth) - 1).bit_length() if self.quartered else 0

    @property
    def quarters(self) -> int:
        """Quarter memories a lane has: those that hold a sum (2^quarter_bits, fewer for a bank of 3)."""
        return min(1 << self.quarter_bits, self.bank_depth)

    @property
    def quarter_addr_bits(self) -> int:
        """Address bits of a sum within a quarter's half (k >> quarter_bits; 0 when a half holds one sum)."""
        return (-(-self.bank_depth // (1 << self.quarter_bits)) - 1).bit_length()

    # -- Huffman-coded weights (a layer with codec huffman: `terwin.hw.winograd.huffman_program`) ------
    @cached_property
    def huffman_items(self):
        from .huffman_program import compile_huffman
        return compile_huffman(self)

    @property
    def item_depth(self) -> int:
        return max(1, max(len(items) for items in self.items))

    @property
    def score_bits(self) -> int:
        """The raw scores (acc + bias) as the requantizer gives them (`Requantizer.o_score`)."""
        return max(self.y_bits, self.bias_bits) + 1

    @property
    def weighted(self) -> list[Stage]:
        """The stages with weights (the multiply stage's layers), in order."""
        return [s for s in self.stages if s.kind != MaxPool2d.kind]

    def stage_table(self) -> dict[str, list[int]]:
        weighted = [n for n, s in enumerate(self.stages) if s.kind != MaxPool2d.kind]
        table = {
            "src": [s.src for s in self.stages],                    # activation buffer read
            "dst": [max(s.dst, 0) for s in self.stages],            # activation buffer written
            "to_scores": [s.raw for s in self.stages],              # writes raw scores to the output FIFO
            "weighted_layer": [weighted.index(n) if n in weighted else 0 for n in range(len(self.stages))],
            "map_base": [s.map_base for s in self.stages],          # first target-map entry
            "param_base": [s.param_base for s in self.stages],      # first requantization constants
        }
        if any(s.pool_index >= 0 for s in self.stages):
            table["pool_fused"] = [int(s.pool_index >= 0) for s in self.stages]   # writes the 2x2 maximum
        return table

    def phase_widths(self) -> dict[str, int]:
        """Field widths of a schedule entry (`layouts.phase_layout`)."""
        return {"stage_bits": unsigned_bits(len(self.stages) - 1),
                "length_bits": unsigned_bits(max(ph.length for ph in self.phases)),
                "tile_bits": unsigned_bits(max(max(s.tiles_y, s.tiles_x) for s in self.stages))}

    @property
    def count_bits(self) -> int:
        """Width of the cycle counter within a step."""
        return unsigned_bits(max(ph.length for ph in self.phases))

    @property
    def map_addr_bits(self) -> int:
        return unsigned_bits(len(self.target_map) - 1)

    @cached_property
    def map_words(self) -> list:
        """The target map as its memory holds it, word by word: with bank_layout "copies"
        (`layouts.target_map_layout`) per target, per lane {present, k}; with "quarters"
        (`layouts.quartered_map_layout`) per lane the address in each quarter (k >> quarter_bits of the
        piece read there) and per target {present, q} (the quarter holding the lane's sum), raising if
        two of a lane's reads of a word meet in a quarter."""
        if not self.quartered:
            return [[[{"present": a, "k": k} for a, k in entry] for entry in word] for word in self.target_map]
        return [_map_word(word, n, quarter_bits=self.quarter_bits, quarters=self.quarters)
                for n, word in enumerate(self.target_map)]

    def memories(self) -> list[MemoryImage]:
        # Amaranth only here, when a top or `generate` asks: the cycle model stays NumPy-only
        from amaranth.hdl import signed, unsigned
        from amaranth.lib import data

        from ..common.requant import param_layout
        from . import layouts
        item = layouts.item_layout(weight_bits=self.weight_bits, addr_bits=self.addr_bits)
        return [
            MemoryImage("schedule", layouts.phase_layout(**self.phase_widths()), len(self.phases) + 2,
                        [dataclasses.asdict(ph) for ph in self.phases]),
            MemoryImage("params", param_layout(bias_bits=self.bias_bits, mult_bits=self.mult_bits,
                                               shift_bits=self.shift_bits, bias_mult=self.logic_multiplier),
                        max(1, len(self.params)),
                        [{**q, "bias_mult": q["bias"] * q["mult"]} for q in self.params] if self.logic_multiplier
                        else self.params),
            *(self._threshold_memories()),
            *(self._weight_memories(item)),
            MemoryImage("target_map", layouts.quartered_map_layout(
                lanes=self.lanes, quarters=self.quarters, quarter_bits=self.quarter_bits,
                quarter_addr_bits=self.quarter_addr_bits, width=MAP_WIDTH) if self.quartered else
                layouts.target_map_layout(lanes=self.lanes, k_bits=self.k_bits, width=MAP_WIDTH),
                len(self.target_map), self.map_words),
            # double-buffered: the address's top bit is the half (the tile's parity)
            # IN_PIXELS operands a word (operand address a: word a // IN_PIXELS, value a % IN_PIXELS)
            MemoryImage("operands", data.ArrayLayout(signed(self.operand_bits), IN_PIXELS), 2 << self.word_bits),
            # each lane's bank (bank_layout "quarters": as its quarters, sum k in quarter k % 2^quarter_bits
            # at k >> quarter_bits), double-buffered like the operands
            *(MemoryImage(f"bank{lane}q{q}", signed(self.acc_bits), 2 << self.quarter_addr_bits)
              for lane in range(self.lanes) for q in range(self.quarters) if self.quartered),
            *(MemoryImage(f"bank{lane}", signed(self.acc_bits), 2 << self.k_bits)
              for lane in range(self.lanes) if not self.quartered),
            # the two activation buffers (ping-pong) as the halves of one memory: the buffer is the address's
            # top bit, so a read needs no multiplexer between two memories' outputs
            MemoryImage("act", unsigned(self.act_bits), 2 << unsigned_bits(self.act_depth - 1)),
            # the output FIFO (Amaranth's SyncFIFOBuffered holds it); it takes every score back to back,
            # which its depth-2 form cannot (see `top.py`), hence at least 3
            MemoryImage("scores", signed(self.score_bits), max(3, self.n_scores)),
        ]


    def _threshold_memories(self) -> list[MemoryImage]:
        """spec.requant "threshold": the coarse table (a word per params entry, read with it: direction,
        the coarse thresholds, T_1 and T_{2^b-1}, full width) and the fine table (a word per (entry, h),
        the segment's thresholds' low `fine_bits` bits, inside the requantizer)."""
        if not self.threshold:
            return []
        from ..common.requant_threshold import coarse_layout, fine_layout
        hb, _ = split(self.act_bits)
        parts = self.fine_parts
        per = (1 << hb) // parts             # rows of a channel in one part: h's low bits
        depth = max(1, len(self.params))
        layout = fine_layout(act_bits=self.act_bits, low_bits=self.fine_bits)
        return [MemoryImage("thresh_coarse", coarse_layout(act_bits=self.act_bits, acc_bits=self.y_bits), depth,
                            self.coarse),
                *(MemoryImage(f"thresh_fine{part}", layout, depth * per,
                              [self.fine[(c << hb) + part * per + low] for c in range(len(self.params))
                               for low in range(per)]) for part in range(parts))]

    def _weight_memories(self, item) -> list[MemoryImage]:
        """Per lane its items, or (a Huffman program) its value and run streams. With
        `spec.weight_memory` "loaded" the items are RAMs the host fills (`preamble`)."""
        if self.huffman:
            from .huffman_program import huffman_memories
            return huffman_memories(self)
        contents = [[{"w": w, "addr": a, "last": last} for w, a, last in items] for items in self.items]
        if self.loaded_weights:
            return [MemoryImage(f"items{lane}", item, max(1, len(c)), loaded=c) for lane, c in enumerate(contents)]
        return [MemoryImage(f"items{lane}", item, max(1, len(c)), c) for lane, c in enumerate(contents)]

    @property
    def loaded_weights(self) -> bool:
        """Whether the host loads the weight streams at run time (`spec.weight_memory` "loaded")."""
        return self.spec.weight_memory == "loaded"

    @property
    def item_beats(self) -> int:
        """`i_stream` beats per item of a loaded weight stream (act_bits bits a beat, low bits first)."""
        return -(-(self.weight_bits + self.addr_bits + 1) // self.act_bits)

    def preamble(self) -> list[int]:
        """With `spec.weight_memory` "loaded": every lane's items, lane 0's first, each item's bits
        (`layouts.item_layout`) in `item_beats` beats of act_bits bits, the lowest first."""
        if not self.loaded_weights:
            return []
        mask = (1 << self.act_bits) - 1
        return [word >> (self.act_bits * b) & mask
                for image in self.memories() if image.loaded is not None
                for word in image.words() for b in range(self.item_beats)]

    def synthesis_memories(self) -> list[MemoryImage]:
        """The memories as synthesis maps them (the block-RAM count of `terwin.dse.resources`): a memory
        once per read port (Yosys gives every read port its own copy; `SparseMultiplyStage` writes the
        operand memory out as one copy per lane), so the operand memory `lanes` times and the
        activation buffers IN_PIXELS times (the input side reads that many pixels a cycle); each
        accumulator bank MAP_WIDTH times (the output side reads a row of targets a cycle), or with
        bank_layout "quarters" each quarter once (one read port: the row reads a lane's quarters once
        each)."""
        reads = {"operands": self.lanes, "act": IN_PIXELS,
                 **({} if self.quartered else {f"bank{lane}": MAP_WIDTH for lane in range(self.lanes)}),
                 # a Huffman program's symbol tables: a read port a lane (each `weights{lane}` has two read
                 # ports and no write port: Yosys maps them onto one true-dual-port block)
                 **({"value_table": self.lanes, "run_table": self.lanes} if self.huffman else {})}
        return [dataclasses.replace(_without_zero_lanes(image),
                                    name=f"{image.name}.{n}" if reads.get(image.name, 1) > 1 else image.name)
                for image in self.memories() for n in range(reads.get(image.name, 1))]


def layer_map(lane_targets: list, n_targets: int) -> list:
    """A layer's target-map words: MAP_WIDTH targets a word (the targets padded to a multiple of it),
    per target, per lane (present, k): k the rank of the lane's piece of the target."""
    entries = [[(0, 0)] * len(lane_targets) for _ in range(ceil_div(n_targets, MAP_WIDTH) * MAP_WIDTH)]
    for l, targets in enumerate(lane_targets):
        for k, t in enumerate(targets):
            entries[t][l] = (1, k)
    return [entries[w:w + MAP_WIDTH] for w in range(0, len(entries), MAP_WIDTH)]


def _map_word(word: list, n: int, *, quarter_bits: int, quarters: int) -> list:
    """Target-map word n (per target, per lane (present, k)) as the memory holds it: per lane, the
    address k >> quarter_bits each quarter is read at (0 where none of the word's targets reads it) and
    per target {present, q}. The wrap-around rule deals a lane's pieces in target order and a word's
    targets are consecutive ones of one layer, so a lane's present entries in a word have consecutive
    ranks and distinct quarters; checked here (the banks have one read port a quarter)."""
    lanes = len(word[0]) if word else 0
    out = []
    for lane in range(lanes):
        addr, take, owner = [0] * quarters, [], {}
        for r, entry in enumerate(word):
            present, k = entry[lane]
            if not present:
                take.append({"present": 0, "q": 0})
                continue
            q = k & ((1 << quarter_bits) - 1)
            if q >= quarters or q in owner:
                raise RuntimeError(f"internal error: target-map word {n}, lane {lane}: the sum of target {r} "
                                   f"(rank {k}) is in quarter {q}, "
                                   + (f"which target {owner[q][0]} (rank {owner[q][1]}) reads too"
                                      if q in owner else f"of {quarters}"))
            owner[q] = (r, k)
            addr[q] = k >> quarter_bits
            take.append({"present": 1, "q": q})
        out.append({"addr": addr, "take": take})
    return out


def _without_zero_lanes(image: MemoryImage) -> MemoryImage:
    """A ROM as Yosys keeps it: its bit columns that are 0 in every word removed (`opt_mem`: "removing
    const-0 lane"; e.g. the threshold requantizer's coarse table, whose thresholds' high bits are
    mostly 0, and the target map's unused piece ranks). A RAM as it is."""
    if not image.is_rom:
        return image
    from amaranth.hdl import unsigned
    used = 0
    for word in image.words():
        used |= word
    bits = [b for b in range(image.width) if used >> b & 1]
    return MemoryImage(image.name, unsigned(max(1, len(bits))), image.depth,
                       [sum((w >> b & 1) << i for i, b in enumerate(bits)) for w in image.words()])


def _wrap_lanes(target_items: dict[int, list], lanes: int) -> tuple[list[list], list[list[int]]]:
    """McNaughton's wrap-around rule: deal the items of the targets, in target order, onto the lanes,
    ceil(total / lanes) items a lane; a target that crosses a lane boundary is split into pieces
    (at most one per lane, each ending with a `last` item whose partial sum the lane writes).

    Returns per-lane items and per-lane piece targets (the target of each piece, in order)."""
    total = sum(len(v) for v in target_items.values())
    cap = max(1, -(-total // lanes))
    lane_items: list[list] = [[] for _ in range(lanes)]
    lane_targets: list[list[int]] = [[] for _ in range(lanes)]
    lane = 0
    for t in sorted(target_items):
        rest = target_items[t]
        while rest:
            room = cap - len(lane_items[lane])
            if room == 0:
                lane += 1
                continue
            piece, rest = rest[:room], rest[room:]
            lane_items[lane].extend((w, a, int(k == len(piece) - 1)) for k, (w, a) in enumerate(piece))
            lane_targets[lane].append(t)
    return lane_items, lane_targets


def encode_layer(layer, lanes: int):
    """Targets of a Winograd or linear layer -> (per-lane items, per-lane piece targets, targets_per_out).

    Items are (w, addr, last) as described in the module docstring.
    """
    if isinstance(layer, WinogradConv2d):
        u = np.asarray(layer.weight, dtype=np.int64)
        o, c, n, _ = u.shape
        per_out = n * n
        flat = u.transpose(0, 2, 3, 1).reshape(o * per_out, c)       # [target, channel]
        addr = (np.arange(c)[None, :] * per_out + np.arange(per_out)[:, None])  # [pos, channel]
        addr = np.tile(addr, (o, 1))
    else:
        flat = np.asarray(layer.weight, dtype=np.int64)                # [o, n]
        per_out = 1
        addr = np.tile(np.arange(flat.shape[1])[None, :], (flat.shape[0], 1))
    target_items = {}
    for t in range(flat.shape[0]):
        nz = np.flatnonzero(flat[t])
        if nz.size:
            target_items[t] = [(int(flat[t, j]), int(addr[t, j])) for j in nz]
    lane_items, lane_targets = _wrap_lanes(target_items, lanes)
    return lane_items, lane_targets, per_out


def decode_lane_items(lane_items, lane_targets, *, n_targets: int, n_operands: int) -> np.ndarray:
    """Inverse of `encode_layer`: the dense weight matrix [target, operand address]."""
    dense = np.zeros((n_targets, n_operands), dtype=np.int64)
    for items, targets in zip(lane_items, lane_targets):
        k = 0
        for w, a, last in items:
            if dense[targets[k], a]:
                raise ValueError(f"weight ({targets[k]}, {a}) appears twice in the stream")
            dense[targets[k], a] = w
            k += last
        if k != len(targets):
            raise ValueError("a lane's last flags do not match its target list")
    return dense


def _refuse_graph_features(dep: Deployment) -> None:
    """The engine runs a chain (each layer reads the one before, through two ping-pong buffers):
    a format-version-2 graph feature is refused in one line naming the layer and the feature."""
    previous = INPUT
    for i, (layer, source) in enumerate(zip(dep.layers, dep.sources())):
        last = i == len(dep.layers) - 1
        if source != previous:
            raise TerwinError(f"layer {layer.name}: the Winograd engine runs a chain of layers, each reading the "
                              f"one before it; this one reads {source} (source)")
        if getattr(layer, "residual", None) is not None:
            raise TerwinError(f"layer {layer.name}: the Winograd engine has no residual connections "
                              f"(residual {layer.residual})")
        if not getattr(layer, "relu", True) and not last:
            raise TerwinError(f"layer {layer.name}: the Winograd engine has no signed maps (relu false before the "
                              f"last layer: a projection shortcut)")
        if layer.kind == AvgPool2d.kind:
            raise TerwinError(f"layer {layer.name}: the Winograd engine has no average pooling (avgpool2d)")
        previous = layer.name


def _fusable_pool(stages: list, layer) -> bool:
    """A max-pool the Winograd layer before it writes directly: kernel = stride = the output tile (2)."""
    if not isinstance(layer, MaxPool2d) or not stages:
        return False
    prev = stages[-1]
    return (prev.kind == WinogradConv2d.kind and prev.pool_index < 0 and layer.kernel == layer.stride == 2
            and prev.out_shape[1] >= 2 and prev.out_shape[2] >= 2)


def unit_lengths(s: Stage) -> dict[str, int]:
    """Cycles each unit needs for one tile of stage `s`."""
    if s.kind == MaxPool2d.kind:
        c, ho, wo = s.out_shape
        return {"pool": c * ho * wo * s.pool_k * s.pool_k + POOL_TAIL}
    if s.kind == Linear.kind:
        return {"in": ceil_div(int(np.prod(s.in_shape)), IN_PIXELS) + IN_TAIL_L, "mult": s.issue + s.mult_extra,
                "out": OUT_START + s.out_channels + OUT_TAIL_L}
    return {"in": 16 // IN_PIXELS * s.in_shape[0] + IN_TAIL, "mult": s.issue + s.mult_extra,
            "out": OUT_START + OUT_READS_W * s.out_channels + OUT_TAIL_W,
            "out_reads": OUT_START + OUT_READS_W * s.out_channels}


def _stage_steps(n: int, s: Stage) -> list[Phase]:
    """The steps of stage n: IN(t), MULT(t - 1), OUT(t - 2) side by side (module docstring)."""
    lengths = unit_lengths(s)
    if s.kind == MaxPool2d.kind:
        return [Phase(n, lengths["pool"], pool=1)]
    linear = s.kind == Linear.kind
    coords = [(0, 0)] if linear else [(ty, tx) for ty in range(s.tiles_y) for tx in range(s.tiles_x)]
    tiles = len(coords)
    steps = []
    for step in range(tiles + 2):
        t_in, t_mult, t_out = step, step - 1, step - 2
        fields, length = {}, 0
        if t_in < tiles:
            fields.update({"in_l" if linear else "in_w": 1, "in_ty": coords[t_in][0], "in_tx": coords[t_in][1],
                           "in_buf": t_in % 2, "arm": 1})
            length = max(length, lengths["in"])
        if 0 <= t_mult < tiles:
            fields.update({"mult": 1, "mult_buf": t_mult % 2})
            length = max(length, lengths["mult"])
        if 0 <= t_out < tiles:
            fields.update({"out_l" if linear else "out_w": 1, "out_ty": coords[t_out][0],
                           "out_tx": coords[t_out][1], "out_buf": t_out % 2})
            # the output side is a stream (every output carries its tile along): a tile's tail (transform,
            # requantizer, write) runs on into the next step, which reads the layer's next tile; the
            # layer's last tile waits for its tail, so the next layer sees the whole map
            length = max(length, lengths["out"] if t_out == tiles - 1 else lengths.get("out_reads", lengths["out"]))
        steps.append(Phase(n, length, **fields))
    return steps


def _tile_writes(s: Stage, ty: int, tx: int) -> set[tuple[int, int]]:
    """The (row, column) positions of the map stage `s` writes (its fused pool's, if any) that output
    tile (ty, tx) writes, in every channel."""
    if s.pool_index >= 0:
        _, hp, wp = s.pool_shape
        return {(ty, tx)} if ty < hp and tx < wp else set()
    _, ho, wo = s.out_shape
    return {(y, x) for y in (2 * ty, 2 * ty + 1) for x in (2 * tx, 2 * tx + 1) if y < ho and x < wo}


def _first_window(s: Stage) -> set[tuple[int, int]]:
    """The (row, column) positions of its input map that Winograd stage `s` reads for its first tile."""
    _, h, w = s.in_shape
    return {(y, x) for y in range(-s.padding, 4 - s.padding) for x in range(-s.padding, 4 - s.padding)
            if 0 <= y < h and 0 <= x < w}


def _overlap_layers(stages: list[Stage], steps: list[list[Phase]]) -> list[Phase]:
    """Join the stages' steps into the schedule, moving a Winograd stage's first step (IN(0) alone) into
    the last step of the Winograd stage before it (OUT(T - 1) alone) when IN(0) reads nothing the
    tiles still in flight write (the last tiles, whose outputs may still be on their way through the
    output pipeline: `OUT_TAIL_W` cycles after their step, and each step of the layer lasts at least its
    reads). The joined step belongs to the earlier stage (its cycle counter), runs IN of the next one
    (`in_next`: its geometry, buffer and weights), and lasts as long as the longer of the two."""
    out: list[Phase] = []
    for n, (s, own) in enumerate(zip(stages, steps)):
        prev = stages[n - 1] if n else None
        if (prev is not None and prev.kind == s.kind == WinogradConv2d.kind and out
                and out[-1].stage == n - 1 and own and own[0].in_w and not own[0].mult and not own[0].out_w):
            reads = OUT_START + OUT_READS_W * prev.out_channels
            in_flight = 2 + ceil_div(OUT_TAIL_W, reads)
            coords = [(ty, tx) for ty in range(prev.tiles_y) for tx in range(prev.tiles_x)]
            written = set().union(*(_tile_writes(prev, ty, tx) for ty, tx in coords[-in_flight:]))
            last = out[-1]
            if not written & _first_window(s) and last.out_w and not (last.in_w or last.in_l or last.mult):
                first = own[0]
                out[-1] = dataclasses.replace(last, length=max(last.length, first.length), in_w=1, in_next=1,
                                              in_ty=first.in_ty, in_tx=first.in_tx, in_buf=first.in_buf, arm=1)
                own = own[1:]
        out.extend(own)
    return out


def describe_spec(spec) -> str:
    """The engine a spec shapes, in words (`terwin inspect`)."""
    extras = [f"requant {spec.requant}" if spec.requant != "multiply" else "",
              "weights loaded at run time" if spec.weight_memory == "loaded" else "",
              "quarter banks" if spec.bank_layout == "quarters" else ""]
    return ", ".join([f"{spec.mult_lanes} multiplier lane{'s' if spec.mult_lanes != 1 else ''}", *filter(None, extras)])


def fit_hint(spec, family) -> str | None:
    """A family with single-port RAM for run-time loaded memories (the iCE40 UP5K's SPRAM) takes the
    weight streams out of block RAM: one lane, loaded weights and quarter banks fit the default model
    on the UP5K (docs/winograd-hardware.md, "Weights loaded at run time")."""
    if family.spram_shape is None or (spec.weight_memory == "loaded" and spec.mult_lanes == 1
                                      and spec.bank_layout == "quarters"):
        return None
    return ('with one multiplier lane, its weights loaded at run time into SPRAM and quarter banks it may fit: '
            '--spec FILE.json holding {"weight_format": "winograd", "mult_lanes": 1, "weight_memory": "loaded", '
            '"bank_layout": "quarters"}')


def compile_program(dep: Deployment) -> WinogradProgram:
    """Schedule, memory contents and datapath widths of the Winograd engine for `dep`."""
    spec = dep.spec
    if spec.weight_format != "winograd":
        raise TerwinError(f"the Winograd engine cannot run a {spec.weight_format!r} model")
    lanes = spec.mult_lanes
    from .huffman_program import MULT_EXTRA, uses_huffman
    huffman = uses_huffman(dep)
    if huffman and spec.weight_memory == "loaded":
        raise TerwinError("weight_memory loaded holds raw weight streams: this model's weights are Huffman-coded "
                          "(codec huffman); use weight_memory rom or a model without the codec")
    act_max = spec.act_max
    bt, _, at = winograd.matrices(spec.winograd_tile, 3)
    v_gain = int(np.abs(bt).sum(axis=1).max()) ** 2     # |V| <= v_gain * act_max
    y_gain = int(np.abs(at).sum(axis=1).max()) ** 2     # |Y| <= y_gain * max|M|
    layers = list(dep.layers)
    _refuse_graph_features(dep)
    stages: list[Stage] = []
    cur = 0
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        kind = layer.kind    # the stage's kind is its layer's
        if not isinstance(layer, (WinogradConv2d, MaxPool2d, Linear)):
            raise TerwinError(f"layer {layer.name}: the Winograd engine runs winograd_conv2d, maxpool2d and linear "
                              f"layers, not {layer.kind} (use a ternary spec for spatial convolutions)")
        if isinstance(layer, WinogradConv2d) and not layer.relu:
            raise TerwinError(f"layer {layer.name}: the Winograd engine outputs class scores from a linear layer; "
                              f"a Winograd convolution must end in a ReLU")
        if isinstance(layer, Linear) and layer.weight_code not in ("int", "ternary"):
            raise TerwinError(f"layer {layer.name}: unknown weight code {layer.weight_code!r}")
        if last and kind != Linear.kind:
            raise TerwinError(f"layer {layer.name}: the Winograd engine needs a linear classifier as the last layer, "
                              f"not {layer.kind}")
        if last and layer.relu:
            raise TerwinError(f"layer {layer.name}: the Winograd engine's last layer outputs raw class scores; "
                              f"it cannot end in a ReLU")
        if _fusable_pool(stages, layer):
            # a 2x2 stride-2 max-pool after a Winograd layer: one output per 2x2 output tile, written by it
            stages[-1].pool_index, stages[-1].pool_shape = i, tuple(layer.out_shape)
            continue
        raw = last
        s = Stage(index=i, name=layer.name, kind=kind, in_shape=tuple(layer.in_shape),
                  out_shape=tuple(layer.out_shape), src=cur, dst=-1 if raw else 1 - cur, raw=raw)
        if kind == MaxPool2d.kind:
            s.pool_k, s.pool_s = layer.kernel, layer.stride
        else:
            if kind == WinogradConv2d.kind:
                m = layer.tile
                s.padding = layer.padding
                s.tiles_y = ceil_div(s.out_shape[1], m)
                s.tiles_x = ceil_div(s.out_shape[2], m)
                s.operand_max = v_gain * act_max
            else:
                s.operand_max = act_max
            s.lane_items, s.lane_targets, s.targets_per_out = encode_layer(layer, lanes)
            s.nonzero = int(np.count_nonzero(layer.weight))
            s.issue = max(1, max(len(items) for items in s.lane_items))
            s.mult_extra = MULT_EXTRA if huffman else 0
            w = np.abs(np.asarray(layer.weight, dtype=np.int64))
            if kind == WinogradConv2d.kind:
                per_target = w.sum(axis=1).max() if w.size else 0
                s.acc_max = int(per_target) * s.operand_max
                s.y_max = y_gain * s.acc_max
            else:
                s.acc_max = int(w.sum(axis=1).max() if w.size else 0) * s.operand_max
                s.y_max = s.acc_max
        stages.append(s)
        if not raw:
            cur = s.dst

    # memories
    items: list[list] = [[] for _ in range(lanes)]
    target_map: list = []
    params: list = []
    for s in stages:
        if s.kind == MaxPool2d.kind:
            continue
        layer = layers[s.index]
        s.item_base = [len(items[l]) for l in range(lanes)]
        for l in range(lanes):
            items[l].extend(s.lane_items[l])
        s.map_base = len(target_map)
        target_map.extend(layer_map(s.lane_targets, s.out_channels * s.targets_per_out))
        s.param_base = len(params)
        for o in range(s.out_channels):
            params.append({"bias": int(layer.bias[o]),
                           "mult": int(layer.multiplier[o]) if not s.raw else 0,
                           "shift": int(layer.shift[o]) if not s.raw else 1})

    phases = _overlap_layers(stages, [_stage_steps(n, s) for n, s in enumerate(stages)])

    weighted = [s for s in stages if s.kind != MaxPool2d.kind]
    act_sizes = [int(np.prod(dep.input_shape))] + [int(np.prod(s.written_shape)) for s in stages if not s.raw]
    operand_depth = max(16 * s.in_shape[0] if s.kind == WinogradConv2d.kind else int(np.prod(s.in_shape))
                        for s in weighted)
    operand_max = max(s.operand_max for s in weighted)
    wmax = max(int(np.abs(np.asarray(layers[s.index].weight)).max(initial=0)) for s in weighted)
    wmin = min(int(np.asarray(layers[s.index].weight).min(initial=0)) for s in weighted)
    acc_max = max(max(s.acc_max for s in weighted), 1)
    y_max = max(max(s.y_max for s in weighted), 1)
    biases = [p["bias"] for p in params] + [0]
    mults = [p["mult"] for p in params] + [0]
    last = stages[-1]
    y_bits = signed_bits(-y_max, y_max)
    coarse, fine, fine_bits = _threshold_tables(params, act_bits=spec.act_bits, y_bits=y_bits) \
        if spec.requant == "threshold" else ([], [], 0)
    program = WinogradProgram(
        spec=spec, input_shape=tuple(dep.input_shape), layer_names=tuple(layer.name for layer in layers),
        stages=stages, n_scores=last.out_channels,
        phases=phases, lanes=lanes, items=items, target_map=target_map, params=params,
        act_bits=spec.act_bits, act_depth=max(act_sizes), operand_depth=operand_depth,
        operand_bits=signed_bits(-operand_max, operand_max),
        weight_bits=signed_bits(min(wmin, -1), max(wmax, 1)),
        acc_bits=signed_bits(-acc_max, acc_max), y_bits=y_bits,
        bias_bits=signed_bits(min(biases), max(biases)), mult_bits=max(MULTIPLIER_BITS, signed_bits(min(mults), max(mults))),
        shift_bits=unsigned_bits(max(p["shift"] for p in params)),
        bank_depth=max(1, max(len(t) for s in weighted for t in s.lane_targets)), huffman=huffman,
        coarse=coarse, fine=fine, fine_bits=fine_bits)
    program.map_words    # with quarter banks: the reads of every map word are in distinct quarters (raises if not)
    return program


def _threshold_tables(params: list, *, act_bits: int, y_bits: int) -> tuple[list, list, int]:
    """The threshold requantizer's tables (`requant_tables`) for every params entry, over the whole
    y_bits range of the requantizer's input: coarse {dir, t, first, last} per entry, fine (the
    thresholds' low `fine_bits` bits) per (entry, h), word entry * 2^hb + h. A raw layer's entries
    (mult 0) are tables too (every threshold past the range), never used: its outputs are scores."""
    from ..common.requant_tables import coarse_fine, fine_bits, thresholds
    tables = [thresholds(p["bias"], p["mult"], p["shift"], act_bits=act_bits, acc_bits=y_bits) for p in params]
    bits = fine_bits([t for _, t in tables], act_bits=act_bits)
    mask = (1 << bits) - 1
    coarse, fine = [], []
    for direction, table in tables:
        c, f = coarse_fine(table, act_bits=act_bits)
        coarse.append({"dir": direction, "t": c, "first": table[0], "last": table[-1]})
        fine.extend([t & mask for t in row] for row in f)
    return coarse, fine, bits


__all__ = ["WinogradProgram", "Stage", "Phase", "UNITS", "compile_program", "encode_layer", "decode_lane_items", "layer_map",
           "unit_lengths", "IN_PIXELS", "IN_TAIL", "IN_TAIL_L", "MULT_LATENCY", "BANK_READ_OFFSET", "M_READ_LATENCY", "OUT_START", "OUT_READS_W",
           "OUT_TAIL_W", "OUT_TAIL_L", "POOL_TAIL", "MAP_WIDTH", "FINE_PART_DEPTH"]
