"""Network descriptions: a network's layer shapes without its weights, for the cycle model.

`terwin simulate NET.json` answers "how many cycles would this network take on this accelerator?"
for networks terwin did not train (a ResNet-18, say). The file lists the layers; the weights are
drawn at random with the sparsity the file asks for, since cycles depend only on where the nonzeros
are, not on their values. Requantization gets placeholder constants: it costs the same cycles
whatever it holds. Example (`examples/resnet18.json` is a whole one):

    {"name": "tiny", "input_shape": [1, 8, 8], "tile_sparsity": 0.5, "zero_fraction": 0.1,
     "layers": [{"type": "conv2d", "out_channels": 16, "kernel": 3, "padding": 1},
                {"type": "maxpool2d", "kernel": 2},
                {"type": "conv2d", "out_channels": 32, "kernel": 3, "padding": 1, "repeat": 2},
                {"type": "linear", "out_channels": 10}]}

Fields: `input_shape` [C, H, W]; `layers`, each with a `type`, one of the Deployment's layer kinds
(docs/deployment-format.md), and that layer's fields under the Deployment's names: `conv2d`
(out_channels, kernel, stride 1, padding 0), `maxpool2d` (kernel, stride = kernel) or `linear`
(out_channels, last), with an optional `repeat`. On a Winograd spec a `conv2d` becomes a
`winograd_conv2d` (the layer the engine runs).
Sparsity: `tile_sparsity` (ternary engine: fraction of PE tiles pruned, default 0.5),
`zero_fraction` (ternary: zeros inside kept tiles, default 0.1), `winograd_density` (Winograd
engine: fraction of nonzero Winograd-domain weights, default 0.4). `seed` (default 0).
On the Winograd engine every conv2d must be 3x3 with stride 1 (the engine runs nothing else).
Layers are named by type and position (conv0, pool1, ..., as `terwin.synthetic` names them).
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

_FIELDS = {  # a description's layer types: the Deployment's layer kinds, with its field names
    Conv2d.kind: {"out_channels", "kernel", "stride", "padding"},
    MaxPool2d.kind: {"kernel", "stride"},
    Linear.kind: {"out_channels"},
}
# Generated layer names: a short prefix per kind and the layer's position (conv0, wconv1, pool2,
# linear3). Names only (the kind is the layer's class); kept short and stable so that synthetic
# models, stored test models and reports stay the same.
_NAME_PREFIX = {Conv2d.kind: "conv", WinogradConv2d.kind: "wconv", MaxPool2d.kind: "pool", Linear.kind: "linear"}
_TOP = {"name", "input_shape", "layers", "tile_sparsity", "zero_fraction", "winograd_density", "seed"}


def layer_name(kind: str, position: int) -> str:
    """The name terwin gives a generated layer of `kind` (a Deployment layer kind) at `position`."""
    return f"{_NAME_PREFIX[kind]}{position}"


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
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: layers[{i}] must be an object with a type, one of {', '.join(_FIELDS)}")
        if not isinstance(entry.get("type"), str) or entry["type"] not in _FIELDS:
            raise SpecError(f"{where}: layers[{i}].type must be a layer kind, one of {', '.join(_FIELDS)}, "
                            f"not {short_repr(entry.get('type'))}")
        allowed = _FIELDS[entry["type"]] | {"type", "repeat"}
        bad = set(entry) - allowed
        if bad:
            raise SpecError(f"{where}: layers[{i}] ({entry['type']}): unknown field(s) {names(bad)} "
                            f"(a {entry['type']} takes {', '.join(sorted(allowed))})")
        repeat = _pos(entry.get("repeat", 1), f"{where}: layers[{i}].repeat")
        if len(expanded) + repeat > MAX_LAYERS:  # before the list grows
            raise SpecError(f"{where}: layers[{i}].repeat: more than {MAX_LAYERS:,} layers in all")
        expanded += [(i, entry)] * repeat

    layers = []
    total_weights = 0
    for n, (i, entry) in enumerate(expanded):
        kind = entry["type"]
        name = layer_name(kind, n)
        at = f"{where}: layers[{i}] ({kind})"
        if kind == MaxPool2d.kind:
            k = _pos(entry.get("kernel", 2), f"{at}.kernel")
            layer = MaxPool2d(name=name, in_shape=shape, kernel=k, stride=_pos(entry.get("stride", k), f"{at}.stride"))
        elif kind == Linear.kind:
            if n != len(expanded) - 1:
                raise SpecError(f"{at}: a linear layer must be the last layer")
            out = _pos(entry.get("out_channels"), f"{at}.out_channels")
            fan_in = math.prod(shape)
            total_weights += check_weights((out, fan_in), f"{at}.out_channels", total=total_weights)
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
    if layers[-1].kind == MaxPool2d.kind:
        raise SpecError(f"{where}: the last layer must be a conv2d or linear layer (the scores)")
    if layers[-1].kind != Linear.kind:  # a conv as the last layer outputs raw scores too
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
