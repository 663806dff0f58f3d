"""`terwin explore` and its resource/fmax model (terwin.dse).

Fast: the model's fit on the committed calibration builds (block RAMs counted exactly, the fit
reproduced, held-out errors within the documented bounds), the front on hand-made points, sweeps of
a network description and of a model file scored by the exact cycle model (every point's cycles ==
`terwin.sim.cycles`), the JSON, the errors. One real build + verify of the best point (`build`, `slow`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from terwin import fileformat, network
from terwin.cli import main
from terwin.dse import resources, sweep
from terwin.parallel import ray_available
from terwin.sim import cycles
from terwin.spec import PE8X8, HardwareSpec
from terwin.synthetic import random_deployment

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = json.loads(resources.CALIBRATION.read_text())
COEFFS = json.loads(resources.COEFFICIENTS.read_text())

TINY_NET = {"name": "tiny", "input_shape": [1, 8, 8], "tile_sparsity": 0.5,
            "layers": [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                       {"type": "maxpool2d", "kernel": 2},
                       {"type": "conv2d", "out_channels": 16, "kernel": 3, "padding": 1},
                       {"type": "maxpool2d", "kernel": 2},
                       {"type": "linear", "out_channels": 10}]}


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_NET))
    return path


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.terwin"
    fileformat.save(random_deployment(PE8X8, seed=3, tile_sparsity=0.5), path)
    return path


# -- the resource model on the calibration builds ------------------------------------------------------------

def test_block_rams_are_counted_exactly_on_every_ternary_build():
    """Block RAMs come from the design's memories, mapped as Yosys maps them: equal to every ternary
    calibration build's count (the reference builds included)."""
    ternary = [p for p in CALIBRATION["points"] if p["features"]["engine"] == "ternary"]
    assert len(ternary) >= 10
    for p in ternary:
        assert resources.block_rams(p["features"], p["family"]) == p["measured"]["brams"], p["name"]


def test_memory_mapping_rules():
    m = resources.memory_mapping
    assert m("ice40", 141, 214, True) == ("block", 9)         # 256x16 blocks: 9 side by side
    assert m("ecp5", 141, 214, True) == ("block", 4)          # 512x36: 4
    assert m("ice40", 8, 2048, False) == ("block", 4)         # 512x8 deep: 4 (or 2048x2: 4)
    assert m("ecp5", 72, 24, True) == ("logic", 72 * 24)      # a small ROM is logic (1/16 per bit < 2 blocks)
    assert m("ecp5", 17, 10, False) == ("distributed", 5)     # a shallow RAM: 5 distributed RAMs of 16x4
    assert m("ice40", 17, 10, False) == ("block", 2)          # ... the iCE40 has none: 2 blocks < 170 bits
    assert m("ice40", 26, 5, False) == ("logic", 26 * 5)      # but 130 bits are flip-flops (a built pe16x8/2 lanes)
    assert m("ecp5", 8, 128, False) == ("distributed", 16)    # 16 x 4 = 64 < one block's 128
    assert m("ecp5", 8, 256, False) == ("block", 1)           # a tie (128): the block RAM
    assert m("ice40", 64, 64, True) == ("logic", 64 * 64)     # a tie with logic (256): logic (a built pe8x8/2 lanes)
    # a memory filled at run time: the UP5K's SPRAM (16K x 16) on the iCE40, block RAM like any RAM elsewhere
    assert m("ice40", 18, 8090, False, runtime=True) == ("spram", 2)
    assert m("ice40", 18, 20000, False, runtime=True) == ("spram", 4)
    assert m("ecp5", 18, 8090, False, runtime=True) == m("ecp5", 18, 8090, False) == ("block", 8)


