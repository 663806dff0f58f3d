"""Network descriptions: a network's layer shapes without its weights, for the cycle model.

`terwin simulate NET.json` answers "how many cycles would this network take on this accelerator?"
for networks terwin did not train (a ResNet-18, say). The file lists the layers; the weights are
drawn at random with the sparsity the file asks for, since cycles depend only on where the nonzeros
are, not on their values. Requantization gets placeholder constants: it costs the same cycles
whatever it holds. Example (`examples/resnet18.json` is a whole one):

    {"name": "tiny", "input_shape": [1, 8, 8], "tile_sparsity": 0.5, "zero_fraction": 0.1,
     "layers": [{"type": "conv", "out_channels": 16, "kernel": 3, "padding": 1},
                {"type": "pool", "kernel": 2},
                {"type": "conv", "out_channels": 32, "kernel": 3, "padding": 1, "repeat": 2},
                {"type": "linear", "out_features": 10}]}

Fields: `input_shape` [C, H, W]; `layers`, each `conv` (out_channels, kernel, stride 1, padding 0),
`pool` (kernel, stride = kernel) or `linear` (out_features, last), with an optional `repeat`.
Sparsity: `tile_sparsity` (ternary engine: fraction of PE tiles pruned, default 0.5),
`zero_fraction` (ternary: zeros inside kept tiles, default 0.1), `winograd_density` (Winograd
engine: fraction of nonzero Winograd-domain weights, default 0.4). `seed` (default 0).
On the Winograd engine every conv must be 3x3 with stride 1 (the engine runs nothing else).
Sizes (layers after `repeat`, each map, each layer's and all weights) are checked against the limits
of docs/deployment-format.md before any weight is drawn.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import safeio
from .checks import check_seed, is_int, names, short_repr
from .deployment import (MAX_LAYERS, Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d, check_map,
                         check_weights, conv_out_size)
from .errors import SpecError
from .spec import HardwareSpec

_FIELDS = {
    "conv": {"out_channels", "kernel", "stride", "padding"},
    "pool": {"kernel", "stride"},
    "linear": {"out_features"},
}
_TOP = {"name", "input_shape", "layers", "tile_sparsity", "zero_fraction", "winograd_density", "seed"}


def is_network_file(path) -> bool:
    """True for a JSON network description (a `.terwin` model file starts with its magic instead).
    Only a regular file is opened (a FIFO or a device is refused, see `terwin.safeio`)."""
    with safeio.open_regular(path, error=SpecError, what="model file or network description") as (f, _):
        return f.read(1) == b"{"


def load_network(path, spec: HardwareSpec) -> Deployment:
    """Read a network description and draw a random `Deployment` of that shape for `spec`."""
    data = safeio.load_json(path, error=SpecError, what="network description")
    return network_deployment(data, spec, where=str(path))


def network_deployment(data: dict, spec: HardwareSpec, *, where: str = "network") -> Deployment:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a network description is a JSON object")
    unknown = set(data) - _TOP
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {names(unknown)}")
    shape = _ints(data.get("input_shape"), 3, f"{where}: input_shape")
    tile_sparsity = _fraction(data.get("tile_sparsity", 0.5), f"{where}: tile_sparsity", upper_open=True)
    zero_fraction = _fraction(data.get("zero_fraction", 0.1), f"{where}: zero_fraction", upper_open=True)
    density = _fraction(data.get("winograd_density", 0.4), f"{where}: winograd_density")
    seed = check_seed(data.get("seed", 0), f"{where}: seed", SpecError)
    entries = data.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{where}: layers must be a non-empty list")
    check_map(shape, f"{where}: input_shape")

    rng = np.random.default_rng(seed)
    winograd = spec.weight_format == "winograd"
    expanded = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or entry["type"] not in _FIELDS:
            raise SpecError(f"{where}: layers[{i}] needs a type, one of {', '.join(_FIELDS)}")
        bad = set(entry) - _FIELDS[entry["type"]] - {"type", "repeat"}
        if bad:
            raise SpecError(f"{where}: layers[{i}] ({entry['type']}): unknown field(s) {names(bad)}")
        repeat = _pos(entry.get("repeat", 1), f"{where}: layers[{i}].repeat")
        if len(expanded) + repeat > MAX_LAYERS:  # before the list grows
            raise SpecError(f"{where}: layers[{i}].repeat: more than {MAX_LAYERS:,} layers in all")
        expanded += [(i, entry)] * repeat

    layers = []
    total_weights = 0
    for n, (i, entry) in enumerate(expanded):
        kind = entry["type"]
        name = f"{kind}{n}"
        at = f"{where}: layers[{i}] ({kind})"
        if kind == "pool":
            k = _pos(entry.get("kernel", 2), f"{at}.kernel")
            layer = MaxPool2d(name=name, in_shape=shape, kernel=k, stride=_pos(entry.get("stride", k), f"{at}.stride"))
        elif kind == "linear":
            if n != len(expanded) - 1:
                raise SpecError(f"{at}: a linear layer must be the last layer")
            out = _pos(entry.get("out_features"), f"{at}.out_features")
            fan_in = math.prod(shape)
            total_weights += check_weights((out, fan_in), f"{at}.out_features", total=total_weights)
            fields = dict(name=name, in_shape=shape, out_channels=out, relu=False)
            if winograd:  # the engine's sparse integer MAC path: int8 weights
                layer = random_int_linear(fields, 8, rng, zero_fraction)
            else:
                layer = random_ternary_layer(Linear, fields, (out, fan_in), spec, rng, tile_sparsity, zero_fraction)
        else:
            out = _pos(entry.get("out_channels"), f"{at}.out_channels")
            k = _pos(entry.get("kernel"), f"{at}.kernel")
            stride = _pos(entry.get("stride", 1), f"{at}.stride")
            padding = entry.get("padding", 0)
            if not is_int(padding) or padding < 0:
                raise SpecError(f"{at}.padding must be a non-negative integer, not {short_repr(padding)}")
            if winograd and (k, stride) != (3, 1):
                raise SpecError(f"{at}: the Winograd engine runs 3x3 stride-1 convolutions only, "
                                f"not kernel {k} stride {stride}")
            # sizes before the weights are drawn: the output map, then the weights
            out_shape = (out, *(conv_out_size(v, k, stride, padding) for v in shape[1:]))
            if min(out_shape) < 1:
                raise SpecError(f"{at}: input {tuple(shape)} gives an empty output {out_shape}")
            check_map(out_shape, f"{at}: output")
            wshape = (out, shape[0], *((spec.winograd_input_tile,) * 2 if winograd else (k, k)))
            total_weights += check_weights(wshape, f"{at}.weight", total=total_weights)
            if winograd:
                layer = random_winograd_layer(dict(name=name, in_shape=shape, out_channels=out, padding=padding),
                                              spec, rng, density)
            else:
                fields = dict(name=name, in_shape=shape, out_channels=out, kernel=k, stride=stride, padding=padding)
                layer = random_ternary_layer(Conv2d, fields, (out, shape[0], k, k), spec, rng, tile_sparsity,
                                             zero_fraction)
        if min(layer.out_shape) < 1:
            raise SpecError(f"{at}: input {tuple(shape)} gives an empty output {layer.out_shape}")
        layers.append(layer)
        shape = layer.out_shape
    if layers[-1].kind == "maxpool2d":
        raise SpecError(f"{where}: the last layer must be a conv or linear layer (the scores)")
    if layers[-1].kind != "linear":  # a conv as the last layer outputs raw scores too
        layers[-1] = dataclasses.replace(layers[-1], relu=False)
    dep = Deployment(spec=spec, input_shape=tuple(data["input_shape"]), input_scale=1.0 / spec.act_max,
                     layers=tuple(layers), meta={"family": "network", "name": str(data.get("name", "network")),
                                                 "seed": seed})
    return dep.validate()


def random_ternary_layer(cls, fields: dict, wshape, spec: HardwareSpec, rng, tile_sparsity: float,
                         zero_fraction: float):
    """A ternary `Conv2d`/`Linear` with random +-1 weights (`zero_fraction` of them 0) in randomly kept
    tiles (`tile_sparsity` of them pruned; every output group keeps its first tile). Unit requantization
    unless `fields` says otherwise."""
    w = rng.choice(np.array([-1, 1], dtype=np.int8), size=wshape)
    w[rng.random(wshape) < zero_fraction] = 0
    fields = {**unit_requant(wshape[0]), **fields}
    grid = cls(weight=w, **fields).tile_grid(spec)
    mask = (rng.random(grid.shape) >= tile_sparsity).astype(np.uint8)
    mask[:, 0, 0] = 1
    w = (w * grid.expand(mask).reshape(wshape)).astype(np.int8)
    return cls(weight=w, tile_mask=mask, **fields)


def random_winograd_layer(fields: dict, spec: HardwareSpec, rng, density: float) -> WinogradConv2d:
    """A `WinogradConv2d` with random signed `spec.winograd_weight_bits` Winograd-domain weights,
    `density` of them nonzero. Placeholder requantization unless `fields` says otherwise."""
    t = spec.winograd_input_tile
    u = _random_ints(rng, spec.winograd_weight_bits, (fields["out_channels"], fields["in_shape"][0], t, t))
    u[rng.random(u.shape) >= density] = 0
    return WinogradConv2d(tile=spec.winograd_tile, weight_bits=spec.winograd_weight_bits,
                          weight=_narrow(u, spec.winograd_weight_bits), **{**unit_requant(fields["out_channels"]), **fields})


def random_int_linear(fields: dict, bits: int, rng, zero_fraction: float) -> Linear:
    """A `Linear` with random signed `bits`-bit integer weights (weight_code "int", no tile mask),
    `zero_fraction` of them zero. Placeholder requantization unless `fields` says otherwise."""
    out = fields["out_channels"]
    w = _random_ints(rng, bits, (out, math.prod(fields["in_shape"])))
    w[rng.random(w.shape) < zero_fraction] = 0
    return Linear(weight=_narrow(w, bits), weight_code="int", weight_bits=bits, **{**unit_requant(out), **fields})


def _random_ints(rng, bits: int, shape) -> np.ndarray:
    """Uniform signed integers of `bits` bits, symmetric: [-(2^(bits-1) - 1), 2^(bits-1) - 1]."""
    lim = (1 << (bits - 1)) - 1
    return rng.integers(-lim, lim + 1, size=shape)


def _narrow(w: np.ndarray, bits: int) -> np.ndarray:
    """The stored dtype of `bits`-bit weights: int8 up to 8 bits, int16 beyond."""
    return w.astype(np.int8 if bits <= 8 else np.int16)


def unit_requant(out: int) -> dict:
    """Placeholder requantization (bias 0, multiplier 1, shift 1) for layers whose constants do not
    matter (cycle counts) or are calibrated afterwards."""
    return dict(bias=np.zeros(out, dtype=np.int64), multiplier=np.ones(out, dtype=np.int64),
                shift=np.ones(out, dtype=np.int64))


def _pos(value, where: str) -> int:
    if not is_int(value) or value < 1:
        raise SpecError(f"{where} must be a positive integer, not {short_repr(value)}")
    return value


def _ints(value, n: int, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise SpecError(f"{where} must be a list of {n} positive integers")
    return tuple(_pos(v, where) for v in value)


def _fraction(value, where: str, *, upper_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
    if not ok or (upper_open and value == 1):
        raise SpecError(f"{where} must be a number in [0, 1{')' if upper_open else ']'}, not {value!r}")
    return float(value)
