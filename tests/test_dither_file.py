"""Dithered weights in the model file (format version 4): a model written by the dithered quantizer
(`meta.dither`) stores its indices and the dither's seed, step and layer number instead of its
weights, and is decoded exactly on load (`terwin.dither`): the same weights (==, and the same dtype)
as the weights form, the same bytes when written again; every inconsistency refused in one line;
files without dithered indices written as before, byte for byte."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from terwin import dither, fileformat
from terwin.algo import quantizers as Q
from terwin.codec import with_codec
from terwin.errors import FormatError

ROOT = Path(__file__).parents[1]
WINOGRAD = ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin"
STORED = sorted(ROOT.glob("bitstreams/*/*/model.terwin"))


def dithered(dep, step=4, seed=12345):
    """`dep`'s weighted layers requantized as `--quantizer dithered` does, with its meta.dither."""
    layers, n = [], 0
    for layer in dep.layers:
        if hasattr(layer, "weight"):
            qmax = (1 << (layer.weight_bits - 1)) - 1
            q = Q.dither_encode(layer.weight, step, seed, n, lo=-qmax, hi=qmax)
            layer = dataclasses.replace(layer, weight=Q.dither_decode(q, step, seed, n).astype(layer.weight.dtype))
            n += 1
        layers.append(layer)
    meta = dict(dep.meta, dither={"seed": seed, "step": step, "layers": [l.name for l in layers if hasattr(l, "weight")]})
    return dep.replace(layers=tuple(layers), meta=meta).validate()


@pytest.fixture(scope="module")
def model():
    return dithered(fileformat.load(WINOGRAD))


def _split(data: bytes):
    (hlen,) = struct.unpack_from("<Q", data, 8)
    return json.loads(data[16:16 + hlen]), bytearray(data[16 + hlen:-32])