def test_loaded_weight_memories_count_as_sprams_on_the_icebreaker():
    """spec.weight_memory "loaded": the weight streams leave the block-RAM count for the UP5K's SPRAMs
    (the committed 1-lane reference build: 2 SPRAMs, 26 block RAMs); at 4 lanes it would need 8, twice
    the device's 4."""
    dep = fileformat.load(ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin")
    rom = resources.features(dep.retarget(dep.spec.replace(mult_lanes=1)))
    loaded = resources.features(dep.retarget(dep.spec.replace(mult_lanes=1, weight_memory="loaded")))
    assert [m for m in loaded["memories"] if len(m) > 4] == [["items0", 18, 8090, False, True]]
    assert resources.mapped(loaded, "ice40", "spram") == 2 and resources.mapped(rom, "ice40", "spram") == 0
    assert resources.block_rams(rom, "ice40") - resources.block_rams(loaded, "ice40") == 36
    assert resources.block_rams(loaded, "ecp5") == resources.block_rams(rom, "ecp5")
    four = resources.features(dep.retarget(dep.spec.replace(weight_memory="loaded")))
    assert resources.mapped(four, "ice40", "spram") == 8 > resources.board_capacity("icebreaker")["sprams"]


def test_the_committed_coefficients_are_the_fit_of_the_committed_builds():
    refit = resources.fit(CALIBRATION["points"])
    for family, per_engine in COEFFS.items():
        for engine, entry in per_engine.items():
            for q, e in entry.items():
                again = refit[family][engine][q]
                assert again["points"] == e["points"]
                assert np.allclose(again["coefficients"], e["coefficients"], rtol=1e-6, atol=1e-9), (family, q)
                assert (again["held_out"] is None) == (e["held_out"] is None), (family, q)
                if e["held_out"] is not None:
                    assert np.allclose(again["held_out"], e["held_out"], rtol=1e-6), (family, q)


def test_held_out_errors_are_those_documented():
    """docs/explore.md states the model's error on held-out builds; the data must still give it."""
    # (mean, max) of the relative held-out errors; the issue asks max 10 % for LUTs (LCs), 15 % for fmax
    # ECP5 clock period: two of the 20 builds are held out beyond 15 % (docs/explore.md): the 32-lane
    # pe32x32 (80.3 MHz: one constant register feeds 32 multipliers across the die) and the 4-bit
    # pe16x16 with 8 lanes (116.4 MHz, faster than every other build); the other 18 are within 13.1 %
    limits = {("ice40", "ternary"): {"logic_cells": (0.02, 0.05), "luts": (0.02, 0.05), "period_ns": (0.02, 0.08)},
              ("ecp5", "ternary"): {"luts": (0.03, 0.06), "period_ns": (0.06, 0.19)}}
    for (family, engine), quantities in limits.items():
        for q, (mean, worst) in quantities.items():
            err = resources.errors(COEFFS[family][engine][q])
            assert err["n"] >= 5 and err["mean"] <= mean and err["max"] <= worst, (family, engine, q, err)


def test_nonnegative_least_squares():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(12), rng.uniform(1, 10, 12), rng.uniform(1, 10, 12)])
    y = x @ np.array([5.0, 2.0, 0.5])
    assert np.allclose(resources._solve(x, y), [5.0, 2.0, 0.5])
    y = x @ np.array([5.0, 2.0, -0.5])          # the best unconstrained fit has a negative coefficient
    c = resources._solve(x, y)
    assert (c >= 0).all() and c[2] == 0
    grad = x.T @ (y - x @ c)                     # optimality: no coefficient can improve the fit
    assert abs(grad[0]) < 1e-6 and abs(grad[1]) < 1e-6 and grad[2] <= 1e-9


def test_prediction_reads_the_coefficients():
    feat = CALIBRATION["points"][0]["features"]
    family = CALIBRATION["points"][0]["family"]
    pred = resources.predict_features(feat, family=family)
    e = COEFFS[family][feat["engine"]]["luts"]
    assert pred["luts"] == round(float(resources.regressors(feat, e["regressors"], family) @ np.array(e["coefficients"])))
    e = COEFFS[family][feat["engine"]]["period_ns"]
    period = float(resources.regressors(feat, e["regressors"], family) @ np.array(e["coefficients"]))
    assert pred["fmax_mhz"] == round(1000 / period, 2)
    with pytest.raises(Exception, match="no calibration for the ternary engine on nowhere"):
        resources.predict_features(feat, family="nowhere")


# -- the front ---------------------------------------------------------------------------------------------

