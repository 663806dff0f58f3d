"""`WinogradAccelerator`: runs a whole Winograd `Deployment` from on-chip memories.

Same ports as the ternary top (`terwin.hw.top`, docs/hardware.md):

* `i_stream`: the quantized image, one unsigned activation per beat in (C, H, W) raster order;
* `o_stream`: the class scores (signed), one per beat in class order;
* `busy`: high from the cycle after the last input beat until the last score is accepted;
* `cycles`: compute cycles of the current/last image (the sum of the per-layer counts);
* `layer_sel` -> `layer_cycles`, `layer_mac_cycles`: per-layer counts of `dep.layers[layer_sel]`
  (`layer_mac_cycles`: cycles of the multiply stage, MULT + DRAIN phases).

Datapath (see docs/winograd-hardware.md):

    activation buffer --pixel a cycle--> 4x4 window --> InputTransform (B^T d B) --> operand memory
    operand memory --> SparseMultiplyStage (mult_lanes decoders + multipliers) --> accumulator banks
    banks --target map--> 4x4 M window --> OutputTransform (A^T M A) --> Requantizer --> next buffer

Linear layers use the same multipliers as a sparse integer MAC (the input activations are copied
into the operand memory), max-pool layers a compare-and-keep unit; the last (linear) layer's raw
scores go to the output FIFO. The controller walks a schedule of fixed-length phases held in a
small memory (`terwin.hw.winograd_program`); `terwin.sim.cycles_winograd` sums the same phases.
"""
from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import fifo, memory, wiring

from terwin.intmath import signed_bits

from . import layouts
from .requant import Requantizer
from .winograd_layouts import phase_layout
from .winograd_mult import SparseMultiplyStage
from .winograd_program import OP, OPS, compile_program
from .winograd_transform import InputTransform, OutputTransform

COUNTER_BITS = layouts.COUNTER_BITS


def _ubits(n: int) -> int:
    return max(1, int(n).bit_length())


