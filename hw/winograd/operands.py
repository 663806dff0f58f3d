"""IN_W / IN_L phases: a layer's inputs into the multiply stage's operand memory."""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from terwin.deployment import Linear, WinogradConv2d
from terwin.intmath import signed_bits

from ..common.control import delayed
from .buffers import act_addr_bits
from .layouts import read_layout
from .program import IN_PIXELS, IN_TAIL, IN_TAIL_L
from .transform import InputTransform

# after the last pixel issue: read register, read, window register, transform register, 16 / IN_PIXELS
# word writes (the first as the transform's output appears), the operand memory's write register
# (`SparseMultiplyStage.WRITE_LATENCY`); linear: read register, read, data register, write register
assert IN_TAIL == 1 + 1 + 1 + InputTransform.LATENCY + 16 // IN_PIXELS - 1 + 1 and IN_TAIL_L == 1 + 1 + 1 + 1


class OperandLoader(wiring.Component):
    """Fills the operand memory for the multiply stage.

    * IN_W (`in_window`, a Winograd layer): reads the 4x4 input tile (`phase.in_ty`, `phase.in_tx`) of every
      channel, P = IN_PIXELS pixels of a row a cycle (`count` = channel * 16 / P + row * 4 / P + column / P;
      zeros outside the map), into a window register; each full window goes through the
      `InputTransform` (V = B^T d B) and its 16 values are written to the operand memory at
      channel * 16 + i * 4 + j, P a word (a word a cycle);
    * IN_L (`in_linear`, a linear layer): copies the input activations to the operand memory, P a
      cycle (a word), in (C, H, W) order.

    Both write operand half `phase.in_buf` (the memory is double-buffered: the lanes read the other).
    The layer is the step's stage, or the one after it when `phase.in_next` (the next layer's first
    tile, loaded during the previous layer's last step).

    Ports: `phase`, `count`, `phase_end` (in) from the `PhaseSequencer`; `read`, `read_more` (out) and
    `pixel`, `pixel_more` (in, a cycle later): the activation buffers' P read ports; `v_write` (out):
    the operand memory.
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
            "read_more": Out(data.ArrayLayout(read_layout(addr_bits=act_addr_bits(program)), IN_PIXELS - 1)),
            "pixel_more": In(data.ArrayLayout(unsigned(program.act_bits), IN_PIXELS - 1)),
            "v_write": In(WritePort.Signature(addr_width=program.word_bits + 1,
                                              shape=data.ArrayLayout(signed(program.operand_bits), IN_PIXELS))),
        })

    def elaborate(self, platform):
        m = Module()
        p, count = self._program, self.count
        stage = Signal.like(self.phase.stage)     # the step's stage, or the next one (`in_next`)
        m.d.comb += stage.eq(self.phase.stage + self.phase.in_next)
        m.submodules.in_xform = xform = InputTransform(act_bits=p.act_bits, m=p.spec.winograd_tile)

        P = IN_PIXELS
        groups = 4 // P                        # reads per row of a window
        slots = 16 // P                        # reads (and operand words) per channel
        slot_bits = slots.bit_length() - 1
        group_bits = groups.bit_length() - 1
        reads_out = [self.read, *self.read_more]
        pixels_in = [self.pixel, *self.pixel_more]

        # every read goes out through a register (the address arithmetic does not meet the buffers'
        # address inputs in the same cycle): a pixel arrives two cycles after its issue
        # the other pixels of a read are the next addresses: their address is the registered first one
        # plus e (an adder after the register, not another one before it); `en` and `inside` are their own
        rd = [Signal.like(r, name=f"rd{e}") for e, r in enumerate(reads_out)]
        m.d.sync += self.read.eq(rd[0])
        for e, r in enumerate(self.read_more, start=1):
            m.d.sync += [r.en.eq(rd[e].en), r.inside.eq(rd[e].inside)]
            m.d.comb += r.addr.eq(self.read.addr + e)

        # IN_W: P pixels of a row a cycle; each goes to its own window register (no shifting: P registers
        # change a cycle, and the transform's inputs change only then); the full window enters the
        # transform a cycle later
        issue = Signal()
        coord_max = max(max(s.in_shape[1:]) for s in p.stages) + 4
        cbits = signed_bits(-coord_max, coord_max)
        ky, kx, chan = count[group_bits:group_bits + 2], count[0:group_bits] * P, count[slot_bits:]
        for n, s in enumerate(p.stages):
            if s.kind != WinogradConv2d.kind:
                continue
            c, h, w = s.in_shape
            y = Signal(signed(cbits), name=f"iy_{s.name}")
            x = Signal(signed(cbits), name=f"ix_{s.name}")
            with m.If(self.in_window & (stage == n)):
                m.d.comb += [y.eq(self.phase.in_ty * 2 - s.padding + ky), x.eq(self.phase.in_tx * 2 - s.padding + kx),
                             issue.eq(count < slots * c)]
                m.d.comb += rd[0].addr.eq(chan * (h * w) + y * w + x)
                for e in range(P):      # x + e inside the map, as compares of x with constants
                    m.d.comb += [rd[e].en.eq(1), rd[e].inside.eq((y >= 0) & (y < h) & (x >= -e) & (x < w - e))]
        window = [Signal(unsigned(p.act_bits), name=f"win{i}") for i in range(16)]
        pixel_valid, pixel_slot, window_last, window_full = Signal(), Signal(max(1, slot_bits)), Signal(), Signal()
        issue1, slot1 = Signal(), Signal(max(1, slot_bits))
        m.d.sync += [issue1.eq(issue), slot1.eq(count[0:slot_bits]),
                     pixel_valid.eq(issue1), window_last.eq(issue1 & (slot1 == slots - 1)), pixel_slot.eq(slot1),
                     window_full.eq(window_last)]
        with m.If(pixel_valid):
            with m.Switch(pixel_slot):
                for i in range(slots):
                    with m.Case(i):
                        m.d.sync += [window[i * P + e].eq(pixels_in[e]) for e in range(P)]
        m.d.comb += xform.i_stream.valid.eq(window_full)
        for i in range(4):
            for j in range(4):
                m.d.comb += xform.i_stream.payload[i][j].eq(window[i * 4 + j])
        # serializer: writes the transform's 16 outputs, P a word, straight from its output register
        v_idx = Signal(max(1, slot_bits))
        v_chan = Signal(range(max(s.in_shape[0] for s in p.stages) + 1))
        v_flat = [xform.o_stream.payload[i][j] for i in range(4) for j in range(4)]
        v_words = [Array(v_flat[w * P + e] for w in range(slots)) for e in range(P)]
        v_addr = Signal(p.word_bits)
        m.d.comb += v_addr.eq(v_chan * slots + v_idx)
        with m.If(xform.o_stream.valid):
            m.d.comb += [self.v_write.en.eq(1), self.v_write.addr.eq(Cat(v_addr, self.phase.in_buf)),
                         xform.o_stream.ready.eq(v_idx == slots - 1)]
            m.d.comb += [self.v_write.data[e].eq(v_words[e][v_idx]) for e in range(P)]
            m.d.sync += v_idx.eq(v_idx + 1)
            with m.If(v_idx == slots - 1):
                m.d.sync += [v_chan.eq(v_chan + 1), v_idx.eq(0)]
        with m.If(self.phase_end):
            m.d.sync += v_chan.eq(0)

        # IN_L: copy the input activations, P a cycle (one operand word)
        copy_issue = Signal()
        copy_index = Signal(p.word_bits)
        m.d.comb += copy_index.eq(count)
        with m.If(self.in_linear):
            for n, s in enumerate(p.stages):
                if s.kind == Linear.kind:
                    size = s.in_shape[0] * s.in_shape[1] * s.in_shape[2]
                    with m.If(stage == n):
                        m.d.comb += copy_issue.eq(count < -(-size // P))
                        m.d.comb += rd[0].addr.eq(count * P)
                        for e in range(P):
                            m.d.comb += [rd[e].inside.eq(count * P < size - e), rd[e].en.eq(1)]
        # read register, read, data register (then the operand memory's write register: IN_TAIL_L - 1)
        copy_valid = delayed(m, copy_issue, IN_TAIL_L - 1, name="copy_valid")
        copy_addr = delayed(m, copy_index, IN_TAIL_L - 1, name="copy_addr")
        copy_data = Signal(P * p.act_bits)       # a register between the two memories
        m.d.sync += copy_data.eq(Cat(*pixels_in))
        with m.If(copy_valid):
            m.d.comb += [self.v_write.en.eq(1), self.v_write.addr.eq(Cat(copy_addr, self.phase.in_buf))]
            for e in range(P):
                m.d.comb += self.v_write.data[e].eq(copy_data[e * p.act_bits:(e + 1) * p.act_bits])
        return m
