"""`terwin verify` cannot be fooled: every counter is compared with the cycle model (a frozen or
swapped counter fails, naming the layer and the counter), a watchdog stops a hung design (with the
waves of its end), back-pressure and input gaps change neither the scores nor the counters, the
loaders' multi-channel paths run, and the simulator is chosen by name or by what is installed."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from terwin import fileformat
from terwin.cli import main
from terwin.sim import cycles, reference, rtl, simulators
from terwin.spec import PE4X4, WINOGRAD
from terwin.synthetic import random_deployment

pytestmark = pytest.mark.cocotb

# small enough that Icarus (no compile step) runs an image in about a second
TINY = dict(seed=41, topology=(("conv2d", 4), ("maxpool2d", 2), ("linear", 10)), input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dep = random_deployment(PE4X4, **TINY)
    folder = tmp_path_factory.mktemp("tiny")
    fileformat.save(dep, folder / "tiny.terwin")
    return dep, folder / "tiny.terwin", rtl.to_verilog(dep)


def _images(dep, n, seed=0):
    return np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(n, *dep.input_shape))


def _mutant(text: str, pattern: str, repl: str, path) -> str:
    broken, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, pattern
    path.write_text(broken)
    return str(path)


# one-point changes that leave every score right and only the counters wrong
COUNTER_MUTANTS = {
    "frozen MAC counter": (r"(else if \(\S+\) \\counters\.stage_macs0  <= ).*;$", r"\1\\counters.stage_macs0 ;",
                           "layer_mac_cycles"),
    "frozen cycles port": (r"(else if \(count\) cycles <= ).*;$", r"\1cycles ;", "cycles"),
    "layer_cycles shows the MAC cycles": (r"^(\s*assign layer_cycles = ).*;$", r"\1layer_mac_cycles;", "layer_cycles"),
}


@pytest.mark.parametrize("name", list(COUNTER_MUTANTS))
def test_a_wrong_counter_fails_verify(tiny, tmp_path, rtl_build_root, name):
    dep, _, text = tiny
    pattern, repl, counter = COUNTER_MUTANTS[name]
    bad = _mutant(text, pattern, repl, tmp_path / "counter.v")
    res = rtl.verify(dep, _images(dep, 1), rtl=bad, build_root=rtl_build_root, progress=False, simulator="icarus")
    assert res.mismatches == 0 and res.completed == 1     # the scores cannot tell
    assert not res.ok and res.counter_errors
    assert {e["counter"] for e in res.counter_errors} == {counter}
    assert any("CYCLES DIFFER" in line and counter in line for line in res.failures())


def test_cli_names_the_layer_and_counter_of_an_rtl_file(tiny, tmp_path, rtl_build_root, capsys):
    dep, path, text = tiny
    bad = _mutant(text, *COUNTER_MUTANTS["frozen MAC counter"][:2], tmp_path / "frozen.v")
    out = tmp_path / "v.json"
    rc = main(["verify", str(path), "--rtl", bad, "--images", "1", "--simulator", "icarus", "--json", str(out),
               "--build-dir", str(rtl_build_root), "--quiet"])
    assert rc == 1
    rep = json.loads(out.read_text())
    assert rep["mismatches"] == 0 and not rep["ok"] and not rep["cycles_match_model"]
    first = rep["counter_errors"][0]
    conv = dep.layers[0].name   # stage 0 is the first conv
    assert (first["layer"], first["counter"], first["got"]) == (conv, "layer_mac_cycles", 0)
    assert first["expected"] == cycles.predict(dep)["layers"][0]["mac_cycles"]
    said = capsys.readouterr().out
    assert f"CYCLES DIFFER from the cycle model: layer {conv}: layer_mac_cycles = 0" in said


def test_watchdog_stops_a_hung_design_and_keeps_the_waves_of_its_end(tiny, tmp_path, rtl_build_root, capsys):
    dep, path, text = tiny
    hung = _mutant(text, r"^(\s*assign busy = ).*;$", r"\g<1>1'h1;", tmp_path / "hung.v")   # busy never falls
    out = tmp_path / "hung.json"
    start = time.monotonic()
    rc = main(["verify", str(path), "--rtl", hung, "--images", "2", "--simulator", "icarus", "--json", str(out),
               "--build-dir", str(rtl_build_root), "--quiet"])
    assert rc == 1 and time.monotonic() - start < 120
    rep = json.loads(out.read_text())
    limit = rtl.watchdog_limit(cycles.predict(dep), len(dep.layers))
    assert rep["timeout"]["image"] == 0 and rep["timeout"]["limit"] == limit == rep["watchdog_cycles"]
    assert rep["timeout"]["phase"] == "waiting for busy to fall" and rep["completed"] == 0
    said = capsys.readouterr().out
    assert "TIMEOUT: image 0" in said
    vcd = tmp_path / "fail_image0.vcd"
    assert rep["vcd"] == str(vcd) and vcd.stat().st_size > 0
    times = [int(t) for t in re.findall(r"^#(\d+)$", vcd.read_text(), re.M)]
    assert times and min(times) > 0   # the end of the run, not all of it


def test_backpressure_and_gaps_change_nothing_but_the_time(tiny, rtl_build_root):
    """The counters count compute only: random input gaps and output back-pressure leave every score
    and every counter as they are at full rate (the full-rate images' latency is checked too)."""
    dep, _, _ = tiny
    q = _images(dep, 3, seed=7)
    calm = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, simulator="icarus", pause_in=0, pause_out=0)
    busy = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, simulator="icarus", pause_in=0.6,
                      pause_out=0.6, seed=3, full_rate=0)
    assert calm.ok and busy.ok, (calm.failures(), busy.failures())
    assert np.array_equal(calm.scores, busy.scores) and np.array_equal(calm.scores, reference.forward(dep, q))
    assert calm.layer_cycles_per_image == busy.layer_cycles_per_image and calm.cycles == busy.cycles


