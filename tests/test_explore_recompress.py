"""`terwin explore --recompress K`: the model's own compression run again for the sweep's best arrays.

The recipe is read back from the model file (`terwin.dse.recompress.recipe`) and must repeat the
compression exactly: the model compressed again for its own spec is the model, byte for byte. On
another array the new model is pruned for that array's tiles (not re-tiled), its cycles are the
cycle model's, and the best is chosen among the new models within the accuracy budget.
"""
from __future__ import annotations

import json

import pytest

from terwin import fileformat
from terwin.cli import main
from terwin.dse import recompress, sweep
from terwin.errors import TerwinError
from terwin.sim import cycles
from terwin.spec import HardwareSpec

SHORT = ["--ternary-epochs-scale", "0.03"]   # seconds a run: what is checked is the flow, not the accuracy


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """The built-in net, compressed briefly for pe8x8 with a non-default prune criterion (its file must
    record it for the recipe to repeat the run)."""
    out = tmp_path_factory.mktemp("recompress") / "m"
    assert main(["compress", "--family", "ternary", "--seed", "1", "--tile-sparsity", "0.5",
                 "--prune-criterion", "importance", *SHORT, "--out", str(out), "--quiet"]) == 0
    return out / "model.terwin"


def test_the_recipe_is_read_back_from_the_file(small_model):
    recipe = recompress.recipe(fileformat.load(small_model), small_model)
    assert recipe == {"family": "ternary", "seed": 1, "tile_sparsity": 0.5, "regularizer": "wpc",
                      "ternary_threshold": 0.05, "zero_budget": 0.03, "prune_criterion": "importance",
                      "epochs_scale": 0.03}
    assert recompress.describe(recipe) == ("--family ternary --seed 1 --tile-sparsity 0.5 --regularizer wpc "
                                           "--ternary-threshold 0.05 --zero-budget 0.03 --prune-criterion importance "
                                           "--ternary-epochs-scale 0.03")


def test_the_default_model_file_records_nothing_more():
    """The recipe's extra settings are recorded only when not at their defaults (the default file is as before)."""
    from terwin.algo.ternary.flow import TernaryOptions, recipe_extras
    assert recipe_extras(TernaryOptions()) == {}
    assert recipe_extras(TernaryOptions(epochs_scale=0.5, prune_criterion="importance")) == {
        "epochs_scale": 0.5, "prune_criterion": "importance"}
    assert recipe_extras(TernaryOptions(), cli_defaults=False) == {"recipe": "api"}


