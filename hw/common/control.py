"""Controller pieces both tops use: the per-stage constant table and the cycle counters."""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from terwin.intmath import signed_bits, unsigned_bits

from .ports import COUNTER_BITS


def _const_shape(values: list[int]):
    if min(values) < 0:
        return signed(signed_bits(min(values), max(values)))
    return unsigned(unsigned_bits(max(values)))


class StageConstants(wiring.Component):
    """The controller's per-stage numbers (`Program.stage_table()`), selected by the current stage.

    * `stage` (in): the stage running;
    * `k` (out): one field per table column, that column's value for `stage` (each field just wide
      enough for its column; signed only when a value is negative).

    A chain of `Mux`es (continuous assignments in Verilog), not a `Switch`: an `always @*` block whose
    inputs never change after time 0 is never evaluated by Icarus Verilog.
    """

    def __init__(self, table: dict[str, list[int]]):
        self._table = {name: [int(v) for v in values] for name, values in table.items()}
        n = len(next(iter(self._table.values())))
        if any(len(v) != n for v in self._table.values()):
            raise ValueError("every column of a stage table needs one value per stage")
        self.layout = data.StructLayout({name: _const_shape(v) for name, v in self._table.items()})
        super().__init__({"stage": In(range(max(2, n))), "k": Out(self.layout)})

    def row(self, stage: int) -> dict[str, int]:
        """Stage `stage`'s constants, as `layout.const` takes them (a register's `init`)."""
        return {name: values[stage] for name, values in self._table.items()}

    def elaborate(self, platform):
        m = Module()
        for name, values in self._table.items():
            shape = self.layout[name].shape
            value = Const(values[-1], shape)
            for i in range(len(values) - 2, -1, -1):
                value = Mux(self.stage == i, Const(values[i], shape), value)
            m.d.comb += self.k[name].eq(value)
        return m


class LayerCounters(wiring.Component):
    """Compute-cycle counters: in total and per stage, read out per layer.

    * `clear` (in): zero every counter (a new image);
    * `count`, `mac` (in): this cycle counts as a compute cycle / a MAC cycle of stage `stage`;
    * `cycles` (out): compute cycles since `clear`;
    * `layer_sel` (in) -> `layer_cycles`, `layer_mac_cycles` (out): the counts of the stage whose layer
      is `layer_sel` (`stage_layers[i]`: the layer of stage i); 0 for a layer fused into another.
    """

    def __init__(self, *, stage_layers: list[int], n_layers: int):
        self._layers = list(stage_layers)
        super().__init__({
            "clear": In(1),
            "count": In(1),
            "mac": In(1),
            "stage": In(range(max(2, len(self._layers)))),
            "layer_sel": In(range(max(2, n_layers))),
            "cycles": Out(COUNTER_BITS),
            "layer_cycles": Out(COUNTER_BITS),
            "layer_mac_cycles": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self._layers)
        cycles = Signal(COUNTER_BITS)
        stage_cycles = Array(Signal(COUNTER_BITS, name=f"stage_cycles{i}") for i in range(n))
        stage_macs = Array(Signal(COUNTER_BITS, name=f"stage_macs{i}") for i in range(n))
        sel_cycles, sel_macs = Const(0, COUNTER_BITS), Const(0, COUNTER_BITS)
        for i, layer in enumerate(self._layers):  # Mux chain: continuous assignments in Verilog
            sel_cycles = Mux(self.layer_sel == layer, stage_cycles[i], sel_cycles)
            sel_macs = Mux(self.layer_sel == layer, stage_macs[i], sel_macs)
        m.d.comb += [self.cycles.eq(cycles), self.layer_cycles.eq(sel_cycles), self.layer_mac_cycles.eq(sel_macs)]
        with m.If(self.count):
            m.d.sync += [cycles.eq(cycles + 1), stage_cycles[self.stage].eq(stage_cycles[self.stage] + 1)]
        with m.If(self.mac):
            m.d.sync += stage_macs[self.stage].eq(stage_macs[self.stage] + 1)
        with m.If(self.clear):
            m.d.sync += [cycles.eq(0)] + [c.eq(0) for c in stage_cycles] + [c.eq(0) for c in stage_macs]
        return m


def delayed(m: Module, value, cycles: int, *, en=None, name: str, reset_less: bool | None = None):
    """`value` `cycles` clock cycles later (counting only cycles with `en` high, when given), through a
    chain of registers `name0`, `name1`, ...; `value` itself for 0 cycles. `reset_less`: registers the
    domain's reset does not reach (they start from their init value at configuration); by default
    (None) the registers are like `value`: reset-less when it is a reset-less signal."""
    extra = {} if reset_less is None else {"reset_less": reset_less}
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}{i}", **extra)
        if en is None:
            m.d.sync += reg.eq(value)
        else:
            with m.If(en):
                m.d.sync += reg.eq(value)
        value = reg
    return value
