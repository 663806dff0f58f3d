"""Random but well-formed `Deployment`s: for hardware tests and cycle-model benchmarks without training.

Requantization is calibrated on random inputs layer by layer, so activations spread over the whole
unsigned range instead of saturating or vanishing: the hardware sees realistic values.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import intmath
from .deployment import Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d
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
