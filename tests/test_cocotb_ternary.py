"""cocotb on the generated Verilog (Verilator or Icarus): whole networks, bit for bit and cycle for cycle,
and `terwin verify` failing on a design with one operator flipped."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from terwin import fileformat
from terwin.cli import main
from terwin.sim import cycles, reference, rtl
from terwin.spec import PE4X4, PE8X8, PE8X16
from terwin.synthetic import random_deployment

pytestmark = pytest.mark.cocotb

NETS = {
    "pe4x4": (PE4X4, dict(seed=21, topology=(("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 10)),
                          input_shape=(1, 8, 8))),
    "pe8x8": (PE8X8, dict(seed=22, topology=(("conv2d", 12), ("conv2d", 20), ("maxpool2d", 2), ("linear", 10)),
                          input_shape=(1, 8, 8))),
    "pe8x16": (PE8X16, dict(seed=23, topology=(("conv2d", 20), ("maxpool2d", 2), ("conv2d", 12), ("linear", 10)),
                            input_shape=(1, 8, 8))),
}


@pytest.mark.parametrize("name", list(NETS))
def test_rtl_equals_reference_and_cycle_model(name, rtl_build_root):
    spec, kw = NETS[name]
    dep = random_deployment(spec, **kw)
    q = np.random.default_rng(0).integers(0, spec.act_max + 1, size=(4, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=rtl_build_root, pause_in=0.3, pause_out=0.3, progress=False)
    assert res.mismatches == 0, res.first_mismatch
    assert np.array_equal(res.scores, reference.forward(dep, q))
    model = cycles.predict(dep)
    got = [(l["name"], l["cycles"], l["mac_cycles"]) for l in res.layers]
    exp = [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]
    assert got == exp, f"RTL {got} != model {exp}"
    assert res.cycles == [model["cycles"]] * len(q)
    # every image reports the same per-layer counts (the schedule does not depend on the data)
    assert all(image == res.layer_cycles_per_image[0] for image in res.layer_cycles_per_image)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    dep = random_deployment(PE4X4, seed=31, topology=(("conv2d", 6), ("maxpool2d", 2), ("linear", 10)),
                            input_shape=(1, 8, 8))
    path = tmp_path_factory.mktemp("model") / "small.terwin"
    fileformat.save(dep, path)
    return dep, path


def test_generate_writes_verilog_images_and_manifest(small_model, tmp_path):
    dep, path = small_model
    assert main(["generate", str(path), "--out", str(tmp_path / "gen")]) == 0
    man = json.loads((tmp_path / "gen" / "manifest.json").read_text())
    assert man["model_checksum"] == fileformat.checksum(dep)
    assert man["spec"] == dep.spec.to_dict()
    assert man["ports"]["o_stream"]["payload"]["width"] > 0 and man["ports"]["i_stream"]["payload"]["width"] == 8
    assert "module terwin_top" in (tmp_path / "gen" / "terwin_top.v").read_text()
    weights = (tmp_path / "gen" / "weights.hex").read_text().split()
    assert len(weights) == man["memory_images"]["weights"]["depth"] > 0


def test_verify_cli_passes_and_reports_cycles(small_model, tmp_path, rtl_build_root):
    dep, path = small_model
    out = tmp_path / "v.json"
    rc = main(["verify", str(path), "--images", "3", "--json", str(out), "--build-dir", str(rtl_build_root), "--quiet"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["images"] == 3 and rep["mismatches"] == 0
    model = cycles.predict(dep)
    assert [(l["name"], l["cycles"], l["mac_cycles"], l["ideal_mac_cycles"]) for l in rep["layers"]] == \
        [(l["name"], l["cycles"], l["mac_cycles"], l["ideal_mac_cycles"]) for l in model["layers"]]


def test_verify_rtl_with_one_operator_flipped_fails(small_model, tmp_path, rtl_build_root, capsys):
    dep, path = small_model
    text = rtl.to_verilog(dep)
    # lane 0 of the PE array: "subtract the activation" becomes "add it"
    broken, n = re.subn(r"= - (\(\* src = \"[^\"]*ternary/pe\.py:\d+\" \*\) [^;]*acts[^;]*;)", r"= + \1", text, count=1)
    assert n == 1
    bad = tmp_path / "broken.v"
    bad.write_text(broken)
    out = tmp_path / "bad.json"
    rc = main(["verify", str(path), "--images", "3", "--rtl", str(bad), "--json", str(out),
               "--build-dir", str(rtl_build_root), "--quiet"])
    assert rc == 1
    rep = json.loads(out.read_text())
    assert rep["mismatches"] > 0
    fm = rep["first_mismatch"]
    assert fm["expected"] != fm["got"]
    assert rep["vcd"] and (tmp_path / f"fail_image{fm['image']}.vcd").stat().st_size > 0
    assert "MISMATCH" in capsys.readouterr().out


def test_verify_rejects_bad_arguments(small_model, tmp_path):
    _, path = small_model
    assert main(["verify", str(path), "--images", "zero"]) == 2
    assert main(["verify", str(path), "--rtl", str(tmp_path / "missing.v")]) == 2


def test_parallel_jobs_join_in_image_order(small_model, rtl_build_root, monkeypatch):
    """Images split over several simulator processes come back as one run: same scores and cycles as
    a single process, and a mismatch in a later slice is reported at its own image index."""
    dep, _ = small_model
    q = np.random.default_rng(5).integers(0, dep.spec.act_max + 1, size=(5, *dep.input_shape))
    one = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=1)
    three = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=3, pause_in=0.2, pause_out=0.2)
    assert one.mismatches == three.mismatches == 0
    assert np.array_equal(one.scores, three.scores) and one.cycles == three.cycles and one.layers == three.layers

    forward = reference.forward

    def off_by_one_at_image_3(d, x):  # the bench is told image 3's second score is one higher
        want = forward(d, x).copy()
        want[3, 1] += 1
        return want

    monkeypatch.setattr(rtl.reference, "forward", off_by_one_at_image_3)
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=3)
    assert res.mismatches == 1
    assert (res.first_mismatch["image"], res.first_mismatch["output"]) == (3, 1)
    assert res.first_mismatch["got"] == res.first_mismatch["expected"] - 1