def test_pareto_front_on_hand_made_points():
    rows = [dict(images_per_s=100, logic_cells=1000, brams=10, dsps=1),   # front: the cheapest
            dict(images_per_s=200, logic_cells=2000, brams=10, dsps=1),   # front
            dict(images_per_s=150, logic_cells=2500, brams=10, dsps=1),   # dominated by the one above
            dict(images_per_s=200, logic_cells=2000, brams=12, dsps=1),   # dominated: same speed, more BRAM
            dict(images_per_s=150, logic_cells=1500, brams=4, dsps=1),    # front: fewest BRAMs
            dict(images_per_s=300, logic_cells=9000, brams=30, dsps=4)]   # front: the fastest
    assert sweep.pareto_front(rows) == [True, True, False, False, True, True]
    assert sweep.pareto_front([rows[0], dict(rows[0])]) == [True, True]   # equal points dominate neither


def test_best_point_is_the_fastest_that_fits():
    pts = [{"spec": {"a": 1}, "predicted": {"fits": True, "images_per_s": 10, "luts": 5}},
           {"spec": {"a": 2}, "predicted": {"fits": False, "images_per_s": 99, "luts": 5}},
           {"spec": {"a": 3}, "predicted": {"fits": True, "images_per_s": 20, "luts": 9}},
           {"spec": {"a": 4}, "predicted": {"fits": True, "images_per_s": 20, "luts": 7}},
           {"spec": {"a": 5}, "error": "cannot run"}]
    assert sweep.best_point(pts, "images_per_s")["spec"] == {"a": 4}
    assert sweep.best_point(pts[1:2], "images_per_s") is None


def test_best_point_under_a_clock_floor_is_the_fastest_predicted_to_reach_it():
    pts = [{"spec": {"a": 1}, "predicted": {"fits": True, "images_per_s": 10, "luts": 5, "fmax_mhz": 95.0}},
           {"spec": {"a": 2}, "predicted": {"fits": True, "images_per_s": 30, "luts": 5, "fmax_mhz": 89.99}},
           {"spec": {"a": 3}, "predicted": {"fits": True, "images_per_s": 20, "luts": 9, "fmax_mhz": 90.0}},
           {"spec": {"a": 4}, "predicted": {"fits": False, "images_per_s": 40, "luts": 7, "fmax_mhz": 120.0}}]
    assert sweep.best_point(pts, "images_per_s")["spec"] == {"a": 2}
    assert sweep.best_point(pts, "images_per_s", min_fmax=90)["spec"] == {"a": 3}    # the floor is inclusive
    assert sweep.best_point(pts, "images_per_s", min_fmax=95.5) is None
    assert [sweep.is_candidate(p, 90) for p in pts] == [True, False, True, False]
    pts[2]["predicted"]["fmax_extrapolated"] = True      # beyond the calibration builds: no promise of a clock
    assert sweep.best_point(pts, "images_per_s", min_fmax=90)["spec"] == {"a": 1}
    assert sweep.best_point(pts, "images_per_s")["spec"] == {"a": 2}      # without a floor it counts as before


def test_fmax_extrapolation_is_flagged_apart():
    """An fmax is extrapolated when a regressor of the clock period lies beyond every calibration build (a
    wider array than any built), or the design is larger (LUTs) than every build: routing congestion,
    which the period's regressors do not see, then sets the clock."""
    feat = next(p["features"] for p in CALIBRATION["points"]
                if p["family"] == "ecp5" and p["features"]["engine"] == "ternary")
    inside = resources.predict_features(feat, family="ecp5")
    assert not inside["fmax_extrapolated"]
    wide = json.loads(json.dumps(feat))
    wide["spec"]["pe_cols"] = 4 * max(p["features"]["spec"]["pe_cols"] for p in CALIBRATION["points"]
                                      if p["family"] == "ecp5" and p["features"]["engine"] == "ternary")
    pred = resources.predict_features(wide, family="ecp5")
    assert pred["fmax_extrapolated"] and "log2_cols" in pred["extrapolated"]
    # as many columns as a build, but more rows than any: the period's regressors are inside, the LUTs not
    largest = max(p["measured"]["luts"] for p in CALIBRATION["points"]
                  if p["family"] == "ecp5" and p["features"]["engine"] == "ternary")
    tall = json.loads(json.dumps(feat))
    tall["spec"]["pe_rows"] = 64 * tall["spec"]["pe_rows"]
    pred = resources.predict_features(tall, family="ecp5")
    assert pred["luts"] > 1.01 * largest and pred["fmax_extrapolated"]
    assert not {"log2_cols", "dsp_tiles"} & set(pred["extrapolated"])


