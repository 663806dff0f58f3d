"""`Deployment`: an integer-only model for one `HardwareSpec`.

Layers are plain frozen dataclasses holding NumPy integer arrays. `Deployment.validate()` checks
every shape, range and mask against the spec; the file format (`terwin.fileformat`) calls it on
load so an inconsistent file fails with one line naming the field.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Union

import numpy as np

from .errors import FormatError
from .checks import is_int, short_repr
from .spec import HardwareSpec
from .tiling import TileGrid

WEIGHT_CODES = ("ternary", "int")
CODECS = ("raw", "huffman")   # a weighted layer's `codec` (terwin.codec; "huffman" needs format version 3)
INPUT = "@input"   # the name by which `source` / `residual` refer to the network input (a layer name cannot start with "@")

# Limits on a model's sizes (docs/deployment-format.md, "Limits"), checked before anything of that size
# is allocated: far above what terwin targets (ResNet-18: 21 layers, largest map 802,816 activations,
# largest layer 2.4 M weights, 11.7 M in all), far below what exhausts a machine.
MAX_LAYERS = 1024
MAX_MAP_ELEMENTS = 1 << 22     # activations in one map: the input, or a layer's output
MAX_LAYER_WEIGHTS = 1 << 24
MAX_TOTAL_WEIGHTS = 1 << 26
MAX_NAME_CHARS = 128           # a layer or class name: printable characters
WEIGHT_BITS = (2, 16)          # weight_bits: smallest and largest
# What `generate`, `verify` and `build` accept (`check_fits_hardware`): the accelerator holds the
# activation maps live at once (two in a chain; a residual connection keeps its map longer) and its
# weights in on-chip memory; more than 4 Mibit fits no FPGA terwin builds for (the largest, ECP5-85F,
# has 3.7 Mbit of block RAM).
MAX_ONCHIP_BITS = 1 << 22


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True, kw_only=True, eq=False)
class _Node:
    """Every layer reads one map: `source` names the layer whose output it is (INPUT for the network
    input); None (the default, and all a format-version-1 file has) means the layer just before it
    in `Deployment.layers`, or the network input for the first layer."""
    source: str | None = None


@dataclass(frozen=True, kw_only=True, eq=False)
class _Requant(_Node):
    """Fields shared by the layers that end in the integer contract's requantizer.

    relu True: y = clamp(((acc + bias)·m [+ r·m_r] + 2^(s-1)) >> s, 0, 2^act_bits - 1), an unsigned map.
    relu False, last layer: y = acc + bias, the class scores.
    relu False, any other layer: the same rounding, clamped to -2^(act_bits-1) .. 2^(act_bits-1) - 1: a
    signed map, which only a later layer's `residual` may read (a projection shortcut).
    `residual` (format version 2) names an earlier layer whose output map, of this layer's output
    shape, is added at the same (channel, y, x) as r·m_r before the shift: a residual connection.
    """
    bias: np.ndarray        # int64 [out], in accumulator units
    multiplier: np.ndarray  # int64 [out], signed
    shift: np.ndarray       # int64 [out], >= 1
    relu: bool = True
    weight_scale: tuple[float, ...] = ()  # informational: float value of one weight unit, per layer (1) or per channel
    residual: str | None = None
    residual_multiplier: np.ndarray | None = None  # int64 [out], signed 32-bit: m_r
    codec: str = "raw"      # how the weight stream is stored (format version 3): "raw" or "huffman" (terwin.codec)


@dataclass(frozen=True, kw_only=True, eq=False)
class Conv2d(_Requant):
    kind: ClassVar[str] = "conv2d"
    name: str
    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    weight: np.ndarray                 # int8 [out, in, k, k]
    weight_code: str = "ternary"       # "ternary": codes in {-1, 0, +1}; "int": signed weight_bits
    weight_bits: int = 2
    tile_mask: np.ndarray | None = None  # uint8 [og, tg, cg]: 1 = tile kept (ternary engine)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        return (self.out_channels, conv_out_size(h, self.kernel, self.stride, self.padding),
                conv_out_size(w, self.kernel, self.stride, self.padding))

    def tile_grid(self, spec: HardwareSpec) -> TileGrid:
        return TileGrid.for_weight(self.weight.shape, spec)


@dataclass(frozen=True, kw_only=True, eq=False)
class Linear(_Requant):
    kind: ClassVar[str] = "linear"
    name: str
    in_shape: tuple[int, int, int]     # (C, H, W) of the input; flattened C-major as torch does
    out_channels: int
    weight: np.ndarray                 # int8 [out, C*H*W]
    weight_code: str = "ternary"
    weight_bits: int = 2
    tile_mask: np.ndarray | None = None

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, 1, 1)

    def tile_grid(self, spec: HardwareSpec) -> TileGrid:
        return TileGrid.for_weight(self.weight.shape, spec, in_shape=self.in_shape)


@dataclass(frozen=True, kw_only=True, eq=False)
class MaxPool2d(_Node):
    kind: ClassVar[str] = "maxpool2d"
    name: str
    in_shape: tuple[int, int, int]
    kernel: int = 2
    stride: int = 2

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        return (c, conv_out_size(h, self.kernel, self.stride, 0), conv_out_size(w, self.kernel, self.stride, 0))


@dataclass(frozen=True, kw_only=True, eq=False)
class AvgPool2d(_Node):
    """Average pooling on integers (format version 2): the window's sum times `multiplier`, rounded
    and shifted like the requantizer, y = clamp((sum·m + 2^(s-1)) >> s, 0, 2^act_bits - 1), with
    m / 2^s ≈ 1 / kernel². Global average pooling is kernel = stride = the input's height = width."""
    kind: ClassVar[str] = "avgpool2d"
    name: str
    in_shape: tuple[int, int, int]
    kernel: int = 2
    stride: int = 2
    multiplier: int = 1
    shift: int = 2

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        return (c, conv_out_size(h, self.kernel, self.stride, 0), conv_out_size(w, self.kernel, self.stride, 0))


