"""Fuzzing the three loaders of user input: a model file (`fileformat.from_bytes`), a spec
(`HardwareSpec.from_json` / `from_dict`) and a network description (`network.network_deployment`).

The property is the same everywhere: the input loads, or the loader raises the one user-error type
(`TerwinError`). Anything else (a TypeError, a RecursionError, a MemoryError, a hang) is a bug.
Inputs: arbitrary bytes, arbitrary JSON (`st.recursive`), and mutations of valid files (a header
field replaced, deleted or given another type; a byte of the header text changed). What loads must
also be usable: written back, counted by `inspect`'s statistics and the cycle model.
Derandomized, so CI runs the same examples every time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terwin import fileformat, network, safeio
from terwin.errors import TerwinError
from terwin.sim import cycles
from terwin.spec import PE4X4, WINOGRAD, HardwareSpec
from terwin.stats import model_stats
from terwin.synthetic import random_deployment

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Integers: mostly small sizes (so what loads stays cheap), plus the edges of every range.
EDGE_INTS = [0, 1, 2, 3, 8, 64, 255, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64,
             2 ** 70, -1, -2 ** 63, -2 ** 64]
ints = st.integers(-3, 40) | st.sampled_from(EDGE_INTS)
scalars = (st.none() | st.booleans() | ints | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["ternary", "winograd", "conv2d", "maxpool2d", "linear",
                                                   "winograd_conv2d", "int", "|i1", "<i8", "conv", "pool",
                                                   "residual", "avgpool2d", "global"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _dumps(value) -> str:
    return json.dumps(value)  # writes NaN / Infinity / huge integers: the loaders must refuse them


def loads_or_refuses(load, *args):
    """Call `load`; return its result, or None when it raised a TerwinError (anything else propagates)."""
    try:
        return load(*args)
    except TerwinError as e:
        assert "\n" not in str(e), str(e)
        return None


# -- model files -------------------------------------------------------------------------------------


def _model(spec, **kw) -> bytes:
    return fileformat.to_bytes(random_deployment(spec, seed=5, calibration_images=4, **kw))


def _coded(spec, **kw) -> bytes:
    """A model whose weighted layers are Huffman-coded (format version 3): its tables and streams fuzzed too."""
    dep = random_deployment(spec, seed=5, calibration_images=4, **kw)
    return fileformat.to_bytes(dep.replace(layers=tuple(
        dataclasses.replace(l, codec="huffman") if hasattr(l, "weight") else l for l in dep.layers)))


def _dithered(spec, **kw) -> bytes:
    """A model written by the dithered quantizer (format version 4): its indices and dither fields fuzzed too."""
    from terwin.algo import quantizers as Q
    dep = random_deployment(spec, seed=5, calibration_images=4, **kw)
    layers, n = [], 0
    for layer in dep.layers:
        if hasattr(layer, "weight"):
            hi = (1 << (layer.weight_bits - 1)) - 1
            q = Q.dither_encode(layer.weight, 4, 9, n, lo=-hi, hi=hi)
            layer = dataclasses.replace(layer, weight=Q.dither_decode(q, 4, 9, n).astype(layer.weight.dtype))
            n += 1
        layers.append(layer)
    names = [layer.name for layer in layers if hasattr(layer, "weight")]
    data = fileformat.to_bytes(dep.replace(layers=tuple(layers), meta={**dep.meta, "dither": {"seed": 9, "step": 4,
                                                                                                "layers": names}}))
    assert json.loads(_split(data)[0])["format_version"] == 4
    return data


WINOGRAD_NET = dict(topology=(("winograd_conv2d", 8), ("maxpool2d", 2), ("winograd_conv2d", 8), ("maxpool2d", 2),
                              ("linear", 10)), linear_int_bits=8)
MODELS = {
    "ternary": _model(PE4X4),
    "winograd": _model(WINOGRAD, **WINOGRAD_NET),
    "ternary-huffman": _coded(PE4X4),
    "winograd-huffman": _coded(WINOGRAD, **WINOGRAD_NET),
}


def _split(data: bytes):
    (hlen,) = struct.unpack_from("<Q", data, 8)
    return data[16:16 + hlen], data[16 + hlen:-32]


MODELS["winograd-dithered"] = _dithered(WINOGRAD, **WINOGRAD_NET)


def _seal(text: bytes, blob: bytes) -> bytes:
    text += b" " * ((-(16 + len(text))) % 8)
    body = fileformat.MAGIC + struct.pack("<Q", len(text)) + text + blob
    return body + hashlib.sha256(body).digest()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


PATHS = {name: [p for p in _paths(json.loads(_split(data)[0])) if p] for name, data in MODELS.items()}


def _swapped(value):
    """The same value under another JSON type: what a careless writer produces."""
    return st.sampled_from([[value], str(value), None, True, False, {"value": value}]
                           + ([float(value), -value, value * 2 ** 32, value + 0.5] if isinstance(value, (int, float))
                              and not isinstance(value, bool) and abs(value) < 2 ** 60 else []))


def _mutated(data, doc, paths):
    """`doc` after 1 to 3 mutations, each at one of `paths`: the value replaced by arbitrary JSON,
    given another type, or its key deleted."""
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(paths), label="path")
        node = doc
        for key in path[:-1]:
            node = node[key] if isinstance(node, (dict, list)) and _has(node, key) else None
        if not isinstance(node, (dict, list)) or not _has(node, path[-1]):
            continue  # an earlier mutation removed or retyped a parent
        how = data.draw(st.sampled_from(["replace", "swap", "delete"]), label="how")
        if how == "delete" and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = data.draw(json_values if how == "replace" else _swapped(node[path[-1]]), label="value")
    return doc


def _has(node, key) -> bool:
    return key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)


def check_loaded(dep) -> None:
    """A model that loads is usable: it writes back to the same model, inspect's statistics run on it,
    and the cycle model predicts it or refuses it (an engine's own restriction) with a TerwinError."""
    again = fileformat.from_bytes(fileformat.to_bytes(dep))
    assert again.input_shape == dep.input_shape and len(again.layers) == len(dep.layers)
    model_stats(dep)
    loads_or_refuses(cycles.predict, dep)


@FUZZ
@given(data=st.binary(max_size=400), magic=st.booleans())
def test_arbitrary_bytes(data, magic):
    loads_or_refuses(fileformat.from_bytes, (fileformat.MAGIC if magic else b"") + data)


@FUZZ
@given(header=json_values, blob=st.binary(max_size=64))
def test_arbitrary_json_header(header, blob):
    loads_or_refuses(fileformat.from_bytes, _seal(_dumps(header).encode(), blob))


@pytest.mark.parametrize("name", sorted(MODELS))
@FUZZ
@given(data=st.data())
def test_mutated_header_fields(name, data):
    text, blob = _split(MODELS[name])
    header = _mutated(data, json.loads(text), PATHS[name])
    dep = loads_or_refuses(fileformat.from_bytes, _seal(_dumps(header).encode(), blob))
    if dep is not None:
        check_loaded(dep)


@pytest.mark.parametrize("name", sorted(MODELS))
@FUZZ
@given(data=st.data())
def test_mutated_header_bytes(name, data):
    text, blob = _split(MODELS[name])
    text = bytearray(text)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(0, len(text) - 1), label="at")
        text[i] = data.draw(st.sampled_from(b'[]{}",:0123456789-.eE \\tnu') | st.integers(0, 255), label="byte")
    dep = loads_or_refuses(fileformat.from_bytes, _seal(bytes(text), blob))
    if dep is not None:
        check_loaded(dep)


