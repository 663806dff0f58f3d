"""`terwin compress --family winograd` end to end (tiny epochs): report, statistics, file round-trip, inspect, CLI."""
import json
import math

import numpy as np
import pytest

from terwin import cli, fileformat
from terwin.algo import torch_int
from terwin.algo.data import load_digits_split
from terwin.algo.winograd.flow import WinogradOptions, compress
from terwin.deployment import Linear, MaxPool2d, WinogradConv2d
from terwin.errors import TerwinError
from terwin.sim import reference
from terwin.spec import PE8X8, WINOGRAD

TINY = 0.05  # every stage runs 1-2 epochs
REPORT_KEYS = {"family", "spec", "seed", "options", "float_accuracy", "accuracy", "accuracy_drop_points",
               "fake_quant_accuracy", "sparsity", "sparsity_measure", "compression_ratio", "reference_mismatches",
               "test_images", "epochs", "train_seconds", "numerics", "winograd"}
FAMILY_KEYS = {"mode", "spatial_sparsity", "mult_reduction", "placement", "layers", "accumulator_bits"}


@pytest.fixture(scope="module")
def liu():
    return compress(WinogradOptions(epochs_scale=TINY, winograd_sparsity=0.65, quiet=True))


@pytest.fixture(scope="module")
def joint():
    return compress(WinogradOptions(mode="joint", epochs_scale=TINY, spatial_sparsity=0.5, winograd_sparsity=0.6,
                                    quiet=True))


def _expected_mults(dep):
    direct = wino = 0
    for layer in dep.layers:
        if isinstance(layer, WinogradConv2d):
            o, ho, wo = layer.out_shape
            direct += 9 * layer.in_shape[0] * o * ho * wo
            wino += np.count_nonzero(layer.weight) * math.ceil(ho / 2) * math.ceil(wo / 2)
    return direct, wino


@pytest.mark.parametrize("which", ["liu", "joint"])
def test_compress_report_and_model(which, request):
    dep, report = request.getfixturevalue(which)
    assert REPORT_KEYS <= set(report), sorted(REPORT_KEYS - set(report))
    assert FAMILY_KEYS <= set(report["winograd"]), sorted(FAMILY_KEYS - set(report["winograd"]))
    assert report["family"] == "winograd" and report["sparsity_measure"] == "winograd_sparsity"
    assert report["options"]["mode"] == which and report["winograd"]["mode"] == which
    assert dep.meta == {"family": "winograd", "mode": which}
    assert dep.spec == WINOGRAD and dep.input_scale == 1 / 16
    assert [type(layer) for layer in dep.layers] == [WinogradConv2d, WinogradConv2d, MaxPool2d, WinogradConv2d,
                                                     MaxPool2d, Linear]
    assert report["reference_mismatches"] == 0 and report["test_images"] == 450
    target = 0.65 if which == "liu" else 0.6
    zeros = sum(layer.weight.size - np.count_nonzero(layer.weight) for layer in dep.layers
                if isinstance(layer, WinogradConv2d))
    total = sum(layer.weight.size for layer in dep.layers if isinstance(layer, WinogradConv2d))
    assert report["sparsity"] == zeros / total >= target - 1e-3
    direct, wino = _expected_mults(dep)
    assert report["winograd"]["mult_reduction"] == pytest.approx(direct / wino)
    # even output sizes: mult_reduction = 2.25 / (1 - s) when every layer has the same sparsity
    assert report["winograd"]["mult_reduction"] >= 2.25 / (1 - target) * 0.99
    # accuracy is the reference's on the test split (well above chance even after 1-2 epochs per stage)
    split = load_digits_split()
    q = reference.quantize_input(dep, split.x_test)
    assert report["accuracy"] == pytest.approx(float((reference.predict(dep, q) == split.y_test).mean()))
    assert report["accuracy"] > 0.5
    assert [row["runs_on"].split(":")[0] for row in report["winograd"]["placement"][:2]] == ["Winograd engine"] * 2
    json.dumps(report)  # the report is JSON-serialisable


def test_joint_mode_reports_spatial_sparsity(joint, liu):
    dep, report = joint
    assert report["winograd"]["spatial_sparsity"] == pytest.approx(0.5)
    assert report["options"]["spatial_sparsity"] == 0.5 and "joint_coefficients" in report["winograd"]
    assert liu[1]["winograd"]["spatial_sparsity"] is None  # Liu mode has no spatial kernels left