@dataclass(frozen=True, kw_only=True, eq=False)
class WinogradConv2d(_Requant):
    """A 3x3, stride-1 convolution computed as F(m x m, 3x3) on integers.

    weight holds the Winograd-domain weights U[out, in, m+2, m+2] (signed weight_bits integers);
    zeros are multiplications the engine skips. The output of one m x m tile is
    Y = A^T (sum_c U[o, c] * (B^T d_c B)) A, then the requantizer.
    """
    kind: ClassVar[str] = "winograd_conv2d"
    name: str
    in_shape: tuple[int, int, int]
    out_channels: int
    padding: int = 1
    tile: int = 2
    weight: np.ndarray                 # int [out, in, tile+2, tile+2]
    weight_bits: int = 8

    kernel: ClassVar[int] = 3
    stride: ClassVar[int] = 1

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        return (self.out_channels, conv_out_size(h, 3, 1, self.padding), conv_out_size(w, 3, 1, self.padding))


Layer = Union[Conv2d, Linear, MaxPool2d, AvgPool2d, WinogradConv2d]
LAYER_TYPES: dict[str, type] = {cls.kind: cls for cls in (Conv2d, Linear, MaxPool2d, AvgPool2d, WinogradConv2d)}
# fields and kinds a format-version-1 file cannot hold (`Deployment.format_version`)
VERSION_2_FIELDS = ("source", "residual", "residual_multiplier")
VERSION_2_KINDS = ("avgpool2d",)
# a weighted layer's codec other than "raw" (`Deployment.format_version` 3); a "raw" codec is not written
VERSION_3_FIELDS = ("codec",)



