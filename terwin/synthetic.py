"""Random but well-formed `Deployment`s: for hardware tests and cycle-model benchmarks without training.

Requantization is calibrated on random inputs layer by layer, so activations spread over the whole
unsigned range instead of saturating or vanishing: the hardware sees realistic values.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import intmath
from .deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d
from .network import layer_name, random_int_linear, random_ternary_layer, random_winograd_layer
from .sim import reference  # the calibration oracle
from .spec import HardwareSpec

# A topology is (kind, arg) per layer, kind one of the Deployment's layer kinds (`layer.kind`):
# ("conv2d", out_channels) 3x3 pad 1, ("winograd_conv2d", out_channels) Winograd 3x3 pad 1,
# ("maxpool2d", k) k x k stride k, ("linear", out_channels); the last layer gives raw scores.
KINDS = (Conv2d.kind, WinogradConv2d.kind, MaxPool2d.kind, Linear.kind)
DIGITS_TOPOLOGY = (("conv2d", 16), ("conv2d", 32), ("maxpool2d", 2), ("conv2d", 32), ("maxpool2d", 2), ("linear", 10))


def random_deployment(spec: HardwareSpec, *, seed: int = 0, topology=DIGITS_TOPOLOGY,
                      input_shape=(1, 8, 8), tile_sparsity: float = 0.5, zero_fraction: float = 0.1,
                      winograd_density: float = 0.4, calibration_images: int = 32,
                      linear_int_bits: int | None = None) -> Deployment:
    """`topology`: (kind, arg) per layer, kinds as in `DIGITS_TOPOLOGY`. `linear_int_bits`: when set,
    "linear" layers get signed integer weights of that width (weight_code "int", no tile mask,
    `zero_fraction` of them zero) instead of ternary tiles."""
    topology = tuple(topology)
    for i, (kind, _) in enumerate(topology):
        if kind not in KINDS:
            raise ValueError(f"topology[{i}]: kind {kind!r} is not a layer kind (expected one of {', '.join(KINDS)})")
    rng = np.random.default_rng(seed)
    act_max = spec.act_max
    x = rng.integers(0, act_max + 1, size=(calibration_images, *input_shape), dtype=np.int64)
    layers = []
    shape = tuple(input_shape)
    for i, (kind, arg) in enumerate(topology):
        name = layer_name(kind, i)
        last = i == len(topology) - 1
        if kind == MaxPool2d.kind:
            layer = MaxPool2d(name=name, in_shape=shape, kernel=arg, stride=arg)
        else:
            out = arg
            if kind == WinogradConv2d.kind:
                proto = random_winograd_layer(dict(name=name, in_shape=shape, out_channels=out), spec, rng,
                                              winograd_density)
            elif kind == Linear.kind and linear_int_bits is not None:
                proto = random_int_linear(dict(name=name, in_shape=shape, out_channels=out), linear_int_bits, rng,
                                          zero_fraction)
            else:
                conv = kind == Conv2d.kind
                wshape = (out, shape[0], 3, 3) if conv else (out, int(np.prod(shape)))
                cls = Conv2d if conv else Linear
                extra = dict(kernel=3, stride=1, padding=1) if conv else {}
                proto = random_ternary_layer(cls, dict(name=name, in_shape=shape, out_channels=out, **extra),
                                             wshape, spec, rng, tile_sparsity, zero_fraction)
            acc = reference.layer_acc(proto, x)
            bias = rng.integers(-4, 5, size=out) * max(1, int(np.std(acc)) // 8)
            if last:
                layer = _with(proto, bias=bias.astype(np.int64), relu=False)
            else:
                # map roughly the 98th percentile of positive (acc + bias) to the top of the range
                hi = np.percentile(np.maximum(acc + bias.reshape(1, -1, 1, 1), 1), 98, axis=(0, 2, 3))
                ms = [intmath.fit_multiplier(act_max / max(h, 1.0)) for h in hi]
                layer = _with(proto, bias=bias.astype(np.int64),
                              multiplier=np.array([m for m, _ in ms], dtype=np.int64),
                              shift=np.array([s for _, s in ms], dtype=np.int64))
        x = reference.run_layer(layer, x, act_bits=spec.act_bits)
        layers.append(layer)
        shape = layer.out_shape
    dep = Deployment(spec=spec, input_shape=tuple(input_shape), input_scale=1.0 / act_max, layers=tuple(layers),
                     meta={"family": "synthetic", "seed": seed})
    return dep.validate()


def _with(layer, **changes):
    return dataclasses.replace(layer, **changes)


# -- random residual graphs (format version 2) ---------------------------------------------------

# A block of a residual network: (out_channels, stride, kernel of its two convs). Its shortcut is the
# identity when the shape is kept (stride 1, same channels) and `project` is False, else a 1x1 conv
# of that stride with relu false: a signed map, read only as the second conv's residual.
RESNET8_BLOCKS = ((16, 1, 3), (32, 2, 3), (64, 2, 3))


def random_graph_deployment(spec: HardwareSpec, *, seed: int = 0, input_shape=None, stem=None, stem_pool=None,
                            blocks=None, project=None, pools=None, final_pool=None, classes=None,
                            projection_first=None, tile_sparsity: float = 0.5, zero_fraction: float = 0.1,
                            calibration_images: int = 32) -> Deployment:
    """A random residual network, ResNet-like: an optional stem conv (3x3, `stem` channels, and a
    fused 2x2 max-pool when `stem_pool`), then `blocks` (see `RESNET8_BLOCKS`): conv1 (stride s,
    relu) -> conv2 (stride 1, + the shortcut as its `residual`, relu); the shortcut is the block's
    input (the network input itself for a first block without a stem) or a projection (1x1,
    stride s, relu false: a signed map), computed before or after conv1 (`projection_first`, per
    block); `pools[i]`: a 2x2 average pool after block i; `final_pool`: "global" (kernel = the map's
    size), "avg2" (2x2 stride 2) or "none" (no pool after a block's pool: each pool reads a conv);
    then a linear layer of `classes` outputs.
    Every argument left None is drawn from `seed`. Requantization is calibrated with the reference
    on random inputs (the residual's m_r too), so activations spread over the range."""
    from terwin.sim import reference  # the reference is the calibration oracle

    rng = np.random.default_rng(seed)
    draw = _GraphDraw(rng)
    if input_shape is None:
        input_shape = (int(rng.integers(1, 6)), int(rng.integers(5, 11)), int(rng.integers(5, 11)))
        input_shape = (input_shape[0], input_shape[1], input_shape[1])
    c_in, h, _ = input_shape
    if stem is None:
        stem = int(rng.integers(2, 13)) if rng.random() < 0.8 else 0
    if stem_pool is None:
        stem_pool = bool(stem and h >= 8 and rng.random() < 0.4)
    if blocks is None:
        blocks, size, ch = [], h // (2 if stem_pool else 1), stem or c_in
        for i in range(int(rng.integers(1, 4))):
            stride = 2 if size >= 4 and rng.random() < 0.5 else 1
            out = ch if rng.random() < 0.4 else int(rng.integers(1, 17))
            blocks.append((out, stride, int(rng.choice([1, 3, 3]))))
            size, ch = (size - 1) // stride + 1, out
    blocks = [tuple(b) for b in blocks]
    project = [draw.maybe(project, i, 0.25) for i in range(len(blocks))]
    projection_first = [draw.maybe(projection_first, i, 0.5) for i in range(len(blocks))]
    pools = [draw.maybe(pools, i, 0.2) for i in range(len(blocks))]
    if classes is None:
        classes = int(rng.integers(2, 11))

    act_max = spec.act_max
    x = rng.integers(0, act_max + 1, size=(calibration_images, *input_shape), dtype=np.int64)
    layers, maps = [], {INPUT: x}
    shapes = {INPUT: tuple(input_shape)}

    def add(layer, source, residual=None):
        y = reference.run_layer(layer, maps[source], act_bits=spec.act_bits, last=False,
                                residual=None if residual is None else maps[residual])
        layers.append(layer)
        maps[layer.name], shapes[layer.name] = y, layer.out_shape
        return layer.name

    def conv(name, source, out, kernel, stride, *, residual=None, relu=True):
        proto = random_ternary_layer(Conv2d, dict(name=name, in_shape=shapes[source], out_channels=out, kernel=kernel,
                                                  stride=stride, padding=kernel // 2, source=source),
                                     (out, shapes[source][0], kernel, kernel), spec, rng, tile_sparsity, zero_fraction)
        acc = reference.layer_acc(proto, maps[source])
        fields = _calibrate(acc, rng, spec, signed=not relu,
                            residual=None if residual is None else maps[residual])
        if residual is not None:
            fields["residual"] = residual
        return add(_with(proto, relu=relu, **fields), source, residual)

    def pool(name, source, kind, kernel):
        if kind == "max":
            return add(MaxPool2d(name=name, in_shape=shapes[source], kernel=kernel, stride=kernel, source=source),
                       source)
        m, s = intmath.fit_multiplier(1.0 / (kernel * kernel), bits=int(rng.choice([8, 16])))
        return add(AvgPool2d(name=name, in_shape=shapes[source], kernel=kernel, stride=kernel, multiplier=m,
                             shift=s, source=source), source)

    current = INPUT
    if stem:
        current = conv("stem", current, stem, 3, 1)
        if stem_pool:
            current = pool("stem_pool", current, "max", 2)
    for i, (out, stride, kernel) in enumerate(blocks):
        b = f"block{i + 1}"
        identity = stride == 1 and shapes[current][0] == out and not project[i]
        shortcut = current
        if not identity and projection_first[i]:
            shortcut = conv(f"{b}_proj", current, out, 1, stride, relu=False)
        h1 = conv(f"{b}_conv1", current, out, kernel, stride)
        if not identity and not projection_first[i]:
            shortcut = conv(f"{b}_proj", current, out, 1, stride, relu=False)
        current = conv(f"{b}_conv2", h1, out, kernel, 1, residual=shortcut)
        if pools[i] and min(shapes[current][1:]) >= 2:
            current = pool(f"{b}_pool", current, "avg", 2)
    if final_pool is None:
        final_pool = rng.choice(["global", "global", "avg2", "none"])
    if isinstance(layers[-1], AvgPool2d):   # a pool reads a conv (the ternary engine fuses it into that conv)
        final_pool = "none"
    if final_pool == "global" and shapes[current][1] > 1:
        current = pool("gap", current, "avg", shapes[current][1])
    elif final_pool == "avg2" and shapes[current][1] >= 2:
        current = pool("pool", current, "avg", 2)
    proto = random_ternary_layer(Linear, dict(name="fc", in_shape=shapes[current], out_channels=classes,
                                              source=current),
                                 (classes, int(np.prod(shapes[current]))), spec, rng, tile_sparsity, zero_fraction)
    acc = reference.layer_acc(proto, maps[current])
    bias = rng.integers(-4, 5, size=classes) * max(1, int(np.std(acc)) // 8)
    layers.append(_with(proto, bias=bias.astype(np.int64), relu=False))
    dep = Deployment(spec=spec, input_shape=tuple(input_shape), input_scale=1.0 / act_max, layers=tuple(layers),
                     meta={"family": "synthetic", "seed": seed, "graph": True})
    return dep.validate()


def resnet8_deployment(spec: HardwareSpec, *, seed: int = 0, tile_sparsity: float = 0.5, **kw) -> Deployment:
    """A ResNet-8-like graph on 32x32x3 input: stem conv 16, three blocks of 16/32/64 channels (the
    last two with stride 2 and projection shortcuts, each computed after its block's conv1, as a
    traced PyTorch block orders them), global average pool, linear 10."""
    return random_graph_deployment(spec, seed=seed, input_shape=(3, 32, 32), stem=16, stem_pool=False,
                                   blocks=RESNET8_BLOCKS, project=[False, True, True],
                                   projection_first=[False, False, False], pools=[False, False, False],
                                   final_pool="global", classes=10, tile_sparsity=tile_sparsity, **kw)


class _GraphDraw:
    def __init__(self, rng):
        self.rng = rng

    def maybe(self, given, i, p):
        """given[i] when given, else True with probability p."""
        return bool(given[i]) if given is not None else bool(self.rng.random() < p)


def _calibrate(acc, rng, spec: HardwareSpec, *, signed: bool = False, residual=None) -> dict:
    """bias, multiplier, shift (and residual_multiplier) mapping roughly the 98th percentile of a layer's
    pre-shift values to the top of its range: unsigned, or signed for a projection (relu false)."""
    out = acc.shape[1]
    # the bias puts roughly a third of the pre-activations (a random share) at or below zero
    cut = np.percentile(acc, rng.uniform(20, 45), axis=(0, 2, 3)) if not signed else np.zeros(out)
    noise = rng.integers(-2, 3, size=out) * max(1, int(np.std(acc)) // 16)
    bias = (np.round(-cut) + noise).astype(np.int64)
    z = (acc + bias.reshape(1, -1, 1, 1)).astype(np.float64)
    top = (spec.act_max >> 1) if signed else spec.act_max
    hi = np.percentile(np.abs(z) if signed else np.maximum(z, 1), 98, axis=(0, 2, 3))
    scale = top / np.maximum(hi, 1.0)
    weight = None
    if residual is not None:   # y ~ z * scale + r * weight, rescaled so the sum spreads over the range too
        weight = rng.uniform(0.3, 1.2, size=out) * np.where(rng.random(out) < 0.2, -1, 1)
        total = z * scale.reshape(1, -1, 1, 1) + residual * weight.reshape(1, -1, 1, 1)
        hi = np.percentile(np.maximum(total, 1), 98, axis=(0, 2, 3))
        factor = np.clip(top / np.maximum(hi, 1.0), 0.25, 4.0)
        scale, weight = scale * factor, weight * factor
    mults, shifts, res = [], [], []
    for o in range(out):
        m, s = intmath.fit_multiplier(scale[o])
        if weight is not None:     # m_r = weight * 2^s must stay a signed 32-bit integer
            while s > 1 and abs(round(weight[o] * (1 << s))) >= (1 << 31):
                s -= 1
            m = round(scale[o] * (1 << s))
            res.append(round(weight[o] * (1 << s)))
        mults.append(m)
        shifts.append(s)
    fields = dict(bias=bias, multiplier=np.array(mults, dtype=np.int64), shift=np.array(shifts, dtype=np.int64))
    if weight is not None:
        fields["residual_multiplier"] = np.array(res, dtype=np.int64)
    return fields
