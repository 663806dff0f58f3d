import dataclasses
import hashlib
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from terwin import codec, fileformat
from terwin.errors import FormatError
from terwin.sim import reference
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment


@pytest.fixture(scope="module")
def dep():
    return random_deployment(PRESETS["pe4x4"], seed=3)


def _rewrite(data: bytes, edit) -> bytes:
    """Apply `edit` to the JSON header and re-seal the file with a valid checksum."""
    (hlen,) = struct.unpack_from("<Q", data, 8)
    header = json.loads(data[16:16 + hlen])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * ((-(16 + len(text))) % 8)
    body = fileformat.MAGIC + struct.pack("<Q", len(text)) + text + data[16 + hlen:-32]
    return body + hashlib.sha256(body).digest()


def test_round_trip_preserves_every_array_and_output(dep, tmp_path):
    path = tmp_path / "m.terwin"
    digest = fileformat.save(dep, path)
    assert digest == fileformat.file_checksum(path) == fileformat.checksum(dep)
    again = fileformat.load(path)
    assert again.spec == dep.spec and again.input_shape == dep.input_shape
    for a, b in zip(dep.layers, again.layers):
        assert type(a) is type(b) and a.name == b.name
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, np.ndarray):
                assert np.array_equal(x, y), f.name
            else:
                assert x == y, f.name
    q = np.random.default_rng(0).integers(0, 256, size=(8, *dep.input_shape))
    assert np.array_equal(reference.forward(again, q), reference.forward(dep, q))
    assert fileformat.checksum(again) == digest


def test_same_model_same_bytes(dep):
    assert fileformat.to_bytes(dep) == fileformat.to_bytes(random_deployment(PRESETS["pe4x4"], seed=3))


@pytest.mark.parametrize("cut", [0, 5, 20, 200, -1, -33])
def test_truncated_files_are_rejected(dep, cut):
    data = fileformat.to_bytes(dep)
    with pytest.raises(FormatError) as info:
        fileformat.from_bytes(data[:cut])
    assert "\n" not in str(info.value)


def test_flipped_byte_fails_the_checksum(dep):
    data = bytearray(fileformat.to_bytes(dep))
    data[-100] ^= 0x01
    with pytest.raises(FormatError, match="checksum mismatch"):
        fileformat.from_bytes(bytes(data))


def test_foreign_file_is_rejected():
    with pytest.raises(FormatError, match="bad magic"):
        fileformat.from_bytes(b"PK\x03\x04" + b"\0" * 100)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(format_version=5), "format_version: 5 is not supported"),
    (lambda h: h.update(format="onnx"), "format: 'onnx' is not"),
    (lambda h: h["layers"][1].update(kind="conv3d"), "layers[1].kind: unsupported layer kind 'conv3d'"),
    (lambda h: h["layers"][0]["arrays"]["tile_mask"].update(shape=[1, 1, 1], nbytes=1),
     "layers[0] (conv0).tile_mask: shape (1, 1, 1) does not match"),
    (lambda h: h["layers"][3].update(in_shape=[7, 4, 4]), "layers[3] (conv3).in_shape"),
    (lambda h: h["layers"][0]["arrays"]["weight"].update(dtype="<f4"), "layers[0].weight.dtype"),
    (lambda h: h["layers"][0]["arrays"]["bias"].update(offset=10**9), "layers[0].bias: data range"),
    (lambda h: h["spec"].update(pe_cols=3), "spec: pe_cols must be a power of two"),
    (lambda h: h["layers"][0].update(relu=False), "is a signed map (relu false), which only a residual may read"),
])
def test_inconsistent_headers_name_the_field(dep, edit, message):
    data = _rewrite(fileformat.to_bytes(dep), edit)
    with pytest.raises(FormatError) as info:
        fileformat.from_bytes(data)
    assert message in str(info.value)


def test_pruned_tile_with_weights_is_rejected(dep):
    layer = dep.layers[1]
    mask = layer.tile_mask.copy()
    og, tg, cg = np.argwhere(mask == 1)[0]
    mask[og, tg, cg] = 0
    bad = dep.replace(layers=(dep.layers[0], dataclasses.replace(layer, tile_mask=mask), *dep.layers[2:]))
    with pytest.raises(FormatError, match=r"tile \(\d+, \d+, \d+\) is marked pruned but holds nonzero weights"):
        bad.validate()


def test_ternary_codes_out_of_range_are_rejected(dep):
    layer = dep.layers[0]
    w = layer.weight.copy()
    w.flat[np.flatnonzero(w)[0]] = 2
    bad = dep.replace(layers=(dataclasses.replace(layer, weight=w), *dep.layers[1:]))
    with pytest.raises(FormatError, match="weight: value 2 is above the allowed maximum 1"):
        bad.validate()


def test_cli_reports_corrupt_file_in_one_line(dep, tmp_path):
    path = tmp_path / "m.terwin"
    path.write_bytes(fileformat.to_bytes(dep)[:-7])
    run = subprocess.run([sys.executable, "-m", "terwin", "inspect", str(path)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "truncated" in lines[0] or "checksum" in lines[0]


def test_cli_inspect_prints_layers(dep, tmp_path):
    path = tmp_path / "m.terwin"
    fileformat.save(dep, path)
    run = subprocess.run([sys.executable, "-m", "terwin", "inspect", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for layer in dep.layers:
        assert layer.name in run.stdout
    assert "compression" in run.stdout
    js = subprocess.run([sys.executable, "-m", "terwin", "inspect", "--json", str(path)], capture_output=True, text=True)
    stats = json.loads(js.stdout)
    assert stats["totals"]["weights"] == sum(l.weight.size for l in dep.weighted_layers)
    # the on-chip weight stream under each codec (a raw model: its raw bits; Huffman would need fewer)
    stream = stats["weight_stream"]
    assert stream["codec"] == "raw" and stream["bits"] == stream["raw_bits"] == codec.stream_report(dep)["raw_bits"]
    assert f"weight stream on chip (raw codec): {stream['bits']} bits" in run.stdout
    fileformat.save(codec.with_codec(dep, "huffman"), tmp_path / "h.terwin")
    js = subprocess.run([sys.executable, "-m", "terwin", "inspect", "--json", str(tmp_path / "h.terwin")],
                        capture_output=True, text=True)
    coded = json.loads(js.stdout)["weight_stream"]
    assert coded["codec"] == "huffman" and coded["bits"] == coded["huffman_bits"] + coded["huffman_table_bits"]