class WinogradAccelerator(wiring.Component):
    def __init__(self, dep, *, program=None):
        self.dep = dep
        self.program = p = program or compile_program(dep)
        spec = dep.spec
        self.score_bits = max(p.y_bits, p.bias_bits) + 1   # Requantizer.o_score
        super().__init__(layouts.accelerator_signature(spec, score_bits=self.score_bits, n_layers=len(dep.layers)))

    def elaborate(self, platform):
        m = Module()
        dep, p = self.dep, self.program
        spec = dep.spec
        stages = p.stages
        n_st = len(stages)
        weighted = [n for n, s in enumerate(stages) if s.kind != "pool"]

        # -- schedule memory ------------------------------------------------------------------------
        max_len = max(ph.length for ph in p.phases)
        max_tile = max(max(s.tiles_y, s.tiles_x) for s in stages)
        playout = phase_layout(op_bits=_ubits(len(OPS) - 1), stage_bits=_ubits(n_st - 1),
                               length_bits=_ubits(max_len), tile_bits=_ubits(max_tile))
        m.submodules.schedule = smem = memory.Memory(
            shape=playout, depth=len(p.phases) + 1,
            init=[{"op": ph.op, "stage": ph.stage, "length": ph.length, "ty": ph.ty, "tx": ph.tx, "arm": ph.arm}
                  for ph in p.phases])
        srd = smem.read_port()
        phase = srd.data
        stage = phase.stage
        op = phase.op

        def const_sig(name, values):
            values = [int(v) for v in values]
            if min(values) < 0:
                shape = signed(signed_bits(min(values), max(values)))
            else:
                shape = unsigned(_ubits(max(values)))
            sig = Signal(shape, name=f"k_{name}")
            with m.Switch(stage):
                for i, v in enumerate(values):
                    with m.Case(i):
                        m.d.comb += sig.eq(v)
            return sig

        K = {
            "src": const_sig("src", [s.src for s in stages]),
            "dst": const_sig("dst", [max(s.dst, 0) for s in stages]),
            "raw": const_sig("raw", [s.raw for s in stages]),
            "wlayer": const_sig("wlayer", [weighted.index(n) if n in weighted else 0 for n in range(n_st)]),
            "map_base": const_sig("map_base", [s.map_base for s in stages]),
            "param_base": const_sig("param_base", [s.param_base for s in stages]),
        }

        # -- units --------------------------------------------------------------------------------
        m.submodules.mult = mult = SparseMultiplyStage(p)
        m.submodules.in_xform = ixf = InputTransform(act_bits=spec.act_bits, m=spec.winograd_tile)
        m.submodules.out_xform = oxf = OutputTransform(acc_bits=p.acc_bits, y_bits=p.y_bits, m=spec.winograd_tile)
        m.submodules.requant = rq = Requantizer(act_bits=spec.act_bits, acc_bits=p.y_bits, bias_bits=p.bias_bits,
                                                mult_bits=p.mult_bits, shift_bits=p.shift_bits)
        prm_layout = layouts.param_layout(bias_bits=p.bias_bits, mult_bits=p.mult_bits, shift_bits=p.shift_bits)
        m.submodules.params = pmem = memory.Memory(shape=prm_layout, depth=max(1, len(p.params)), init=p.params)
        prd = pmem.read_port()
        acts_wr, acts_rd = [], []
        for b in range(2):
            mem = memory.Memory(shape=unsigned(spec.act_bits), depth=p.act_depth, init=[])
            m.submodules[f"act{b}"] = mem
            acts_wr.append(mem.write_port())
            acts_rd.append(mem.read_port())
        act_abits = _ubits(p.act_depth - 1)
        # The writer pushes every score without looking at w_rdy, so the FIFO must take them all back to
        # back. Amaranth's SyncFIFOBuffered of depth 2 cannot (its inner one-entry FIFO refuses the
        # second write while the first moves to the output register); depth >= 3 can, up to its depth.
        m.submodules.scores = sfifo = fifo.SyncFIFOBuffered(width=self.score_bits, depth=max(3, p.n_scores))

        # -- control ------------------------------------------------------------------------------
        LOAD, RUN, FLUSH = 0, 1, 2
        state = Signal(2, init=LOAD)
        cnt = Signal(_ubits(max_len))
        ph = Signal(range(len(p.phases) + 1))
        phase_end = Signal()
        m.d.comb += phase_end.eq((state == RUN) & (cnt == phase.length - 1))
        running = state == RUN

        cycles = Signal(COUNTER_BITS)
        st_cycles = Array(Signal(COUNTER_BITS, name=f"st_cycles{i}") for i in range(n_st))
        st_macs = Array(Signal(COUNTER_BITS, name=f"st_macs{i}") for i in range(n_st))
        m.d.comb += [self.cycles.eq(cycles), self.busy.eq(state != LOAD)]
        with m.Switch(self.layer_sel):
            for i, s in enumerate(stages):
                with m.Case(s.index):
                    m.d.comb += [self.layer_cycles.eq(st_cycles[i]), self.layer_mac_cycles.eq(st_macs[i])]
        with m.If(running):
            m.d.sync += [cycles.eq(cycles + 1), st_cycles[stage].eq(st_cycles[stage] + 1)]
            with m.If((op == OP["MULT"]) | (op == OP["DRAIN"])):
                m.d.sync += st_macs[stage].eq(st_macs[stage] + 1)

        m.d.comb += srd.en.eq(1)
        with m.If(phase_end):
            m.d.comb += srd.addr.eq(ph + 1)
            m.d.sync += [ph.eq(ph + 1), cnt.eq(0)]
            with m.If(ph == len(p.phases) - 1):
                m.d.sync += state.eq(FLUSH)
        with m.Elif(running):
            m.d.comb += srd.addr.eq(ph)
            m.d.sync += cnt.eq(cnt + 1)
        with m.Else():
            m.d.comb += srd.addr.eq(0)

        # decoders start in the last cycle of the phase before a MULT phase
        m.d.comb += [mult.start.eq(phase_end & phase.arm), mult.layer.eq(K["wlayer"])]

        # -- input loader ---------------------------------------------------------------------------
        n_in = p.input_shape[0] * p.input_shape[1] * p.input_shape[2]
        l_idx = Signal(range(n_in + 1))
        m.d.comb += self.i_stream.ready.eq(state == LOAD)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.comb += [acts_wr[0].en.eq(1), acts_wr[0].addr.eq(l_idx), acts_wr[0].data.eq(self.i_stream.payload)]
            with m.If(l_idx == n_in - 1):
                m.d.sync += [l_idx.eq(0), state.eq(RUN), ph.eq(0), cnt.eq(0), cycles.eq(0)]
                m.d.sync += [c.eq(0) for c in st_cycles] + [c.eq(0) for c in st_macs]
            with m.Else():
                m.d.sync += l_idx.eq(l_idx + 1)

        with m.If(state == FLUSH):
            with m.If(sfifo.level == 0):
                m.d.sync += state.eq(LOAD)

        # -- activation read (IN_W, IN_L, POOL): address per stage, data one cycle later ----------
        rd_addr = Signal(act_abits)
        rd_inside = Signal()
        rd_en = Signal()   # a read this cycle (the data and address stay still otherwise)
        for b in range(2):
            m.d.comb += [acts_rd[b].addr.eq(rd_addr), acts_rd[b].en.eq(rd_en)]
        src1 = Signal()
        inside1 = Signal()
        m.d.sync += [src1.eq(K["src"]), inside1.eq(rd_inside)]
        pixel = Signal(unsigned(spec.act_bits))
        m.d.comb += pixel.eq(Mux(inside1, Mux(src1, acts_rd[1].data, acts_rd[0].data), 0))

        # -- activation write (OUT_W, OUT_L, POOL) --------------------------------------------------
        wr_en, wr_addr, wr_data = Signal(), Signal(act_abits), Signal(unsigned(spec.act_bits))
        wr_dst = Signal()
        with m.If(wr_en):
            for b in range(2):
                m.d.comb += [acts_wr[b].addr.eq(wr_addr), acts_wr[b].data.eq(wr_data)]
                with m.If(wr_dst == b):
                    m.d.comb += acts_wr[b].en.eq(1)

        # -- IN_W: 4x4 window of every channel -> input transform -> operand memory ---------------
        in_w = running & (op == OP["IN_W"])
        c_in_max = max(s.in_shape[0] for s in stages)
        px_issue = Signal()
        px_valid1, px_last1 = Signal(), Signal()
        window = [Signal(unsigned(spec.act_bits), name=f"win{i}") for i in range(16)]
        coord_max = max(max(s.in_shape[1:]) for s in stages) + 4
        cbits = signed_bits(-coord_max, coord_max)
        ky, kx = cnt[2:4], cnt[0:2]
        chan = cnt[4:]
        for n, s in enumerate(stages):
            if s.kind != "wconv":
                continue
            c, h, w = s.in_shape
            y = Signal(signed(cbits), name=f"iy_{s.name}")
            x = Signal(signed(cbits), name=f"ix_{s.name}")
            with m.If(in_w & (stage == n)):
                m.d.comb += [y.eq(phase.ty * 2 - s.padding + ky), x.eq(phase.tx * 2 - s.padding + kx),
                             px_issue.eq(cnt < 16 * c), rd_en.eq(1),
                             rd_inside.eq((y >= 0) & (y < h) & (x >= 0) & (x < w)),
                             rd_addr.eq(chan * (h * w) + y * w + x)]
        px_pos1 = Signal(4)
        px_feed = Signal()
        m.d.sync += [px_valid1.eq(px_issue), px_last1.eq(px_issue & (cnt[0:4] == 15)), px_pos1.eq(cnt[0:4]),
                     px_feed.eq(px_last1)]
        # each pixel goes to its own window register (no shifting: one register changes a cycle, and
        # the transform's inputs change only then); the full window enters the transform a cycle later
        with m.If(px_valid1):
            with m.Switch(px_pos1):
                for i in range(16):
                    with m.Case(i):
                        m.d.sync += window[i].eq(pixel)
        flat_in = window
        m.d.comb += ixf.i_stream.valid.eq(px_feed)
        for i in range(4):
            for j in range(4):
                m.d.comb += ixf.i_stream.payload[i][j].eq(flat_in[i * 4 + j])
        # serializer: writes the transform's 16 outputs straight from its output register
        v_idx = Signal(4)
        v_chan = Signal(range(c_in_max + 1))
        v_flat = Array(ixf.o_stream.payload[i][j] for i in range(4) for j in range(4))
        with m.If(ixf.o_stream.valid):
            m.d.comb += [mult.v_write.en.eq(1), mult.v_write.addr.eq(v_chan * 16 + v_idx),
                         mult.v_write.data.eq(v_flat[v_idx]), ixf.o_stream.ready.eq(v_idx == 15)]
            m.d.sync += v_idx.eq(v_idx + 1)
            with m.If(v_idx == 15):
                m.d.sync += v_chan.eq(v_chan + 1)
        with m.If(phase_end):
            m.d.sync += v_chan.eq(0)

        # -- IN_L: copy the input activations into the operand memory -----------------------------
        in_l = running & (op == OP["IN_L"])
        cp_valid1 = Signal()
        cp_addr1 = Signal.like(mult.v_write.addr)
        with m.If(in_l):
            for n, s in enumerate(stages):
                if s.kind == "linear":
                    n_lin = s.in_shape[0] * s.in_shape[1] * s.in_shape[2]
                    with m.If(stage == n):
                        m.d.comb += [rd_addr.eq(cnt), rd_inside.eq(1), rd_en.eq(1)]
                        m.d.sync += cp_valid1.eq(cnt < n_lin)
        with m.Else():
            m.d.sync += cp_valid1.eq(0)
        m.d.sync += cp_addr1.eq(cnt)
        with m.If(cp_valid1):
            m.d.comb += [mult.v_write.en.eq(1), mult.v_write.addr.eq(cp_addr1), mult.v_write.data.eq(pixel)]

        # -- OUT_W / OUT_L: M -> (A^T M A) -> requantizer -> next buffer or scores ---------------
        out_w = running & (op == OP["OUT_W"])
        out_l = running & (op == OP["OUT_L"])
        o_max = max(s.out_channels for s in stages)
        rd_valid = Signal()
        m.d.comb += [mult.m_read.addr.eq(K["map_base"] + cnt), mult.m_read.en.eq(rd_valid)]
        for n, s in enumerate(stages):
            if s.kind == "wconv":
                with m.If(out_w & (stage == n)):
                    m.d.comb += rd_valid.eq(cnt < 16 * s.out_channels)
            elif s.kind == "linear":
                with m.If(out_l & (stage == n)):
                    m.d.comb += rd_valid.eq(cnt < s.out_channels)
        # tags along the two-cycle M read
        tag = [(Signal(name=f"mv{i}"), Signal(range(16 * o_max + 1), name=f"mt{i}"), Signal(name=f"ml{i}"))
               for i in range(2)]
        m.d.sync += [tag[0][0].eq(rd_valid), tag[0][1].eq(cnt), tag[0][2].eq(op == OP["OUT_L"]),
                     tag[1][0].eq(tag[0][0]), tag[1][1].eq(tag[0][1]), tag[1][2].eq(tag[0][2])]
        m_valid, m_t, m_lin = tag[1]
        m_val = mult.m_read.data
        m_window = [Signal(signed(p.acc_bits), name=f"mwin{i}") for i in range(16)]
        with m.If(m_valid & ~m_lin):
            with m.Switch(m_t[0:4]):
                for i in range(16):
                    with m.Case(i):
                        m.d.sync += m_window[i].eq(m_val)
        flat_m = m_window
        feed_w = Signal()
        o_w = Signal(range(max(o_max, 2)))
        m.d.sync += [feed_w.eq(m_valid & ~m_lin & (m_t[0:4] == 15)), o_w.eq(m_t[4:])]
        m.d.comb += oxf.i_stream.valid.eq(feed_w)
        for i in range(4):
            for j in range(4):
                m.d.comb += oxf.i_stream.payload[i][j].eq(flat_m[i * 4 + j])
        # parameters: read when a channel's M is complete, held while its outputs are requantized
        o_of = Signal(range(max(o_max, 2)))
        m.d.comb += o_of.eq(Mux(feed_w, o_w, m_t))
        feed_l = m_valid & m_lin
        m.d.comb += [prd.addr.eq(K["param_base"] + o_of), prd.en.eq(feed_w | feed_l)]
        o_hold = Signal.like(o_of)
        lin_val = Signal(signed(p.acc_bits))
        lin_valid = Signal()
        with m.If(feed_w | feed_l):
            m.d.sync += o_hold.eq(o_of)
        m.d.sync += [lin_val.eq(m_val), lin_valid.eq(feed_l)]

        # serializer over the 2x2 output tile, straight from the output transform's register
        y_idx = Signal(2)
        y_flat = Array(oxf.o_stream.payload[i][j] for i in range(2) for j in range(2))
        rq_valid = Signal()
        rq_acc = Signal(signed(p.y_bits))
        dest_bits = act_abits + 1
        rq_dest = Signal(dest_bits)
        rq_inside = Signal()
        with m.If(oxf.o_stream.valid):
            m.d.comb += [rq_valid.eq(1), rq_acc.eq(y_flat[y_idx]), oxf.o_stream.ready.eq(y_idx == 3)]
            m.d.sync += y_idx.eq(y_idx + 1)
            for n, s in enumerate(stages):
                if s.kind != "wconv":
                    continue
                _, ho, wo = s.out_shape
                oy = Signal(range(2 * s.tiles_y + 2), name=f"oy_{s.name}")
                ox = Signal(range(2 * s.tiles_x + 2), name=f"ox_{s.name}")
                with m.If(stage == n):
                    m.d.comb += [oy.eq(phase.ty * 2 + y_idx[1]), ox.eq(phase.tx * 2 + y_idx[0]),
                                 rq_inside.eq((oy < ho) & (ox < wo)),
                                 rq_dest.eq(o_hold * (ho * wo) + oy * wo + ox)]
        with m.Elif(lin_valid):
            m.d.comb += [rq_valid.eq(1), rq_acc.eq(lin_val), rq_inside.eq(1), rq_dest.eq(o_hold)]
        m.d.comb += [rq.i_valid.eq(rq_valid), rq.i_acc.eq(rq_acc), rq.i_bias.eq(prd.data.bias),
                     rq.i_mult.eq(prd.data.mult), rq.i_shift.eq(prd.data.shift)]
        dest, inside = rq_dest, rq_inside
        for i in range(Requantizer.LATENCY):
            nd, ni = Signal(dest_bits, name=f"rq_dest{i}"), Signal(name=f"rq_inside{i}")
            m.d.sync += [nd.eq(dest), ni.eq(inside)]
            dest, inside = nd, ni
        with m.If(rq.o_valid & inside):
            with m.If(K["raw"]):
                m.d.comb += [sfifo.w_en.eq(1), sfifo.w_data.eq(rq.o_score)]
            with m.Else():
                m.d.comb += [wr_en.eq(1), wr_addr.eq(dest), wr_data.eq(rq.o_act), wr_dst.eq(K["dst"])]

        # -- POOL: k x k windows, compare and keep ------------------------------------------------
        pool = running & (op == OP["POOL"])
        pool_stages = [(n, s) for n, s in enumerate(stages) if s.kind == "pool"]
        if pool_stages:
            kmax = max(s.pool_k for _, s in pool_stages)
            pk = Signal(range(kmax * kmax + 1))
            pox = Signal(range(max(s.out_shape[2] for _, s in pool_stages) + 1))
            poy = Signal(range(max(s.out_shape[1] for _, s in pool_stages) + 1))
            pch = Signal(range(max(s.out_shape[0] for _, s in pool_stages) + 1))
            p_first1, p_last1, p_valid1 = Signal(), Signal(), Signal()
            p_dest1 = Signal(act_abits)
            p_issue, p_first, p_last = Signal(), Signal(), Signal()
            p_dest = Signal(act_abits)
            for n, s in pool_stages:
                c, h, w = s.in_shape
                _, ho, wo = s.out_shape
                k, st = s.pool_k, s.pool_s
                with m.If(pool & (stage == n)):
                    pky, pkx = Signal(range(k), name=f"pky_{s.name}"), Signal(range(k), name=f"pkx_{s.name}")
                    m.d.comb += [pky.eq(pk // k), pkx.eq(pk % k)] if k > 1 else [pky.eq(0), pkx.eq(0)]
                    m.d.comb += [p_issue.eq(cnt < c * ho * wo * k * k), p_first.eq(pk == 0), p_last.eq(pk == k * k - 1),
                                 rd_inside.eq(1), rd_en.eq(1),
                                 rd_addr.eq(pch * (h * w) + (poy * st + pky) * w + pox * st + pkx),
                                 p_dest.eq(pch * (ho * wo) + poy * wo + pox)]
                    with m.If(pk != k * k - 1):
                        m.d.sync += pk.eq(pk + 1)
                    with m.Else():
                        m.d.sync += pk.eq(0)
                        with m.If(pox != wo - 1):
                            m.d.sync += pox.eq(pox + 1)
                        with m.Else():
                            m.d.sync += pox.eq(0)
                            with m.If(poy != ho - 1):
                                m.d.sync += poy.eq(poy + 1)
                            with m.Else():
                                m.d.sync += [poy.eq(0), pch.eq(pch + 1)]
            with m.If(phase_end):
                m.d.sync += [pk.eq(0), pox.eq(0), poy.eq(0), pch.eq(0)]
            m.d.sync += [p_valid1.eq(p_issue), p_first1.eq(p_first), p_last1.eq(p_last), p_dest1.eq(p_dest)]
            pmax = Signal(unsigned(spec.act_bits))
            best = Signal(unsigned(spec.act_bits))
            m.d.comb += best.eq(Mux(p_first1 | (pixel > pmax), pixel, pmax))
            with m.If(p_valid1):
                m.d.sync += pmax.eq(best)
                with m.If(p_last1):
                    m.d.comb += [wr_en.eq(1), wr_addr.eq(p_dest1), wr_data.eq(best), wr_dst.eq(K["dst"])]

        # -- scores out -----------------------------------------------------------------------------
        m.d.comb += [self.o_stream.valid.eq(sfifo.r_rdy), self.o_stream.payload.eq(sfifo.r_data.as_signed()),
                     sfifo.r_en.eq(self.o_stream.ready)]
        return m