@pytest.mark.parametrize("name", sorted(MODELS))
@FUZZ
@given(data=st.data())
def test_corrupt_data_sections_and_lengths(name, data):
    """Bytes of the whole file changed, without re-sealing: the checksum or a size check refuses it."""
    raw = bytearray(MODELS[name])
    i = data.draw(st.integers(0, len(raw) - 1), label="at")
    raw[i] ^= data.draw(st.integers(1, 255), label="xor")
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    with pytest.raises(TerwinError):
        fileformat.from_bytes(bytes(raw[:cut]))


@pytest.mark.parametrize("name", ["ternary-huffman", "winograd-huffman"])
@FUZZ
@given(data=st.data())
def test_mutated_codec_data_resealed(name, data):
    """Bytes of a coded layer's table or stream changed and the file re-sealed (a valid checksum): it
    loads only if the stream still decodes to exactly the layer's weights, else it is refused."""
    text, blob = _split(MODELS[name])
    header = json.loads(text)
    refs = [(layer["arrays"][k], layer["name"] if "name" in layer else "") for layer in header["layers"]
            for k in ("codec_lengths", "codec_stream") if k in layer["arrays"]]
    ref, _ = data.draw(st.sampled_from(refs), label="array")
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        i = ref["offset"] + data.draw(st.integers(0, ref["nbytes"] - 1), label="at")
        blob[i] = data.draw(st.integers(0, 255), label="byte")
    original = fileformat.from_bytes(MODELS[name])
    dep = loads_or_refuses(fileformat.from_bytes, _seal(text, bytes(blob)))
    if dep is not None:
        for a, b in zip(dep.weighted_layers, original.weighted_layers):
            assert np.array_equal(a.weight, b.weight)