@pytest.mark.parametrize("meta, message", [
    ({"family": "winograd", "mode": "liu"}, "is a 'winograd' model; only ternary models record"),
    ({"family": "ternary", "seed": 0}, "does not record how it was compressed (tile_sparsity_target, regularizer, "
                                       "ternary_threshold, zero_budget missing)"),
    ({"family": "ternary", "seed": 0, "tile_sparsity_target": 0.5, "regularizer": "wpc", "ternary_threshold": 0.05,
      "zero_budget": 0.03, "recipe": "api"}, "settings the command line cannot repeat"),
    ({"family": "ternary", "seed": 0, "tile_sparsity_target": 0.5, "regularizer": "wpc", "ternary_threshold": 0.05,
      "zero_budget": 0.03, "model": "ResNet8"}, "from a network passed to the Python API (ResNet8)"),
])
def test_a_file_whose_recipe_cannot_be_repeated_is_refused(small_model, meta, message):
    dep = fileformat.load(small_model).replace(meta=meta)
    with pytest.raises(TerwinError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recompress.recipe(dep, "m.terwin")


def test_specs_that_differ_in_lanes_share_a_compression():
    key = recompress.compression_key
    assert key({"pe_rows": 8, "pe_cols": 16, "out_lanes": 1}) == key({"pe_rows": 8, "pe_cols": 16, "out_lanes": 2})
    assert key({"pe_rows": 8, "pe_cols": 16}) != key({"pe_rows": 16, "pe_cols": 8})
    assert key({"pe_rows": 8, "pe_cols": 8}) != key({"pe_rows": 8, "pe_cols": 8, "act_bits": 4})


def test_recompress_prunes_for_each_array_and_repeats_the_model_on_its_own(small_model, tmp_path, capsys):
    out = tmp_path / "ex"
    rc = main(["explore", str(small_model), "--board", "icebreaker", "--axis", "pe_rows=4,8", "--axis", "pe_cols=8",
               "--axis", "out_lanes=1,2", "--recompress", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    result = json.loads((out / "explore.json").read_text())
    rec = result["recompressed"]
    # two arrays compressed (the lanes share one run each), every candidate on them scored again
    models = {p["model"] for p in rec}
    assert len(models) == 2 and sorted((out / "recompress").iterdir()) == [out / "recompress" / "1",
                                                                           out / "recompress" / "2"]
    candidates = [p["spec"] for p in result["points"] if sweep.is_candidate(p)]
    assert len(candidates) == 4 and sorted(map(str, (p["spec"] for p in rec))) == sorted(map(str, candidates))
    original = fileformat.load(small_model)
    for p in rec:
        dep = fileformat.load(p["model"])
        spec = HardwareSpec.from_dict(p["spec"])
        assert (dep.spec.pe_rows, dep.spec.pe_cols) == (spec.pe_rows, spec.pe_cols)
        assert p["predicted"]["cycles_per_image"] == int(sum(cycles.predict(dep.retarget(spec))[k]
                                                             for k in ("cycles", "io_cycles")))
        assert p["accuracy"]["reference_mismatches"] == 0
        if spec.pe_rows == 8:
            # the same recipe for the model's own array is the model, byte for byte (the spec it was compressed
            # with aside: the first candidate's, which may have more out lanes)
            assert fileformat.to_bytes(dep.replace(spec=original.spec)) == fileformat.to_bytes(original)
            assert p["predicted"]["cycles_per_image"] == p["retiled"]["cycles_per_image"]
        else:
            # pruned for 4x8 tiles, not the original re-tiled: other weights, other kept tiles
            retiled = original.retarget(spec)
            assert any((a.weight != b.weight).any() for a, b in zip(dep.weighted_layers, retiled.weighted_layers))
            assert p["predicted"]["cycles_per_image"] != p["retiled"]["cycles_per_image"]
    best = result["best"]
    assert best["model"] in models and best["spec"] in [p["spec"] for p in rec]
    assert best["predicted"]["images_per_s"] == max(p["predicted"]["images_per_s"] for p in rec
                                                    if sweep.is_candidate(p))
    assert result["retiled_best"]["spec"] in [p["spec"] for p in result["points"]]
    assert "compressed again for 2 array(s)" in text and "<- best" in text


def _point(ips, drop, *, fits=True):
    return {"spec": {"pe_rows": 8, "pe_cols": 8, "out_lanes": ips}, "accuracy": {"drop_points": drop},
            "predicted": {"images_per_s": ips, "luts": 100, "fits": fits, "fmax_mhz": 40.0}}


def test_the_best_recompressed_point_within_the_budget():
    pts = [_point(3, 1.5), _point(2, 0.5), _point(1, -0.2), _point(4, 0.0, fits=False)]
    best, eligible, note = recompress.choose(pts, objective="images_per_s", min_fmax=None, budget=None)
    assert best is pts[0] and eligible == pts and note is None
    best, eligible, note = recompress.choose(pts, objective="images_per_s", min_fmax=None, budget=1.0)
    assert best is pts[1] and eligible == pts[1:] and note is None
    best, _, _ = recompress.choose(pts, objective="images_per_s", min_fmax=None, budget=0.5)
    assert best is pts[1]   # a drop equal to the budget is within it
    best, eligible, note = recompress.choose(pts, objective="images_per_s", min_fmax=None, budget=-1.0)
    assert best is None and eligible == []
    assert note == "no recompressed model is a candidate within the accuracy budget of -1 points: there is no best point"
    best, _, note = recompress.choose(pts[3:], objective="images_per_s", min_fmax=None, budget=None)
    assert best is None and note == "no recompressed model is a candidate: there is no best point"


@pytest.mark.parametrize("argv, message", [
    (["--recompress", "1"], "--recompress needs --out DIR"),
    (["--recompress", "17", "--out", "X"], "--recompress must be from 0 to 16, not 17"),
])
def test_recompress_errors_are_one_line_before_any_work(small_model, tmp_path, capsys, argv, message):
    argv = [a.replace("X", str(tmp_path / "x")) for a in argv]
    assert main(["explore", str(small_model), "--board", "icebreaker", *argv]) == 2
    assert capsys.readouterr().err == f"terwin explore: error: {message}" + (
        " (the recompressed models go there)\n" if "needs --out" in message else "\n")
    assert not (tmp_path / "x").exists()


def test_recompress_needs_a_model_file(tmp_path, capsys):
    net = tmp_path / "n.json"
    net.write_text(json.dumps({"name": "n", "input_shape": [1, 8, 8],
                               "layers": [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                                          {"type": "linear", "out_channels": 10}]}))
    assert main(["explore", str(net), "--board", "icebreaker", "--recompress", "1", "--out", str(tmp_path / "x")]) == 2
    assert "a network description has no training recipe" in capsys.readouterr().err
