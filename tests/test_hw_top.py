"""Controller sequencing: the whole ternary top in Amaranth's simulator, with random back-pressure on
both streams, against `terwin.sim.reference` (scores) and `terwin.sim.cycles` (per-layer cycles)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from terwin import intmath
from terwin.deployment import Conv2d, Deployment, Linear, MaxPool2d
from terwin.engines import build_top
from terwin.hw.common.sim import run_images
from terwin.network import layer_name
from terwin.sim import cycles, reference
from terwin.spec import PE4X4, PE8X8, PE8X16, HardwareSpec
from terwin.synthetic import random_deployment


def custom_deployment(spec, layers, *, input_shape, seed=0, tile_sparsity=0.4):
    """Layers: ("conv2d", out, kernel, stride, padding) | ("maxpool2d", kernel, stride) | ("linear", out)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, spec.act_max + 1, size=(16, *input_shape))
    shape, out_layers = tuple(input_shape), []
    for i, item in enumerate(layers):
        last = i == len(layers) - 1
        if item[0] == MaxPool2d.kind:
            layer = MaxPool2d(name=layer_name(item[0], i), in_shape=shape, kernel=item[1], stride=item[2])
        else:
            if item[0] == Conv2d.kind:
                _, out, k, stride, pad = item
                cls, extra, wshape = Conv2d, dict(kernel=k, stride=stride, padding=pad), (out, shape[0], k, k)
            else:
                out = item[1]
                cls, extra, wshape = Linear, {}, (out, int(np.prod(shape)))
            w = rng.integers(-1, 2, size=wshape).astype(np.int8)
            unit = dict(bias=np.zeros(out, dtype=np.int64), multiplier=np.ones(out, dtype=np.int64),
                        shift=np.ones(out, dtype=np.int64))
            proto = cls(name=layer_name(item[0], i), in_shape=shape, out_channels=out, weight=w, **extra, **unit)
            grid = proto.tile_grid(spec)
            mask = (rng.random(grid.shape) >= tile_sparsity).astype(np.uint8)
            w = (w * grid.expand(mask).reshape(wshape)).astype(np.int8)
            acc = reference.layer_acc(dataclasses.replace(proto, weight=w), x)
            bias = rng.integers(-50, 51, size=out).astype(np.int64)
            hi = np.maximum(np.percentile(acc, 95, axis=(0, 2, 3)), 1.0)
            ms = [intmath.fit_multiplier(spec.act_max / h) for h in hi]
            layer = dataclasses.replace(proto, weight=w, tile_mask=mask, bias=bias,
                                        multiplier=np.array([m for m, _ in ms], dtype=np.int64),
                                        shift=np.array([s for _, s in ms], dtype=np.int64), relu=not last)
        x = reference.run_layer(layer, x, act_bits=spec.act_bits)
        out_layers.append(layer)
        shape = layer.out_shape
    return Deployment(spec=spec, input_shape=input_shape, input_scale=1 / spec.act_max,
                      layers=tuple(out_layers)).validate()


def check_top(dep, *, images=2, pause=0.25, seed=0):
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(images, *dep.input_shape))
    scores, counts = run_images(build_top(dep), dep, q, seed=seed, pause=pause)
    want = reference.forward(dep, q)
    assert np.array_equal(scores, want), f"scores\n{scores}\n!= reference\n{want}"
    model = cycles.predict(dep)
    for image in counts:
        got = [(l["name"], l["cycles"], l["mac_cycles"]) for l in image["layers"]]
        exp = [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]
        assert got == exp, f"measured {got} != model {exp}"
        assert image["cycles"] == model["cycles"]
    return counts