# -- sweeps scored by the exact cycle model ------------------------------------------------------------------

def _check_points(result, deployment_of, board):
    cap = CALIBRATION["boards"][board]
    for p in result["points"]:
        spec = HardwareSpec.from_dict(p["spec"])
        dep = deployment_of(spec)
        c = cycles.predict(dep)
        r = p["predicted"]
        assert r["cycles_per_image"] == c["cycles"] + c["io_cycles"]          # exact, ==
        assert r["compute_cycles"] == c["cycles"] and r["mac_cycles"] == c["mac_cycles"]
        assert r["images_per_s"] == round(r["fmax_mhz"] * 1e6 / r["cycles_per_image"], 1)
        assert r["fits"] == (r["logic_cells"] <= cap["logic_cells"] and r["brams"] <= cap["brams"]
                             and r["dsps"] <= cap["dsps"])
        assert r == {**r, **resources.predict(dep, board=board)}


def test_explore_a_network_description(net, tmp_path):
    out = tmp_path / "sweep.json"
    assert main(["explore", str(net), "--board", "icebreaker", "--axis", "pe_rows=4,8,16", "--axis", "pe_cols=4,8,16",
                 "--axis", "act_bits=4,8", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert len(result["points"]) == 18
    _check_points(result, lambda s: network.load_network(net, s), "icebreaker")
    fitting = [p for p in result["points"] if p["predicted"]["fits"]]
    assert fitting and len(fitting) < 18              # the UP5K holds the small arrays only
    best = result["best"]
    assert best["predicted"]["images_per_s"] == max(p["predicted"]["images_per_s"] for p in fitting)
    assert best["spec"] in result["front"]
    front = [p for p in fitting if p["pareto"]]
    assert [p["spec"] for p in front] == result["front"]
    assert sweep.pareto_front([p["predicted"] for p in fitting]) == [p["pareto"] for p in fitting]


def test_min_fmax_keeps_the_candidates_predicted_to_reach_it(model, tmp_path, capsys):
    """--min-fmax: the best point and the front come from the points predicted to reach the clock; the
    others are scored and marked, and a floor no point reaches says so (exit 0, no best)."""
    axes = {"pe_rows": (4, 8, 16), "pe_cols": (4, 8, 16, 32)}
    free = sweep.explore(model, board="ulx3s-85f", axes=axes)
    fmaxes = sorted({p["predicted"]["fmax_mhz"] for p in free["points"]})
    assert len(fmaxes) >= 2                            # the fit's period grows with the columns
    floor = fmaxes[-2]                                 # leaves the widest arrays out
    result = sweep.explore(model, board="ulx3s-85f", axes=axes, min_fmax=floor)
    assert result["min_fmax"] == floor and free["min_fmax"] is None
    candidates = [p for p in result["points"] if p["predicted"]["fits"] and p["predicted"]["fmax_mhz"] >= floor
                  and not p["predicted"]["fmax_extrapolated"]]
    assert 0 < len(candidates) < len(result["points"])
    assert all(p["predicted"]["meets_fmax"] == (p["predicted"]["fmax_mhz"] >= floor
                                                 and not p["predicted"]["fmax_extrapolated"]) for p in result["points"])
    best = result["best"]
    assert best["predicted"]["fmax_mhz"] >= floor
    assert best["predicted"]["images_per_s"] == max(p["predicted"]["images_per_s"] for p in candidates)
    assert result["front"] == [p["spec"] for p in candidates if p["pareto"]]
    assert not any(p["pareto"] for p in result["points"] if p not in candidates)
    assert free["best"]["predicted"]["images_per_s"] >= best["predicted"]["images_per_s"]
    out = tmp_path / "floor.json"
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--axis", "pe_rows=4,8", "--axis", "pe_cols=4,8",
                 "--min-fmax", "999", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "not predicted to reach 999 MHz (0 of them only" in text and "is predicted to reach 999 MHz" in text
    assert json.loads(out.read_text())["best"] is None
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--min-fmax", "0"]) == 2
    assert "--min-fmax must be from 1 to 1000 MHz" in capsys.readouterr().err


def test_build_candidates_tries_the_next_until_one_reaches_the_floor(monkeypatch, tmp_path):
    """The order and the stopping rule of --build-tries (the builds' figures stand in for nextpnr's here;
    test_build_and_verify_the_best_point builds for real): the candidates in the objective's order, the
    next one only when a build misses the floor, at most `tries`, the best when none reaches it."""
    def point(name, ips, fmax, luts=5, fits=True):
        return {"spec": {"name": name}, "predicted": {"fits": fits, "images_per_s": ips, "luts": luts,
                                                      "fmax_mhz": fmax}}
    points = [point("slow", 10, 95), point("big", 40, 99, fits=False), point("fast", 30, 92),
              point("fast-small", 30, 92, luts=3), point("mid", 20, 91), point("below", 50, 80)]
    reached = {"fast-small": 88.0, "fast": 90.5, "mid": 93.0, "slow": 96.0, "below": 79.0}
    built = []

    def fake_build(source, p, *, board, out_dir, quiet, clock_mhz=None):
        built.append((p["spec"]["name"], out_dir.name, clock_mhz))
        return {"fmax_mhz": reached[p["spec"]["name"]], "out": str(out_dir)}
    monkeypatch.setattr(sweep, "build_point", fake_build)
    settled, attempts = sweep.build_candidates(None, points, objective="images_per_s", min_fmax=90, tries=3,
                                               board="ulx3s-85f", stage=tmp_path, quiet=True)
    assert built == [("fast-small", "build", 90), ("fast", "build2", 90)]
    assert settled["spec"]["name"] == "fast" and [a["met"] for a in attempts] == [False, True]
    assert sweep.best_point(points, "images_per_s", 90)["spec"]["name"] == "fast-small"   # the same first
    built.clear()
    settled, attempts = sweep.build_candidates(None, points, objective="images_per_s", min_fmax=94, tries=2,
                                               board="ulx3s-85f", stage=tmp_path, quiet=True)
    assert [b[0] for b in built] == ["slow"] and settled["spec"]["name"] == "slow"   # the only candidate
    built.clear()
    reached["slow"] = 93.5
    settled, attempts = sweep.build_candidates(None, points, objective="images_per_s", min_fmax=90.9, tries=2,
                                               board="ulx3s-85f", stage=tmp_path, quiet=True)
    assert [b[0] for b in built] == ["fast-small", "fast"] and not any(a["met"] for a in attempts)
    assert settled["spec"]["name"] == "fast-small"          # none reached it: the predicted best
    built.clear()
    settled, attempts = sweep.build_candidates(None, points, objective="images_per_s", min_fmax=None, tries=1,
                                               board="ulx3s-85f", stage=tmp_path, quiet=True)
    assert built == [("below", "build", None)] and attempts[0]["met"]   # no floor: the best, once


def test_build_tries_is_checked_before_any_work(model, tmp_path, capsys):
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--build", "--out", str(tmp_path / "o"),
                 "--build-tries", "2"]) == 2
    assert "--build-tries needs --min-fmax" in capsys.readouterr().err
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--build", "--out", str(tmp_path / "o"),
                 "--min-fmax", "90", "--build-tries", "0"]) == 2
    assert "--build-tries must be from 1 to 16" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_explore_a_model_file_retiles_its_weights(model, tmp_path, capsys):
    result = sweep.explore(model, board="ulx3s-85f", axes={"pe_rows": (4, 8, 16), "pe_cols": (4, 8, 16)})
    dep = fileformat.load(model)
    _check_points(result, dep.retarget, "ulx3s-85f")
    assert {json.dumps(p["spec"], sort_keys=True) for p in result["points"]} == {
        json.dumps(dep.spec.replace(pe_rows=r, pe_cols=c).to_dict(), sort_keys=True)
        for r in (4, 8, 16) for c in (4, 8, 16)}
    # the ECP5 holds every one of these arrays; the largest is not the slowest
    assert all(p["predicted"]["fits"] for p in result["points"])
    # a field the model fixes is refused in one line
    assert main(["explore", str(model), "--board", "icebreaker", "--axis", "act_bits=4,8"]) == 2
    assert "fixes act_bits" in capsys.readouterr().err


