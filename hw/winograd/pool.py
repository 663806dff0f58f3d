"""POOL steps: max-pool layers (those not fused into a Winograd layer) as a compare-and-keep unit."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from terwin.deployment import MaxPool2d

from .buffers import act_addr_bits
from .layouts import read_layout, write_layout


class PoolUnit(wiring.Component):
    """For each output (channel, row, column) in order, reads the k x k pixels of its window, one a
    cycle, keeps the maximum and writes it at the window's last pixel (into buffer `k.dst`).

    Ports: `active` (in): a POOL phase runs; `phase`, `count`, `phase_end` (in) from the
    `PhaseSequencer`; `read` (out) and `pixel` (in, a cycle later): the activation buffers;
    `write` (out).
    """

    def __init__(self, program, *, phase, constants):
        self._program = program
        abits = act_addr_bits(program)
        super().__init__({
            "k": In(constants),
            "active": In(1),
            "phase": In(phase),
            "count": In(program.count_bits),
            "phase_end": In(1),
            "read": Out(read_layout(addr_bits=abits)),
            "pixel": In(unsigned(program.act_bits)),
            "write": Out(write_layout(addr_bits=abits, act_bits=program.act_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p, count = self._program, self.count
        pools = [(n, s) for n, s in enumerate(p.stages) if s.kind == MaxPool2d.kind]
        kmax = max(s.pool_k for _, s in pools)
        pos = Signal(range(kmax * kmax + 1))                  # position in the window, row-major
        out_x = Signal(range(max(s.out_shape[2] for _, s in pools) + 1))
        out_y = Signal(range(max(s.out_shape[1] for _, s in pools) + 1))
        chan = Signal(range(max(s.out_shape[0] for _, s in pools) + 1))
        issue, first, last = Signal(), Signal(), Signal()
        dest = Signal(act_addr_bits(p))
        for n, s in pools:
            c, h, w = s.in_shape
            _, ho, wo = s.out_shape
            k, st = s.pool_k, s.pool_s
            with m.If(self.active & (self.phase.stage == n)):
                wy, wx = Signal(range(k), name=f"pky_{s.name}"), Signal(range(k), name=f"pkx_{s.name}")
                m.d.comb += [wy.eq(pos // k), wx.eq(pos % k)] if k > 1 else [wy.eq(0), wx.eq(0)]
                m.d.comb += [issue.eq(count < c * ho * wo * k * k), first.eq(pos == 0), last.eq(pos == k * k - 1),
                             self.read.inside.eq(1), self.read.en.eq(1),
                             self.read.addr.eq(chan * (h * w) + (out_y * st + wy) * w + out_x * st + wx),
                             dest.eq(chan * (ho * wo) + out_y * wo + out_x)]
                with m.If(pos != k * k - 1):
                    m.d.sync += pos.eq(pos + 1)
                with m.Else():
                    m.d.sync += pos.eq(0)
                    with m.If(out_x != wo - 1):
                        m.d.sync += out_x.eq(out_x + 1)
                    with m.Else():
                        m.d.sync += out_x.eq(0)
                        with m.If(out_y != ho - 1):
                            m.d.sync += out_y.eq(out_y + 1)
                        with m.Else():
                            m.d.sync += [out_y.eq(0), chan.eq(chan + 1)]
        with m.If(self.phase_end):
            m.d.sync += [pos.eq(0), out_x.eq(0), out_y.eq(0), chan.eq(0)]
        # a cycle later, with the pixel
        valid1, first1, last1, dest1 = Signal(), Signal(), Signal(), Signal(act_addr_bits(p))
        m.d.sync += [valid1.eq(issue), first1.eq(first), last1.eq(last), dest1.eq(dest)]
        best, kept = Signal(unsigned(p.act_bits)), Signal(unsigned(p.act_bits))
        m.d.comb += best.eq(Mux(first1 | (self.pixel > kept), self.pixel, kept))
        with m.If(valid1):
            m.d.sync += kept.eq(best)
            with m.If(last1):
                m.d.comb += [self.write.en.eq(1), self.write.addr.eq(dest1), self.write.data.eq(best),
                             self.write.dst.eq(self.k.dst)]
        return m
