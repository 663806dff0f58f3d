"""IN_W / IN_L phases: a layer's inputs into the multiply stage's operand memory."""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from terwin.deployment import Linear, WinogradConv2d
from terwin.intmath import signed_bits

from ..common.control import delayed
from .buffers import act_addr_bits
from .layouts import read_layout
from .program import IN_TAIL, IN_TAIL_L
from .transform import InputTransform

# after the last pixel issue: read register, read, window register, transform register, 16 writes (the first
# as the transform's output appears); linear: read register, read, data register
assert IN_TAIL == 1 + 1 + 1 + InputTransform.LATENCY + 16 - 1 and IN_TAIL_L == 1 + 1 + 1


class OperandLoader(wiring.Component):
    """Fills the operand memory for the multiply stage.

    * IN_W (`in_window`, a Winograd layer): reads the 4x4 input tile (`phase.in_ty`, `phase.in_tx`) of every
      channel, one pixel a cycle (`count` = channel * 16 + row * 4 + column; zeros outside the map),
      into a window register; each full window goes through the `InputTransform` (V = B^T d B) and
      its 16 values are written to the operand memory at channel * 16 + i * 4 + j;
    * IN_L (`in_linear`, a linear layer): copies the input activations to the operand memory, one a
      cycle, in (C, H, W) order.

    Both write operand half `phase.in_buf` (the memory is double-buffered: the lanes read the other).

    Ports: `phase`, `count`, `phase_end` (in) from the `PhaseSequencer`; `read` (out) and `pixel`
    (in, a cycle later): the activation buffers; `v_write` (out): the operand memory.
    """

    def __init__(self, program, *, phase):
        self._program = program
        super().__init__({
            "in_window": In(1),
            "in_linear": In(1),
            "phase": In(phase),
            "count": In(program.count_bits),
            "phase_end": In(1),
            "read": Out(read_layout(addr_bits=act_addr_bits(program))),
            "pixel": In(unsigned(program.act_bits)),
            "v_write": In(WritePort.Signature(addr_width=program.addr_bits + 1, shape=signed(program.operand_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p, count, stage = self._program, self.count, self.phase.stage
        m.submodules.in_xform = xform = InputTransform(act_bits=p.act_bits, m=p.spec.winograd_tile)

        # every read goes out through a register (the address arithmetic does not meet the buffers'
        # address inputs in the same cycle): a pixel arrives two cycles after its issue
        rd = Signal.like(self.read)
        m.d.sync += self.read.eq(rd)

        # IN_W: pixel reads; each pixel goes to its own window register (no shifting: one register
        # changes a cycle, and the transform's inputs change only then); the full window enters the
        # transform a cycle later
        issue = Signal()
        coord_max = max(max(s.in_shape[1:]) for s in p.stages) + 4
        cbits = signed_bits(-coord_max, coord_max)
        ky, kx, chan = count[2:4], count[0:2], count[4:]
        for n, s in enumerate(p.stages):
            if s.kind != WinogradConv2d.kind:
                continue
            c, h, w = s.in_shape
            y = Signal(signed(cbits), name=f"iy_{s.name}")
            x = Signal(signed(cbits), name=f"ix_{s.name}")
            with m.If(self.in_window & (stage == n)):
                m.d.comb += [y.eq(self.phase.in_ty * 2 - s.padding + ky), x.eq(self.phase.in_tx * 2 - s.padding + kx),
                             issue.eq(count < 16 * c), rd.en.eq(1),
                             rd.inside.eq((y >= 0) & (y < h) & (x >= 0) & (x < w)),
                             rd.addr.eq(chan * (h * w) + y * w + x)]
        window = [Signal(unsigned(p.act_bits), name=f"win{i}") for i in range(16)]
        pixel_valid, pixel_pos, window_last, window_full = Signal(), Signal(4), Signal(), Signal()
        issue1, pos1 = Signal(), Signal(4)
        m.d.sync += [issue1.eq(issue), pos1.eq(count[0:4]),
                     pixel_valid.eq(issue1), window_last.eq(issue1 & (pos1 == 15)), pixel_pos.eq(pos1),
                     window_full.eq(window_last)]
        with m.If(pixel_valid):
            with m.Switch(pixel_pos):
                for i in range(16):
                    with m.Case(i):
                        m.d.sync += window[i].eq(self.pixel)
        m.d.comb += xform.i_stream.valid.eq(window_full)
        for i in range(4):
            for j in range(4):
                m.d.comb += xform.i_stream.payload[i][j].eq(window[i * 4 + j])
        # serializer: writes the transform's 16 outputs straight from its output register
        v_idx = Signal(4)
        v_chan = Signal(range(max(s.in_shape[0] for s in p.stages) + 1))
        v_flat = Array(xform.o_stream.payload[i][j] for i in range(4) for j in range(4))
        v_addr = Signal(p.addr_bits)
        m.d.comb += v_addr.eq(v_chan * 16 + v_idx)
        with m.If(xform.o_stream.valid):
            m.d.comb += [self.v_write.en.eq(1), self.v_write.addr.eq(Cat(v_addr, self.phase.in_buf)),
                         self.v_write.data.eq(v_flat[v_idx]), xform.o_stream.ready.eq(v_idx == 15)]
            m.d.sync += v_idx.eq(v_idx + 1)
            with m.If(v_idx == 15):
                m.d.sync += v_chan.eq(v_chan + 1)
        with m.If(self.phase_end):
            m.d.sync += v_chan.eq(0)

        # IN_L: copy the input activations
        copy_issue = Signal()
        copy_index = Signal(p.addr_bits)
        m.d.comb += copy_index.eq(count)
        with m.If(self.in_linear):
            for n, s in enumerate(p.stages):
                if s.kind == Linear.kind:
                    with m.If(stage == n):
                        m.d.comb += [rd.addr.eq(count), rd.inside.eq(1), rd.en.eq(1),
                                     copy_issue.eq(count < s.in_shape[0] * s.in_shape[1] * s.in_shape[2])]
        copy_valid = delayed(m, copy_issue, IN_TAIL_L, name="copy_valid")
        copy_addr = delayed(m, copy_index, IN_TAIL_L, name="copy_addr")
        copy_data = Signal.like(self.pixel)       # a register between the two memories
        m.d.sync += copy_data.eq(self.pixel)
        with m.If(copy_valid):
            m.d.comb += [self.v_write.en.eq(1), self.v_write.addr.eq(Cat(copy_addr, self.phase.in_buf)),
                         self.v_write.data.eq(copy_data)]
        return m