def test_out_lanes_are_swept_and_beyond_the_calibration_flagged(model, capsys):
    """out_lanes: the cycle model sweeps it exactly; the calibration builds have 1 and 2 lanes, so a
    point with 4 is an extrapolation of the requantizer lanes' cost, and says so."""
    assert main(["explore", str(model), "--board", "icebreaker", "--axis", "out_lanes=1,2,4"]) == 0
    assert "of 3 points on icebreaker" in capsys.readouterr().out
    result = sweep.explore(model, board="icebreaker", axes={"out_lanes": (1, 4)})
    dep = fileformat.load(model)
    _check_points(result, dep.retarget, "icebreaker")
    flags = {HardwareSpec.from_dict(p["spec"]).out_lanes: p["predicted"]["extrapolated"] for p in result["points"]}
    assert "requant_lanes" in flags[4] and "requant_lanes" not in flags[1]


def test_a_field_no_calibration_build_set_is_flagged():
    """A spec field added after the calibration (every field of today's specs is calibrated): the fit
    cannot see what it costs, so the prediction says it is an extrapolation."""
    point = CALIBRATION["points"][0]
    feat = {**point["features"], "spec": {**point["features"]["spec"], "a_later_field": 3}}
    assert "a_later_field (not calibrated)" in resources.predict_features(feat, family=point["family"])["extrapolated"]
    assert not any("not calibrated" in n for n in resources.predict_features(point["features"], family=point["family"])["extrapolated"])


