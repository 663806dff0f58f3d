"""Export of the ternary family: structure, requantization semantics, file round trip, flow and CLI."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from terwin import fileformat
from terwin.algo import torch_int
from terwin.algo.data import INPUT_SCALE, load_digits_split
from terwin.algo.results import evaluate_deployment
from terwin.algo.ternary.export import export_ternary
from terwin.algo.ternary.flow import Schedule, TernaryOptions, compress, kept_tile_stats, train_ternary
from terwin.algo.ternary.net import ConvBlock
from terwin.algo.train import Tensors
from terwin.cli import main
from terwin.deployment import Conv2d, Linear, MaxPool2d
from terwin.errors import TerwinError
from terwin.sim import reference
from terwin.spec import PE4X4, PE8X8, WINOGRAD
from terwin.stats import model_stats

TINY = Schedule(float_epochs=2, joint_epochs=2, finetune_epochs=2)


@pytest.fixture(scope="module")
def data(digits_tensors):
    return digits_tensors


@pytest.fixture(scope="module")
def trained(data):
    t = train_ternary(TernaryOptions(spec=PE8X8, schedule=TINY, tile_sparsity=0.75, ternary_threshold=0.05,
                                     zero_budget=0.04, regularizer="wpc", seed=0, quiet=True), data)
    dep = export_ternary(t.model, PE8X8, tile_masks=t.pruner.tile_masks(), meta={"seed": 0})
    return t, dep


def test_structure(trained):
    t, dep = trained
    assert dep.meta["family"] == "ternary" and dep.input_scale == INPUT_SCALE
    kinds = [type(layer) for layer in dep.layers]
    assert kinds == [Conv2d, Conv2d, MaxPool2d, Conv2d, MaxPool2d, Linear]
    assert dep.output_shape == (10, 1, 1)
    masks = t.pruner.tile_masks()
    for layer in dep.weighted_layers:
        assert layer.weight.dtype == np.int8 and set(np.unique(layer.weight)) <= {-1, 0, 1}
        assert layer.bias.dtype == np.int64 and len(layer.weight_scale) == 1 and layer.weight_scale[0] > 0
        grid = layer.tile_grid(dep.spec)
        # the exported mask is the pruner's, minus kept tiles that ternarized to all zeros
        assert np.all(layer.tile_mask <= masks[layer.name])
        assert np.array_equal(layer.tile_mask.astype(bool), grid.occupied(layer.weight))
    assert [layer.relu for layer in dep.weighted_layers] == [True, True, True, False]
    stats = model_stats(dep)["totals"]
    assert stats["tile_sparsity"] >= 0.75 - 1e-9
    assert stats["compression_ratio"] >= 48, stats["compression_ratio"]


def test_integer_layers_follow_the_fake_quantized_model(trained, data):
    """Layer by layer, the integer activations equal the float model's quantized activations within
    one unit (the bias rounds to accumulator units, the multiplier to 16 bits): this checks BN
    folding, scales and bias units. Without `sync_activation_scales` conv1 would be off by ~3."""
    t, dep = trained
    model = t.model
    x = data.x_test[:64]
    ints = torch_int.trace(dep, torch_int.quantize_input(dep, x.numpy()))
    prev, scale = torch_int.quantize_input(dep, x.numpy()), dep.input_scale
    conv_index = 0
    for block, layer, q in zip(model.blocks, dep.layers, ints):
        # the float block, fed with the integer model's own input to this layer
        with torch.no_grad():
            h = block(prev.double().float() * scale)
        if isinstance(block, ConvBlock):
            scale = block.act.scale
            expected = torch.round(h / scale).to(torch.int64)
            diff = (q - expected).abs()
            assert int(diff.max()) <= 1, f"{layer.name}: integer output off by {int(diff.max())}"
            assert float((diff > 0).float().mean()) < 0.25, f"{layer.name}: {float((diff > 0).float().mean()):.3f} differ"
            conv_index += 1
        prev = q
    # raw scores: acc + bias in units of alpha * s_in
    fc = dep.layers[-1]
    s_in = model.blocks[3].act.scale
    scores = ints[-1].reshape(len(x), -1).double() * fc.weight_scale[0] * s_in
    with torch.no_grad():
        logits = model.blocks[-1](ints[-2].float() * s_in).double()
    # only the bias rounding (half an accumulator unit) separates them
    err = float((scores - logits).abs().max())
    assert err <= 0.5 * fc.weight_scale[0] * s_in * 1.001 + 1e-5, err
    assert conv_index == 3


def test_file_round_trip(trained, tmp_path):
    _, dep = trained
    path = tmp_path / "model.terwin"
    digest = fileformat.save(dep, path)
    back = fileformat.load(path)
    assert fileformat.checksum(back) == digest
    assert back.spec == dep.spec and back.input_scale == dep.input_scale and back.meta == dep.meta
    for a, b in zip(dep.layers, back.layers):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if isinstance(va, np.ndarray):
                assert np.array_equal(va, vb), f"{a.name}.{f.name} changed in the file"
            else:
                assert va == vb or (isinstance(va, tuple) and tuple(va) == tuple(vb)), f"{a.name}.{f.name}"
    q = np.random.default_rng(0).integers(0, 17, size=(20, 1, 8, 8))
    assert np.array_equal(reference.forward(back, q), torch_int.forward(dep, q).numpy())


def test_kept_tile_statistics_by_hand(trained):
    _, dep = trained
    stats = kept_tile_stats(dep)
    slots = nonzero = 0
    for layer in dep.weighted_layers:
        px = layer.out_shape[1] * layer.out_shape[2]
        slots += int(layer.tile_mask.sum()) * 64 * px
        nonzero += int(np.count_nonzero(layer.weight)) * px
    assert stats["mac_cycle_ratio"] == pytest.approx(slots / nonzero)
    conv1 = stats["layers"]["conv1"]
    w = dep.layers[0].weight
    assert conv1["zero_fraction_in_kept_tiles"] == pytest.approx(float(np.mean(w == 0)))  # dense layer: every tile kept


def test_zero_budget_holds_in_the_export(trained):
    _, dep = trained
    stats = kept_tile_stats(dep)
    for name in ("conv2", "conv3"):  # conv1 (dense) and fc (one output pixel) are exempt by default
        assert stats["layers"][name]["zero_fraction_in_kept_tiles"] <= 0.04 + 0.005, stats["layers"][name]


def test_report_of_compress(data):
    dep, report = compress(TernaryOptions(spec=PE4X4, schedule=TINY, tile_sparsity=0.5, regularizer="group-lasso",
                                          seed=1, quiet=True))
    for key in ("family", "spec", "seed", "options", "float_accuracy", "accuracy", "accuracy_drop_points",
                "fake_quant_accuracy", "sparsity", "sparsity_measure", "compression_ratio", "weight_bits_stored",
                "requant_bits", "test_images", "reference_mismatches", "epochs", "train_seconds", "numerics",
                "ternary"):
        assert key in report, key
    figures = report["ternary"]
    for key in ("accuracy_before_prune", "accuracy_after_prune", "tile_sparsity", "layers",
                "zero_fraction_in_kept_tiles", "mac_cycle_ratio"):
        assert key in figures, key
    assert report["family"] == "ternary" and report["sparsity_measure"] == "tile_sparsity"
    assert report["sparsity"] == figures["tile_sparsity"]
    assert report["reference_mismatches"] == 0 and report["test_images"] == 450
    assert report["options"]["regularizer"] == "group-lasso" and dep.spec == PE4X4 and report["seed"] == 1
    again = evaluate_deployment(dep, data)
    assert again["accuracy"] == report["accuracy"] and kept_tile_stats(dep)["mac_cycle_ratio"] == figures["mac_cycle_ratio"]
    totals = model_stats(dep)["totals"]
    assert report["compression_ratio"] == totals["compression_ratio"]
    assert set(figures["layers"]) == {"conv1", "conv2", "conv3", "fc"}
    # every choice was made on the 135 validation images carved from the 1,347 training images
    validation = figures["validation"]
    assert validation["images"] == 135 and 1 <= validation["float_epoch"] <= 2
    # fine-tuning exports the mean of its last epochs (Schedule.average, both of the 2 here)
    assert validation["averaged_epochs"] == [1, 2] and 0 <= validation["accuracy"] <= 1
    json.dumps(report)  # the CLI writes it as JSON


def test_training_needs_a_validation_split():
    with pytest.raises(ValueError, match="validation"):
        train_ternary(TernaryOptions(spec=PE8X8, schedule=TINY, quiet=True),
                      Tensors.from_split(load_digits_split()))


def test_deterministic(data):
    options = TernaryOptions(tile_sparsity=0.5, regularizer="wpc", seed=5, quiet=True,
                             schedule=Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=1))
    a, _ = compress(options)
    b, _ = compress(options)
    assert fileformat.checksum(a) == fileformat.checksum(b)


@pytest.mark.parametrize("bad, match", [
    (dict(tile_sparsity=1.0), "--tile-sparsity"),
    (dict(tile_sparsity=-0.1), "--tile-sparsity"),
    (dict(regularizer="l1"), "--regularizer"),
    (dict(ternary_threshold=2.0), "--ternary-threshold"),
    (dict(zero_budget=1.5), "--zero-budget"),
    (dict(epochs_scale=0), "--ternary-epochs-scale"),
])
def test_bad_options_are_user_errors(bad, match):
    with pytest.raises(TerwinError, match=match):
        TernaryOptions(**{"tile_sparsity": 0.5, "regularizer": "wpc", "seed": 0, "quiet": True, **bad})


def test_a_spec_of_another_engine_is_a_user_error():
    with pytest.raises(TerwinError, match="weight_format"):
        compress(TernaryOptions(spec=WINOGRAD, quiet=True))


def test_cli_compress(tmp_path, capsys, cli_compress):
    report, dep = cli_compress(tmp_path / "run", "--family", "ternary", "--tile-sparsity", "0.75",
                               "--ternary-epochs-scale", "0.05")
    assert report["checksum"] == fileformat.checksum(dep)
    assert report["reference_mismatches"] == 0 and report["sparsity"] >= 0.75
    assert dep.meta["family"] == "ternary" and dep.spec == PE8X8
    capsys.readouterr()
    rc = main(["compress", "--family", "ternary", "--tile-sparsity", "1.2", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--tile-sparsity must lie in [0, 1)" in err, err


def test_narrow_activations_quantize_the_input_without_clamping():
    """3-bit activations: the model's input scale is 1/7 (pixel 16 -> code 7, none clamped), the net
    trained with that input quantizer, and the integer model agrees with the reference."""
    spec = dataclasses.replace(PE8X8, act_bits=3)
    dep, report = compress(TernaryOptions(spec=spec, schedule=Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=1),
                                          tile_sparsity=0.5, seed=0, quiet=True))
    assert dep.input_scale == 1 / 7 and report["reference_mismatches"] == 0
    x = load_digits_split(3).x_test
    assert np.array_equal(reference.quantize_input(dep, x), np.floor(x * 7 + 0.5)), "no pixel clamped"