def _seal(header: dict, blob: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * ((-(16 + len(text))) % 8)
    body = fileformat.MAGIC + struct.pack("<Q", len(text)) + text + bytes(blob)
    return body + hashlib.sha256(body).digest()


def _edit(data: bytes, edit) -> bytes:
    header, blob = _split(data)
    edit(header, blob)
    return _seal(header, blob)


def _weighted(header):
    return [e for e in header["layers"] if "dither" in e or "weight" in e["arrays"]]


def test_round_trip_is_exact_and_stores_the_indices(model, tmp_path):
    data = fileformat.to_bytes(model)
    header, blob = _split(data)
    assert header["format_version"] == 4 == fileformat.file_version(model)
    for number, (entry, layer) in enumerate(zip(_weighted(header), model.weighted_layers)):
        assert "weight" not in entry["arrays"]
        assert entry["dither"] == {"seed": 12345, "step": 4, "layer": number}
        ref = entry["arrays"]["weight_indices"]
        q = np.frombuffer(bytes(blob[ref["offset"]:ref["offset"] + ref["nbytes"]]), dtype=ref["dtype"]).reshape(ref["shape"])
        assert np.array_equal(q, dither.indices(layer.weight, 4, 12345, number))
    path = tmp_path / "d.terwin"
    fileformat.save(model, path)
    back = fileformat.load(path)
    for a, b in zip(model.weighted_layers, back.weighted_layers):
        assert np.array_equal(a.weight, b.weight) and a.weight.dtype == b.weight.dtype
    assert back.meta["dither"] == model.meta["dither"]
    assert fileformat.to_bytes(back) == data                      # written again: the same bytes
    # the weights form (all a version-3 terwin wrote) loads to the same model and is rewritten as indices
    old = fileformat.to_bytes(model, store_indices=False)
    assert _split(old)[0]["format_version"] == 1
    again = fileformat.from_bytes(old)
    assert all(np.array_equal(a.weight, b.weight) and a.weight.dtype == b.weight.dtype
               for a, b in zip(model.weighted_layers, again.weighted_layers))
    assert fileformat.to_bytes(again) == data
    # with a Huffman codec beside it (version 3's stream of the weights, checked against the decoded weights)
    coded = with_codec(model, "huffman")
    coded_data = fileformat.to_bytes(coded)
    coded_back = fileformat.from_bytes(coded_data)
    assert [layer.codec for layer in coded_back.weighted_layers] == ["huffman"] * len(coded.weighted_layers)
    assert all(np.array_equal(a.weight, b.weight) for a, b in zip(model.weighted_layers, coded_back.weighted_layers))
    assert fileformat.to_bytes(coded_back) == coded_data
    assert _split(fileformat.to_bytes(coded))[0]["format_version"] == 4


def test_indices_compress_better_than_the_dithered_weights(model):
    """What the file gains: the indices are the undithered quantizer's values, the weights carry the
    dither (the sizes themselves are measured in docs/codecs.md)."""
    new, old = fileformat.to_bytes(model), fileformat.to_bytes(model, store_indices=False)
    for storage in ("xz", "bz2"):
        assert len(fileformat.compress(new, storage)) < len(fileformat.compress(old, storage))


@pytest.mark.parametrize("path", STORED, ids=[str(p.relative_to(ROOT)) for p in STORED])
def test_files_without_dithered_indices_are_written_as_before(path):
    raw = fileformat.decompress(path.read_bytes())[1]
    dep = fileformat.from_bytes(raw)
    assert fileformat.to_bytes(dep) == raw and fileformat.file_version(dep) == _split(raw)[0]["format_version"] < 4


def test_weights_off_the_grid_are_stored_as_weights(model):
    """meta.dither is the quantizer's record; weights changed since are not its indices: the file keeps them."""
    layer = model.weighted_layers[0]
    w = layer.weight.copy()
    w.flat[np.flatnonzero(w)[0]] += 1
    first = model.layers.index(layer)
    edited = model.replace(layers=(*model.layers[:first], dataclasses.replace(layer, weight=w), *model.layers[first + 1:]))
    data = fileformat.to_bytes(edited)
    assert _split(data)[0]["format_version"] < 4 and fileformat.file_version(edited) < 4
    assert np.array_equal(fileformat.from_bytes(data).weighted_layers[0].weight, w)
    # the same for another seed in meta.dither, or layers that are not the model's
    for info in ({**model.meta["dither"], "seed": 1}, {**model.meta["dither"], "layers": ["x"]}):
        assert _split(fileformat.to_bytes(model.replace(meta={**model.meta, "dither": info})))[0]["format_version"] < 4


def _set_index(header, blob, value, dtype=None):
    """The first nonzero index of the first layer := value."""
    ref = _weighted(header)[0]["arrays"]["weight_indices"]
    q = np.frombuffer(bytes(blob[ref["offset"]:ref["offset"] + ref["nbytes"]]), dtype=ref["dtype"]).copy()
    q[np.flatnonzero(q)[0]] = value
    blob[ref["offset"]:ref["offset"] + ref["nbytes"]] = q.tobytes()


def _widen(header, blob):
    """The first layer's indices as <i8, appended to the data section, one of them huge."""
    ref = _weighted(header)[0]["arrays"]["weight_indices"]
    q = np.frombuffer(bytes(blob[ref["offset"]:ref["offset"] + ref["nbytes"]]), dtype=ref["dtype"]).astype("<i8")
    q[np.flatnonzero(q)[0]] = 1 << 40
    offset = len(blob)
    blob += q.tobytes()
    header["data_bytes"] = len(blob)
    ref.update(dtype="<i8", offset=offset, nbytes=q.nbytes)


def _move(src, dst, layer=0):
    def edit(header, blob):
        arrays = _weighted(header)[layer]["arrays"]
        arrays[dst] = arrays.pop(src)
    return edit


def _undither(header, blob):
    """The second weighted layer as a weights layer (its indices read as weights: in range at step 4)."""
    _move("weight_indices", "weight", layer=1)(header, blob)
    _weighted(header)[1].pop("dither")


CORRUPT = {
    "seed": (lambda h, b: _weighted(h)[1]["dither"].update(seed=1), r"\.dither\.seed: 1, not 12345 \(meta\.dither\)"),
    "step": (lambda h, b: _weighted(h)[0]["dither"].update(step=2), r"\.dither\.step: 2, not 4"),
    "layer number": (lambda h, b: _weighted(h)[2]["dither"].update(layer=0), r"\.dither\.layer: 0, not 2"),
    "no meta": (lambda h, b: h["meta"].pop("dither"), r"meta\.dither: missing or malformed"),
    "meta layers": (lambda h, b: h["meta"]["dither"].update(layers=["a"]), r"meta\.dither\.layers: not the model's"),
    "one layer undithered": (_undither, r"layers\[\d+\] \(\w+\)\.dither: missing \(another layer"),
    "indices without dither": (lambda h, b: _weighted(h)[0].pop("dither"), r"weight_indices: present, but the layer has no dither"),
    "no indices": (_move("weight_indices", "other"), r"weight_indices: missing \(the layer has a dither\)"),
    "weights beside": (lambda h, b: _weighted(h)[0]["arrays"].update(weight=_weighted(h)[0]["arrays"]["weight_indices"]),
                       r"weight: present beside weight_indices"),
    "version 3": (lambda h, b: h.update(format_version=3), r"format_version: 3, but layers\[\d+\]\.dither .* needs version 4"),
    "extra key": (lambda h, b: _weighted(h)[0]["dither"].update(k=1), r"dither: must be an object of exactly seed, step and layer"),
    "step 0": (lambda h, b: _weighted(h)[0]["dither"].update(step=0), r"dither\.step: must be from 1 to 65536, not 0"),
    "bool seed": (lambda h, b: _weighted(h)[0]["dither"].update(seed=True), r"dither\.seed: has the wrong type"),
    "negative seed": (lambda h, b: _weighted(h)[0]["dither"].update(seed=-1), r"dither\.seed: must be from 0"),
    "unsigned indices": (lambda h, b: _weighted(h)[0]["arrays"]["weight_indices"].update(dtype="|u1"),
                         r"weight_indices: must be a signed integer array, not \|u1"),
    "index out of the layer's range": (lambda h, b: _set_index(h, b, 100), r"weight: value \d+ is above the allowed maximum"),
    "index beyond any range": (_widen, r"weight_indices: index 1099511627776 at \(\d+,( \d+,?)*\) lies beyond ±65536"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_inconsistent_dithered_files_are_refused_in_one_line(model, name):
    edit, message = CORRUPT[name]
    data = _edit(fileformat.to_bytes(model), edit)
    with pytest.raises(FormatError, match=message) as e:
        fileformat.from_bytes(data)
    assert "\n" not in str(e.value)


def test_too_many_indices_are_refused_before_they_are_decoded(model):
    def edit(header, blob):
        ref = _weighted(header)[0]["arrays"]["weight_indices"]
        n = (1 << 24) + 8
        ref.update(offset=len(blob), shape=[n], nbytes=n, dtype="|i1")
        blob += bytes(n)
        header["data_bytes"] = len(blob)
    with pytest.raises(FormatError, match=r"weight_indices: 16,777,224 weights, more than the limit of 16,777,216 per layer"):
        fileformat.from_bytes(_edit(fileformat.to_bytes(model), edit))


def test_a_dither_on_a_layer_without_weights_is_refused(model):
    def edit(header, blob):
        pool = next(e for e in header["layers"] if e["kind"] == "maxpool2d")
        pool["dither"] = copy.deepcopy(_weighted(header)[0]["dither"])
    with pytest.raises(FormatError, match=r"dither: a layer without weights has no dither"):
        fileformat.from_bytes(_edit(fileformat.to_bytes(model), edit))


def test_the_command_line_reads_it_and_refuses_a_corrupt_one(model, tmp_path):
    path = tmp_path / "d.terwin"
    fileformat.save(model, path, storage="xz")
    run = subprocess.run([sys.executable, "-m", "terwin", "inspect", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "format v4" in run.stdout
    path.write_bytes(_edit(fileformat.to_bytes(model), CORRUPT["seed"][0]))
    run = subprocess.run([sys.executable, "-m", "terwin", "inspect", str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "dither.seed: 1, not 12345" in lines[0]
