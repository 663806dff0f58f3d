"""The MAC side: a tile's weights and activations into the PE array, its sums into the accumulators."""
from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from ..common.control import delayed
from . import layouts
from .decoder import TileDecoder
from .memories import bank_port
from .pe import TernaryPEArray, pe_sum_bits
from .program import ACTIVATION_LATENCY, DECODER_LATENCY, activation_latency, pe_latency, wide_pipeline

assert ACTIVATION_LATENCY == 2  # lane addresses -> bank read, then the activation register (below)


def _cache_write(program):
    from .tilecache import cache_write_signature
    return cache_write_signature(program)


class MacPipeline(wiring.Component):
    """Decoder -> lane addresses and activation reads -> PE array, for one issued tile a cycle.

    * `tile` (in), `weight_addr` (in): the tile issued (`TileSequencer`; `tile.valid` low: a bubble);
      `k` (in): stage constants. No enable: the pipeline moves every cycle (see `TileSequencer`);
    * `bank_read[lane]` (out): each lane's activation read: its address from the tile's window origin,
      the lane-map entry of its tap (kernel row/column, address offset) and the tile's channel offset;
      outside the input map (zero padding) the lane gets 0;
    * `acc_tile` (out), `sums` (out): a tile and its per-row sums, `latency` enabled cycles after issue.
    """

    def __init__(self, program, *, constants):
        self._program = program
        spec = program.spec
        self.latency = DECODER_LATENCY + activation_latency(spec) + pe_latency(spec)
        assert self.latency == program.pipeline_depth
        tile = layouts.tile_layout(program)
        super().__init__({
            "k": In(constants),
            "tile": In(tile),
            "weight_addr": In(range(max(2, program.weight_word_count))),
            "bank_read": In(bank_port(program, ReadPort)).array(spec.pe_cols),
            "acc_tile": Out(tile),
            "sums": Out(data.ArrayLayout(signed(pe_sum_bits(spec)), spec.pe_rows)),
            **({"cache_write": In(_cache_write(program))} if program.huffman else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p, k = self._program, self.k
        # the codes come straight from the decoder when the activations reach the array (see TileDecoder)
        m.submodules.decoder = dec = TileDecoder(p, codes_delay=activation_latency(p.spec))
        m.submodules.pe = pe = TernaryPEArray(p.spec)
        assert dec.LATENCY == DECODER_LATENCY and pe.latency == pe_latency(p.spec)
        m.d.comb += [dec.addr.eq(self.weight_addr), dec.en.eq(1)]
        if p.huffman:
            wiring.connect(m, wiring.flipped(self.cache_write), dec.cache_write)
        # the decoder's outputs belong to the tile issued DECODER_LATENCY cycles ago
        # The tile's record travels through reset-less registers (like the data beside it): they hold 0
        # (no valid tile) from configuration, and after a reset in mid-image what is left in flight
        # drains within a few cycles into a writer held off by `enable` (the controller is in LOAD)
        tile_decoded = delayed(m, self.tile, DECODER_LATENCY, name="tile_dec", reset_less=True)
        abits = p.addr_bits
        cbits, pbits = layouts.coord_bits(p), layouts.pixel_bits(p)
        lanes = dec.lanes
        # the datapath registers below have no reset (only the tiles' valid flags do): a reset would
        # reach thousands of flip-flops, through a LUT where Yosys merges it with a "= 0" (see pe.py)
        base = Signal(signed(max(pbits, abits + 1) + 2), reset_less=True)   # the tile's address less each lane's offset
        if wide_pipeline(p.spec):
            # a wide array (+1): the lane-map row (a block-RAM output) into a register, and the address
            # part all lanes share summed beside it, so a lane's address is one adder
            lanes = Signal.like(dec.lanes, name="lanes_reg", reset_less=True)
            m.d.sync += [lanes.eq(dec.lanes), base.eq(k.in_base + dec.coff + tile_decoded.pixel_base)]
            tile_decoded = delayed(m, tile_decoded, 1, name="tile_lanes", reset_less=True)
        else:
            m.d.comb += base.eq(k.in_base + dec.coff + tile_decoded.pixel_base)
        # lane addresses -> bank read (+1)
        tile_read = delayed(m, tile_decoded, 1, name="tile_read", reset_less=True)
        inside = Signal(p.spec.pe_cols, reset_less=True)
        for lane, port in enumerate(self.bank_read):
            tap = lanes[lane]
            iy = Signal(signed(cbits + 1), name=f"iy{lane}")
            ix = Signal(signed(cbits + 1), name=f"ix{lane}")
            addr = Signal(signed(max(pbits, abits + 1) + 2), name=f"addr{lane}")
            m.d.comb += [iy.eq(tile_decoded.iy0 + tap.ky), ix.eq(tile_decoded.ix0 + tap.kx),
                         addr.eq(base + tap.aoff), port.addr.eq(addr[:abits]), port.en.eq(1)]
            m.d.sync += inside[lane].eq((iy >= 0) & (iy < k.in_height) & (ix >= 0) & (ix < k.in_width))
        # activation register (+1): the block RAM output goes straight into a register
        acts = Signal.like(pe.acts, reset_less=True)
        tile_pe = delayed(m, tile_read, 1, name="tile_pe", reset_less=True)
        assert dec.codes_latency == DECODER_LATENCY + activation_latency(p.spec)   # beside `acts`
        for lane, port in enumerate(self.bank_read):
            m.d.sync += acts[lane].eq(Mux(inside[lane], port.data, 0))
        m.d.comb += [pe.acts.eq(acts), pe.codes.eq(dec.codes),
                     self.acc_tile.eq(delayed(m, tile_pe, pe.latency, name="tile_sum", reset_less=True)),
                     self.sums.eq(pe.sums)]
        return m


class Accumulators(wiring.Component):
    """Per PE row an accumulator over a job's tiles; at the job's last tile the sums move to a shadow
    register, which is drained `out_lanes` channels (rows) a cycle towards the requantizers while the
    array works on the next job (pe_rows / out_lanes drain steps). A job's last tile never arrives
    while the shadow is still full: `TileSequencer` spaces last tiles by the drain steps (at the
    latest, it arrives in the shadow's last drain step, which loads the next job's sums).

    * `tile` (in), `sums` (in): from `MacPipeline`; `k` (in): stage constants;
    * `channel_index` (out): the drain step (channel // out_lanes within the stage; the channel itself
      with one lane): its requantization constants' row is read with it;
    * `channel_valid`, `channel_acc`, `channel` (out), a cycle later: the step's sums (one per lane:
      lane i holds channel `channel.channel` + i; a plain value with one lane) and where they go
      (`layouts.channel_layout`, of lane 0's channel).
    """

    def __init__(self, program, *, constants):
        self._program = program
        self._tile = layouts.tile_layout(program)
        spec = program.spec
        channel = layouts.channel_layout(program)
        super().__init__({
            "k": In(constants),
            "tile": In(self._tile),
            "sums": In(data.ArrayLayout(signed(pe_sum_bits(spec)), spec.pe_rows)),
            "channel_index": Out(channel["channel"].shape),
            "channel_valid": Out(1),
            "channel_acc": Out(layouts.lane_sums_layout(program)),
            "channel": Out(channel),
        })

    def elaborate(self, platform):
        m = Module()
        p, k, tile = self._program, self.k, self.tile
        rows, cols = p.spec.pe_rows, p.spec.pe_cols
        lanes, steps = p.out_lanes, p.drain_steps
        acc = [Signal(signed(p.acc_bits), name=f"acc{r}", reset_less=True) for r in range(rows)]
        shadow = [Signal(signed(p.acc_bits), name=f"shadow{r}", reset_less=True) for r in range(rows)]
        shadow_valid = Signal()
        shadow_job = Signal(self._tile["job"].shape, reset_less=True)
        row = Signal(range(steps))         # the drain step: rows row * lanes ... + lanes - 1
        address = Signal.like(self.channel.address)
        res_address = Signal.like(self.channel.res_address) if p.has_residual else None
        # last_row == (row == steps - 1), kept in a register, not behind a comparator
        last_row = Signal(init=int(steps == 1))
        freeing = shadow_valid & last_row
        # drain: out_lanes channels of the shadow per cycle
        index = self.channel_index
        m.d.comb += index.eq(Cat(row, shadow_job.group) if steps > 1 else shadow_job.group)
        out = self.channel
        if lanes == 1:
            drained = [self.channel_acc.eq(Array(shadow)[row])]
        else:
            drained = [self.channel_acc[i].eq(Array(shadow[j * lanes + i] for j in range(steps))[row]
                                              if steps > 1 else shadow[i]) for i in range(lanes)]
        channel = index if lanes == 1 else Cat(C(0, (lanes - 1).bit_length()), index)
        m.d.sync += self.channel_valid.eq(shadow_valid)
        with m.If(shadow_valid):
            m.d.sync += [*drained, out.channel.eq(channel), out.address.eq(address),
                         out.pixel.eq(shadow_job.pixel), out.window_first.eq(shadow_job.window_first),
                         out.window_last.eq(shadow_job.window_last),
                         out.stage_last.eq(shadow_job.stage_last & freeing),
                         row.eq(row + 1), last_row.eq((row == steps - 2) if steps > 1 else 1)]
            # the next step's address: banked, a new address row once pe_cols channels are written
            with m.If(~k.banked_out | (((index + 1) & (cols // lanes - 1)) == 0)):
                m.d.sync += address.eq(address + k.out_plane)
            if p.has_residual:   # ... and its residual's (the conv output's plane, the residual map's storage)
                m.d.sync += [out.conv_pixel.eq(shadow_job.conv_pixel), out.res_address.eq(res_address)]
                with m.If(~k.res_banked | (((index + 1) & (cols // lanes - 1)) == 0)):
                    m.d.sync += res_address.eq(res_address + k.res_plane)
            with m.If(freeing):
                m.d.sync += [shadow_valid.eq(0), row.eq(0), last_row.eq(steps == 1)]

        # accumulate; a job's last tile loads the shadow (after the drain above: it wins a tie)
        for r in range(rows):
            total = Signal(signed(p.acc_bits), name=f"total{r}")
            m.d.comb += total.eq(Mux(tile.first, 0, acc[r]) + self.sums[r])
            with m.If(tile.valid):
                m.d.sync += acc[r].eq(total)
                with m.If(tile.last):
                    m.d.sync += shadow[r].eq(total)
        with m.If(tile.valid & tile.last):
            m.d.sync += [shadow_valid.eq(1), shadow_job.eq(tile.job), row.eq(0), last_row.eq(steps == 1),
                         address.eq(tile.job.channel_base)]
            if p.has_residual:
                m.d.sync += res_address.eq(tile.job.res_address)
        return m