@dataclass(frozen=True, kw_only=True, eq=False)
class Deployment:
    """An integer model for one spec. The network input x (floats) is quantized once:
    q = clamp(floor(x / input_scale + 1/2), 0, 2**act_bits - 1)."""
    spec: HardwareSpec
    input_shape: tuple[int, int, int]
    input_scale: float
    layers: tuple[Layer, ...]
    class_names: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # lists become tuples, NumPy integers in the shape Python ints; anything else is left for validate() to name
        for name in ("layers", "class_names", "input_shape"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.input_shape, tuple):
            object.__setattr__(self, "input_shape", tuple(int(v) if is_int(v) else v for v in self.input_shape))

    @property
    def output_shape(self):
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def weighted_layers(self):
        return [layer for layer in self.layers if hasattr(layer, "weight")]

    def replace(self, **changes) -> "Deployment":
        return dataclasses.replace(self, **changes)

    # What a trained model fixes: a different value would be a different model, not another array.
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("act_bits", "weight_format", "winograd_tile", "winograd_weight_bits")

    def retarget(self, spec: HardwareSpec) -> "Deployment":
        """The same model on another accelerator (array shape, clock, any field but `MODEL_FIELDS`):
        the tile masks are re-derived from the weights when the PE tiles change (a tile pruned for
        this spec's array may hold weights of another array's tile: the new mask keeps every tile
        with a nonzero weight, so the integer model is unchanged). SpecError for a field the model fixes."""
        from .errors import SpecError
        for name in self.MODEL_FIELDS:
            if getattr(spec, name) != getattr(self.spec, name):
                raise SpecError(f"--spec {spec.name}: the model was compressed with {name}={getattr(self.spec, name)!r}; "
                                f"another spec may change only the fields other than {', '.join(self.MODEL_FIELDS)}")
        if (spec.pe_rows, spec.pe_cols) == (self.spec.pe_rows, self.spec.pe_cols):
            return self.replace(spec=spec)
        layers = tuple(dataclasses.replace(l, tile_mask=l.tile_grid(spec).occupied(l.weight).astype(np.uint8))
                       if getattr(l, "tile_mask", None) is not None else l for l in self.layers)
        return self.replace(spec=spec, layers=layers).validate()

    # -- consistency ---------------------------------------------------------------------

    def validate(self) -> "Deployment":
        """Raise FormatError naming the first inconsistent field; return self when all is well.

        Types first (strictly: a bool is not an int, a float is not a size), then the sizes against
        the limits above, then shapes, ranges and masks against the spec."""
        check_types(self, "")
        spec = self.spec
        if min(self.input_shape) < 1:
            raise FormatError(f"input_shape must be (C, H, W) with positive sizes, not {self.input_shape}")
        check_map(self.input_shape, "input_shape")
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise FormatError(f"input_scale must be a positive number, not {self.input_scale}")
        for i, name in enumerate(self.class_names):
            check_name(name, f"class_names[{i}]")
        if not self.layers:
            raise FormatError("layers: a deployment needs at least one layer")
        if len(self.layers) > MAX_LAYERS:
            raise FormatError(f"layers: {len(self.layers):,} layers, more than the limit of {MAX_LAYERS:,}")
        shapes = {INPUT: self.input_shape}   # name -> output shape, of the layers so far
        signed = set()                       # names of the signed maps (relu False, not last)
        readers: dict[str, int] = {}         # name -> how many later layers read it
        previous = INPUT
        total_weights = 0
        for i, layer in enumerate(self.layers):
            check_types(layer, f"layers[{i}].")
            check_name(layer.name, f"layers[{i}].name")
            where = f"layers[{i}] ({layer.name})"
            if layer.name in shapes:
                raise FormatError(f"{where}.name: duplicate layer name")
            last = i == len(self.layers) - 1
            source = previous if layer.source is None else layer.source
            if source not in shapes:
                raise FormatError(f"{where}.source: {short_repr(source)} is not the network input ({INPUT}) "
                                  f"or an earlier layer")
            if source in signed:
                raise FormatError(f"{where}.source: {source} is a signed map (relu false), which only a "
                                  f"residual may read")
            readers[source] = readers.get(source, 0) + 1
            if tuple(layer.in_shape) != tuple(shapes[source]):
                raise FormatError(f"{where}.in_shape: {tuple(layer.in_shape)} does not match the output of "
                                  f"{source} {tuple(shapes[source])}")
            if hasattr(layer, "weight"):
                total_weights += check_weights(layer.weight.shape, f"{where}.weight", total=total_weights)
            _validate_layer(layer, spec, where, last=last)
            shape = layer.out_shape
            if min(shape) < 1:
                raise FormatError(f"{where}: output shape {shape} is empty")
            check_map(shape, f"{where}: output")
            if getattr(layer, "residual", None) is not None:
                r = layer.residual
                if r not in shapes:
                    raise FormatError(f"{where}.residual: {short_repr(r)} is not the network input ({INPUT}) "
                                      f"or an earlier layer")
                if tuple(shapes[r]) != tuple(shape):
                    raise FormatError(f"{where}.residual: {r}'s output {tuple(shapes[r])} does not match this "
                                      f"layer's output {tuple(shape)}")
                readers[r] = readers.get(r, 0) + 1
            if not getattr(layer, "relu", True) and not last:
                signed.add(layer.name)
            shapes[layer.name] = shape
            previous = layer.name
        unread = [layer.name for layer in self.layers[:-1] if not readers.get(layer.name)]
        if unread:
            raise FormatError(f"layers: the output of {unread[0]} is never read (every layer but the last feeds "
                              f"a later one)")
        return self

    @property
    def format_version(self) -> int:
        """3 when a layer's weights are entropy-coded (`codec` other than "raw"), else 2 when the model
        uses a graph feature (a `source`, a `residual`, average pooling), else 1."""
        if any(getattr(layer, "codec", "raw") != "raw" for layer in self.layers):
            return 3
        for layer in self.layers:
            if layer.kind in VERSION_2_KINDS or any(getattr(layer, f, None) is not None for f in VERSION_2_FIELDS):
                return 2
        return 1

    def sources(self) -> list[str]:
        """The name of the map each layer reads (INPUT for the network input), in layer order."""
        out, previous = [], INPUT
        for layer in self.layers:
            out.append(previous if layer.source is None else layer.source)
            previous = layer.name
        return out

    def onchip_bits(self) -> int:
        """On-chip memory the accelerator needs, at most: as many activation maps of the largest size
        as are live at once (`live_maps`) at act_bits, and every weight at its weight_bits."""
        _, largest = self._largest_map()
        return self.live_maps() * math.prod(largest) * self.spec.act_bits + self._weight_bits()

    def live_maps(self) -> int:
        """The most activation maps live at once, at least 2: while a layer runs, its output and every
        map (the input or an earlier layer's output) that it or a later layer still reads, as source or
        residual. 2 for a chain (a layer's input and output); a residual block keeps its input live
        across the block."""
        last_read: dict[str, int] = {}
        for i, (layer, source) in enumerate(zip(self.layers, self.sources())):
            last_read[source] = i
            if getattr(layer, "residual", None) is not None:
                last_read[layer.residual] = i
        names = [INPUT] + [layer.name for layer in self.layers]
        peak = 2
        for i in range(len(self.layers)):   # live during layer i: maps written before it, read at i or later
            peak = max(peak, 1 + sum(1 for name in names[:i + 1] if last_read.get(name, -1) >= i))
        return peak

    def check_fits_hardware(self) -> "Deployment":
        """Refuse (one line naming the largest map and how many maps are live at once) a model too
        large for any accelerator terwin generates (MAX_ONCHIP_BITS): `generate`, `verify` and `build`
        call this before building anything."""
        bits = self.onchip_bits()
        if bits > MAX_ONCHIP_BITS:
            where, largest = self._largest_map()
            raise FormatError(f"{where} {'x'.join(map(str, largest))}: the accelerator would need {bits:,} bits of "
                              f"on-chip memory ({self.live_maps()} such maps at {self.spec.act_bits} bits, "
                              f"{self._weight_bits():,} bits of weights), more than the limit of {MAX_ONCHIP_BITS:,} bits (the largest FPGA "
                              f"terwin builds for has 3.7 Mbit of block RAM)")
        return self

    def _largest_map(self):
        maps = [("input_shape", self.input_shape)]
        maps += [(f"layers[{i}] ({layer.name}) output", layer.out_shape) for i, layer in enumerate(self.layers)]
        return max(maps, key=lambda m: math.prod(m[1]))

    def _weight_bits(self) -> int:
        return sum(layer.weight.size * layer.weight_bits for layer in self.weighted_layers)


