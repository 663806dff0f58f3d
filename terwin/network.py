"""Network descriptions: a network's layer shapes without its weights, for the cycle model.

`terwin simulate NET.json` answers "how many cycles would this network take on this accelerator?"
for networks terwin did not train (a ResNet-18, say). The file lists the layers; the weights are
drawn at random with the sparsity the file asks for, since cycles depend only on where the nonzeros
are, not on their values. Requantization gets placeholder constants: it costs the same cycles
whatever it holds. Example (`examples/resnet18.json` is a whole one):

    {"name": "tiny", "input_shape": [1, 16, 16], "tile_sparsity": 0.5, "zero_fraction": 0.1,
     "layers": [{"type": "conv2d", "out_channels": 16, "kernel": 3, "padding": 1},
                {"type": "maxpool2d", "kernel": 2},
                {"type": "residual", "out_channels": 16, "repeat": 2},
                {"type": "residual", "out_channels": 32, "stride": 2},
                {"type": "avgpool2d", "global": true},
                {"type": "linear", "out_channels": 10}]}

Fields: `input_shape` [C, H, W]; `layers`, each with a `type` and an optional `repeat` (default 1).
A `type` is one of the Deployment's layer kinds (docs/deployment-format.md), with that layer's fields
under the Deployment's names, or `residual`, a block:

* `conv2d`: out_channels, kernel, stride (1), padding (0); on a Winograd spec it becomes a
  `winograd_conv2d` (the layer the engine runs), which must be 3x3 with stride 1;
* `maxpool2d`: kernel (2), stride (= kernel); no padding;
* `avgpool2d`: kernel (2), stride (= kernel), or `"global": true` (no kernel or stride: the window is
  the whole map, which must be square); the integer multiplier and shift approximate 1 / kernel²;
* `linear`: out_channels; only as the last layer;
* `residual`: a ResNet basic block of out_channels: a 3x3 conv2d with `stride` (1) and padding 1
  (BN folded, ReLU), then a 3x3 stride-1 conv2d whose output adds the block's input before its ReLU
  (the Deployment's `residual`). When the stride or the channel count changes, the added map is a
  1x1 stride-s conv2d of the block's input without ReLU (a signed map, the projection shortcut);
  otherwise the input itself (identity). With `repeat` N the entry is a ResNet stage of N blocks:
  the first has `stride` (and the projection), the others stride 1.

The last layer (a conv2d or linear layer) outputs the class scores. Sparsity: `tile_sparsity`
(ternary engine: fraction of PE tiles pruned, default 0.5), `zero_fraction` (ternary: zeros inside
kept tiles, default 0.1), `winograd_density` (Winograd engine: fraction of nonzero Winograd-domain
weights, default 0.4). `seed` (default 0).
Layers are named by kind and position (conv0, pool1, avgpool9, linear10, as `terwin.synthetic`
names them); a block's projection shortcut is proj<position>. A block lists its layers as
[projection,] first conv (reading the block's input), second conv (adding the shortcut).
Every field is checked (unknown fields, types, ranges), and the sizes (layers after `repeat`, each
map, each layer's and all weights) against the limits of docs/deployment-format.md, before any weight
is drawn.
"""
from __future__ import annotations

import math

import numpy as np

from . import intmath, safeio
from .checks import check_seed, is_int, names, short_repr
from .deployment import (INPUT, MAX_LAYERS, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d,
                         check_map, check_weights, conv_out_size)
from .errors import SpecError
from .spec import HardwareSpec

RESIDUAL = "residual"  # the one block type of a description: a ResNet basic block
_FIELDS = {  # a description's layer types: the Deployment's layer kinds, with its field names, and the block
    Conv2d.kind: {"out_channels", "kernel", "stride", "padding"},
    MaxPool2d.kind: {"kernel", "stride"},
    AvgPool2d.kind: {"kernel", "stride", "global"},
    Linear.kind: {"out_channels"},
    RESIDUAL: {"out_channels", "stride"},
}
_TYPES = f"one of {', '.join(k for k in _FIELDS if k != RESIDUAL)} (layer kinds) or {RESIDUAL} (a block)"
# Generated layer names: a short prefix per kind and the layer's position (conv0, wconv1, pool2,
# linear3). Names only (the kind is the layer's class); kept short and stable so that synthetic
# models, stored test models and reports stay the same.
_NAME_PREFIX = {Conv2d.kind: "conv", WinogradConv2d.kind: "wconv", MaxPool2d.kind: "pool",
                AvgPool2d.kind: "avgpool", Linear.kind: "linear"}