def test_a_field_calibrated_on_another_family_or_engine_is_still_flagged():
    """out_lanes > 1 was built on the ternary engine only: a Winograd point that sets it is not covered
    by those builds (the flag is per family and engine, not over every calibration build)."""
    points = CALIBRATION["points"]
    ternary = {name for p in points if p["features"]["engine"] == "ternary" for name in p["features"]["spec"]}
    point = next(p for p in points if p["features"]["engine"] == "winograd")
    extra = sorted(ternary - {n for p in points if p["features"]["engine"] == "winograd" for n in p["features"]["spec"]})
    assert extra, "the calibration no longer has a ternary-only spec field"
    feat = {**point["features"], "spec": {**point["features"]["spec"], extra[0]: 2}}
    flagged = resources.predict_features(feat, family=point["family"])["extrapolated"]
    assert f"{extra[0]} (not calibrated)" in flagged


def test_explore_json_schema_and_plot(model, tmp_path):
    out = tmp_path / "out"
    js = tmp_path / "r.json"
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--axis", "pe_rows=4,8", "--axis", "pe_cols=8,16",
                 "--json", str(js), "--out", str(out), "--quiet"]) == 0
    result = json.loads(js.read_text())
    assert set(result) >= {"points", "best", "front", "board", "objective", "axes", "calibration", "notes"}
    for p in result["points"]:
        assert set(p["spec"]) == set(PE8X8.to_dict())
        assert set(p["predicted"]) >= {"cycles_per_image", "luts", "logic_cells", "ffs", "brams", "dsps", "fmax_mhz",
                                       "images_per_s", "fits"}
    assert set(result["best"]) == {"spec", "predicted"}
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "explore.json").read_text())["points"] == result["points"]
    # the folder holds only what terwin wrote; another file there is refused without --force
    (out / "mine.txt").write_text("keep")
    assert main(["explore", str(model), "--board", "ulx3s-85f", "--axis", "pe_rows=4", "--out", str(out),
                 "--quiet"]) == 2
    assert (out / "mine.txt").read_text() == "keep"


