"""`TernaryAccelerator`: runs a whole ternary `Deployment` from on-chip memories.

Ports (shared with the Winograd engine; see docs/hardware.md):

* `i_stream`: the quantized image, one unsigned activation per beat in (C, H, W) raster order;
* `o_stream`: the class scores (signed), one per beat in class order;
* `busy`: high from the cycle after the last input beat until the last score is accepted;
* `cycles`: compute cycles of the current/last image (the sum of the per-layer counts);
* `layer_sel` -> `layer_cycles`, `layer_mac_cycles`: per-layer counts for `dep.layers[layer_sel]`
  (a max-pool fused into the layer before it reads 0).

Schedule (one stage = a conv/linear layer with its max-pool fused): for each output group of
`pe_rows` channels, for each pooled output pixel, for each position in its pool window, the
controller issues the group's kept tiles, one per cycle. The pipeline: decoder (2) -> lane
addresses / activation banks (1) -> activation register (1) -> PE array (1 + log2 pe_cols) -> accumulators. At a job's last
tile the `pe_rows` sums move to a shadow register that the requantizer drains, one channel per
cycle, while the array already works on the next job; when the shadow is still busy at a job's end
the whole MAC pipeline stalls (`stall`). `terwin.sim.cycles_ternary` models this schedule exactly.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring

from terwin.intmath import signed_bits

from . import layouts, memimage
from .decoder import TileDecoder
from .requant import Requantizer
from .ternary_pe import TernaryPEArray

COUNTER_BITS = layouts.COUNTER_BITS


def _ubits(n: int) -> int:
    return max(1, int(n).bit_length())


class TernaryAccelerator(wiring.Component):
    def __init__(self, dep, *, program=None):
        self.dep = dep
        self.program = program or memimage.compile_program(dep)
        spec = dep.spec
        self.score_bits = self.program.score_bits
        super().__init__(layouts.accelerator_signature(spec, score_bits=self.score_bits, n_layers=len(dep.layers)))

    def elaborate(self, platform):
        m = Module()
        dep, p = self.dep, self.program
        spec = dep.spec
        rows, cols = spec.pe_rows, spec.pe_cols
        log_rows = (rows - 1).bit_length()
        stages = p.stages
        n_st = len(stages)

        # -- per-stage constants, selected by the stage register ---------------------------------
        stage = Signal(range(max(2, n_st)))

        def const_sig(name, values, *, is_signed=False):
            values = [int(v) for v in values]
            if is_signed or min(values) < 0:
                shape = signed(signed_bits(min(values + [0]), max(values + [0])))
            else:
                shape = unsigned(_ubits(max(values)))
            sig = Signal(shape, name=f"k_{name}")
            # a chain of Mux (continuous assignments in Verilog), not a Switch: an `always @*` block
            # whose inputs never change after time 0 is never evaluated by Icarus Verilog
            value = Const(values[-1], shape)
            for i in range(len(values) - 2, -1, -1):
                value = Mux(stage == i, Const(values[i], shape), value)
            m.d.comb += sig.eq(value)
            return sig

        K = {}
        K["og_last"] = const_sig("og_last", [s.out_groups - 1 for s in stages])
        K["py_last"] = const_sig("py_last", [s.out_h - 1 for s in stages])
        K["px_last"] = const_sig("px_last", [s.out_w - 1 for s in stages])
        K["win_last"] = const_sig("win_last", [s.pool_k - 1 for s in stages])
        K["pstep"] = const_sig("pstep", [s.pool_s * s.stride for s in stages])
        K["pstepW"] = const_sig("pstepW", [s.pool_s * s.stride * s.in_shape[2] for s in stages])
        K["cs"] = const_sig("cs", [s.stride for s in stages])
        K["csW"] = const_sig("csW", [s.stride * s.in_shape[2] for s in stages])
        K["pad"] = const_sig("pad", [s.padding for s in stages])
        K["padoff"] = const_sig("padoff", [s.padding * s.in_shape[2] + s.padding for s in stages])
        K["H"] = const_sig("H", [s.in_shape[1] for s in stages])
        K["W"] = const_sig("W", [s.in_shape[2] for s in stages])
        K["in_base"] = const_sig("in_base", [s.in_base for s in stages])
        K["out_base"] = const_sig("out_base", [s.out_base for s in stages])
        K["HWo"] = const_sig("HWo", [s.out_h * s.out_w for s in stages])
        K["banked_out"] = const_sig("banked_out", [s.out_mode == "banked" for s in stages])
        K["scores"] = const_sig("scores", [s.out_mode == "scores" for s in stages])
        K["param_base"] = const_sig("param_base", [s.param_base for s in stages])
        K["cout"] = const_sig("cout", [s.out_channels for s in stages])
        K["last_stage"] = const_sig("last_stage", [i == n_st - 1 for i in range(n_st)])

        def og_step(s):
            hwo = s.out_h * s.out_w
            if s.out_mode != "banked":
                return rows * hwo, 0
            if rows >= cols:
                return (rows // cols) * hwo, 0
            return hwo, cols // rows - 1
        K["og_chstep"] = const_sig("og_chstep", [og_step(s)[0] for s in stages])
        K["og_chmask"] = const_sig("og_chmask", [og_step(s)[1] for s in stages])

        # -- memories --------------------------------------------------------------------------
        m.submodules.decoder = dec = TileDecoder(p)
        m.submodules.pe = pe = TernaryPEArray(spec)
        m.submodules.requant = rq = Requantizer(act_bits=spec.act_bits, acc_bits=p.acc_bits, bias_bits=p.bias_bits,
                                                mult_bits=p.mult_bits, shift_bits=p.shift_bits)
        playout = layouts.param_layout(bias_bits=p.bias_bits, mult_bits=p.mult_bits, shift_bits=p.shift_bits)
        m.submodules.params = pmem = memory.Memory(shape=playout, depth=len(p.params), init=p.params)
        prd = pmem.read_port()
        max_og_n = int(p.og_counts.max())
        m.submodules.og_table = omem = memory.Memory(shape=unsigned(_ubits(max_og_n)), depth=len(p.og_counts) + 1,
                                                     init=[int(v) for v in p.og_counts] + [1])
        ord_ = omem.read_port(domain="comb")
        m.submodules.scores = smem = memory.Memory(shape=signed(self.score_bits), depth=max(2, p.n_scores), init=[])
        s_wr = smem.write_port()
        s_rd = smem.read_port()
        banks_wr, banks_rd = [], []
        for b in range(cols):
            bank = memory.Memory(shape=unsigned(spec.act_bits), depth=p.bank_depth, init=[])
            m.submodules[f"act_bank{b}"] = bank
            banks_wr.append(bank.write_port())
            banks_rd.append(bank.read_port())
        abits = p.addr_bits

        # -- control state -----------------------------------------------------------------------
        LOAD, RUN, DRAIN, OUT = 0, 1, 2, 3
        state = Signal(2, init=LOAD)
        stall = Signal()
        en = Signal()
        m.d.comb += en.eq(~stall)
        layer_done = Signal()

        cycles = Signal(COUNTER_BITS)
        st_cycles = Array(Signal(COUNTER_BITS, name=f"st_cycles{i}") for i in range(n_st))
        st_macs = Array(Signal(COUNTER_BITS, name=f"st_macs{i}") for i in range(n_st))
        m.d.comb += [self.cycles.eq(cycles), self.busy.eq(state != LOAD)]
        sel_cycles, sel_macs = Const(0, COUNTER_BITS), Const(0, COUNTER_BITS)
        for i, s in enumerate(stages):  # Mux chain: continuous assignments in Verilog
            sel_cycles = Mux(self.layer_sel == s.index, st_cycles[i], sel_cycles)
            sel_macs = Mux(self.layer_sel == s.index, st_macs[i], sel_macs)
        m.d.comb += [self.layer_cycles.eq(sel_cycles), self.layer_mac_cycles.eq(sel_macs)]
        with m.If((state == RUN) | (state == DRAIN)):
            m.d.sync += [cycles.eq(cycles + 1), st_cycles[stage].eq(st_cycles[stage] + 1)]

        # -- job counters ------------------------------------------------------------------------
        max_og = max(s.out_groups for s in stages)
        og = Signal(range(max(2, max_og)))
        og_next = Signal(range(len(p.og_counts) + 1))
        # kept tiles of the current output group, minus one (at least one is kept): comparing t with it
        # directly keeps a subtractor's carry chain off the issue path (an iCE40 critical path)
        cur_last = Signal(range(max_og_n + 1))
        t = Signal(range(max_og_n + 1))
        wptr = Signal(range(max(2, p.weight_word_count + 1)))
        og_start = Signal.like(wptr)
        max_k = max(s.pool_k for s in stages)
        dy, dx = Signal(range(max_k + 1)), Signal(range(max_k + 1))
        py = Signal(range(max(s.out_h for s in stages) + 1))
        px = Signal(range(max(s.out_w for s in stages) + 1))
        coord_max = max(max(s.in_shape[1:]) + max(s.kh, s.kw) + 2 * max(s.stride, 1) * max(s.pool_k, 1)
                        for s in stages)
        cbits = signed_bits(-coord_max, coord_max)
        pix_max = max((s.in_shape[1] + 2 * s.padding + s.kh) * (s.in_shape[2] + 2 * s.padding + s.kw) for s in stages)
        pbits = signed_bits(-pix_max, pix_max)
        ybase, xbase, dyc, dxc = (Signal(signed(cbits), name=n) for n in ("ybase", "xbase", "dyc", "dxc"))
        yW, dycW = Signal(signed(pbits), name="yW"), Signal(signed(pbits), name="dycW")
        hwo_max = max(s.out_h * s.out_w for s in stages)
        pix_out = Signal(range(hwo_max + 1))
        chmax = 2 * (max(p.n_scores, p.bank_depth) + rows * hwo_max)
        og_chbase = Signal(range(chmax + 1))
        ord_addr = og_next
        m.d.comb += ord_.addr.eq(ord_addr)

        job = data.StructLayout({
            "og": unsigned(len(og)), "chbase": unsigned(len(og_chbase)), "pix_out": unsigned(len(pix_out)),
            "win_first": 1, "win_last": 1, "layer_last": 1,
        })
        tile = data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "iy0": signed(cbits), "ix0": signed(cbits),
            "pixbase": signed(pbits), "job": job,
        })

        def reset_job_counters():
            m.d.sync += [og.eq(0), t.eq(0), dy.eq(0), dx.eq(0), py.eq(0), px.eq(0), ybase.eq(0), xbase.eq(0),
                         dyc.eq(0), dxc.eq(0), yW.eq(0), dycW.eq(0), pix_out.eq(0), og_chbase.eq(0)]

        # -- input loader ------------------------------------------------------------------------
        c0, h0, w0 = p.input_shape
        first_stage = stages[0]
        hw0 = h0 * w0
        l_pix = Signal(range(hw0 + 1))
        l_ch = Signal(range(c0 + 1))
        l_choff = Signal(range(c0 * hw0 + 1))
        m.d.comb += self.i_stream.ready.eq(state == LOAD)
        load_beat = self.i_stream.valid & self.i_stream.ready
        with m.If(load_beat):
            for b in range(cols):
                if first_stage.in_mode == "banked":
                    m.d.comb += banks_wr[b].en.eq(l_ch[:max(1, (cols - 1).bit_length())] == b if cols > 1 else 1)
                else:
                    m.d.comb += banks_wr[b].en.eq(1)
                m.d.comb += [banks_wr[b].addr.eq(first_stage.in_base + l_choff + l_pix),
                             banks_wr[b].data.eq(self.i_stream.payload)]
            with m.If(l_pix == hw0 - 1):
                m.d.sync += [l_pix.eq(0), l_ch.eq(l_ch + 1)]
                if first_stage.in_mode == "banked":
                    with m.If((l_ch & (cols - 1)) == cols - 1):
                        m.d.sync += l_choff.eq(l_choff + hw0)
                else:
                    m.d.sync += l_choff.eq(l_choff + hw0)
                with m.If(l_ch == c0 - 1):
                    m.d.sync += [state.eq(RUN), stage.eq(0), l_ch.eq(0), l_choff.eq(0), cycles.eq(0),
                                 wptr.eq(0), og_start.eq(0), cur_last.eq(ord_.data - 1), og_next.eq(1)]
                    m.d.sync += [c.eq(0) for c in st_cycles] + [c.eq(0) for c in st_macs]
                    reset_job_counters()
            with m.Else():
                m.d.sync += l_pix.eq(l_pix + 1)

        # -- issue (stage 0) ---------------------------------------------------------------------
        ctx0 = Signal(tile)
        issuing = (state == RUN) & en
        tile_last = t == cur_last
        win_first = (dy == 0) & (dx == 0)
        win_last = (dy == K["win_last"]) & (dx == K["win_last"])
        pix_last = (py == K["py_last"]) & (px == K["px_last"])
        og_last = og == K["og_last"]
        m.d.comb += [
            dec.addr.eq(wptr), dec.en.eq(en),
            ctx0.valid.eq(state == RUN), ctx0.first.eq(t == 0), ctx0.last.eq(tile_last),
            ctx0.iy0.eq(ybase + dyc - K["pad"]), ctx0.ix0.eq(xbase + dxc - K["pad"]),
            ctx0.pixbase.eq(yW + dycW + xbase + dxc - K["padoff"]),
            ctx0.job.og.eq(og), ctx0.job.chbase.eq(og_chbase), ctx0.job.pix_out.eq(pix_out),
            ctx0.job.win_first.eq(win_first), ctx0.job.win_last.eq(win_last),
            ctx0.job.layer_last.eq(win_last & pix_last & og_last),
        ]
        with m.If(issuing):
            m.d.sync += st_macs[stage].eq(st_macs[stage] + 1)
            with m.If(~tile_last):
                m.d.sync += [t.eq(t + 1), wptr.eq(wptr + 1)]
            with m.Else():
                m.d.sync += [t.eq(0), wptr.eq(og_start)]
                with m.If(dx != K["win_last"]):
                    m.d.sync += [dx.eq(dx + 1), dxc.eq(dxc + K["cs"])]
                with m.Else():
                    m.d.sync += [dx.eq(0), dxc.eq(0)]
                    with m.If(dy != K["win_last"]):
                        m.d.sync += [dy.eq(dy + 1), dyc.eq(dyc + K["cs"]), dycW.eq(dycW + K["csW"])]
                    with m.Else():
                        m.d.sync += [dy.eq(0), dyc.eq(0), dycW.eq(0), pix_out.eq(pix_out + 1)]
                        with m.If(px != K["px_last"]):
                            m.d.sync += [px.eq(px + 1), xbase.eq(xbase + K["pstep"])]
                        with m.Else():
                            m.d.sync += [px.eq(0), xbase.eq(0)]
                            with m.If(py != K["py_last"]):
                                m.d.sync += [py.eq(py + 1), ybase.eq(ybase + K["pstep"]), yW.eq(yW + K["pstepW"])]
                            with m.Else():
                                # output group done: next group's words follow this one's
                                m.d.sync += [py.eq(0), ybase.eq(0), yW.eq(0), pix_out.eq(0),
                                             wptr.eq(wptr + 1), og_start.eq(wptr + 1),
                                             cur_last.eq(ord_.data - 1), og_next.eq(og_next + 1)]
                                with m.If(((og + 1) & K["og_chmask"]) == 0):
                                    m.d.sync += og_chbase.eq(og_chbase + K["og_chstep"])
                                with m.If(~og_last):
                                    m.d.sync += og.eq(og + 1)
                                with m.Else():
                                    m.d.sync += state.eq(DRAIN)

        # -- decoder stages (1, 2), lane addresses (-> 3) -----------------------------------------
        ctx1, ctx2, ctx3 = Signal(tile), Signal(tile), Signal(tile)
        with m.If(en):
            m.d.sync += [ctx1.eq(ctx0), ctx2.eq(ctx1), ctx3.eq(ctx2)]
        lane_valid3 = Signal(cols)
        codes3 = Signal.like(dec.codes)
        with m.If(en):
            m.d.sync += codes3.eq(dec.codes)
        for lane in range(cols):
            lm = dec.lanes[lane]
            iy = Signal(signed(cbits + 1), name=f"iy{lane}")
            ix = Signal(signed(cbits + 1), name=f"ix{lane}")
            addr = Signal(signed(max(pbits, abits + 1) + 2), name=f"addr{lane}")
            m.d.comb += [iy.eq(ctx2.iy0 + lm.ky), ix.eq(ctx2.ix0 + lm.kx),
                         addr.eq(K["in_base"] + dec.coff + ctx2.pixbase + lm.aoff),
                         banks_rd[lane].addr.eq(addr[:abits]), banks_rd[lane].en.eq(en)]
            with m.If(en):
                m.d.sync += lane_valid3[lane].eq((iy >= 0) & (iy < K["H"]) & (ix >= 0) & (ix < K["W"]))

        # -- activation register (3 -> 4): the block RAM output goes straight into a register ---------
        acts4 = Signal.like(pe.acts)
        codes4 = Signal.like(codes3)
        ctx4 = Signal(tile)
        with m.If(en):
            m.d.sync += [codes4.eq(codes3), ctx4.eq(ctx3)]
            for lane in range(cols):
                m.d.sync += acts4[lane].eq(Mux(lane_valid3[lane], banks_rd[lane].data, 0))

        # -- PE array (4 -> 4 + latency) -----------------------------------------------------------
        m.d.comb += [pe.acts.eq(acts4), pe.codes.eq(codes4), pe.en.eq(en)]
        ctx_pe = ctx4
        for i in range(pe.latency):
            nxt = Signal(tile, name=f"ctx_pe{i}")
            with m.If(en):
                m.d.sync += nxt.eq(ctx_pe)
            ctx_pe = nxt
        acc_ctx = ctx_pe

        # -- accumulators and shadow ---------------------------------------------------------------
        acc = [Signal(signed(p.acc_bits), name=f"acc{r}") for r in range(rows)]
        shadow = Array(Signal(signed(p.acc_bits), name=f"shadow{r}") for r in range(rows))
        shadow_valid = Signal()
        shadow_job = Signal(job)
        rq_r = Signal(range(rows))
        rq_choff = Signal.like(og_chbase)
        # rq_last == (rq_r == rows - 1), kept in a register: `freeing` feeds the stall, whose fan-out
        # (every pipeline enable) is the iCE40's critical path, so it must not wait for a comparator
        rq_last = Signal(init=int(rows == 1))
        freeing = shadow_valid & rq_last
        m.d.comb += stall.eq(acc_ctx.valid & acc_ctx.last & shadow_valid & ~freeing)
        load_shadow = acc_ctx.valid & acc_ctx.last & en

        # requant stage a: one channel of the shadow per cycle, parameter read
        qa_valid = Signal()
        qa_acc = Signal(signed(p.acc_bits))
        qjob = data.StructLayout({
            "o": unsigned(len(og) + log_rows), "choff": unsigned(len(og_chbase)), "pix_out": unsigned(len(pix_out)),
            "win_first": 1, "win_last": 1, "layer_last": 1, "r": unsigned(max(1, log_rows)),
        })
        qa = Signal(qjob)
        o_cur = Signal(len(og) + log_rows)
        m.d.comb += o_cur.eq(Cat(rq_r, shadow_job.og) if log_rows else shadow_job.og)
        m.d.comb += [prd.addr.eq(K["param_base"] + o_cur), prd.en.eq(1)]
        m.d.sync += qa_valid.eq(shadow_valid)
        with m.If(shadow_valid):
            m.d.sync += [qa_acc.eq(shadow[rq_r]), qa.o.eq(o_cur), qa.choff.eq(rq_choff),
                         qa.pix_out.eq(shadow_job.pix_out), qa.win_first.eq(shadow_job.win_first),
                         qa.win_last.eq(shadow_job.win_last), qa.layer_last.eq(shadow_job.layer_last & freeing),
                         qa.r.eq(rq_r), rq_r.eq(rq_r + 1), rq_last.eq((rq_r == rows - 2) if rows > 1 else 1)]
            with m.If(K["banked_out"]):
                with m.If(((o_cur + 1) & (cols - 1)) == 0):
                    m.d.sync += rq_choff.eq(rq_choff + K["HWo"])
            with m.Else():
                m.d.sync += rq_choff.eq(rq_choff + K["HWo"])
            with m.If(freeing):
                m.d.sync += [shadow_valid.eq(0), rq_r.eq(0), rq_last.eq(rows == 1)]

        for r in range(rows):
            total = Signal(signed(p.acc_bits), name=f"total{r}")
            m.d.comb += total.eq(Mux(acc_ctx.first, 0, acc[r]) + pe.sums[r])
            with m.If(acc_ctx.valid & en):
                m.d.sync += acc[r].eq(total)
                with m.If(acc_ctx.last):
                    m.d.sync += shadow[r].eq(total)
        with m.If(load_shadow):
            m.d.sync += [shadow_valid.eq(1), shadow_job.eq(acc_ctx.job), rq_r.eq(0), rq_last.eq(rows == 1),
                         rq_choff.eq(acc_ctx.job.chbase)]

        # requant stage b: parameters arrive -> requantizer
        m.d.comb += [rq.i_valid.eq(qa_valid), rq.i_acc.eq(qa_acc), rq.i_bias.eq(prd.data.bias),
                     rq.i_mult.eq(prd.data.mult), rq.i_shift.eq(prd.data.shift)]
        qw = qa
        for i in range(Requantizer.LATENCY):
            nxt = Signal(qjob, name=f"qjob{i}")
            m.d.sync += nxt.eq(qw)
            qw = nxt

        # -- writer: pool max and write to the next stage's buffer (or the scores) -----------------
        # running maxima of the pool window, one per channel of the group, in a rotating register:
        # every job emits its pe_rows channels in order, so the head is always the current channel's
        mx = [Signal(spec.act_bits, name=f"poolmax{r}") for r in range(rows)]
        pooled = Signal(spec.act_bits)
        m.d.comb += pooled.eq(Mux(qw.win_first | (rq.o_act > mx[0]), rq.o_act, mx[0]))
        write = rq.o_valid & qw.win_last & (qw.o < K["cout"])
        waddr = Signal(abits + 2)
        m.d.comb += waddr.eq(K["out_base"] + qw.choff + qw.pix_out)
        with m.If(rq.o_valid):
            m.d.sync += [mx[r].eq(mx[r + 1]) for r in range(rows - 1)] + [mx[rows - 1].eq(pooled)]
        m.d.comb += layer_done.eq(rq.o_valid & qw.layer_last)
        with m.If(write & (state != LOAD)):
            with m.If(K["scores"]):
                # raw class scores (acc + bias), or, when the last layer ends in a ReLU (and maybe a
                # pool), its requantized and pooled activations, as the reference computes them
                last_out = pooled if stages[-1].relu else rq.o_score
                m.d.comb += [s_wr.en.eq(1), s_wr.addr.eq(qw.choff + qw.pix_out), s_wr.data.eq(last_out)]
            with m.Else():
                for b in range(cols):
                    m.d.comb += [banks_wr[b].addr.eq(waddr[:abits]), banks_wr[b].data.eq(pooled)]
                    with m.If(~K["banked_out"] | ((qw.o & (cols - 1)) == b)):
                        m.d.comb += banks_wr[b].en.eq(1)

        # -- layer sequencing --------------------------------------------------------------------
        with m.If((state == DRAIN) & layer_done):
            with m.If(K["last_stage"]):
                m.d.sync += state.eq(OUT)
            with m.Else():
                m.d.sync += [state.eq(RUN), stage.eq(stage + 1)]
                reset_job_counters()

        # -- score output --------------------------------------------------------------------------
        o_idx = Signal(range(p.n_scores + 1))
        o_valid = Signal()
        rd_en = ~o_valid | self.o_stream.ready
        m.d.comb += [s_rd.addr.eq(o_idx), s_rd.en.eq((state == OUT) & rd_en),
                     self.o_stream.valid.eq(o_valid), self.o_stream.payload.eq(s_rd.data)]
        with m.If((state == OUT) & rd_en):
            m.d.sync += o_valid.eq(o_idx < p.n_scores)
            with m.If(o_idx < p.n_scores):
                m.d.sync += o_idx.eq(o_idx + 1)
            with m.Else():
                m.d.sync += [state.eq(LOAD), o_idx.eq(0), og_next.eq(0)]
        return m