PROJECTION_PREFIX = "proj"
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

    plan = _Plan(spec, shape, where)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SpecError(f"{where}: layers[{i}] must be an object with a type, {_TYPES}")
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in _FIELDS:
            raise SpecError(f"{where}: layers[{i}].type must be {_TYPES}, not {short_repr(kind)}")
        allowed = _FIELDS[kind] | {"type", "repeat"}
        bad = set(entry) - allowed
        if bad:
            raise SpecError(f"{where}: layers[{i}] ({kind}): unknown field(s) {names(bad)} "
                            f"(a {kind} takes {', '.join(sorted(allowed))})")
        repeat = _pos(entry.get("repeat", 1), f"{where}: layers[{i}].repeat")
        if len(plan.layers) + repeat > MAX_LAYERS:  # every repeat adds a layer at least: before the loop runs
            raise SpecError(f"{where}: layers[{i}].repeat: more than {MAX_LAYERS:,} layers in all")
        last_entry = i == len(entries) - 1
        if kind == Linear.kind and (not last_entry or repeat > 1):
            raise SpecError(f"{where}: layers[{i}] (linear): a linear layer must be the last layer")
        if last_entry and kind not in (Conv2d.kind, Linear.kind):
            raise SpecError(f"{where}: layers[{i}] ({kind}): the last layer must be a conv2d or linear layer "
                            f"(the class scores)")
        for r in range(repeat):
            plan.add(kind, entry, f"{where}: layers[{i}] ({kind})", first=r == 0)
    plan.layers[-1]["relu"] = False  # the class scores

    rng = np.random.default_rng(seed)
    layers = tuple(_draw(fields, spec, rng, tile_sparsity, zero_fraction, density) for fields in plan.layers)
    dep = Deployment(spec=spec, input_shape=tuple(data["input_shape"]), input_scale=1.0 / spec.act_max,
                     layers=layers, meta={"family": "network", "name": str(data.get("name", "network")),
                                          "seed": seed})
    return dep.validate()