# -- specs ---------------------------------------------------------------------------------------------

SPEC_FIELDS = sorted(PE4X4.to_dict())


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(_dumps))
def test_spec_from_arbitrary_text(text):
    loads_or_refuses(HardwareSpec.from_json, text)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(SPEC_FIELDS) | st.text(max_size=6), json_values, max_size=4))
def test_spec_from_mutated_fields(changes):
    spec = loads_or_refuses(HardwareSpec.from_json, _dumps({**PE4X4.to_dict(), **changes}))
    if spec is not None:
        assert HardwareSpec.from_json(spec.to_json()) == spec
        for name in ("pe_rows", "pe_cols", "act_bits", "mult_lanes", "winograd_tile", "winograd_weight_bits"):
            assert type(getattr(spec, name)) is int  # a bool or a float never passes as an integer


# -- network descriptions --------------------------------------------------------------------------------

NET = {"input_shape": [2, 10, 10], "seed": 1, "tile_sparsity": 0.25,
       "layers": [{"type": "conv2d", "out_channels": 6, "kernel": 3, "padding": 1, "repeat": 2},
                  {"type": "maxpool2d", "kernel": 2},
                  {"type": "residual", "out_channels": 8, "stride": 1, "repeat": 2},
                  {"type": "conv2d", "out_channels": 8, "kernel": 3},
                  {"type": "avgpool2d", "global": True},
                  {"type": "linear", "out_channels": 10}]}
NET_PATHS = [p for p in _paths(NET) if p]
net_specs = st.sampled_from([PE4X4, WINOGRAD])


@FUZZ
@given(value=json_values, spec=net_specs)
def test_network_from_arbitrary_json(value, spec):
    parsed = loads_or_refuses(safeio.parse_json, _dumps(value))
    if parsed is not None:
        loads_or_refuses(network.network_deployment, parsed, spec)


@FUZZ
@given(data=st.data(), spec=net_specs)
def test_network_from_mutated_descriptions(data, spec):
    desc = _mutated(data, json.loads(json.dumps(NET)), NET_PATHS)
    parsed = loads_or_refuses(safeio.parse_json, _dumps(desc))
    if parsed is not None:
        dep = loads_or_refuses(network.network_deployment, parsed, spec)
        if dep is not None:
            loads_or_refuses(cycles.predict, dep)


# -- the JSON reader itself ----------------------------------------------------------------------------


@FUZZ
@given(text=st.text(alphabet=st.sampled_from('[]{}",:0123456789-.eE tfrunlaNIy\\'), max_size=300))
def test_json_reader_on_json_like_noise(text):
    loads_or_refuses(safeio.parse_json, text)


@FUZZ
@given(value=st.recursive(st.none() | st.booleans() | st.integers(safeio.INT_MIN, safeio.INT_MAX)
                          | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=4), max_leaves=16))
def test_json_reader_reads_all_json_within_the_limits(value):
    assert safeio.parse_json(json.dumps(value)) == value
