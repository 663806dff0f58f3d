"""The sparse Winograd-domain multiply stage: weight-stream decoders driving `mult_lanes` multipliers.

The compressed format is described in `terwin.hw.winograd.program`: per lane, a list of nonzero
weights (w, operand address, last-of-target). Each lane is

    WeightDecoder  --items-->  MacLane  --(k, M)-->  its accumulator bank

and sees only nonzero weights: one multiply per cycle per lane, no cycle spent on a zero. A lane's
products accumulate (over input channels, in the Winograd domain) until the `last` item of a
target; the sum is written into the lane's bank at the target's rank k. The output side reads M[t]
through the target map (`SparseMultiplyStage.m_read`), adding the partial sums of a target that the
wrap-around rule split over several lanes.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out



class WeightDecoder(wiring.Component):
    """Streams one layer's items of one lane out of its weight memory, one per cycle.

    `start` (one cycle, with `layer`) begins layer `layer`: its first item is offered in the next
    cycle and the rest follow back to back as long as `o_stream.ready` is high.
    `busy` is high while items of the layer remain (including the one offered).
    """

    def __init__(self, *, layout, items: list[dict], bases: list[int], counts: list[int]):
        if len(bases) != len(counts) or not bases:
            raise ValueError("bases and counts must list every layer")
        self._layout = layout
        self._items = items
        self._bases = bases
        self._counts = counts
        super().__init__({
            "start": In(1),
            "layer": In(range(len(bases))),
            "o_stream": Out(stream.Signature(layout)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = max(1, len(self._items))
        m.submodules.mem = mem = Memory(shape=self._layout, depth=depth, init=self._items)
        rp = mem.read_port()
        max_count = max(self._counts)
        base = Array(Const(b, range(depth + 1)) for b in self._bases)[self.layer]
        count = Array(Const(c, range(max_count + 1)) for c in self._counts)[self.layer]
        ptr = Signal(range(depth + 1))
        remaining = Signal(range(max_count + 1))   # items not yet loaded into the output register
        o = self.o_stream
        m.d.comb += [o.payload.eq(rp.data), self.busy.eq(o.valid | (remaining != 0))]
        with m.If(self.start):
            m.d.comb += [rp.addr.eq(base), rp.en.eq(1)]
            m.d.sync += [o.valid.eq(count != 0), ptr.eq(base + 1), remaining.eq(Mux(count != 0, count - 1, 0))]
        with m.Elif(~o.valid | o.ready):
            m.d.comb += [rp.addr.eq(ptr), rp.en.eq(1)]
            m.d.sync += o.valid.eq(remaining != 0)
            with m.If(remaining != 0):
                m.d.sync += [ptr.eq(ptr + 1), remaining.eq(remaining - 1)]
        with m.Else():
            m.d.comb += rp.en.eq(0)
        return m


class MacLane(wiring.Component):
    """One multiplier: items in, target sums out.

    Cycle c: the item is taken and its operand address presented to `op_read` (a synchronous read
    port); c + 1: product register w * operand; c + 2: accumulate, and on a `last` item write the
    sum to `m_write` at the lane's target rank k (then k + 1, accumulator cleared). `clear` resets k
    and the accumulator (at the start of a tile). Always ready: `LATENCY` = 2 cycles item -> write.
    """
    LATENCY = 2

    def __init__(self, *, item: data.StructLayout, operand_bits: int, acc_bits: int, k_bits: int):
        addr_bits = item.members["addr"].width
        self.acc_bits = acc_bits
        super().__init__({
            "i_stream": In(stream.Signature(item)),
            "clear": In(1),
            "op_read": In(ReadPort.Signature(addr_width=addr_bits, shape=signed(operand_bits))),
            "m_write": In(WritePort.Signature(addr_width=k_bits, shape=signed(acc_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        i = self.i_stream
        m.d.comb += [i.ready.eq(1), self.op_read.addr.eq(i.payload.addr), self.op_read.en.eq(1)]
        v1, last1 = Signal(), Signal()
        w1 = Signal.like(i.payload.w)
        m.d.sync += [v1.eq(i.valid), last1.eq(i.payload.last), w1.eq(i.payload.w)]
        v2, last2 = Signal(), Signal()
        p2 = Signal(signed(len(w1) + len(self.op_read.data)))
        m.d.sync += [v2.eq(v1), last2.eq(last1), p2.eq(w1 * self.op_read.data)]
        acc = Signal(signed(self.acc_bits))
        k = Signal.like(self.m_write.addr)
        total = Signal(signed(self.acc_bits))
        m.d.comb += [total.eq(acc + p2), self.m_write.addr.eq(k), self.m_write.data.eq(total)]
        with m.If(self.clear):
            m.d.sync += [acc.eq(0), k.eq(0)]
        with m.Elif(v2):
            with m.If(last2):
                m.d.comb += self.m_write.en.eq(1)
                m.d.sync += [acc.eq(0), k.eq(k + 1)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m


class SparseMultiplyStage(wiring.Component):
    """Operand memory, `lanes` x (decoder + multiplier + accumulator bank), and the target map.

    * `v_write`: writes the operand memory (V of every input channel, or a linear layer's inputs);
    * `start` with `layer` (a weighted-layer number): every lane streams that layer's items;
      `busy` is high while any lane has items left;
    * `m_read`: M of a target (its global number: the layer's map base + t), two cycles after `addr`
      (with `en`; while `en` is low the output holds still).
    """
    READ_LATENCY = 2

    def __init__(self, program):
        p = program
        self.program = p
        self.weighted = p.weighted
        self._images = {image.name: image for image in p.memories()}
        self.item = self._images["items0"].shape
        self.map = self._images["target_map"].shape
        super().__init__({
            "v_write": Out(WritePort.Signature(addr_width=p.addr_bits, shape=signed(p.operand_bits))),
            "start": In(1),
            "layer": In(range(len(self.weighted))),
            "busy": Out(1),
            "m_read": Out(ReadPort.Signature(addr_width=max(1, (len(p.target_map) - 1).bit_length()),
                                             shape=signed(p.acc_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.program
        images = self._images
        m.submodules.operands = operands = images["operands"].memory()
        wp = operands.write_port()
        m.d.comb += [wp.en.eq(self.v_write.en), wp.addr.eq(self.v_write.addr), wp.data.eq(self.v_write.data)]

        m.submodules.target_map = tmap = images["target_map"].memory()
        map_rp = tmap.read_port()
        m.d.comb += [map_rp.addr.eq(self.m_read.addr), map_rp.en.eq(self.m_read.en)]

        busy = []
        bank_data = []
        for lane in range(p.lanes):
            dec = WeightDecoder(layout=self.item, items=images[f"items{lane}"].init,
                                bases=[s.item_base[lane] for s in self.weighted],
                                counts=[len(s.lane_items[lane]) for s in self.weighted])
            mac = MacLane(item=self.item, operand_bits=p.operand_bits, acc_bits=p.acc_bits, k_bits=p.k_bits)
            m.submodules[f"decoder{lane}"] = dec
            m.submodules[f"lane{lane}"] = mac
            m.d.comb += [dec.start.eq(self.start), dec.layer.eq(self.layer), mac.clear.eq(self.start)]
            wiring.connect(m, dec.o_stream, mac.i_stream)
            rp = operands.read_port()
            m.d.comb += [rp.addr.eq(mac.op_read.addr), rp.en.eq(mac.op_read.en), mac.op_read.data.eq(rp.data)]
            m.submodules[f"bank{lane}"] = bank = images[f"bank{lane}"].memory()
            bwp = bank.write_port()
            m.d.comb += [bwp.en.eq(mac.m_write.en), bwp.addr.eq(mac.m_write.addr), bwp.data.eq(mac.m_write.data)]
            brp = bank.read_port()
            m.d.comb += [brp.addr.eq(map_rp.data[lane].k), brp.en.eq(1)]
            present = Signal(name=f"present{lane}")
            m.d.sync += present.eq(map_rp.data[lane].present)
            bank_data.append(Mux(present, brp.data, 0))
            busy.append(dec.busy)
        m.d.comb += self.busy.eq(Const(0) if not busy else _any(busy))

        m.d.comb += self.m_read.data.eq(_tree_sum(bank_data))
        return m


def _tree_sum(values):
    """Balanced adder tree."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
    return values[0]


def _any(signals):
    out = signals[0]
    for s in signals[1:]:
        out = out | s
    return out
