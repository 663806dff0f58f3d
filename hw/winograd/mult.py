"""The sparse Winograd-domain multiply stage: weight-stream decoders driving `mult_lanes` multipliers.

The compressed format is described in `terwin.hw.winograd.program`: per lane, a list of nonzero
weights (w, operand address, last-of-target). Each lane is

    WeightDecoder  --items-->  MacLane  --(k, M)-->  its accumulator bank

and sees only nonzero weights: one multiply per cycle per lane, no cycle spent on a zero. A lane's
products accumulate (over input channels, in the Winograd domain) until the `last` item of a
target; the sum is written into the lane's bank at the target's rank k (with spec.bank_layout
"quarters": quarter k % 4 of the bank, at k // 4). The output side reads M through the target map
(`SparseMultiplyStage.m_read`, a row of four targets a cycle: four read ports on each bank, or each
lane's quarters once), adding the partial sums of a target that the wrap-around rule split over
several lanes.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from terwin.intmath import unsigned_bits

from ..fpga import RUNTIME_RAM

from .program import M_READ_LATENCY, MULT_LATENCY



class WeightDecoder(wiring.Component):
    """Streams one layer's items of one lane out of its weight memory, one per cycle.

    `start` (one cycle) begins layer `layer` (held since the cycle before: the layer's base and count
    are registered, so the memory address comes from flip-flops): its first item is offered in the
    next cycle and the rest follow back to back as long as `o_stream.ready` is high.
    `busy` is high while items of the layer remain (including the one offered).

    With `loaded` the memory is a RAM that the host fills before the first image, through `load` (a
    write port; the decoder reads nothing while it writes): `items` is then only its size. The RAM
    has one address for its write and its read, so that a single-port RAM holds it: the iCE40
    UP5K's SPRAM (asked for by `ram_style` "huge" when the platform is an iCE40 UltraPlus).
    """

    def __init__(self, *, layout, items: list[dict], bases: list[int], counts: list[int], read_port=None,
                 loaded: bool = False):
        if len(bases) != len(counts) or not bases:
            raise ValueError("bases and counts must list every layer")
        if loaded and read_port is not None:
            raise ValueError("a loaded weight memory is the decoder's own")
        self._read_port = read_port    # a read port of a memory held elsewhere (else its own memory of `items`)
        self._layout = layout
        self._items = items
        self._bases = bases
        self._counts = counts
        self._loaded = loaded
        depth = max(1, len(items))
        super().__init__({
            "start": In(1),
            "layer": In(range(len(bases))),
            "o_stream": Out(stream.Signature(layout)),
            "busy": Out(1),
            **({"load": In(WritePort.Signature(addr_width=unsigned_bits(depth - 1), shape=layout))} if loaded else {}),
        })

    def elaborate(self, platform):
        m = Module()
        depth = max(1, len(self._items))
        if self._loaded:
            attrs = {"ram_style": "huge"} if str(getattr(platform, "device", "")).startswith("iCE40UP") else None
            # named so that the build drops the initial value Amaranth gives it (`fpga.RUNTIME_RAM`)
            m.submodules[RUNTIME_RAM] = mem = Memory(shape=self._layout, depth=depth, init=[], attrs=attrs)
            wp, port = mem.write_port(), mem.read_port()
            # the decoder drives `rp`; the memory sees one address, the load's while it writes
            rp = wiring.Signature({"addr": Out(len(port.addr)), "en": Out(1), "data": In(self._layout)}).create()
            addr = Signal.like(port.addr)
            load = self.load
            m.d.comb += [addr.eq(Mux(load.en, load.addr, rp.addr)), wp.addr.eq(addr), port.addr.eq(addr),
                         wp.en.eq(load.en), wp.data.eq(load.data), port.en.eq(rp.en & ~load.en),
                         rp.data.eq(port.data)]
        elif self._read_port is None:
            m.submodules.mem = mem = Memory(shape=self._layout, depth=depth, init=self._items)
            rp = mem.read_port()
        else:
            rp = self._read_port
        max_count = max(self._counts)
        base, count = Signal(range(depth + 1)), Signal(range(max_count + 1))
        m.d.sync += [base.eq(Array(Const(b, range(depth + 1)) for b in self._bases)[self.layer]),
                     count.eq(Array(Const(c, range(max_count + 1)) for c in self._counts)[self.layer])]
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

    Cycle c: the item is taken into the address register; c + 1: its operand's word address (in half
    `buf`; a word holds `per_word` operands, the item's address without its low bits) presented to
    `op_read` (a synchronous read port); c + 2: operand register (the whole word: the memory's output
    does not feed the multiplier directly); c + 3: product register w * operand (the operand selected
    from the word by the address's low bits); c + 4: accumulate,
    and on a `last` item write the sum to `m_write` at the lane's target rank k in the same half
    (then k + 1, accumulator cleared). `clear` (the cycle before a tile's first item) sends k back to 0 when it
    reaches the accumulate stage, so a tile's items may follow the previous tile's back to back:
    the half travels with each item. Always ready: `LATENCY` = 4 cycles item -> write;
    `issuing` (out): an item is offered (taken) this cycle.
    """
    LATENCY = 4

    def __init__(self, *, item: data.StructLayout, operand_bits: int, acc_bits: int, k_bits: int,
                 per_word: int = 1):
        addr_bits = item.members["addr"].width
        self.acc_bits = acc_bits
        self.k_bits = k_bits
        self.per_word = per_word
        self.sel_bits = per_word.bit_length() - 1
        if per_word != 1 << self.sel_bits:
            raise ValueError(f"per_word must be a power of two, not {per_word}")
        self.word_bits = max(1, addr_bits - self.sel_bits)
        super().__init__({
            "i_stream": In(stream.Signature(item)),
            "buf": In(1),
            "clear": In(1),
            "issuing": Out(1),
            "op_read": In(ReadPort.Signature(addr_width=self.word_bits + 1,
                                             shape=data.ArrayLayout(signed(operand_bits), per_word))),
            "m_write": In(WritePort.Signature(addr_width=k_bits + 1, shape=signed(acc_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        i = self.i_stream
        # the item's address goes to the operand memory through a register (not straight from the weight
        # memory's output)
        # the valid bits take the reset; the data registers beside them do not (no reset logic in front of
        # them: the operand word's flip-flops take the block RAM's output straight)
        va, lasta, bufa, cleara = Signal(), Signal(), Signal(), Signal()
        wa, addra = Signal.like(i.payload.w, reset_less=True), Signal(len(self.op_read.addr), reset_less=True)
        word = Signal(self.word_bits)     # the operand's word; its value within the word: the low bits
        sela, sel0 = Signal(self.sel_bits, reset_less=True), Signal(self.sel_bits, reset_less=True)
        m.d.comb += [i.ready.eq(1), word.eq(i.payload.addr >> self.sel_bits)]
        m.d.sync += [va.eq(i.valid), lasta.eq(i.payload.last), wa.eq(i.payload.w), bufa.eq(self.buf),
                     cleara.eq(self.clear), addra.eq(Cat(word, self.buf)), sela.eq(i.payload.addr[:self.sel_bits])]
        m.d.comb += [self.op_read.addr.eq(addra), self.op_read.en.eq(1)]
        v0, last0, buf0, clear0 = Signal(), Signal(), Signal(), Signal()
        w0 = Signal.like(i.payload.w, reset_less=True)
        m.d.sync += [v0.eq(va), last0.eq(lasta), w0.eq(wa), buf0.eq(bufa), clear0.eq(cleara), sel0.eq(sela)]
        # the operand register holds the whole word, and the operand is selected from it after the
        # register, in front of the multiplier: the memory's output (a block RAM's slow clock-to-out,
        # often far across the die from its lane) goes straight into flip-flops
        v1, last1, buf1, clear1 = Signal(), Signal(), Signal(), Signal()
        w1, word1 = Signal.like(w0, reset_less=True), Signal.like(self.op_read.data, reset_less=True)
        sel1 = Signal.like(sel0, reset_less=True)
        m.d.sync += [v1.eq(v0), last1.eq(last0), w1.eq(w0), word1.eq(self.op_read.data), sel1.eq(sel0),
                     buf1.eq(buf0), clear1.eq(clear0)]
        op1 = word1[sel1] if self.per_word > 1 else word1[0]
        v2, last2, buf2, clear2 = Signal(), Signal(), Signal(), Signal()
        p2 = Signal(signed(len(w1) + len(self.op_read.data[0])), reset_less=True)
        m.d.sync += [v2.eq(v1), last2.eq(last1), p2.eq(w1 * op1), buf2.eq(buf1), clear2.eq(clear1)]
        acc = Signal(signed(self.acc_bits))
        k = Signal(self.k_bits)
        total = Signal(signed(self.acc_bits))
        m.d.comb += [total.eq(acc + p2), self.m_write.addr.eq(Cat(k, buf2)), self.m_write.data.eq(total),
                     self.m_write.en.eq(v2 & last2), self.issuing.eq(i.valid)]
        # in the clear2 cycle the stage holds the previous tile's last item (or none): it is written at k
        with m.If(clear2):
            m.d.sync += [acc.eq(0), k.eq(0)]
        with m.Elif(v2):
            with m.If(last2):
                m.d.sync += [acc.eq(0), k.eq(k + 1)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m


def m_read_signature(program) -> wiring.Signature:
    """The output side's view of the sums: `addr` (a target-map word: MAP_WIDTH consecutive targets)
    with `en`, from bank half `buf`; `data`: their sums M, `SparseMultiplyStage.READ_LATENCY` cycles
    later (held while `en` is low)."""
    from .program import MAP_WIDTH
    return wiring.Signature({
        "addr": In(program.map_addr_bits),
        "en": In(1),
        "buf": In(1),
        "data": Out(data.ArrayLayout(signed(program.acc_bits), MAP_WIDTH)),
    })


def weight_load_signature(program) -> wiring.Signature:
    """A write into one lane's loaded weight memory (spec.weight_memory "loaded"): `lane`, `addr`,
    `data` (an item, `layouts.item_layout`) with `en`."""
    from . import layouts
    return wiring.Signature({
        "en": Out(1),
        "lane": Out(range(max(2, program.lanes))),
        "addr": Out(unsigned_bits(program.item_depth - 1)),
        "data": Out(layouts.item_layout(weight_bits=program.weight_bits, addr_bits=program.addr_bits)),
    })


class SparseMultiplyStage(wiring.Component):
    """Operand memory, `lanes` x (decoder + multiplier + accumulator bank), and the target map.

    A lane's bank (spec.bank_layout "copies") is one memory with a read port per target of a map word,
    each at the word's k for that target. With "quarters" it is `program.quarters` quarter memories
    (one write port, one read port each): sum k in quarter k % 2^quarter_bits at k >> quarter_bits;
    the lane writes the one its k selects. A target-map word then gives per lane each quarter's
    address (into the bank-address register as it is: no logic between the map and the banks) and
    per target the quarter its sum comes from (a multiplexer after the banks, before the
    masked-partial register); the compiler checks that a word's reads of a lane are in distinct
    quarters (`program._map_word`).

    Both memories are double-buffered (the top address bit is the half): the input side fills one
    operand half while the lanes read the other, and the output side reads one bank half while the
    lanes write the other.

    * `v_write`: writes the operand memory, `program.in_pixels` operands a word (V of every input
      channel, or a linear layer's inputs; operand address a is value a % in_pixels of word
      a // in_pixels; the address's top bit is the half);
    * `start` with `layer` (a weighted-layer number, held since the cycle before): every lane streams
      that layer's items from the next cycle, operands from half `buf` and sums into bank half `buf`
      (`buf` as it is while the items are offered); `busy` is high while any lane issues an item (the
      products reach the banks MacLane.LATENCY cycles later); `start_ahead`: the same start a cycle
      early (it goes through a register here: what the engine drives, `PhaseSequencer.arm_next`);
    * `m_read` (`m_read_signature`): MAP_WIDTH sums M of consecutive targets (the word at the layer's
      map base + the target / MAP_WIDTH), READ_LATENCY cycles after `addr` (map, the bank addresses
      in a register, banks, each lane's masked partial in a register, the sum of each group of 4
      lanes in a register, then the adder tree over the groups). `v_write` reaches the operand
      memory WRITE_LATENCY cycles later (a register before the per-lane copies).
      The bank read ports are transparent to the lanes' writes: a sum written in the cycle the bank
      is read is the one read.
    """
    READ_LATENCY = 5
    WRITE_LATENCY = 1

    def __init__(self, program):
        p = program
        self.program = p
        self.weighted = p.weighted
        self._images = {image.name: image for image in p.memories()}
        from . import layouts
        self.item = layouts.item_layout(weight_bits=p.weight_bits, addr_bits=p.addr_bits)
        self.map = self._images["target_map"].shape
        super().__init__({
            "v_write": Out(WritePort.Signature(addr_width=p.word_bits + 1, shape=self._images["operands"].shape)),
            "start": In(1),
            "start_ahead": In(1),
            "layer": In(range(len(self.weighted))),
            "buf": In(1),
            "busy": Out(1),
            "m_read": Out(m_read_signature(p)),
            # spec.weight_memory "loaded": the host's writes into lane `lane`'s weight memory
            **({"weight_load": In(weight_load_signature(p))} if p.loaded_weights else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.program
        images = self._images
        # one copy of the operand memory per lane (one write port, one read port each, all written
        # alike): what a synthesis tool would make of one memory with a read port per lane, spelled out
        # (the yowasp Yosys 0.70 synth_ecp5 crashed on this design with 16 lanes)
        # The write goes through a register first (it fans out to every copy): WRITE_LATENCY.
        w_en, w_addr, w_data = Signal(), Signal.like(self.v_write.addr), Signal.like(self.v_write.data)
        m.d.sync += [w_en.eq(self.v_write.en), w_addr.eq(self.v_write.addr), w_data.eq(self.v_write.data)]
        operand_copies = []
        for lane in range(p.lanes):
            m.submodules[f"operands{lane}"] = copy = images["operands"].memory()
            wp = copy.write_port()
            m.d.comb += [wp.en.eq(w_en), wp.addr.eq(w_addr), wp.data.eq(w_data)]
            operand_copies.append(copy)

        m.submodules.target_map = tmap = images["target_map"].memory()
        map_rp = tmap.read_port()
        read_buf = Signal()    # the bank half, alongside the map word
        m.d.comb += [map_rp.addr.eq(self.m_read.addr), map_rp.en.eq(self.m_read.en)]
        with m.If(self.m_read.en):
            m.d.sync += read_buf.eq(self.m_read.buf)
        bank_buf = Signal()    # ... alongside the registered bank addresses
        m.d.sync += bank_buf.eq(read_buf)
        width = len(map_rp.data[0].take) if p.quartered else len(map_rp.data)

        # `start_ahead` is `start` a cycle early, into a register here (the start fans out to every lane's
        # weight-memory address): the lanes see either
        start_r, start = Signal(), Signal()
        m.d.sync += start_r.eq(self.start_ahead)
        m.d.comb += start.eq(self.start | start_r)
        issuing = []
        sums = [[] for _ in range(width)]
        if p.huffman:
            # the symbol tables every lane's decoders read (a read port a lane)
            from .huffman_lane import HuffmanLane
            m.submodules.value_table = value_table = images["value_table"].memory()
            m.submodules.run_table = run_table = images["run_table"].memory()
            # every lane's low value bits of item k in one word, read when lane 0 (which has the most items of
            # every layer: the wrap-around rule) takes its item k: every lane takes its item k in that cycle
            hw = p.huffman_items
            m.submodules.lows = lows = images["lows"].memory()
            low_rp = lows.read_port()
            low_layer = Signal.like(self.layer)
            m.d.sync += low_layer.eq(self.layer)
            low_ptr = Signal(range(len(hw.lows) + 1))
            lane0_take = Signal()
            m.d.comb += [low_rp.addr.eq(low_ptr), low_rp.en.eq(lane0_take)]
            with m.If(start):
                m.d.sync += low_ptr.eq(Array(Const(b, range(len(hw.lows) + 1)) for b in hw.lows_base)[low_layer])
            with m.Elif(lane0_take):
                m.d.sync += low_ptr.eq(low_ptr + 1)
        for lane in range(p.lanes):
            if p.huffman:
                dec = HuffmanLane(p, lane, item=self.item)
                for port, table in ((dec.value_read, value_table), (dec.run_read, run_table)):
                    rp = table.read_port()
                    m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en), port.data.eq(rp.data)]
                m.d.comb += dec.low.eq(low_rp.data[lane * hw.low_bits:(lane + 1) * hw.low_bits])
                if lane == 0:
                    m.d.comb += lane0_take.eq(dec.take)
            else:
                image = images[f"items{lane}"]
                dec = WeightDecoder(layout=self.item, items=image.init if image.is_rom else image.loaded,
                                    bases=[s.item_base[lane] for s in self.weighted],
                                    counts=[len(s.lane_items[lane]) for s in self.weighted],
                                    loaded=p.loaded_weights)
                if p.loaded_weights:   # (a lane without items is never written)
                    wl = self.weight_load
                    m.d.comb += [dec.load.en.eq(wl.en & (wl.lane == lane)), dec.load.addr.eq(wl.addr),
                                 dec.load.data.eq(wl.data)]
            mac = MacLane(item=self.item, operand_bits=p.operand_bits, acc_bits=p.acc_bits, k_bits=p.k_bits,
                          per_word=p.in_pixels)
            m.submodules[f"decoder{lane}"] = dec
            m.submodules[f"lane{lane}"] = mac
            m.d.comb += [dec.start.eq(start), dec.layer.eq(self.layer), mac.clear.eq(start),
                         mac.buf.eq(self.buf)]
            wiring.connect(m, dec.o_stream, mac.i_stream)
            rp = operand_copies[lane].read_port()
            m.d.comb += [rp.addr.eq(mac.op_read.addr), rp.en.eq(mac.op_read.en), mac.op_read.data.eq(rp.data)]
            if p.quartered:
                self._quartered_bank(m, p, lane, mac, map_rp.data[lane], bank_buf, width, sums)
            else:
                # the lane's bank: one memory, a read port per target of the map word (synthesis copies it)
                m.submodules[f"bank{lane}"] = bank = images[f"bank{lane}"].memory()
                bwp = bank.write_port()
                m.d.comb += [bwp.en.eq(mac.m_write.en), bwp.addr.eq(mac.m_write.addr), bwp.data.eq(mac.m_write.data)]
                for r in range(width):
                    entry = map_rp.data[r][lane]
                    k = Signal.like(entry.k, name=f"k{lane}_{r}")
                    present = [Signal(name=f"present{lane}_{r}_{n}") for n in range(2)]
                    m.d.sync += [k.eq(entry.k), present[0].eq(entry.present), present[1].eq(present[0])]
                    brp = bank.read_port(transparent_for=(bwp,))
                    m.d.comb += [brp.addr.eq(Cat(k, bank_buf)), brp.en.eq(1)]
                    partial = Signal(signed(p.acc_bits), name=f"partial{lane}_{r}")
                    m.d.sync += partial.eq(Mux(present[1], brp.data, 0))
                    sums[r].append(partial)
            issuing.append(mac.issuing)
        m.d.comb += self.busy.eq(_any(issuing))
        # the partials of each group of 4 lanes are summed into a register, then the groups' sums are
        # added (two adder levels a cycle, whatever the lane count)
        for r in range(width):
            groups = []
            for g in range(0, len(sums[r]), 4):
                group = Signal(signed(p.acc_bits), name=f"group{g // 4}_{r}")
                m.d.sync += group.eq(_tree_sum(sums[r][g:g + 4]))
                groups.append(group)
            m.d.comb += self.m_read.data[r].eq(_tree_sum(groups))
        return m

    def _quartered_bank(self, m, p, lane, mac, entry, bank_buf, width, sums):
        """bank_layout "quarters": the lane's bank as its quarter memories, each read once a map word."""
        images = self._images
        # the lane's bank: quarter q holds its sums k with k % 2^quarter_bits = q, at k >> quarter_bits
        # (and the half); the lane writes one quarter, the output side reads each quarter once a word
        qb, qa = p.quarter_bits, p.quarter_addr_bits
        wk, wbuf = mac.m_write.addr[:p.k_bits], mac.m_write.addr[p.k_bits]
        quarter_data = []
        for q in range(p.quarters):
            m.submodules[f"bank{lane}q{q}"] = quarter = images[f"bank{lane}q{q}"].memory()
            qwp = quarter.write_port()
            m.d.comb += [qwp.en.eq(mac.m_write.en & (wk[:qb] == q) if qb else mac.m_write.en),
                         qwp.addr.eq(Cat(wk[qb:qb + qa], wbuf)), qwp.data.eq(mac.m_write.data)]
            # the bank-address register: the quarter's address comes from the map as it is
            addr = Signal(qa, name=f"qaddr{lane}_{q}")
            m.d.sync += addr.eq(entry.addr[q])
            qrp = quarter.read_port(transparent_for=(qwp,))
            m.d.comb += [qrp.addr.eq(Cat(addr, bank_buf)), qrp.en.eq(1)]
            quarter_data.append(qrp.data)
        quarter_data = Array(quarter_data)
        for r in range(width):
            take = entry.take[r]
            present = [Signal(name=f"present{lane}_{r}_{n}") for n in range(2)]
            sel = [Signal(qb, name=f"q{lane}_{r}_{n}") for n in range(2)]
            m.d.sync += [present[0].eq(take.present), present[1].eq(present[0]),
                         sel[0].eq(take.q), sel[1].eq(sel[0])]
            partial = Signal(signed(p.acc_bits), name=f"partial{lane}_{r}")
            m.d.sync += partial.eq(Mux(present[1], quarter_data[sel[1]] if p.quarters > 1 else quarter_data[0], 0))
            sums[r].append(partial)


assert MacLane.LATENCY == MULT_LATENCY and SparseMultiplyStage.READ_LATENCY == M_READ_LATENCY


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
