"""Network descriptions (`terwin.network`) and `terwin simulate` on them and on re-targeted models."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from terwin import fileformat, network
from terwin.cli import main
from terwin.errors import TerwinError
from terwin.sim import cycles, reference
from terwin.spec import PE4X4, PE8X8, PE8X16, WINOGRAD
from terwin.synthetic import random_deployment

RESNET18 = Path(__file__).parents[1] / "examples" / "resnet18.json"
SMALL = {"input_shape": [2, 12, 12], "tile_sparsity": 0.25, "seed": 3,
         "layers": [{"type": "conv2d", "out_channels": 12, "kernel": 3, "padding": 1, "repeat": 2},
                    {"type": "maxpool2d", "kernel": 2},
                    {"type": "conv2d", "out_channels": 20, "kernel": 3, "padding": 1},
                    {"type": "linear", "out_channels": 10}]}


TYPES = "one of conv2d, maxpool2d, avgpool2d, linear (layer kinds) or residual (a block)"


def write(tmp_path, data, name="net.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_resnet18_description_is_resnet18():
    # (speed is a benchmark's business: benchmarks/simulate_speed.py times the build and the cycle model)
    dep = network.load_network(RESNET18, PE8X8)
    layers = dep.layers
    assert len(layers) == 23 and dep.format_version == 2 and dep.output_shape == (1000, 1, 1)
    assert sum(l.weight.size for l in dep.weighted_layers) == 11_678_912  # ResNet-18's conv and fc weights
    stem, pool = layers[:2]
    assert (stem.kernel, stem.stride, stem.padding, stem.out_shape) == (7, 2, 3, (64, 112, 112))
    assert (pool.kind, pool.kernel, pool.stride, pool.out_shape) == ("maxpool2d", 3, 2, (64, 55, 55))  # unpadded
    adds = [l for l in layers if getattr(l, "residual", None) is not None]
    assert [l.out_shape for l in adds] == [(64, 55, 55)] * 2 + [(128, 28, 28)] * 2 + [(256, 14, 14)] * 2 + \
        [(512, 7, 7)] * 2
    projections = [l for l in layers if l.name.startswith("proj")]
    assert [(p.kernel, p.stride, p.relu, p.out_shape[0]) for p in projections] == \
        [(1, 2, False, 128), (1, 2, False, 256), (1, 2, False, 512)]
    assert [a.residual for a in adds[2::2]] == [p.name for p in projections]  # projections at stage starts
    gap, fc = layers[-2:]
    assert (gap.kind, gap.kernel, gap.stride, gap.out_shape) == ("avgpool2d", 7, 7, (512, 1, 1))
    assert (fc.kind, fc.relu, fc.in_shape) == ("linear", False, (512, 1, 1))


def test_resnet18_example_through_the_cli(tmp_path, capsys):
    dep = network.load_network(RESNET18, PE8X8)
    report = cycles.predict(dep)
    out = tmp_path / "r18.json"
    assert main(["simulate", str(RESNET18), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep == json.loads(json.dumps(report))
    assert [l["name"] for l in rep["layers"]] == [l.name for l in dep.layers]
    assert rep["cycles"] >= rep["ideal_mac_cycles"] > 0 and rep["spec"]["pe_cols"] == 8
    assert "images/s" in capsys.readouterr().out


RESIDUAL = {"input_shape": [3, 12, 12], "tile_sparsity": 0.25, "seed": 5,
            "layers": [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                       {"type": "residual", "out_channels": 8},
                       {"type": "residual", "out_channels": 16, "stride": 2, "repeat": 2},
                       {"type": "avgpool2d", "global": True},
                       {"type": "linear", "out_channels": 10}]}


def test_residual_blocks_are_resnet_basic_blocks(tmp_path):
    dep = network.network_deployment(RESIDUAL, PE4X4)
    graph = [(l.name, l.kind, src, getattr(l, "residual", None)) for l, src in zip(dep.layers, dep.sources())]
    assert graph == [("conv0", "conv2d", "@input", None),
                     ("conv1", "conv2d", "conv0", None), ("conv2", "conv2d", "conv1", "conv0"),    # identity
                     ("proj3", "conv2d", "conv2", None),                                           # projection,
                     ("conv4", "conv2d", "conv2", None), ("conv5", "conv2d", "conv4", "proj3"),    # stride 2
                     ("conv6", "conv2d", "conv5", None), ("conv7", "conv2d", "conv6", "conv5"),    # identity
                     ("avgpool8", "avgpool2d", "conv7", None), ("linear9", "linear", "avgpool8", None)]
    by = {l.name: l for l in dep.layers}
    assert [(by[n].kernel, by[n].stride, by[n].padding) for n in ("conv1", "proj3", "conv4", "conv5", "conv6")] == \
        [(3, 1, 1), (1, 2, 0), (3, 2, 1), (3, 1, 1), (3, 1, 1)]  # the stage's second block has stride 1
    assert not by["proj3"].relu and all(by[n].relu for n in ("conv2", "conv5", "conv7"))  # a signed map
    assert by["conv7"].out_shape == (16, 6, 6) and (by["avgpool8"].kernel, by["avgpool8"].stride) == (6, 6)
    assert by["avgpool8"].multiplier / 2 ** by["avgpool8"].shift == pytest.approx(1 / 36, rel=1e-4)
    assert by["conv4"].source == "conv2" and by["conv5"].source is None  # explicit only where not the previous
    path = tmp_path / "res.terwin"
    fileformat.save(dep, path)
    again = fileformat.load(path)
    assert again.format_version == 2 and again.sources() == dep.sources()


def test_the_reference_runs_a_residual_description():
    dep = network.network_deployment(RESIDUAL, PE4X4)
    x = np.random.default_rng(0).integers(0, 256, size=(2, 3, 12, 12))
    maps = dict(zip([l.name for l in dep.layers], reference.trace(dep, x)))
    by = {l.name: l for l in dep.layers}

    def acc(name, source):
        return reference.conv2d_acc(maps[source], by[name].weight, stride=by[name].stride, padding=by[name].padding)
    # placeholder requantization (bias 0, m 1, s 1): y = (acc + 2·r + 1) >> 1, the residual r at unit scale
    assert np.array_equal(maps["conv2"], np.clip((acc("conv2", "conv1") + 2 * maps["conv0"] + 1) >> 1, 0, 255))
    proj = np.clip((acc("proj3", "conv2") + 1) >> 1, -128, 127)
    assert np.array_equal(maps["proj3"], proj) and proj.min() < 0  # signed
    assert np.array_equal(maps["conv5"], np.clip((acc("conv5", "conv4") + 2 * proj + 1) >> 1, 0, 255))
    mean = maps["conv7"].mean(axis=(2, 3))
    assert np.abs(maps["avgpool8"][:, :, 0, 0] - mean).max() <= 0.51  # the rounded mean
    assert reference.forward(dep, x).shape == (2, 10)


def test_avgpool2d_kernel_and_stride():
    net = {"input_shape": [4, 12, 12], "layers": [{"type": "avgpool2d", "kernel": 3}, {"type": "avgpool2d"},
                                                  {"type": "avgpool2d", "kernel": 2, "stride": 1},
                                                  {"type": "linear", "out_channels": 2}]}
    dep = network.network_deployment(net, PE4X4)
    assert [(l.name, l.kernel, l.stride, l.out_shape) for l in dep.layers[:3]] == \
        [("avgpool0", 3, 3, (4, 4, 4)), ("avgpool1", 2, 2, (4, 2, 2)), ("avgpool2", 2, 1, (4, 1, 1))]
    x = np.random.default_rng(1).integers(0, 256, size=(3, 4, 12, 12))
    y = reference.trace(dep, x)[1]
    sums = reference.sumpool2d(reference.trace(dep, x)[0], kernel=2, stride=2)
    assert np.array_equal(y, (2 * sums + 4) // 8)  # 1/4 is exact: the mean rounded half up


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
    ({"layers": [{"type": "attention"}]}, f"layers[0].type must be {TYPES}, not 'attention'"),
    ({"layers": [{"kernel": 3}]}, f"layers[0].type must be {TYPES}, not None"),
    ({"layers": ["conv2d"]}, f"layers[0] must be an object with a type, {TYPES}"),
    # a network description speaks the Deployment's layer kinds and field names: the old words are refused
    ({"layers": [{"type": "conv", "out_channels": 4, "kernel": 3}]}, f"layers[0].type must be {TYPES}, not 'conv'"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "pool", "kernel": 2}]},
     f"layers[1].type must be {TYPES}, not 'pool'"),
    ({"layers": [{"type": "linear", "out_features": 10}]},
     "layers[0] (linear): unknown field(s) out_features (a linear takes out_channels, repeat, type)"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "dilation": 2}]}, "unknown field(s) dilation"),
    # residual blocks and average pools
    ({"layers": [{"type": "residual", "out_channels": 4, "kernel": 3}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (residual): unknown field(s) kernel (a residual takes out_channels, repeat, stride, type)"),
    ({"layers": [{"type": "residual"}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (residual).out_channels must be a positive integer, not None"),
    ({"layers": [{"type": "residual", "out_channels": 4, "stride": 0}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (residual).stride must be a positive integer, not 0"),
    ({"layers": [{"type": "residual", "out_channels": 4, "stride": 2.0}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (residual).stride must be a positive integer, not 2.0"),
    ({"layers": [{"type": "residual", "out_channels": 4, "repeat": 0}, {"type": "linear", "out_channels": 2}]},
     "layers[0].repeat must be a positive integer, not 0"),
    ({"layers": [{"type": "residual", "out_channels": 4}]},
     "layers[0] (residual): the last layer must be a conv2d or linear layer (the class scores)"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "avgpool2d", "global": True}]},
     "layers[1] (avgpool2d): the last layer must be a conv2d or linear layer (the class scores)"),
    ({"layers": [{"type": "linear", "out_channels": 4, "repeat": 2}]}, "layers[0] (linear): a linear layer must be "
                                                                        "the last layer"),
    ({"layers": [{"type": "avgpool2d", "global": "yes"}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (avgpool2d).global must be true or false, not 'yes'"),
    ({"layers": [{"type": "avgpool2d", "global": True, "kernel": 3}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (avgpool2d): a global average pool takes no kernel or stride"),
    ({"input_shape": [2, 12, 8],
      "layers": [{"type": "avgpool2d", "global": True}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (avgpool2d): a global average pool needs a square map, not 12x8"),
    ({"layers": [{"type": "avgpool2d", "kernel": 13}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (avgpool2d): input (2, 12, 12) gives an empty output (2, 0, 0)"),
    ({"layers": [{"type": "maxpool2d", "global": True}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (maxpool2d): unknown field(s) global (a maxpool2d takes kernel, repeat, stride, type)"),
    ({"layers": [{"type": "residual", "out_channels": 4, "repeat": 600}, {"type": "linear", "out_channels": 2}]},
     "layers: more than 1,024 layers in all"),  # 600 blocks: 1,201 layers, counted before any weight is drawn
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


# -- graph features on the Winograd engine: refused in one line naming the layer and the feature -------------


CHAIN = {"input_shape": [4, 8, 8], "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1,
                                               "repeat": 4}, {"type": "linear", "out_channels": 3}]}


def _graph(**changes):
    """The Winograd chain CHAIN with some layers' fields changed (by name), validated."""
    dep = network.network_deployment(CHAIN, WINOGRAD)
    layers = tuple(dataclasses.replace(l, **changes.get(l.name, {})) for l in dep.layers)
    return dep.replace(layers=layers).validate()


