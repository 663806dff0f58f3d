"""`WinogradAccelerator`: runs a whole Winograd `Deployment` from on-chip memories.

Ports: `terwin.hw.common.ports.accelerator_signature`, the same as the ternary top (docs/hardware.md);
`layer_mac_cycles` counts the cycles in which the multiplier lanes issue items.

Built from the `WinogradProgram` (`terwin.hw.winograd.program`) that the cycle model
(`terwin.hw.winograd.cycles`) reads too: its schedule of fixed-length steps drives a set of
stage components (see docs/winograd-hardware.md); a step runs the input side, the lanes and the
output side side by side on double-buffered operands and sums:

    ImageLoader -> ActivationBuffers --2 pixels--> OperandLoader (IN_W: 4x4 window, B^T d B; IN_L: copy)
                        ^    |                        | operand memory
                        |    +--> PoolUnit (POOL)     v  (2 halves)
                        |                     SparseMultiplyStage (MULT: decoders + multipliers)
                        |                             | accumulator banks (2 halves), target map
                        +---- ResultWriter <---- ResultReader (OUT_W: A^T M A; OUT_L)
                        (requantizer, fused max-pool) --> score FIFO --> o_stream (the last layer's raw scores)

The controller here: LOAD (the image comes in) -> RUN (the `PhaseSequencer` walks the schedule) ->
FLUSH (the last scores leave the FIFO) -> LOAD. With spec.weight_memory "loaded" it starts in
WEIGHTS: the `WeightLoader` takes the program's preamble (the weight streams) from `i_stream`
first, once after each reset.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import fifo, wiring

from terwin.deployment import MaxPool2d

from ..common.control import LayerCounters, StageConstants
from ..common.ports import accelerator_signature
from .buffers import ActivationBuffers, ImageLoader
from .mult import SparseMultiplyStage
from .operands import OperandLoader
from .pool import PoolUnit
from .program import compile_program
from .results import ResultReader, ResultWriter
from .schedule import PhaseSequencer
from .weightload import WeightLoader


class WinogradAccelerator(wiring.Component):
    def __init__(self, dep, *, program=None):
        self.dep = dep
        self.program = p = program or compile_program(dep)
        self.score_bits = p.score_bits
        super().__init__(accelerator_signature(dep.spec, score_bits=self.score_bits, n_layers=len(dep.layers)))

    def elaborate(self, platform):
        m = Module()
        p = self.program
        LOAD, RUN, FLUSH, WEIGHTS = 0, 1, 2, 3
        loads = p.loaded_weights and any(p.items)   # (a model without a nonzero weight has nothing to load)
        state = Signal(2, init=WEIGHTS if loads else LOAD)
        running = state == RUN

        m.submodules.schedule = seq = PhaseSequencer(p)
        phase, phases = seq.phase, seq.phase.shape()
        m.submodules.constants = consts = StageConstants(p.stage_table())
        k, kk = consts.k, consts.layout
        m.submodules.counters = counters = LayerCounters(stage_layers=[s.index for s in p.stages],
                                                         n_layers=p.n_layers)
        m.submodules.buffers = buffers = ActivationBuffers(p)
        m.submodules.loader = loader = ImageLoader(p)
        m.submodules.operands = operands = OperandLoader(p, phase=phases)
        m.submodules.mult = mult = SparseMultiplyStage(p)
        m.submodules.reader = reader = ResultReader(p, phase=phases, constants=kk)
        m.submodules.writer = writer = ResultWriter(p, constants=kk)
        units = [operands, reader]
        if any(s.kind == MaxPool2d.kind for s in p.stages):
            m.submodules.pool = pool = PoolUnit(p, phase=phases, constants=kk)
            units.append(pool)
            m.d.comb += [pool.active.eq(running & phase.pool), pool.pixel.eq(buffers.pixel)]
        else:
            pool = None
        # the writer pushes every score without looking at w_rdy, so the FIFO must take them all back to
        # back. Amaranth's SyncFIFOBuffered of depth 2 cannot (its inner one-entry FIFO refuses the
        # second write while the first moves to the output register); depth >= 3 can, up to its depth.
        scores = p.memory("scores")
        m.submodules.scores = sfifo = fifo.SyncFIFOBuffered(width=scores.width, depth=scores.depth)

        # the schedule and what each phase starts
        m.d.comb += [seq.start.eq(loader.done), seq.run.eq(running), consts.stage.eq(phase.stage),
                     # the decoders start a cycle before MULT (phase_end & arm), from a register
                     mult.start_ahead.eq(seq.arm_next),
                     # the step's IN (and so its arm) may be the next layer's first tile (`in_next`)
                     mult.layer.eq(k.weighted_layer + phase.in_next), mult.buf.eq(phase.mult_buf)]
        for unit in units:
            m.d.comb += [unit.phase.eq(phase), unit.count.eq(seq.count)]
        for unit in (operands, reader, pool):
            if unit is not None:
                m.d.comb += unit.phase_end.eq(seq.phase_end)
        for unit in (reader, writer, pool):
            if unit is not None:
                m.d.comb += unit.k.eq(k)
        m.d.comb += [
            counters.stage.eq(phase.stage), counters.clear.eq(loader.done), counters.count.eq(running),
            counters.mac.eq(running & mult.busy),
            counters.layer_sel.eq(self.layer_sel), self.layer_cycles.eq(counters.layer_cycles),
            self.layer_mac_cycles.eq(counters.layer_mac_cycles), self.cycles.eq(counters.cycles),
            # (not while the weights come in: only RUN and FLUSH)
            self.busy.eq((state == RUN) | (state == FLUSH) if loads else state != LOAD),
        ]

        # the data path: the image (and, after a reset, the weights) in
        if loads:
            m.submodules.weights = weights = WeightLoader(p)
            wiring.connect(m, weights.write, mult.weight_load)
            m.d.comb += [weights.active.eq(state == WEIGHTS), weights.i_stream.valid.eq(self.i_stream.valid),
                         weights.i_stream.payload.eq(self.i_stream.payload),
                         loader.i_stream.valid.eq(self.i_stream.valid), loader.i_stream.payload.eq(self.i_stream.payload),
                         self.i_stream.ready.eq(weights.i_stream.ready | loader.i_stream.ready)]
            with m.If(weights.done):
                m.d.sync += state.eq(LOAD)
        else:
            wiring.connect(m, wiring.flipped(self.i_stream), loader.i_stream)
        wiring.connect(m, loader.buffer_write, buffers.load)
        wiring.connect(m, operands.v_write, mult.v_write)
        wiring.connect(m, reader.m_read, mult.m_read)
        reads = operands.read.as_value() | (pool.read.as_value() if pool is not None else 0)
        m.d.comb += [
            loader.active.eq(state == LOAD),
            operands.in_window.eq(running & phase.in_w), operands.in_linear.eq(running & phase.in_l),
            reader.out_window.eq(running & phase.out_w), reader.out_linear.eq(running & phase.out_l),
            # the next layer reads the map this one writes
            buffers.src.eq(Mux(phase.in_next, k.dst, k.src)), buffers.read.eq(reads), operands.pixel.eq(buffers.pixel),
            buffers.read_more.eq(operands.read_more), operands.pixel_more.eq(buffers.pixel_more),
            buffers.write.eq(writer.write if pool is None else Mux(pool.write.en, pool.write, writer.write)),
            writer.param_index.eq(reader.param_index), writer.param_en.eq(reader.param_en),
            writer.y_valid.eq(reader.y_valid), writer.y.eq(reader.y), writer.quad.eq(reader.quad),
            writer.dest.eq(reader.dest),
            writer.inside.eq(reader.inside),
            sfifo.w_en.eq(writer.score_valid), sfifo.w_data.eq(writer.score),
            self.o_stream.valid.eq(sfifo.r_rdy), self.o_stream.payload.eq(sfifo.r_data.as_signed()),
            sfifo.r_en.eq(self.o_stream.ready),
        ]

        # the controller
        with m.If(loader.done):
            m.d.sync += state.eq(RUN)
        with m.If(seq.done):
            m.d.sync += state.eq(FLUSH)
        with m.If((state == FLUSH) & (sfifo.level == 0)):
            m.d.sync += state.eq(LOAD)
        return m


Accelerator = WinogradAccelerator
