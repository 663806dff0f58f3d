"""torch integer evaluation of format-version-2 graphs == the NumPy reference, on every layer output.

Hand-built graphs pin each graph feature (a layer's `source`, the residual term r·m_r, a signed map
read as a residual, average pooling) against hand-computed integers; a property test runs random
residual graphs (strides, projection shortcuts, pools, channel counts, act_bits) through both.
`random_graph` (below) is the generator; it lives here because only these tests use it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from terwin import intmath
from terwin.algo import torch_int
from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d
from terwin.sim import reference
from terwin.spec import PE4X4, PE8X8


def _same(dep, q):
    ours = torch_int.trace(dep, q)
    theirs = reference.trace(dep, q)
    assert len(ours) == len(theirs) == len(dep.layers)
    for layer, a, b in zip(dep.layers, ours, theirs):
        assert a.dtype == torch.int64
        assert np.array_equal(a.numpy(), b), f"{layer.name}: torch-int differs from the reference"
    return theirs


def _ones(n, v=1):
    return np.full(n, v, dtype=np.int64)


def _conv(name, in_shape, out, *, k=1, stride=1, padding=0, weight=None, source=None, relu=True, residual=None,
          m_r=None, m=1, s=1, bias=0):
    w = np.ones((out, in_shape[0], k, k), dtype=np.int8) if weight is None else np.asarray(weight, dtype=np.int8)
    return Conv2d(name=name, in_shape=in_shape, out_channels=out, kernel=k, stride=stride, padding=padding,
                  weight=w, bias=_ones(out, bias), multiplier=_ones(out, m), shift=_ones(out, s), relu=relu,
                  source=source, residual=residual,
                  residual_multiplier=None if m_r is None else np.asarray(m_r, dtype=np.int64))


def _head(name, in_shape, classes=2, source=None):
    w = np.ones((classes, int(np.prod(in_shape))), dtype=np.int8)
    return Linear(name=name, in_shape=in_shape, out_channels=classes, weight=w, bias=np.zeros(classes, np.int64),
                  multiplier=_ones(classes), shift=_ones(classes), relu=False, source=source)


def test_residual_term_by_hand():
    """y = ((acc + b)·m + r·m_r + 2^(s-1)) >> s, clamped: identity conv plus the input as residual."""
    spec = PE4X4
    # conv a: 1x1 identity (weight 1), m=2, s=1: y = (2x + 1) >> 1 = x
    a = _conv("a", (1, 2, 2), 1, m=2, s=1)
    # conv b reads a, residual = the network input with m_r = 3: y = (2·a + 3·x + 1) >> 1
    b = _conv("b", (1, 2, 2), 1, m=2, s=1, source="a", residual=INPUT, m_r=[3])
    dep = Deployment(spec=spec, input_shape=(1, 2, 2), input_scale=1.0,
                     layers=(a, b, _head("fc", (1, 2, 2)))).validate()
    q = np.array([[[[0, 1], [10, 200]]]])
    outs = _same(dep, q)
    x = q.astype(np.int64)
    assert np.array_equal(outs[0], x)
    assert np.array_equal(outs[1], np.clip((2 * x + 3 * x + 1) >> 1, 0, 255))  # 200 -> 500 clamps to 255
    assert outs[1][0, 0, 1, 1] == 255 and outs[1][0, 0, 0, 1] == 3  # (2 + 3 + 1) >> 1


def test_signed_projection_by_hand():
    """A relu-false map inside the network clamps to the signed range and is read only as a residual."""
    spec = PE4X4.replace(act_bits=4)
    # projection p: weight -1, stride 2: y = clamp(-x, -8, 7)
    p = _conv("p", (1, 4, 4), 1, weight=[[[[-1]]]], stride=2, relu=False, m=2, s=1)
    # main c (reads the input, stride 2, weight +1), residual p, m_r = 2: y = clamp((2x + 2p + 1) >> 1, 0, 15)
    c = _conv("c", (1, 4, 4), 1, stride=2, source=INPUT, residual="p", m_r=[2], m=2, s=1)
    dep = Deployment(spec=spec, input_shape=(1, 4, 4), input_scale=1.0,
                     layers=(p, c, _head("fc", (1, 2, 2)))).validate()
    q = np.arange(16).reshape(1, 1, 4, 4) % 16
    outs = _same(dep, q)
    x = q[:, :, ::2, ::2].astype(np.int64)
    assert np.array_equal(outs[0], np.clip(-x, -8, 7))
    assert outs[0].min() == -8, "the signed clamp must be reached"
    assert np.array_equal(outs[1], np.clip((2 * x + 2 * np.clip(-x, -8, 7) + 1) >> 1, 0, 15))


def test_average_pool_by_hand():
    spec = PE4X4
    # 2x2 windows, m / 2^s = 1/4 exactly (m = 1, s = 2): round half up of the mean
    pool = AvgPool2d(name="avg", in_shape=(1, 2, 4), kernel=2, stride=2, multiplier=1, shift=2)
    dep = Deployment(spec=spec, input_shape=(1, 2, 4), input_scale=1.0, layers=(pool, _head("fc", (1, 1, 2))))
    q = np.array([[[[1, 1, 0, 0], [0, 0, 255, 255]]]])
    outs = _same(dep.validate(), q)
    assert outs[0].reshape(-1).tolist() == [1, 128]  # (2 + 2) >> 2 = 1 (mean 0.5 rounds up), (510 + 2) >> 2
    # global pool of 3x3 with m / 2^s ~ 1/9; clamp at act_max with an oversized multiplier
    pool = AvgPool2d(name="gap", in_shape=(2, 3, 3), kernel=3, stride=3, multiplier=7282, shift=16)
    dep = Deployment(spec=spec, input_shape=(2, 3, 3), input_scale=1.0, layers=(pool, _head("fc", (2, 1, 1))))
    q = np.stack([np.full((3, 3), 100), np.arange(9).reshape(3, 3)])[None]
    outs = _same(dep.validate(), q)
    assert outs[0].reshape(-1).tolist() == [(900 * 7282 + (1 << 15)) >> 16, (36 * 7282 + (1 << 15)) >> 16] == [100, 4]
    pool = dataclasses.replace(pool, multiplier=1 << 20)
    dep = dep.replace(layers=(pool, dep.layers[1]))
    assert _same(dep.validate(), q)[0].reshape(-1).tolist() == [255, 255]


def test_sources_out_of_order_and_a_map_read_twice():
    """Two branches from the input, the second reading the input again by name, joined by a residual."""
    spec = PE4X4
    rng = np.random.default_rng(0)
    tern = lambda *shape: rng.integers(-1, 2, size=shape)  # noqa: E731
    a = _conv("a", (2, 3, 3), 4, k=3, padding=1, weight=tern(4, 2, 3, 3), source=INPUT, m=1, s=3)
    b = _conv("b", (2, 3, 3), 4, k=1, weight=tern(4, 2, 1, 1), source=INPUT, relu=False, m=1, s=4)  # signed projection
    c = _conv("c", (4, 3, 3), 4, k=3, padding=1, weight=tern(4, 4, 3, 3), source="a", residual="b",
              m_r=[8, -8, 16, 0], m=1, s=4)
    pool = MaxPool2d(name="pool", in_shape=(4, 3, 3), kernel=2, stride=1, source="c")
    dep = Deployment(spec=spec, input_shape=(2, 3, 3), input_scale=1.0,
                     layers=(a, b, c, pool, _head("fc", (4, 2, 2), classes=3))).validate()
    q = rng.integers(0, 256, size=(5, 2, 3, 3))
    outs = _same(dep, q)
    assert 0 < outs[2].mean() < 255 and outs[1].min() < 0 < outs[1].max()


# -- random graphs ------------------------------------------------------------------------------


def random_graph(rng: np.random.Generator, *, spec, input_shape, blocks, classes: int = 3,
                 calibration: int = 8) -> Deployment:
    """A random format-version-2 graph: `blocks` is a list of "conv", "res" (a residual block: conv →
    conv + shortcut, the shortcut the block input, or a signed 1x1 projection when the shape changes),
    "max", "avg" (2x2), "gap" (global average); then a linear score layer. Kernels, strides,
    padding, channel counts, weight codes and requantization constants are drawn from `rng`;
    requantization is calibrated on random images so that activations spread over the range."""
    act_max = spec.act_max
    x_cal = rng.integers(0, act_max + 1, size=(calibration, *input_shape))
    maps = {INPUT: x_cal}
    shapes = {INPUT: tuple(input_shape)}
    layers = []
    current = INPUT

    def requant_layer(name, source, out, k, stride, padding, *, relu=True, residual=None):
        in_shape = shapes[source]
        code = rng.choice(["ternary", "int"])
        bits = 2 if code == "ternary" else int(rng.integers(3, 6))
        hi = 1 if code == "ternary" else (1 << (bits - 1)) - 1
        w = rng.integers(-hi, hi + 1, size=(out, in_shape[0], k, k)).astype(np.int8)
        proto = Conv2d(name=name, in_shape=in_shape, out_channels=out, kernel=k, stride=stride, padding=padding,
                       weight=w, weight_code=code, weight_bits=bits, bias=np.zeros(out, np.int64),
                       multiplier=np.ones(out, np.int64), shift=np.ones(out, np.int64), relu=relu,
                       source=None if rng.random() < 0.3 and source == (layers[-1].name if layers else INPUT)
                       else source)
        acc = reference.layer_acc(proto, maps[source])
        bias = rng.integers(-3, 4, size=out) * max(1, int(acc.std()) // 4)
        top = np.percentile(np.abs(acc + bias.reshape(1, -1, 1, 1)), 95, axis=(0, 2, 3)) + 1
        target = act_max if relu else act_max // 2
        ms = [intmath.fit_multiplier(target / t) for t in top]
        m = np.array([v for v, _ in ms], dtype=np.int64)
        s = np.array([v for _, v in ms], dtype=np.int64)
        extra = {}
        if residual is not None:
            # m_r brings the residual onto the pre-shift grid at a random relative weight in [-1.5, 1.5]
            extra = dict(residual=residual,
                         residual_multiplier=np.round(rng.uniform(-1.5, 1.5, size=out) * (1 << s)).astype(np.int64))
        layer = dataclasses.replace(proto, bias=bias.astype(np.int64), multiplier=m, shift=s, **extra)
        return layer

    def add(layer):
        nonlocal current
        r = getattr(layer, "residual", None)
        source = layer.source or (layers[-1].name if layers else INPUT)
        maps[layer.name] = reference.run_layer(layer, maps[source], act_bits=spec.act_bits,
                                               last=False, residual=None if r is None else maps[r])
        shapes[layer.name] = layer.out_shape
        layers.append(layer)
        if getattr(layer, "relu", True):
            current = layer.name

    for i, kind in enumerate(blocks):
        c, h, w = shapes[current]
        if kind == "conv":
            k = int(rng.choice([1, 3]))
            stride = int(rng.choice([1, 2])) if h > 2 else 1
            add(requant_layer(f"conv{i}", current, int(rng.integers(1, 9)), k, stride, k // 2))
        elif kind == "res":
            out = int(rng.choice([c, int(rng.integers(1, 9))]))
            stride = int(rng.choice([1, 2])) if h > 2 else 1
            block_in = current
            add(requant_layer(f"res{i}a", block_in, out, 3, stride, 1))
            if out == c and stride == 1 and rng.random() < 0.7:
                shortcut = block_in
            else:
                shortcut = f"res{i}p"
                add(requant_layer(shortcut, block_in, out, 1, stride, 0, relu=False))
            add(requant_layer(f"res{i}b", f"res{i}a", out, 3, 1, 1, residual=shortcut))
        elif kind in ("max", "avg") and min(h, w) >= 2:
            cls = MaxPool2d if kind == "max" else AvgPool2d
            extra = dict(multiplier=1, shift=2) if kind == "avg" else {}
            add(cls(name=f"{kind}{i}", in_shape=(c, h, w), kernel=2, stride=2, source=current, **extra))
        elif kind == "gap" and h == w:
            m, s = intmath.fit_multiplier(1 / (h * h))
            add(AvgPool2d(name=f"gap{i}", in_shape=(c, h, w), kernel=h, stride=h, multiplier=m, shift=s,
                          source=current))
    in_shape = shapes[current]
    wt = rng.integers(-1, 2, size=(classes, int(np.prod(in_shape)))).astype(np.int8)
    layers.append(Linear(name="fc", in_shape=in_shape, out_channels=classes, weight=wt,
                         bias=rng.integers(-50, 51, size=classes).astype(np.int64), multiplier=np.ones(classes, np.int64),
                         shift=np.ones(classes, np.int64), relu=False, source=current))
    dep = Deployment(spec=spec, input_shape=tuple(input_shape), input_scale=1.0 / act_max, layers=tuple(layers))
    return dep.validate()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), act_bits=st.integers(2, 12), c=st.integers(1, 4), h=st.integers(3, 12),
       blocks=st.lists(st.sampled_from(["conv", "res", "res", "max", "avg", "gap"]), min_size=1, max_size=5))
def test_random_graphs_equal_reference(seed, act_bits, c, h, blocks):
    rng = np.random.default_rng(seed)
    spec = PE8X8.replace(act_bits=act_bits)
    dep = random_graph(rng, spec=spec, input_shape=(c, h, h), blocks=blocks)
    q = rng.integers(0, spec.act_max + 1, size=(6, c, h, h))
    _same(dep, q)


def test_random_graphs_cover_every_feature():
    """The generator really produces what the property test claims to cover."""
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(20):
        dep = random_graph(rng, spec=PE8X8, input_shape=(2, 8, 8), blocks=["res", "conv", "res", "max", "avg", "gap"])
        for layer in dep.layers:
            seen.add(layer.kind)
            if getattr(layer, "residual", None):
                seen.add("residual")
                seen.add("projection" if layer.residual.endswith("p") else "identity shortcut")
            if layer.kind == "conv2d" and not layer.relu:
                seen.add("signed")
            if getattr(layer, "stride", 1) == 2 and layer.kind == "conv2d":
                seen.add("stride 2")
        assert dep.format_version == 2
    assert {"conv2d", "linear", "maxpool2d", "avgpool2d", "residual", "signed", "stride 2", "projection",
            "identity shortcut"} <= seen, seen


def test_forward_batches_agree_with_reference():
    rng = np.random.default_rng(7)
    dep = random_graph(rng, spec=PE8X8, input_shape=(1, 8, 8), blocks=["res", "res", "gap"])
    q = rng.integers(0, 256, size=(11, 1, 8, 8))
    assert np.array_equal(torch_int.forward(dep, q, batch=4).numpy(), reference.forward(dep, q))
