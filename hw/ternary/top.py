"""`TernaryAccelerator`: runs a whole ternary `Deployment` from on-chip memories.

Ports: `terwin.hw.common.ports.accelerator_signature` (shared with the Winograd engine; see
docs/hardware.md); a pool fused into the layer it reads reads 0 on `layer_cycles`.

Built from the `TernaryProgram` (`terwin.hw.ternary.program`) that the cycle model
(`terwin.hw.ternary.cycles`) reads too, as a chain of stage components:

    ImageLoader -> ActivationBanks <- TileSequencer -> MacPipeline -> Accumulators -> RequantWriter
                        ^                                                                  |
                        +-------------- next stage's region (or ScoreOutput) <------------+

One stage = a conv/linear layer with the pool reading it fused; stages run in layer order, each
reading the map its layer's `source` names (and, in the writer, its `residual`), each map in the
region the program's liveness allocation gave it. `TileSequencer` issues, for each output
group of `pe_rows` channels, for each pooled output pixel, for each position in its pool window, the
group's kept tiles, at most one per cycle; `MacPipeline` (decoder 2, activation read 2, PE array
1 + log2 pe_cols) brings their sums to the `Accumulators`, whose shadow register the
`RequantWriter` drains out_lanes channels per cycle while the array works on the next job; the
sequencer holds a job's last tile back until the shadow will be free when it arrives, so the
pipeline never stalls (no enable fans out to it).
The controller here: LOAD (the image comes in) -> RUN (stage after stage: the sequencer issues one,
the writer writes its last outputs, the next starts) -> OUT (send the scores) -> LOAD.
On a large array the controller, the loader, the sequencer and the writer sit far apart on the die,
so no combinational path runs through two of them: the events between them (the loader's and the
score output's `done`, the writer's `stage_done`) leave their source from a register or one gate
after it, the sequencer keeps its own running flag, and the stage constants `k` are a register loaded
with the next stage's row when the stage changes (not a multiplexer behind the stage register).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring

from ..common.control import LayerCounters, StageConstants
from ..common.ports import accelerator_signature
from .loader import ImageLoader
from .mac import Accumulators, MacPipeline
from .memories import ActivationBanks, ScoreOutput
from .program import compile_program
from .sequencer import TileSequencer
from .writer import RequantWriter


class TernaryAccelerator(wiring.Component):
    def __init__(self, dep, *, program=None):
        self.dep = dep
        self.program = program or compile_program(dep)
        self.score_bits = self.program.score_bits
        super().__init__(accelerator_signature(dep.spec, score_bits=self.score_bits, n_layers=len(dep.layers)))

    def elaborate(self, platform):
        m = Module()
        p = self.program
        n_stages = len(p.stages)
        LOAD, RUN, OUT = 0, 1, 2
        state = Signal(2, init=LOAD)
        stage = Signal(range(max(2, n_stages)))

        # the stage constants: a register, loaded with stage 0's row when an image starts and with the
        # next stage's when a stage ends (the table's multiplexers stay beside the controller)
        m.submodules.constants = consts = StageConstants(p.stage_table())
        k = Signal(consts.layout, init=consts.row(0))
        m.submodules.counters = counters = LayerCounters(stage_layers=[s.index for s in p.stages],
                                                         n_layers=p.n_layers)
        m.submodules.banks = banks = ActivationBanks(p)
        m.submodules.loader = loader = ImageLoader(p)
        m.submodules.sequencer = seq = TileSequencer(p, constants=consts.layout)
        m.submodules.mac = mac = MacPipeline(p, constants=consts.layout)
        m.submodules.accumulators = acc = Accumulators(p, constants=consts.layout)
        m.submodules.writer = writer = RequantWriter(p, constants=consts.layout)
        m.submodules.output = output = ScoreOutput(p)
        ready = 1
        if p.huffman:   # the weight path decodes the Huffman stream into a tile cache, a group ahead
            from .tilecache import TileCacheFiller
            m.submodules.filler = filler = TileCacheFiller(p)
            wiring.connect(m, filler.cache_write, mac.cache_write)
            # the filler held while the image loads: a register falling with the load's last beat (the
            # loader's `done`, combinational from the input handshake, stays off its registers)
            loading = Signal(init=1)
            with m.If(loader.done):
                m.d.sync += loading.eq(0)
            with m.Elif(output.done):
                m.d.sync += loading.eq(1)
            m.d.comb += [filler.hold.eq(loading), filler.issue.eq(seq.issue),
                         filler.last.eq(seq.tile.last), filler.group_end.eq(seq.group_end),
                         filler.weight_addr.eq(seq.weight_addr)]
            ready = filler.ready
        stage_end = (state == RUN) & writer.stage_done
        next_stage = stage_end & ~k.last_stage

        # the data path: image -> banks -> MAC -> accumulators -> requantizer -> banks or scores
        wiring.connect(m, wiring.flipped(self.i_stream), loader.i_stream)
        for b in range(p.spec.pe_cols):
            wiring.connect(m, loader.bank_write[b], banks.load[b])
            wiring.connect(m, mac.bank_read[b], banks.read[b])
            wiring.connect(m, writer.bank_write[b], banks.write[b])
            if p.has_residual:
                wiring.connect(m, writer.residual_read[b], banks.residual[b])
        wiring.connect(m, writer.score_write, output.write)
        wiring.connect(m, output.o_stream, wiring.flipped(self.o_stream))
        m.d.comb += [
            consts.stage.eq(Mux(loader.done, 0, stage + 1)), seq.k.eq(k), mac.k.eq(k), acc.k.eq(k),
            writer.k.eq(k), loader.active.eq(state == LOAD),
            seq.ready.eq(ready), seq.start_image.eq(loader.done),
            seq.start_stage.eq(next_stage), seq.end_image.eq(output.done),
            mac.tile.eq(seq.tile), mac.weight_addr.eq(seq.weight_addr),
            acc.tile.eq(mac.acc_tile), acc.sums.eq(mac.sums),
            writer.enable.eq(state != LOAD), writer.channel_index.eq(acc.channel_index),
            writer.channel_valid.eq(acc.channel_valid), writer.channel_acc.eq(acc.channel_acc),
            writer.channel.eq(acc.channel),
            output.start.eq(state == OUT),
        ]

        # counters and ports
        m.d.comb += [
            counters.stage.eq(stage), counters.clear.eq(loader.done),
            counters.count.eq(state == RUN), counters.mac.eq(seq.issue),
            counters.layer_sel.eq(self.layer_sel), self.layer_cycles.eq(counters.layer_cycles),
            self.layer_mac_cycles.eq(counters.layer_mac_cycles), self.cycles.eq(counters.cycles),
            self.busy.eq((state != LOAD) | loader.done),   # from the cycle after the last input beat
        ]

        # the controller
        with m.If(loader.done):
            m.d.sync += [state.eq(RUN), stage.eq(0), k.eq(consts.k)]
        with m.If(next_stage):
            m.d.sync += [stage.eq(stage + 1), k.eq(consts.k)]
        with m.If(stage_end & k.last_stage):
            m.d.sync += state.eq(OUT)
        with m.If(output.done):
            m.d.sync += state.eq(LOAD)
        return m


Accelerator = TernaryAccelerator