class _Plan:
    """The layers of a description, as the fields of Deployment layers (no weights yet), every size
    checked against the limits as each layer is added."""

    def __init__(self, spec: HardwareSpec, shape, where: str):
        self.spec = spec
        self.winograd = spec.weight_format == "winograd"
        self.shape = tuple(shape)   # the output of the last layer so far
        self.previous = INPUT       # its name
        self.where = where
        self.layers: list[dict] = []
        self.total_weights = 0

    def _append(self, fields: dict, out_shape) -> dict:
        if len(self.layers) >= MAX_LAYERS:
            raise SpecError(f"{self.where}: layers: more than {MAX_LAYERS:,} layers in all")
        self.layers.append(fields)
        self.shape, self.previous = tuple(out_shape), fields["name"]
        return fields

    def add(self, kind: str, entry: dict, at: str, *, first: bool):
        n = len(self.layers)
        if kind in (MaxPool2d.kind, AvgPool2d.kind):
            self._pool(kind, entry, at, n)
        elif kind == Linear.kind:
            out = _pos(entry.get("out_channels"), f"{at}.out_channels")
            self.total_weights += check_weights((out, math.prod(self.shape)), f"{at}.out_channels",
                                                total=self.total_weights)
            self._append(dict(kind=kind, name=layer_name(kind, n), in_shape=self.shape, out_channels=out),
                         (out, 1, 1))
        elif kind == Conv2d.kind:
            out = _pos(entry.get("out_channels"), f"{at}.out_channels")
            k = _pos(entry.get("kernel"), f"{at}.kernel")
            stride = _pos(entry.get("stride", 1), f"{at}.stride")
            padding = entry.get("padding", 0)
            if not is_int(padding) or padding < 0:
                raise SpecError(f"{at}.padding must be a non-negative integer, not {short_repr(padding)}")
            self._conv(at, out, k, stride, padding, name=layer_name(Conv2d.kind, n))
        else:
            self._residual(entry, at, first=first)

    def _pool(self, kind: str, entry: dict, at: str, n: int):
        c, h, w = self.shape
        cls = MaxPool2d if kind == MaxPool2d.kind else AvgPool2d
        glob = entry.get("global", False)
        if not isinstance(glob, bool):
            raise SpecError(f"{at}.global must be true or false, not {short_repr(glob)}")
        if glob:
            if "kernel" in entry or "stride" in entry:
                raise SpecError(f"{at}: a global average pool takes no kernel or stride (the window is the map)")
            if h != w:
                raise SpecError(f"{at}: a global average pool needs a square map, not {h}x{w}")
            k = stride = h
        else:
            k = _pos(entry.get("kernel", 2), f"{at}.kernel")
            stride = _pos(entry.get("stride", k), f"{at}.stride")
        out_shape = (c, conv_out_size(h, k, stride, 0), conv_out_size(w, k, stride, 0))
        if min(out_shape) < 1:
            raise SpecError(f"{at}: input {self.shape} gives an empty output {out_shape}")
        fields = dict(kind=kind, name=layer_name(kind, n), in_shape=self.shape, kernel=k, stride=stride)
        if cls is AvgPool2d:  # multiplier / 2^shift ≈ 1 / k²
            fields["multiplier"], fields["shift"] = intmath.fit_multiplier(1.0 / (k * k))
        self._append(fields, out_shape)

    def _conv(self, at: str, out: int, k: int, stride: int, padding: int, *, name: str, what: str = "",
              **graph) -> dict:
        """A conv2d (a winograd_conv2d on a Winograd spec) reading the map of shape `self.shape`.
        `graph`: its source / residual / relu fields. Sizes checked before anything is drawn."""
        if self.winograd and (k, stride) != (3, 1):
            raise SpecError(f"{at}: the Winograd engine runs 3x3 stride-1 convolutions only, "
                            f"not kernel {k} stride {stride}{what}")
        in_shape = self.shape
        out_shape = (out, *(conv_out_size(v, k, stride, padding) for v in in_shape[1:]))
        if min(out_shape) < 1:
            raise SpecError(f"{at}: input {in_shape} gives an empty output {out_shape}")
        check_map(out_shape, f"{at}: output")
        wshape = (out, in_shape[0], *((self.spec.winograd_input_tile,) * 2 if self.winograd else (k, k)))
        self.total_weights += check_weights(wshape, f"{at}.weight", total=self.total_weights)
        fields = dict(kind=Conv2d.kind, name=name, in_shape=in_shape, out_channels=out, kernel=k, stride=stride,
                      padding=padding, **graph)
        return self._append(fields, out_shape)

    def _residual(self, entry: dict, at: str, *, first: bool):
        """A ResNet basic block: [projection,] conv a (stride, reading the block's input), conv b (+ shortcut)."""
        out = _pos(entry.get("out_channels"), f"{at}.out_channels")
        stride = _pos(entry.get("stride", 1), f"{at}.stride") if first else 1
        block_in, block_shape = self.previous, self.shape
        shortcut = block_in
        source = None  # conv a reads the block's input: the layer before it, unless a projection comes first
        if stride != 1 or block_shape[0] != out:
            shortcut = self._conv(at, out, 1, stride, 0, name=f"{PROJECTION_PREFIX}{len(self.layers)}",
                                  what=" (the block's projection shortcut)", relu=False)["name"]
            self.shape = block_shape
            source = block_in
        self._conv(at, out, 3, stride, 1, name=layer_name(Conv2d.kind, len(self.layers)), source=source)
        self._conv(at, out, 3, 1, 1, name=layer_name(Conv2d.kind, len(self.layers)), residual=shortcut)


def _draw(fields: dict, spec: HardwareSpec, rng, tile_sparsity: float, zero_fraction: float, density: float):
    """The Deployment layer of planned `fields`, its weights drawn at random (in layer order, so a
    description without blocks draws the weights it always did)."""
    fields = dict(fields)
    kind = fields.pop("kind")
    if kind == MaxPool2d.kind:
        return MaxPool2d(**fields)
    if kind == AvgPool2d.kind:
        return AvgPool2d(**fields)
    out = fields["out_channels"]
    if fields.get("residual") is not None:  # the shortcut at its own scale: m_r = 2^shift, shift 1 (`unit_requant`)
        fields["residual_multiplier"] = np.full(out, 2, dtype=np.int64)
    winograd = spec.weight_format == "winograd"
    if kind == Linear.kind:
        if winograd:  # the engine's sparse integer MAC path: int8 weights
            return random_int_linear(fields, 8, rng, zero_fraction)
        return random_ternary_layer(Linear, fields, (out, math.prod(fields["in_shape"])), spec, rng,
                                    tile_sparsity, zero_fraction)
    if winograd:
        del fields["kernel"], fields["stride"]
        return random_winograd_layer(fields, spec, rng, density)
    k = fields["kernel"]
    return random_ternary_layer(Conv2d, fields, (out, fields["in_shape"][0], k, k), spec, rng, tile_sparsity,
                                zero_fraction)


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
