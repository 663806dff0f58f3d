"""The image loader: the input stream into the first stage's activation region."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .memories import bank_port


class ImageLoader(wiring.Component):
    """Takes the image, one activation per beat in (C, H, W) order, while `active`, and writes it where
    the first stage reads it: channel c into bank c % pe_cols (banked input) or into every bank
    (replicated input), at the first stage's input base + the channel's offset + y * W + x.

    * `i_stream` (in): the image; `ready` follows `active`, but for the cycle `done` is high;
    * `bank_write[b]` (out): the writes, from registers, a cycle after their beat;
    * `done` (out): high in the cycle after the last beat, from a register: it starts the sequencer and
      the controller, which the array spreads over the die, so no path runs from the input handshake
      through it (on the ECP5's pe32x32 the controller -> handshake -> start path was the critical one).
    """

    def __init__(self, program):
        self._program = program
        spec = program.spec
        super().__init__({
            "active": In(1),
            "i_stream": In(stream.Signature(unsigned(spec.act_bits))),
            "bank_write": In(bank_port(program)).array(spec.pe_cols),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols = self._program.spec.pe_cols
        first = self._program.stages[0]
        channels, h, w = self._program.input_shape
        plane = h * w
        banked = first.in_mode == "banked"
        pixel = Signal(range(plane + 1))
        channel = Signal(range(channels + 1))
        channel_offset = Signal(range(channels * plane + 1))
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += [self.i_stream.ready.eq(self.active & ~done), self.done.eq(done)]
        # the writes leave from registers, a cycle after their beat: the handshake (behind `done`) stays
        # beside the loader, and each bank's write port is one hop from the register of its enable (on
        # the ECP5's pe32x32 `done` -> handshake -> 32 banks' write multiplexers was the critical path).
        # The last beat's write lands in the cycle `done` is high; the first read comes later.
        addr = Signal.like(self.bank_write[0].addr, name="load_addr", reset_less=True)
        data = Signal.like(self.bank_write[0].data, name="load_data", reset_less=True)
        enables = [Signal(name=f"load_en{b}") for b in range(cols)]
        for b, port in enumerate(self.bank_write):
            m.d.comb += [port.en.eq(enables[b]), port.addr.eq(addr), port.data.eq(data)]
        fire = self.i_stream.valid & self.i_stream.ready
        low = channel[:max(1, (cols - 1).bit_length())]
        m.d.sync += [en.eq(fire & ((low == b) if banked and cols > 1 else 1)) for b, en in enumerate(enables)]
        with m.If(fire):
            m.d.sync += [addr.eq(first.in_base + channel_offset + pixel), data.eq(self.i_stream.payload)]
            with m.If(pixel == plane - 1):
                m.d.sync += [pixel.eq(0), channel.eq(channel + 1)]
                if banked:  # the next address row once every bank has a channel there
                    with m.If((channel & (cols - 1)) == cols - 1):
                        m.d.sync += channel_offset.eq(channel_offset + plane)
                else:
                    m.d.sync += channel_offset.eq(channel_offset + plane)
                with m.If(channel == channels - 1):
                    m.d.sync += [done.eq(1), channel.eq(0), channel_offset.eq(0)]
            with m.Else():
                m.d.sync += pixel.eq(pixel + 1)
        return m