MULTI_CHANNEL = {
    # pe4x4, 3 channels < 4 columns: the loader replicates the image into every bank
    "ternary-replicated-3x8x8": lambda: random_deployment(PE4X4, seed=51, input_shape=(3, 8, 8)),
    # pe4x4, 5 channels >= 4 columns: banked, channel 4 in bank 0 of the next address row
    "ternary-banked-5x6x6": lambda: random_deployment(PE4X4, seed=52, input_shape=(5, 6, 6)),
    "winograd-3x8x8": lambda: random_deployment(WINOGRAD, seed=53, input_shape=(3, 8, 8),
                                                topology=(("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 10))),
}


@pytest.mark.parametrize("name", list(MULTI_CHANNEL))
def test_multichannel_input_through_the_loader(name, rtl_build_root):
    dep = MULTI_CHANNEL[name]()
    q = _images(dep, 3, seed=11)
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False)
    assert res.ok, res.failures()
    assert np.array_equal(res.scores, reference.forward(dep, q))


def test_simulator_is_chosen_by_name_or_by_what_is_installed(tiny, monkeypatch, tmp_path):
    _, path, _ = tiny
    assert main(["verify", str(path), "--simulator", "ghdl", "--images", "1", "--quiet"]) == 2
    assert simulators.default().name == next(n for n in simulators.ORDER if simulators.SIMULATORS[n]().available())
    monkeypatch.setenv("VERILATOR", str(tmp_path / "no-verilator"))
    with pytest.raises(Exception, match=r"set by \$VERILATOR\) not found in that path"):
        simulators.get("verilator")
    monkeypatch.delenv("VERILATOR")
    # where it looks when there is none: the wheel's folder, next to the interpreter, PATH
    monkeypatch.setattr(simulators.Verilator, "_package_root", lambda self: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(simulators, "interpreter_bin", lambda: tmp_path)
    monkeypatch.setattr(simulators, "which", lambda name: None)
    with pytest.raises(Exception, match=r"verilator not found \(looked in the verilator package's bin/ folder, in "):
        simulators.get("verilator")
    assert main(["verify", str(path), "--simulator", "verilator", "--images", "1", "--quiet"]) == 2


def test_sharded_verify_is_one_run_cut_into_slices(tiny, tmp_path, rtl_build_root):
    """`verify_sharded` over a process pool reports what one `verify` of all the images reports: the
    same scores, per-image counters and cycles (the pauses follow the global image index), and a
    failure names the same global images."""
    from terwin.parallel import Executor

    dep, _, text = tiny
    q = _images(dep, 5, seed=3)
    pool = Executor(backend="process", workers=2)
    options = dict(simulator="icarus", pause_in=0.4, pause_out=0.4, seed=5, full_rate=2)
    whole = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=1, **options)
    cut = rtl.verify_sharded(dep, q, executor=pool, shards=3, build_root=rtl_build_root, **options)
    assert whole.ok and cut.ok, (whole.failures(), cut.failures())
    assert (cut.images, cut.completed) == (5, 5)
    assert np.array_equal(cut.scores, whole.scores) and np.array_equal(cut.scores, reference.forward(dep, q))
    assert cut.layer_cycles_per_image == whole.layer_cycles_per_image and cut.cycles == whole.cycles
    assert cut.layers == whole.layers

    bad = _mutant(text, *COUNTER_MUTANTS["frozen MAC counter"][:2], tmp_path / "frozen.v")
    whole = rtl.verify(dep, q, rtl=bad, build_root=rtl_build_root, progress=False, jobs=1, **options)
    cut = rtl.verify_sharded(dep, q, rtl=bad, executor=pool, shards=3, build_root=rtl_build_root, **options)
    assert not cut.ok and cut.counter_errors == whole.counter_errors
    assert sorted({e["image"] for e in cut.counter_errors}) == list(range(5))


def test_cli_verify_in_shards_on_a_local_ray_instance(tiny, tmp_path, rtl_build_root):
    dep, path, _ = tiny
    out = tmp_path / "shards.json"
    rc = main(["verify", str(path), "--images", "4", "--shards", "2", "--jobs", "2", "--simulator", "icarus",
               "--json", str(out), "--build-dir", str(rtl_build_root), "--quiet"])
    rep = json.loads(out.read_text())
    assert rc == 0 and rep["ok"] and (rep["images"], rep["completed"], rep["mismatches"]) == (4, 4, 0)
    assert rep["cycles_match_model"] and rep["cycles"] == cycles.predict(dep)["cycles"]


@pytest.mark.parametrize("argv, message", [
    (["--shards", "0"], "--shards must be from 1 to 4096, not 0"),
    (["--shards", "5000"], "--shards must be from 1 to 4096, not 5000"),
])
def test_cli_refuses_an_impossible_shard_count(tiny, capsys, argv, message):
    _, path, _ = tiny
    assert main(["verify", str(path), "--images", "2", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