# -- strict types and sizes ----------------------------------------------------------------------


def check_map(shape, where: str) -> int:
    """The number of activations in `shape`, refused beyond MAX_MAP_ELEMENTS."""
    n = math.prod(shape)
    if n > MAX_MAP_ELEMENTS:
        raise FormatError(f"{where}: {'x'.join(map(str, shape))} = {n:,} activations, more than the limit of "
                          f"{MAX_MAP_ELEMENTS:,} per map")
    return n


def check_weights(shape, where: str, *, total: int = 0) -> int:
    """The number of weights in `shape`, refused beyond MAX_LAYER_WEIGHTS, or when `total` (the
    weights counted so far) plus it exceeds MAX_TOTAL_WEIGHTS."""
    n = math.prod(shape)
    if n > MAX_LAYER_WEIGHTS:
        raise FormatError(f"{where}: {n:,} weights, more than the limit of {MAX_LAYER_WEIGHTS:,} per layer")
    if total + n > MAX_TOTAL_WEIGHTS:
        raise FormatError(f"{where}: {total + n:,} weights so far, more than the limit of {MAX_TOTAL_WEIGHTS:,} per model")
    return n


def check_name(name: str, where: str) -> None:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable() or name.startswith("@"):
        raise FormatError(f"{where}: {short_repr(name)} must be 1 to {MAX_NAME_CHARS} printable characters, "
                          f"not starting with @")


