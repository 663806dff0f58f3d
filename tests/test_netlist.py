"""The post-synthesis netlist under the same bench: the top through `synth_ice40 -dsp` / `synth_ecp5`
(the build's options), simulated with Yosys's cell models (and terwin's for the ECP5 block RAM and
multiplier), every score compared with `==` and every counter with the cycle model. The stored
models' netlists on 50 images each: `benchmarks/netlist.py` (minutes, not a test)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from terwin import fileformat
from terwin.hw import fpga
from terwin.cli import main
from terwin.sim import netlist, reference, rtl
from terwin.spec import PE4X4
from terwin.synthetic import random_deployment


pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("family", netlist.FAMILIES)
def test_netlist_of_a_small_model(family, rtl_build_root):
    """Two images through each family's netlist of a 315-cycle model, under Icarus (no compile step
    for a one-off design; gate-level simulation in Icarus runs ~100x slower than its RTL)."""
    dep = random_deployment(PE4X4, seed=41, topology=(("conv2d", 4), ("maxpool2d", 2), ("linear", 10)), input_shape=(1, 8, 8))
    q = np.random.default_rng(3).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, simulator="icarus", netlist=family,
                     synth_opts=fpga.get(family).synth_opts)
    assert res.ok, res.failures()
    assert res.netlist == family and np.array_equal(res.scores, reference.forward(dep, q))
    cells = {"ice40": ("SB_LUT4 ", "SB_DFF"), "ecp5": ("LUT4 ", "TRELLIS_FF ")}[family]
    text = Path(res.verilog).read_text()
    assert all(cell in text for cell in cells)   # mapped cells, not RTL


def test_ecp5_models_refuse_what_they_do_not_model():
    models = netlist.cell_models("ecp5")
    assert "module DP16KD" in models and "module MULT18X18D" in models
    assert models.count("module DP16KD") == 1 and models.count("module FD1P3AX") == 1
    assert "are not modelled" in models


def test_cli_netlist_option(tmp_path):
    path = tmp_path / "m.terwin"
    fileformat.save(random_deployment(PE4X4, seed=62), path)
    assert main(["verify", str(path), "--netlist", "xilinx7", "--images", "1", "--quiet"]) == 2
