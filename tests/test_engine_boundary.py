"""The engine boundary: one registry (`terwin.engines`), one `Program` per model that both the cycle
model and the RTL read, tops composed of small stage components; and a regression pin of the stored
reference models' cycles, with their RTL run under cocotb against the pin."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from terwin import engines, fileformat
from terwin.sim import cycles, reference

ROOT = Path(__file__).parents[1]
HW = ROOT / "hw"
MAX_ELABORATE_LINES = 120

TERNARY_50 = ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin"
WINOGRAD = ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin"
RESNET8 = ROOT / "bitstreams" / "ulx3s-85f" / "resnet8" / "model.terwin"   # a user's residual graph, trained

# Regression pin: per-layer (name, cycles, mac_cycles, ideal_mac_cycles) of the stored reference models
# as the cycle model gives them (and as their RTL counters measure them). Changing the schedule must
# change these numbers on purpose. The Winograd pin changed once, on purpose: its input side, lanes and
# output side now overlap on double-buffered memories, the output side reads a row of M a cycle and the
# 2x2 max-pools are fused into the convolutions (was 5170/22626/2049/9138/513/308, 39804 cycles), then
# a few cycles more for the registers added for timing; mac_cycles count the lanes' issue cycles. Then
# (was 1336/10259/5591/311, 17497 cycles) the input side reads 2 pixels a cycle, an output tile's tail
# runs on into the next step and the next layer's first input tile loads in the previous layer's last step
# (then a few cycles more for registers added for timing with 16 lanes). The ternary io_cycles rose by 2
# (75 -> 77, 1035 -> 1037) on purpose: the loader's and the score output's `done` became registers, so
# no control path crosses the die twice (the ECP5's large arrays).
PINNED = {
    TERNARY_50: {
        "layers": [("conv1", 1039, 256, 123), ("conv2", 2325, 2304, 2234), ("pool2", 0, 0, 0),
                   ("conv3", 2293, 2272, 2204), ("pool3", 0, 0, 0), ("fc", 53, 32, 19)],
        "cycles": 5710, "io_cycles": 77,
    },
    WINOGRAD: {
        "layers": [("wconv0", 1158, 320, 308), ("wconv1", 10109, 9840, 9832), ("pool2", 0, 0, 0),
                   ("wconv3", 5060, 4916, 4915), ("pool4", 0, 0, 0), ("linear5", 249, 160, 160)],
        "cycles": 16576, "io_cycles": 67,
    },
    RESNET8: {  # `terwin verify --images 100` measured these on the RTL (docs/ternary.md)
        "layers": [("conv1", 16401, 4096, 2000), ("layer1.conv1", 18455, 18432, 17872),
                   ("layer1.conv2", 18455, 18432, 17872), ("layer2.conv1", 9239, 9216, 8936),
                   ("layer2.shortcut.0", 8208, 1024, 992), ("layer2.conv2", 18455, 18432, 17876),
                   ("layer3.conv1", 9175, 9152, 8877), ("layer3.shortcut.0", 4114, 1088, 993),
                   ("layer3.conv2", 18395, 18368, 17816), ("pool", 0, 0, 0), ("fc", 36, 8, 6)],
        "cycles": 120933, "io_cycles": 1037,
    },
}


def _elaborates():
    for path in sorted(HW.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "elaborate":
                        yield f"{path.relative_to(ROOT)}:{node.name}", item.end_lineno - item.lineno + 1


def test_no_elaborate_in_hw_is_long():
    found = dict(_elaborates())
    assert "hw/ternary/top.py:TernaryAccelerator" in found and "hw/winograd/top.py:WinogradAccelerator" in found
    long = {name: n for name, n in found.items() if n > MAX_ELABORATE_LINES}
    assert not long, f"elaborate longer than {MAX_ELABORATE_LINES} lines: {long}"


@pytest.mark.parametrize("path", list(PINNED), ids=lambda p: p.parent.name)
def test_stored_models_cycles_are_pinned(path):
    dep = fileformat.load(path)
    got = cycles.predict(dep)
    pin = PINNED[path]
    assert [(l["name"], l["cycles"], l["mac_cycles"], l["ideal_mac_cycles"]) for l in got["layers"]] == pin["layers"]
    assert (got["cycles"], got["io_cycles"]) == (pin["cycles"], pin["io_cycles"])


@pytest.mark.parametrize("path", list(PINNED), ids=lambda p: p.parent.name)
def test_the_top_runs_the_program_the_cycle_model_reads(path):
    """One Program: the top is built from it, the cycle model sums it, generate writes its ROMs."""
    dep = fileformat.load(path)
    engine = engines.for_spec(dep.spec)
    program = engine.compile(dep)
    top = engine.build_top(dep, program=program)
    assert top.program is program
    assert cycles.predict(dep, program=program) == cycles.predict(dep)
    assert [s.index for s in program.stages] and program.layer_names == tuple(l.name for l in dep.layers)
    table = program.stage_table()
    assert table and all(len(column) == len(program.stages) for column in table.values())
    roms = engine.memory_images(program)
    assert roms and all(len(image.init) <= image.depth and len(image.words()) == len(image.init) for image in roms)


def test_registry_is_the_only_dispatch():
    assert set(engines.names()) == {"ternary", "winograd"}
    for engine in engines.ENGINES.values():
        assert engine.name == engine.package.rsplit(".", 1)[1]
        assert (HW / engine.name / "program.py").exists() and (HW / engine.name / "cycles.py").exists()
        assert (HW / engine.name / "top.py").exists()
    with pytest.raises(Exception, match="no engine"):
        engines.get("binary")
    # the simulators, the commands, builds and reports pick no engine by name: they ask the registry
    paths = [*(ROOT / "sim").rglob("*.py"), *(ROOT / "terwin" / "commands").glob("*.py"),
             ROOT / "terwin" / "build.py", ROOT / "terwin" / "report.py"]
    for path in paths:
        text = path.read_text()
        for e in engines.names():
            assert not any(p in text for p in (f'weight_format == "{e}"', f'family == "{e}"', f'"{e}" in self.name')), path


def test_hw_imports_no_model_generator():
    """hw/ lowers and runs Deployments; it never draws them (terwin.synthetic, terwin.network: the
    benchmarks and tests do) nor trains them (terwin.algo)."""
    above = ("terwin.synthetic", "terwin.network", "terwin.algo", "terwin.sim", "terwin.commands")
    for path in sorted(HW.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            bad = [m for m in mods if m.startswith(above)]
            assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}"


def test_registry_and_cycle_model_import_neither_torch_nor_amaranth():
    code = ("import sys; from terwin import engines, fileformat; from terwin.sim import cycles; "
            f"cycles.predict(fileformat.load({str(TERNARY_50)!r})); cycles.predict(fileformat.load({str(WINOGRAD)!r})); "
            "bad = [m for m in ('torch', 'amaranth') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.cocotb
@pytest.mark.parametrize("path", [TERNARY_50, pytest.param(WINOGRAD, marks=pytest.mark.slow)],
                         ids=lambda p: p.parent.name)
def test_stored_models_rtl_equals_reference_and_the_pin(path, rtl_build_root):
    from terwin.sim import rtl
    dep = fileformat.load(path)
    q = np.random.default_rng(5).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=2)
    assert res.mismatches == 0, res.first_mismatch
    assert np.array_equal(res.scores, reference.forward(dep, q))
    pin = PINNED[path]
    assert [(l["name"], l["cycles"], l["mac_cycles"]) for l in res.layers] == [l[:3] for l in pin["layers"]]
    assert res.cycles == [pin["cycles"]] * len(q)