def _matches(value, hint) -> bool:
    """Whether `value` is of the annotated type `hint`, strictly: a bool is neither an int nor a
    float, a float (even 3.0) is not an int; an int is a float (a number), a float must be finite."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_int(value) or isinstance(value, (float, np.floating)) and math.isfinite(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    return isinstance(value, origin or hint)


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if hint in _WORDS:
        return _WORDS[hint]
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
        return f"a list of {len(args)} {_describe(args[0]).split(' ', 1)[1]}s"
    if origin is Union or origin is types.UnionType:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return f"a {getattr(origin or hint, '__name__', hint)}"


_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
          dict: "an object", np.ndarray: "an array", type(None): "null"}


@functools.cache
def _hints(cls) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def check_types(obj, prefix: str) -> None:
    """Check every dataclass field of `obj` against its annotation (one rule for every field)."""
    for name, hint in _hints(type(obj)):
        value = getattr(obj, name)
        if not _matches(value, hint):
            shown = short_repr(value) if not isinstance(value, np.ndarray) else f"an array of shape {value.shape}"
            raise FormatError(f"{prefix}{name}: must be {_describe(hint)}, not {shown}")


def _check_array(arr, where: str, *, shape, lo=None, hi=None):
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
        raise FormatError(f"{where}: must be an integer array")
    if tuple(arr.shape) != tuple(shape):
        raise FormatError(f"{where}: shape {tuple(arr.shape)} does not match the expected {tuple(shape)}")
    if arr.size and lo is not None and int(arr.min()) < lo:
        raise FormatError(f"{where}: value {int(arr.min())} is below the allowed minimum {lo}")
    if arr.size and hi is not None and int(arr.max()) > hi:
        raise FormatError(f"{where}: value {int(arr.max())} is above the allowed maximum {hi}")


def _validate_layer(layer, spec: HardwareSpec, where: str, *, last: bool):
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        if layer.kernel < 1 or layer.stride < 1:
            raise FormatError(f"{where}: kernel and stride must be positive")
        if isinstance(layer, AvgPool2d):
            if not -(1 << 31) <= layer.multiplier < (1 << 31) or layer.multiplier < 1:
                raise FormatError(f"{where}.multiplier: must be from 1 to 2^31 - 1, not {layer.multiplier}")
            if not 1 <= layer.shift <= 62:
                raise FormatError(f"{where}.shift: must be from 1 to 62, not {layer.shift}")
        return
    out = layer.out_channels
    lo, hi = WEIGHT_BITS
    if not lo <= layer.weight_bits <= hi:
        raise FormatError(f"{where}.weight_bits: must be from {lo} to {hi}, not {layer.weight_bits}")
    if isinstance(layer, WinogradConv2d):
        if layer.tile != spec.winograd_tile:
            raise FormatError(f"{where}.tile: F({layer.tile}x{layer.tile},3x3) does not match the spec's winograd_tile {spec.winograd_tile}")
        n = layer.tile + 2
        wb = layer.weight_bits
        _check_array(layer.weight, f"{where}.weight", shape=(out, layer.in_shape[0], n, n),
                     lo=-(1 << (wb - 1)), hi=(1 << (wb - 1)) - 1)
    else:
        if layer.weight_code not in WEIGHT_CODES:
            raise FormatError(f"{where}.weight_code: must be one of {', '.join(WEIGHT_CODES)}, not {layer.weight_code!r}")
        if isinstance(layer, Conv2d):
            expected = (out, layer.in_shape[0], layer.kernel, layer.kernel)
            if layer.stride < 1 or layer.padding < 0 or layer.kernel < 1:
                raise FormatError(f"{where}: kernel and stride must be positive, padding not negative")
        else:
            expected = (out, math.prod(layer.in_shape))
        if layer.weight_code == "ternary":
            lo, hi = -1, 1
            if layer.weight_bits != 2:
                raise FormatError(f"{where}.weight_bits: ternary codes are 2 bits, not {layer.weight_bits}")
        else:
            lo, hi = -(1 << (layer.weight_bits - 1)), (1 << (layer.weight_bits - 1)) - 1
        _check_array(layer.weight, f"{where}.weight", shape=expected, lo=lo, hi=hi)
        if layer.tile_mask is not None:
            grid = layer.tile_grid(spec)
            _check_array(layer.tile_mask, f"{where}.tile_mask", shape=grid.shape, lo=0, hi=1)
            pruned_nonzero = grid.occupied(layer.weight) & (layer.tile_mask == 0)
            if pruned_nonzero.any():
                og, tg, cg = (int(v) for v in np.argwhere(pruned_nonzero)[0])
                raise FormatError(f"{where}.tile_mask: tile ({og}, {tg}, {cg}) is marked pruned but holds nonzero weights")
    if layer.codec not in CODECS:
        raise FormatError(f"{where}.codec: must be one of {', '.join(CODECS)}, not {short_repr(layer.codec)}")
    _check_array(layer.bias, f"{where}.bias", shape=(out,), lo=-(1 << 40), hi=(1 << 40))
    _check_array(layer.multiplier, f"{where}.multiplier", shape=(out,), lo=-(1 << 31), hi=(1 << 31) - 1)
    _check_array(layer.shift, f"{where}.shift", shape=(out,), lo=1, hi=62)
    if (layer.residual is None) != (layer.residual_multiplier is None):
        raise FormatError(f"{where}.residual_multiplier: present exactly when residual is")
    if layer.residual is not None:
        _check_array(layer.residual_multiplier, f"{where}.residual_multiplier", shape=(out,), lo=-(1 << 31),
                     hi=(1 << 31) - 1)
        if last and not layer.relu:
            raise FormatError(f"{where}.residual: the score layer (relu false, last) takes no residual")