def test_objective_per_klut(net):
    result = sweep.explore(net, board="ulx3s-85f", objective="images_per_s_per_klut",
                           axes={"pe_rows": (2, 8, 32), "pe_cols": (2, 8, 32)})
    fitting = [p for p in result["points"] if p["predicted"]["fits"]]
    assert result["best"]["predicted"]["images_per_s_per_klut"] == max(p["predicted"]["images_per_s_per_klut"]
                                                                       for p in fitting)


@pytest.mark.parametrize("argv, message", [
    (["--board", "nowhere"], "invalid choice"),
    (["--board", "icebreaker", "--axis", "pe_rows"], "--axis must be FIELD=V1,V2"),
    (["--board", "icebreaker", "--axis", "colour=red"], "not a HardwareSpec field"),
    (["--board", "icebreaker", "--axis", "pe_rows=3,5"], "no valid spec in the sweep"),
    (["--board", "icebreaker", "--build"], "--build needs --out"),
    (["--board", "icebreaker", "--accuracy-budget", "1"], "a network description has random weights"),
    (["--board", "icebreaker", "--objective", "speed"], "invalid choice"),
    (["--board", "icebreaker", "--workers", "0"], "--workers must be"),
])
def test_errors_are_one_line(net, capsys, argv, message):
    assert main(["explore", str(net), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_or_foreign_model_is_one_line(tmp_path, capsys):
    assert main(["explore", str(tmp_path / "none.terwin"), "--board", "icebreaker"]) == 2
    bad = tmp_path / "bad.terwin"
    bad.write_bytes(b"not a model at all")
    assert main(["explore", str(bad), "--board", "icebreaker"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2


def test_api_explore_takes_a_deployment():
    import terwin
    dep = random_deployment(PE8X8, seed=1)
    result = terwin.explore(dep, board="icebreaker", axes={"pe_rows": (4, 8), "pe_cols": (4,)})
    assert [p["spec"]["pe_rows"] for p in result["points"]] == [4, 8]
    assert result["points"][0]["predicted"]["cycles_per_image"] == \
        cycles.predict(dep.retarget(PE8X8.replace(pe_rows=4, pe_cols=4)))["cycles"] + \
        cycles.predict(dep.retarget(PE8X8.replace(pe_rows=4, pe_cols=4)))["io_cycles"]


@pytest.mark.skipif(not ray_available(), reason="Ray is a dependency; this guards a bare NumPy-only install")
def test_a_sweep_of_twenty_points_on_a_local_ray_instance(net):
    axes = {"pe_rows": (2, 4, 8, 16, 32), "pe_cols": (2, 4, 8, 16)}
    on_ray = sweep.explore(net, board="ulx3s-85f", axes=axes, workers=2, backend="ray")
    serial = sweep.explore(net, board="ulx3s-85f", axes=axes)
    assert len(on_ray["points"]) == 20 and on_ray["executor"].startswith("ray")
    assert on_ray["points"] == serial["points"] and on_ray["best"] == serial["best"]


@pytest.mark.build
@pytest.mark.slow
def test_build_and_verify_the_best_point(tmp_path):
    """The best small design for the iCE40, built and its RTL verified: cycles == model, 0 mismatches."""
    path = tmp_path / "m.terwin"
    fileformat.save(random_deployment(PE8X8.replace(pe_rows=4, pe_cols=4), seed=2), path)
    result = sweep.explore(path, board="icebreaker", axes={"pe_rows": (2, 4), "pe_cols": (4,)}, build=True,
                           out=tmp_path / "out", images=4)
    best = result["best"]
    assert best["verify"]["mismatches"] == 0 and best["verify"]["cycles_match_model"] and best["verify"]["images"] == 4
    assert best["built"]["cycles_per_image"] == best["predicted"]["cycles_per_image"]
    assert best["built"]["fits"] and best["built"]["brams"] == best["predicted"]["brams"]
    assert math.isclose(best["prediction_error"]["luts"],
                        (best["predicted"]["luts"] - best["built"]["luts"]) / best["built"]["luts"], abs_tol=1e-4)
    assert (tmp_path / "out" / "build" / "terwin.bin").exists()
    assert best["built"]["out"] == str(tmp_path / "out" / "build")
    assert json.loads((tmp_path / "out" / "explore.json").read_text())["best"]["verify"] == best["verify"]
