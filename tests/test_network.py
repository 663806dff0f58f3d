"""Network descriptions (`terwin.network`) and `terwin simulate` on them and on re-targeted models."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from terwin import fileformat, network
from terwin.cli import main
from terwin.sim import cycles, reference
from terwin.spec import PE4X4, PE8X8, PE8X16, WINOGRAD
from terwin.synthetic import random_deployment

RESNET18 = Path(__file__).parents[1] / "examples" / "resnet18.json"
SMALL = {"input_shape": [2, 12, 12], "tile_sparsity": 0.25, "seed": 3,
         "layers": [{"type": "conv2d", "out_channels": 12, "kernel": 3, "padding": 1, "repeat": 2},
                    {"type": "maxpool2d", "kernel": 2},
                    {"type": "conv2d", "out_channels": 20, "kernel": 3, "padding": 1},
                    {"type": "linear", "out_channels": 10}]}


def write(tmp_path, data, name="net.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_resnet18_example_through_the_cli(tmp_path, capsys):
    out = tmp_path / "r18.json"
    assert main(["simulate", str(RESNET18), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep == json.loads(json.dumps(cycles.predict(network.load_network(RESNET18, PE8X8))))
    assert [l["name"] for l in rep["layers"]][:3] == ["conv0", "pool1", "conv2"]
    assert len(rep["layers"]) == 20 and rep["spec"]["pe_cols"] == 8
    assert "images/s" in capsys.readouterr().out


@pytest.mark.parametrize("spec", [PE4X4, PE8X8, PE8X16], ids=lambda s: s.name)
def test_ternary_network_shapes_sparsity_and_ideal(spec):
    dep = network.network_deployment(SMALL, spec)
    assert [l.kind for l in dep.layers] == ["conv2d", "conv2d", "maxpool2d", "conv2d", "linear"]
    assert dep.output_shape == (10, 1, 1)
    masks = np.concatenate([l.tile_mask.ravel() for l in dep.layers if l.kind != "maxpool2d"])
    assert 0.1 < 1 - masks.mean() < 0.4  # about the asked 0.25 pruned
    for layer, row in zip(dep.layers, cycles.predict(dep)["layers"]):
        if layer.kind == "maxpool2d":
            continue
        grid = layer.tile_grid(spec)
        assert not np.any(grid.occupied(layer.weight) & (layer.tile_mask == 0))  # pruned tiles hold zeros
        pixels = layer.out_shape[1] * layer.out_shape[2]
        assert row["ideal_mac_cycles"] == math.ceil(np.count_nonzero(layer.weight) * pixels / spec.lanes)
    assert network.network_deployment(SMALL, spec).layers[0].weight.tobytes() == dep.layers[0].weight.tobytes()


def test_winograd_network_and_what_the_engine_cannot_run(tmp_path, capsys):
    dep = network.network_deployment({**SMALL, "winograd_density": 0.3}, WINOGRAD)
    assert [l.kind for l in dep.layers] == ["winograd_conv2d"] * 2 + ["maxpool2d", "winograd_conv2d", "linear"]
    u = np.concatenate([l.weight.ravel() for l in dep.layers if l.kind == "winograd_conv2d"])
    assert 0.2 < np.count_nonzero(u) / u.size < 0.4
    assert main(["simulate", str(RESNET18), "--spec", "winograd"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "layers[0] (conv2d)" in err and "3x3 stride-1" in err and "kernel 7 stride 2" in err


@pytest.mark.parametrize("change, message", [
    ({"layers": []}, "layers must be a non-empty list"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"input_shape": [1, 8]}, "input_shape must be a list of 3"),
    ({"tile_sparsity": 1.0}, "tile_sparsity must be a number in [0, 1)"),
    ({"layers": [{"type": "linear", "out_channels": 10}, {"type": "maxpool2d"}]}, "must be the last layer"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 20}]}, "gives an empty output"),
    ({"layers": [{"type": "attention"}]}, "layers[0].type must be a layer kind, one of conv2d, maxpool2d, linear, "
                                          "not 'attention'"),
    ({"layers": [{"kernel": 3}]}, "layers[0].type must be a layer kind, one of conv2d, maxpool2d, linear, not None"),
    ({"layers": ["conv2d"]}, "layers[0] must be an object with a type, one of conv2d, maxpool2d, linear"),
    # a network description speaks the Deployment's layer kinds and field names: the old words are refused
    ({"layers": [{"type": "conv", "out_channels": 4, "kernel": 3}]},
     "layers[0].type must be a layer kind, one of conv2d, maxpool2d, linear, not 'conv'"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "pool", "kernel": 2}]},
     "layers[1].type must be a layer kind, one of conv2d, maxpool2d, linear, not 'pool'"),
    ({"layers": [{"type": "linear", "out_features": 10}]},
     "layers[0] (linear): unknown field(s) out_features (a linear takes out_channels, repeat, type)"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "dilation": 2}]}, "unknown field(s) dilation"),
])
def test_bad_network_files_are_one_line_errors(tmp_path, capsys, change, message):
    assert main(["simulate", str(write(tmp_path, {**SMALL, **change}))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_layer_names_follow_the_kinds_and_positions():
    dep = network.network_deployment(SMALL, PE4X4)
    assert [l.name for l in dep.layers] == ["conv0", "conv1", "pool2", "conv3", "linear4"]
    assert network.layer_name("winograd_conv2d", 7) == "wconv7"


def test_synthetic_topologies_speak_the_layer_kinds():
    dep = random_deployment(WINOGRAD, seed=1, topology=(("winograd_conv2d", 2), ("maxpool2d", 2), ("linear", 3)),
                            input_shape=(1, 4, 4), linear_int_bits=8)
    assert [(l.kind, l.name) for l in dep.layers] == [("winograd_conv2d", "wconv0"), ("maxpool2d", "pool1"),
                                                      ("linear", "linear2")]
    for old in ("conv", "wconv", "pool"):
        with pytest.raises(ValueError, match=rf"topology\[0\]: kind '{old}' is not a layer kind"):
            random_deployment(PE4X4, topology=((old, 2), ("linear", 3)))


def test_retarget_a_model_to_another_array_and_clock(tmp_path, capsys):
    dep = random_deployment(PE8X8, seed=4, tile_sparsity=0.5)
    path = tmp_path / "m.terwin"
    fileformat.save(dep, path)
    same = json.loads(json.dumps(cycles.predict(dep)))
    out = tmp_path / "s.json"
    assert main(["simulate", str(path), "--spec", "pe8x8", "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == same  # the model's own array: its masks are kept as they are

    from terwin.commands.simulate import retarget
    small = retarget(dep, PE4X4)
    x = np.random.default_rng(0).integers(0, 256, size=(3, 1, 8, 8))
    assert np.array_equal(reference.forward(small, x), reference.forward(dep, x))  # same arithmetic
    for layer in small.weighted_layers:
        assert np.array_equal(layer.tile_mask.astype(bool), layer.tile_grid(PE4X4).occupied(layer.weight))
    rep = cycles.predict(small)
    assert rep["spec"]["pe_rows"] == 4 and rep["ideal_mac_cycles"] > same["ideal_mac_cycles"]

    spec = tmp_path / "fast.json"
    spec.write_text(PE8X8.replace(clock_mhz=48.0).to_json())
    assert main(["simulate", str(path), "--spec", str(spec), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images_per_s"] == 2 * same["images_per_s"]  # exact: doubling is exact in binary

    capsys.readouterr()
    spec.write_text(PE8X8.replace(act_bits=6).to_json())
    assert main(["simulate", str(path), "--spec", str(spec)]) == 2
    assert "compressed with act_bits=8" in capsys.readouterr().err