@pytest.mark.parametrize("spec,kw", [
    (PE4X4, dict(seed=1, topology=(("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 10)),
                 input_shape=(1, 6, 6))),
    (PE8X8, dict(seed=2, topology=(("conv2d", 12), ("conv2d", 20), ("maxpool2d", 2), ("linear", 7)),
                 input_shape=(3, 6, 6))),
    (PE8X16, dict(seed=3, topology=(("conv2d", 20), ("maxpool2d", 2), ("conv2d", 12), ("linear", 5)),
                  input_shape=(2, 6, 6))),
    (HardwareSpec(pe_rows=1, pe_cols=4), dict(seed=5, topology=(("conv2d", 3), ("maxpool2d", 2), ("conv2d", 5),
                                                                ("linear", 4)), input_shape=(2, 6, 6))),
    (HardwareSpec(pe_rows=2, pe_cols=1), dict(seed=6, topology=(("conv2d", 3), ("conv2d", 2), ("linear", 3)),
                                             input_shape=(1, 5, 5))),
], ids=["pe4x4", "pe8x8", "pe8x16", "pe1x4", "pe2x1"])
def test_whole_network_with_back_pressure(spec, kw):
    check_top(random_deployment(spec, **kw))


def test_strides_padding_overlapping_pool_and_spatial_scores():
    dep = custom_deployment(PE8X8, [("conv2d", 9, 3, 2, 0), ("conv2d", 10, 1, 1, 0), ("maxpool2d", 3, 2),
                                    ("conv2d", 6, 2, 1, 1)], input_shape=(5, 11, 11), seed=5)
    check_top(dep)


def test_kernel_five_first_layer_and_wide_linear():
    dep = custom_deployment(PE8X16, [("conv2d", 17, 5, 1, 2), ("maxpool2d", 2, 2), ("linear", 3)],
                            input_shape=(1, 7, 7), seed=6)
    check_top(dep)


def test_fully_pruned_output_group_gives_bias_only_outputs():
    dep = custom_deployment(PE4X4, [("conv2d", 8, 3, 1, 1), ("linear", 6)], input_shape=(4, 4, 4), seed=7)
    conv = dep.layers[0]
    mask = conv.tile_mask.copy()
    mask[1] = 0  # the second output group (channels 4..7) loses every tile
    w = conv.weight * conv.tile_grid(dep.spec).expand(mask).astype(np.int8)
    dep = dep.replace(layers=(dataclasses.replace(conv, weight=w, tile_mask=mask),) + dep.layers[1:]).validate()
    counts = check_top(dep, images=1, pause=0.0)
    assert counts[0]["layers"][0]["mac_cycles"] == 16 * (int(mask[0].sum()) + 1)  # one all-zero pass


def test_tile_sparsity_cuts_mac_cycles():
    macs = {}
    for ts in (0.0, 0.75):
        dep = random_deployment(PE4X4, seed=8, tile_sparsity=ts,
                                topology=(("conv2d", 8), ("conv2d", 16), ("linear", 4)), input_shape=(1, 5, 5))
        macs[ts] = check_top(dep, images=1, pause=0.0)[0]
    dense = sum(l["mac_cycles"] for l in macs[0.0]["layers"])
    sparse = sum(l["mac_cycles"] for l in macs[0.75]["layers"])
    assert sparse < 0.5 * dense, (sparse, dense)


def test_network_ending_in_relu_and_pool_outputs_activations():
    """Found by the random-network test: the score memory took raw acc + bias even when the last
    layer ends in a ReLU (and a pool); it must hold the requantized, pooled activations."""
    spec = HardwareSpec(pe_rows=1, pe_cols=1, act_bits=4)
    dep = custom_deployment(spec, [("conv2d", 1, 1, 2, 0), ("maxpool2d", 2, 1)], input_shape=(1, 4, 4), seed=0,
                            tile_sparsity=0.0)
    assert dep.layers[0].relu and dep.layers[-1].kind == "maxpool2d"
    check_top(dep, images=3)
    dep = custom_deployment(PE4X4, [("conv2d", 6, 3, 1, 1), ("conv2d", 5, 3, 1, 0)], input_shape=(2, 6, 6), seed=3)
    check_top(dep.replace(layers=dep.layers[:-1] + (dataclasses.replace(dep.layers[-1], relu=True),)), images=2)


@st.composite
def _networks(draw):
    """A random spec and a random valid layer stack: kernels 1-5, strides 1-2, any padding up to k-1,
    overlapping or not pools, odd channel counts, a linear or a spatial conv at the end."""
    spec = HardwareSpec(pe_rows=draw(st.sampled_from([1, 2, 4, 8])), pe_cols=draw(st.sampled_from([1, 2, 4, 8])),
                        act_bits=draw(st.sampled_from([4, 8])))
    shape = (draw(st.integers(1, 5)), draw(st.integers(4, 9)), draw(st.integers(4, 9)))
    c, h, w = shape
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        if layers and layers[-1][0] == Conv2d.kind and min(h, w) >= 2 and draw(st.booleans()):
            k = draw(st.integers(2, min(3, h, w)))
            s = draw(st.integers(1, k))
            layers.append(("maxpool2d", k, s))
            h, w = (h - k) // s + 1, (w - k) // s + 1
        k = draw(st.sampled_from([1, 2, 3, 5]))
        pad = draw(st.integers(0, k - 1))
        if min(h, w) + 2 * pad < k:
            continue
        s = draw(st.integers(1, 2))
        out = draw(st.integers(1, 13))
        layers.append(("conv2d", out, k, s, pad))
        h, w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    if not layers or draw(st.booleans()):
        layers.append(("linear", draw(st.integers(1, 12))))
    return spec, layers, shape


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=_networks(), seed=st.integers(0, 1000), sparsity=st.sampled_from([0.0, 0.5, 0.9]))
def test_random_networks_on_random_arrays(net, seed, sparsity):
    """Any valid stack on any array: scores equal the reference, counters equal the cycle model."""
    spec, layers, shape = net
    check_top(custom_deployment(spec, layers, input_shape=shape, seed=seed, tile_sparsity=sparsity),
              images=1, pause=0.2, seed=seed)