def test_the_winograd_engine_refuses_graph_features():
    from terwin.hw.winograd.program import compile_program
    m_r = {"residual_multiplier": np.full(4, 2)}
    compile_program(_graph(conv1={"source": "conv0"}))  # a source naming the previous layer is a chain
    cases = [
        (_graph(conv1={"source": "@input"}, conv2={"residual": "conv0", **m_r}),
         "layer conv1: the Winograd engine runs a chain of layers, each reading the one before it; "
         "this one reads @input (source)"),
        (_graph(conv2={"residual": "conv0", **m_r}),
         "layer conv2: the Winograd engine has no residual connections (residual conv0)"),
        (_graph(conv1={"relu": False}, conv2={"source": "conv0"}, conv3={"residual": "conv1", **m_r}),
         "layer conv1: the Winograd engine has no signed maps (relu false before the last layer: a projection "
         "shortcut)"),
    ]
    for dep, message in cases:
        with pytest.raises(TerwinError) as info:
            compile_program(dep)
        assert str(info.value) == message


def test_winograd_graph_refusals_through_the_cli(tmp_path, capsys):
    identity = {**CHAIN, "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
                                    {"type": "residual", "out_channels": 4}, {"type": "linear", "out_channels": 3}]}
    pooled = {**CHAIN, "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
                                  {"type": "avgpool2d", "global": True}, {"type": "linear", "out_channels": 3}]}
    for net, message in ((identity, "layer conv2: the Winograd engine has no residual connections (residual conv0)"),
                         (pooled, "layer avgpool1: the Winograd engine has no average pooling (avgpool2d)"),
                         ({**identity, "layers": [{"type": "residual", "out_channels": 8},
                                                  {"type": "linear", "out_channels": 3}]},
                          "layers[0] (residual): the Winograd engine runs 3x3 stride-1 convolutions only, not kernel "
                          "1 stride 1 (the block's projection shortcut)")):
        assert main(["simulate", str(write(tmp_path, net)), "--spec", "winograd"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    model = tmp_path / "pooled.terwin"
    fileformat.save(network.network_deployment(pooled, WINOGRAD), model)
    assert main(["generate", str(model), "--out", str(tmp_path / "rtl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layer avgpool1: the Winograd engine has no average pooling (avgpool2d)" in err
    assert not (tmp_path / "rtl").exists()


def test_inspect_shows_the_graph(tmp_path, capsys):
    path = tmp_path / "res.terwin"
    fileformat.save(network.network_deployment(RESIDUAL, PE4X4), path)
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "format v2" in lines[0] and lines[3].split()[:3] == ["layer", "kind", "reads"]
    rows = {line.split()[0]: line for line in lines[5:-1]}
    assert rows["conv2"].split()[:3] == ["conv2", "conv2d", "+conv0"]
    assert rows["proj3"].split()[:4] == ["proj3", "conv2d", "(signed)", "-"]
    assert rows["conv4"].split()[:3] == ["conv4", "conv2d", "conv2"]  # reads the block's input, not proj3
    assert rows["avgpool8"].split()[:4] == ["avgpool8", "avgpool2d", "-", "16x6x6"]
    assert main(["inspect", "--json", str(path)]) == 0
    stats = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    assert (stats["conv5"]["residual"], stats["conv4"]["source"], stats["proj3"]["signed"]) == ("proj3", "conv2", True)
    assert "source" not in stats["conv5"] and "weights" not in stats["avgpool8"]
    chain = tmp_path / "chain.terwin"
    fileformat.save(network.network_deployment(SMALL, PE4X4), chain)
    assert main(["inspect", str(chain)]) == 0
    assert "reads" not in capsys.readouterr().out  # a version-1 model's table is as it was