def test_file_round_trip_keeps_every_bit(liu, tmp_path):
    dep, _ = liu
    path = tmp_path / "model.terwin"
    fileformat.save(dep, path)
    back = fileformat.load(path)
    assert back.spec == dep.spec and back.meta == dep.meta and back.input_scale == dep.input_scale
    for a, b in zip(dep.layers, back.layers):
        assert type(a) is type(b) and a.name == b.name
        for field in ("weight", "bias", "multiplier", "shift"):
            if hasattr(a, field):
                assert np.array_equal(getattr(a, field), getattr(b, field)), f"{a.name}.{field}"
        if isinstance(a, WinogradConv2d):
            assert (a.tile, a.weight_bits, a.padding) == (b.tile, b.weight_bits, b.padding)
            assert a.weight_scale == pytest.approx(b.weight_scale)
    q = np.random.default_rng(0).integers(0, 17, size=(20, 1, 8, 8))
    assert np.array_equal(reference.forward(dep, q), reference.forward(back, q))
    assert np.array_equal(torch_int.forward(back, q).numpy(), reference.forward(dep, q))


def test_inspect_shows_the_winograd_layers(liu, tmp_path, capsys):
    dep, report = liu
    path = tmp_path / "model.terwin"
    fileformat.save(dep, path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "winograd_conv2d" in line]
    assert len(rows) == 3, out
    assert "family winograd" in out
    conv1 = dep.layers[1]
    assert f"{np.count_nonzero(conv1.weight)}" in rows[1]


def test_cli_compress_writes_model_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["compress", "--family", "winograd", "--mode", "liu", "--winograd-sparsity", "0.6",
                   "--winograd-epochs-scale", str(TINY), "--weight-bits", "6", "--quiet", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "compress.json").read_text())
    for key in REPORT_KEYS | {"checksum"}:
        assert key in report, key
    assert report["family"] == "winograd" and report["winograd"]["weight_bits"] == 6
    assert report["spec"]["winograd_weight_bits"] == 6 and report["reference_mismatches"] == 0
    dep = fileformat.load(out / "model.terwin")
    assert dep.spec.winograd_weight_bits == 6
    wl = [layer for layer in dep.layers if isinstance(layer, WinogradConv2d)]
    assert all(layer.weight_bits == 6 and np.abs(layer.weight).max() <= 31 for layer in wl)
    assert "model.terwin" in capsys.readouterr().out


def test_bad_options_are_one_line_user_errors(tmp_path, capsys):
    with pytest.raises(TerwinError, match="--weight-bits"):
        compress(WinogradOptions(weight_bits=20))
    with pytest.raises(TerwinError, match="--winograd-sparsity"):
        WinogradOptions(winograd_sparsity=1.0)
    with pytest.raises(TerwinError, match="weight_format"):
        compress(WinogradOptions(spec=PE8X8))
    assert cli.main(["compress", "--family", "winograd", "--winograd-sparsity", "1.5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "fraction in [0, 1)" in err and err.count("\n") == 1, err


def test_compress_is_deterministic_for_a_seed():
    options = WinogradOptions(epochs_scale=0.02, winograd_sparsity=0.5, quiet=True)
    a, ra = compress(options)
    b, rb = compress(options)
    for la, lb in zip(a.layers, b.layers):
        if hasattr(la, "weight"):
            assert np.array_equal(la.weight, lb.weight) and np.array_equal(la.bias, lb.bias)
    assert ra["accuracy"] == rb["accuracy"]


def test_narrow_activations_quantize_the_input_without_clamping():
    """4-bit activations: the model's input scale is 1/15 (pixel 16 -> code 15, none clamped), and the
    net's input quantizer is on in quantization-aware training, so the integer model sees what it did."""
    spec = WINOGRAD.replace(act_bits=4)
    seen = {}

    def capture(net, dep, data):
        seen["enabled"], seen["scale"] = net.input_quant.enabled, net.input_quant.scale
    dep, rep = compress(WinogradOptions(spec=spec, epochs_scale=TINY, winograd_sparsity=0.65, quiet=True),
                        on_export=capture)
    assert dep.input_scale == 1 / 15 and seen == {"enabled": True, "scale": 1 / 15}
    x = load_digits_split(4).x_test
    q = reference.quantize_input(dep, x)
    assert q.max() == 15 and np.array_equal(q, np.floor(x * 15 + 0.5)), "no pixel clamped"
    assert rep["reference_mismatches"] == 0
