"""The integer path of the Winograd family: quantizers, export, torch integer evaluation == sim.reference."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from terwin import intmath
from terwin.algo import torch_int
from terwin.algo.data import INPUT_SCALE, load_digits_split
from terwin.algo.quant import PerChannelQuant, calibrate_activations
from terwin.algo.winograd.export import accumulator_bound, export
from terwin.algo.winograd.masks import WinogradMagnitudePruner, linear_prune
from terwin.algo.winograd.nn import WinogradNet
from terwin.deployment import Linear, MaxPool2d, WinogradConv2d
from terwin.sim import reference
from terwin.spec import WINOGRAD
from terwin.synthetic import random_deployment

WTOPO = (("winograd_conv2d", 16), ("winograd_conv2d", 32), ("maxpool2d", 2), ("winograd_conv2d", 32), ("maxpool2d", 2),
         ("linear", 10))


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def _quantized_net(x_calib, *, bits=8, sparsity=0.6, seed=0, mode="winograd"):
    """An untrained but pruned, calibrated and fake-quantized net: enough to exercise the export."""
    torch.manual_seed(seed)
    net = WinogradNet()
    if mode == "winograd":
        net.set_mode("winograd")
        WinogradMagnitudePruner()(net, sparsity)
    linear_prune(net, 0.5)
    calibrate_activations(net, x_calib)
    for conv in net.convs():
        conv.weight_quant = PerChannelQuant(bits)
    for fc in net.linears():
        fc.weight_quant = PerChannelQuant(8)
    net.eval()
    return net


@pytest.mark.parametrize("bits", [2, 4, 6, 8, 12])
def test_per_channel_quantizer_codes_fill_the_signed_range(bits):
    torch.manual_seed(bits)
    w = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    w[2] = 0.0  # an all-zero channel quantizes to zeros, not NaN
    quant = PerChannelQuant(bits)
    q, s = quant.codes(w)
    qmax = (1 << (bits - 1)) - 1
    assert torch.equal(q, q.round()) and q.abs().max() == qmax
    assert torch.all(q[2] == 0) and s[2] == 1.0
    for o in (0, 1, 3, 4):
        assert q[o].abs().max() == qmax, "the largest weight of each channel maps to the top code"
        assert s[o].item() == pytest.approx(w[o].abs().max().item() / qmax)
    # fake quantization is codes * scale, and its error is at most half a step
    fq = quant(w)
    torch.testing.assert_close(fq, q * s.view(-1, 1, 1, 1))
    assert torch.all((fq - w).abs() <= s.view(-1, 1, 1, 1) / 2 + 1e-12)


def test_quantizer_gradient_is_straight_through():
    w = torch.randn(4, 2, 4, 4, requires_grad=True)
    PerChannelQuant(8)(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), h=st.integers(3, 9), w=st.integers(3, 9), c=st.integers(1, 3),
       density=st.floats(0.1, 0.9))
def test_torch_integer_evaluation_equals_reference_on_random_models(seed, h, w, c, density):
    """Odd sizes, partial tiles, every Winograd-domain value of the 8-bit range."""
    topo = (("winograd_conv2d", 16), ("winograd_conv2d", 16), ("maxpool2d", 2), ("linear", 10))
    dep = random_deployment(WINOGRAD, seed=seed, topology=topo, input_shape=(c, h, w), winograd_density=density,
                            calibration_images=8)
    q = np.random.default_rng(seed).integers(0, 256, size=(6, c, h, w))
    ref_trace = reference.trace(dep, q)
    tor_trace = torch_int.trace(dep, q)
    for layer, a, b in zip(dep.layers, ref_trace, tor_trace):
        assert np.array_equal(a, b.numpy()), f"{layer.name}: max |diff| {np.abs(a - b.numpy()).max()}"


def test_torch_integer_evaluation_of_direct_conv_layers_equals_reference():
    """Non-Winograd layers (direct conv, linear) follow the same integer contract."""
    topo = (("conv2d", 16), ("maxpool2d", 2), ("winograd_conv2d", 16), ("linear", 10))
    dep = random_deployment(WINOGRAD, seed=5, topology=topo, input_shape=(1, 7, 7))
    q = np.random.default_rng(5).integers(0, 256, size=(10, 1, 7, 7))
    assert np.array_equal(reference.forward(dep, q), torch_int.forward(dep, q).numpy())


def test_torch_requantizer_is_the_integer_contract():
    rng = np.random.default_rng(0)
    acc = rng.integers(-(1 << 30), 1 << 30, size=(3, 4, 5, 5))
    bias = rng.integers(-1000, 1000, size=4)
    mult = rng.integers(-(1 << 15), 1 << 15, size=4)
    shift = rng.integers(1, 40, size=4)
    want = intmath.requantize(acc.transpose(1, 0, 2, 3), bias, mult, shift, act_bits=8).transpose(1, 0, 2, 3)
    got = torch_int.requantize(torch.tensor(acc), bias, mult, shift, act_bits=8)
    assert np.array_equal(got.numpy(), want)


@pytest.mark.parametrize("bits", [8, 6])
def test_export_layers_ranges_and_reference_equality_on_every_test_image(digits, bits):
    spec = WINOGRAD if bits == 8 else WINOGRAD.replace(winograd_weight_bits=bits)
    net = _quantized_net(torch.from_numpy(digits.x_train[:256]), bits=bits)
    dep = export(net, spec, input_scale=INPUT_SCALE, meta={"family": "winograd", "mode": "liu"})
    kinds = [type(layer) for layer in dep.layers]
    assert kinds == [WinogradConv2d, WinogradConv2d, MaxPool2d, WinogradConv2d, MaxPool2d, Linear]
    qmax = (1 << (bits - 1)) - 1
    for layer in dep.layers:
        if isinstance(layer, WinogradConv2d):
            assert layer.weight_bits == bits and layer.tile == 2 and layer.weight.shape[2:] == (4, 4)
            assert np.abs(layer.weight).max() == qmax
            assert np.count_nonzero(layer.weight) <= round(0.4 * layer.weight.size)
            assert len(layer.weight_scale) == layer.out_channels and layer.relu
            assert accumulator_bound(layer, spec) < 1 << 40
    fc = dep.layers[-1]
    assert not fc.relu and fc.weight_code == "int" and fc.weight_bits == 8 and fc.tile_mask is None
    assert np.count_nonzero(fc.weight) <= fc.weight.size // 2
    q = reference.quantize_input(dep, digits.x_test)
    assert np.array_equal(q, np.round(digits.x_test * 16).astype(np.int64)), "input scale 1/16: q = pixel"
    ref = reference.forward(dep, q)
    tor = torch_int.forward(dep, q).numpy()
    mismatches = int((ref != tor).any(axis=1).sum())
    assert mismatches == 0 and ref.shape == (450, 10)


def test_integer_model_tracks_the_fake_quantized_torch_model(digits):
    """The requantizer reproduces the fake-quantized activations (up to rare bias/multiplier rounding)."""
    x = torch.from_numpy(digits.x_test[:100])
    net = _quantized_net(torch.from_numpy(digits.x_train[:256]))
    dep = export(net, WINOGRAD, input_scale=INPUT_SCALE)
    q = reference.quantize_input(dep, digits.x_test[:100])
    int_act = reference.trace(dep, q)[0]
    with torch.no_grad():
        fq_act = net.acts[0](torch.relu(net.layers[0](x))) / net.acts[0].scale
    fq_codes = torch.floor(fq_act + 0.5).numpy().astype(np.int64)
    agree = (np.abs(int_act - fq_codes) <= 0).mean()
    off_by_more = (np.abs(int_act - fq_codes) > 1).sum()
    assert agree >= 0.99 and off_by_more == 0, f"agree {agree}, off by > 1: {off_by_more}"
    with torch.no_grad():
        fq_logits = net(x).numpy()
    int_logits = reference.forward(dep, q)
    assert (fq_logits.argmax(1) == int_logits.argmax(1)).mean() >= 0.95


def test_accumulator_bound_holds_and_is_reached_by_the_worst_input():
    rng = np.random.default_rng(0)
    dep = random_deployment(WINOGRAD, seed=3, topology=(("winograd_conv2d", 4), ("linear", 2)), input_shape=(3, 4, 4))
    layer = dep.layers[0]
    bound = accumulator_bound(layer, WINOGRAD)
    worst = 0
    for _ in range(200):
        q = rng.choice([0, 255], size=(8, 3, 4, 4))
        worst = max(worst, int(np.abs(reference.layer_acc(layer, q)).max()))
    assert worst + int(np.abs(layer.bias).max()) <= bound
    assert worst > bound // 8, "the bound should not be absurdly loose"


def test_export_rejects_an_uncalibrated_or_mismatched_model(digits):
    torch.manual_seed(0)
    net = WinogradNet()
    with pytest.raises(ValueError, match="not calibrated"):
        export(net, WINOGRAD, input_scale=INPUT_SCALE)
    net = _quantized_net(torch.from_numpy(digits.x_train[:64]))
    with pytest.raises(ValueError, match="weight_format"):
        export(net, WINOGRAD.replace(weight_format="ternary"), input_scale=INPUT_SCALE)
