"""The Winograd engine's activation buffers and the image loader that fills the first one."""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from terwin.intmath import unsigned_bits

from .layouts import read_layout, write_layout


def act_addr_bits(program) -> int:
    return unsigned_bits(program.act_depth - 1)


def load_port(program):
    return WritePort.Signature(addr_width=act_addr_bits(program), shape=unsigned(program.act_bits))


class ActivationBuffers(wiring.Component):
    """Two activation buffers (ping-pong: (C, H, W) raster order each), the halves of one memory `act`
    (buffer b at addresses b * 2^act_addr_bits + a): a read selects its buffer by the address's top bit,
    so the memory's output goes to the reader through no multiplexer but the outside-the-map zero.

    * `load` (in): the image loader's writes, into buffer 0;
    * `write` (in, `layouts.write_layout`): a unit's write into buffer `dst`;
    * `read` (in, `layouts.read_layout`) with `src` (in): a unit's read of buffer `src`;
    * `pixel` (out): the value read, a cycle later; 0 when the read was outside the map;
    * `read_more` / `pixel_more`: `program.in_pixels - 1` more read ports of buffer `src` (the input
      side reads `in_pixels` pixels a cycle), each the same as `read` / `pixel`.

    The loader and the units never write in the same cycle (the image comes in while nothing runs), so
    the memory has one write port.
    """

    def __init__(self, program):
        self._image = program.memory("act")
        abits = act_addr_bits(program)
        super().__init__({
            "load": Out(load_port(program)),
            "write": In(write_layout(addr_bits=abits, act_bits=program.act_bits)),
            "read": In(read_layout(addr_bits=abits)),
            "src": In(1),
            "pixel": Out(unsigned(program.act_bits)),
            "read_more": In(data.ArrayLayout(read_layout(addr_bits=abits), program.in_pixels - 1)),
            "pixel_more": Out(data.ArrayLayout(unsigned(program.act_bits), program.in_pixels - 1)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.act = mem = self._image.memory()
        write = mem.write_port()
        for n, (read, pixel) in enumerate([(self.read, self.pixel), *zip(self.read_more, self.pixel_more)]):
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(Cat(read.addr, self.src)), rp.en.eq(read.en)]
            inside = Signal(name=f"inside{n}")
            m.d.sync += inside.eq(read.inside)
            m.d.comb += pixel.eq(Mux(inside, rp.data, 0))
        with m.If(self.load.en):
            m.d.comb += [write.en.eq(1), write.addr.eq(self.load.addr), write.data.eq(self.load.data)]
        with m.If(self.write.en):
            m.d.comb += [write.en.eq(1), write.addr.eq(Cat(self.write.addr, self.write.dst)),
                         write.data.eq(self.write.data)]
        return m


class ImageLoader(wiring.Component):
    """Takes the image, one activation per beat in (C, H, W) order, while `active`, into buffer 0.

    * `i_stream` (in): the image; `ready` follows `active`;
    * `buffer_write` (out): the writes; `done` (out): high in the cycle of the last beat.
    """

    def __init__(self, program):
        self._n = program.n_inputs
        super().__init__({
            "active": In(1),
            "i_stream": In(stream.Signature(unsigned(program.act_bits))),
            "buffer_write": In(load_port(program)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        index = Signal(range(self._n + 1))
        m.d.comb += self.i_stream.ready.eq(self.active)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.comb += [self.buffer_write.en.eq(1), self.buffer_write.addr.eq(index),
                         self.buffer_write.data.eq(self.i_stream.payload)]
            with m.If(index == self._n - 1):
                m.d.comb += self.done.eq(1)
                m.d.sync += index.eq(0)
            with m.Else():
                m.d.sync += index.eq(index + 1)
        return m
