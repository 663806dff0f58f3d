"""Hostile input: every kind of bad input the CLI met in the issue-10 campaign exits 2 with one line on
stderr naming the field or the path, never a traceback, a hang or unbounded memory.

Each test is one kind of input; its cases run the command line in-process (`terwin.cli.main`), or in
a subprocess with a timeout where the old behaviour was a hang (FIFOs, /dev/zero), so that a
regression fails instead of hanging the suite.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from terwin import fileformat, safeio
from terwin.checks import MAX_SEED
from terwin.cli import main
from terwin.deployment import MAX_MAP_ELEMENTS, Conv2d, Deployment
from terwin.network import unit_requant
from terwin.spec import PE4X4
from terwin.synthetic import random_deployment

NET = {"input_shape": [1, 8, 8], "seed": 1,
       "layers": [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                  {"type": "maxpool2d", "kernel": 2},
                  {"type": "linear", "out_channels": 10}]}


# -- helpers -----------------------------------------------------------------------------------


def refused(argv, capsys, *expected: str) -> str:
    """Run the CLI; assert exit 2, nothing on stdout, one line on stderr holding every `expected`."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def refused_in_subprocess(argv, *expected: str, timeout: float = 60) -> str:
    """As `refused`, in a fresh interpreter that is killed (and the test failed) if it hangs."""
    run = subprocess.run([sys.executable, "-m", "terwin", *map(str, argv)], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def seal(header_text: bytes, data: bytes) -> bytes:
    """A model file around the given header text and data section, with a valid checksum."""
    header_text += b" " * ((-(16 + len(header_text))) % 8)
    body = fileformat.MAGIC + struct.pack("<Q", len(header_text)) + header_text + data
    return body + hashlib.sha256(body).digest()


def split(model: bytes):
    (hlen,) = struct.unpack_from("<Q", model, 8)
    return json.loads(model[16:16 + hlen]), model[16 + hlen:-32]


def edited(model: bytes, edit) -> bytes:
    header, data = split(model)
    edit(header)
    return seal(json.dumps(header).encode(), data)


def with_raw(model: bytes, path: list, raw: str) -> bytes:
    """The model with the JSON value at `path` in its header replaced by the raw JSON text `raw`."""
    marker = "@@RAW@@"
    header, data = split(model)
    node = header
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return seal(json.dumps(header).replace(json.dumps(marker), raw).encode(), data)


@pytest.fixture(scope="module")
def model() -> bytes:
    return fileformat.to_bytes(random_deployment(PE4X4, seed=3))


@pytest.fixture
def model_path(model, tmp_path):
    path = tmp_path / "m.terwin"
    path.write_bytes(model)
    return path


def write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def one_conv_model(h: int, w: int) -> bytes:
    """A valid model with a 1 x h x w input: one 1x1 convolution, 1 channel (almost no weights)."""
    layer = Conv2d(name="c", in_shape=(1, h, w), out_channels=1, kernel=1, weight=np.ones((1, 1, 1, 1), np.int8),
                   relu=False, **unit_requant(1))
    return fileformat.to_bytes(Deployment(spec=PE4X4, input_shape=(1, h, w), input_scale=1 / 255, layers=(layer,)))


# -- 1. JSON with huge integers, deep nesting, non-finite numbers: in all three loaders --------------

DEEP = "[" * 100_000 + "]" * 100_000
JSON_BOMBS = [  # (raw JSON value, what the message says)
    ("1" + "0" * 5000, "64-bit"),
    (str(2 ** 70), "64-bit"),
    ("-" + "9" * 30, "64-bit"),
    (DEEP, "nested"),
    ("[" * (safeio.MAX_JSON_DEPTH + 1) + "]" * (safeio.MAX_JSON_DEPTH + 1), "nested"),
    ("1e999", "out of range"),
    ("1" + "0" * 400 + ".0", "out of range"),
    ("NaN", "NaN is not a JSON number"),
    ("-Infinity", "Infinity is not a JSON number"),
    ('"\\udc80"', "surrogate"),
]


@pytest.mark.parametrize("raw, message", JSON_BOMBS, ids=lambda v: v[:12] if isinstance(v, str) else None)
@pytest.mark.parametrize("loader", ["model header", "spec file", "network description"])
def test_json_bombs_are_refused_by_every_loader(loader, raw, message, model, model_path, tmp_path, capsys):
    if loader == "model header":
        path = write(tmp_path, "bomb.terwin", with_raw(model, ["meta"], '{"x": ' + raw + "}"))
        refused(["inspect", path], capsys, path, "header", message)
    elif loader == "spec file":
        path = write(tmp_path, "bomb.json", '{"pe_rows": ' + raw + "}")
        refused(["simulate", model_path, "--spec", path], capsys, path, message)
    else:
        path = write(tmp_path, "net.json", json.dumps(NET).replace('"seed": 1', '"seed": ' + raw))
        refused(["simulate", path], capsys, path, message)


# -- 2. text that is not UTF-8 -------------------------------------------------------------------------


@pytest.mark.parametrize("loader", ["spec file", "network description", "model header"])
def test_text_that_is_not_utf8(loader, model, model_path, tmp_path, capsys):
    if loader == "spec file":
        path = write(tmp_path, "s.json", b'{"pe_rows": 8, "weight_format": "tern\xffary"}')
        refused(["simulate", model_path, "--spec", path], capsys, path, "not UTF-8")
    elif loader == "network description":
        path = write(tmp_path, "n.json", b'{"name": "\xc3\x28", "input_shape": [1, 8, 8]}')
        refused(["simulate", path], capsys, path, "not UTF-8")
    else:
        header, data = split(model)
        text = json.dumps(header).replace('"synthetic"', '"synth\xff"').encode("latin-1")
        path = write(tmp_path, "m.terwin", seal(text, data))
        refused(["inspect", path], capsys, path, "header: not UTF-8")


# -- 3. header fields of the wrong type ---------------------------------------------------------------


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_set("input", "shape", [[1], 8, 8]), "input_shape"),
    (_set("input", "shape", [1, 8, 8.0]), "input_shape"),
    (_set("input", "shape", [True, 8, 8]), "input_shape"),
    (_set("input", "scale", "1/255"), "input.scale"),
    (_set("class_names", 5), "class_names"),
    (_set("class_names", [0, 1]), "class_names"),
    (_set("class_names", ["a\nb"]), "class_names[0]"),
    (_set("meta", []), "meta"),
    (_set("format_version", True), "format_version"),
    (_set("format_version", 1.0), "format_version"),
    (_set("data_bytes", "17400"), "data_bytes"),
    (_set("layers", {"0": {}}), "layers"),
    (_set("layers", 1, "kind", ["conv2d"]), "layers[1].kind"),
    (_set("layers", 0, "name", ["conv0"]), "layers[0].name"),
    (_set("layers", 0, "name", "conv\n0"), "layers[0].name"),
    (_set("layers", 0, "name", ""), "layers[0].name"),
    (_set("layers", 0, "relu", 1), "layers[0].relu"),
    (_set("layers", 0, "out_channels", True), "layers[0].out_channels"),
    (_set("layers", 0, "in_shape", {"c": 1}), "layers[0].in_shape"),
    (_set("layers", 0, "weight_scale", [None]), "layers[0].weight_scale"),
    (_set("layers", 0, "weight_bits", 10 ** 18), "weight_bits"),
    (_set("layers", 0, "arrays", "weight", "dtype", ["|i1"]), "layers[0].weight.dtype"),
    (_set("layers", 0, "arrays", "weight", "offset", True), "layers[0].weight"),
    (_set("layers", 0, "arrays", "weight", "shape", [16, True, 3, 3]), "layers[0].weight.shape"),
    (_set("layers", 0, "arrays", "name", {"dtype": "|i1", "shape": [1], "offset": 0, "nbytes": 1}), "layers[0].name"),
    (_set("spec", []), "spec"),
    (_set("spec", "winograd_tile", 2.0), "winograd_tile"),
])
def test_header_fields_of_the_wrong_type(edit, field, model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", edited(model, edit))
    refused(["inspect", path], capsys, path, field)


def test_weight_code_int_with_absurd_weight_bits_is_refused_before_any_shift(model, tmp_path, capsys):
    def edit(h):
        h["layers"][0].update(weight_code="int", weight_bits=10 ** 18)  # 1 << 10**18 would never finish
    path = write(tmp_path, "m.terwin", edited(model, edit))
    refused(["inspect", path], capsys, "layers[0] (conv0).weight_bits")


# -- 4. array shapes that overflow ----------------------------------------------------------------------


@pytest.mark.parametrize("shape, nbytes, message", [
    ([2 ** 32, 2 ** 32], 0, "layers[0].weight.nbytes"),            # 2^64 elements: wrapped to 0 in int64
    ([2 ** 62, 2 ** 62, 4, 4], 0, "layers[0].weight.nbytes"),
    ([2 ** 31] * 4, 0, "layers[0].weight.nbytes"),
    ([1, 1, 1, 1, 1], 1, "layers[0].weight.shape"),                # more dimensions than any array has
    ([-1, 144], 144, "layers[0].weight.shape"),
])
def test_array_shapes_that_overflow(shape, nbytes, message, model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", edited(model, _set("layers", 0, "arrays", "weight", {
        "dtype": "|i1", "shape": shape, "offset": 0, "nbytes": nbytes})))
    refused(["inspect", path], capsys, message)


def test_array_shape_beyond_64_bits(model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", with_raw(model, ["layers", 0, "arrays", "weight", "shape"], f"[{2 ** 70}]"))
    refused(["inspect", path], capsys, path, "header", "64-bit")


# -- 5. float sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "simulate", "generate"])
@pytest.mark.parametrize("field", ["kernel", "stride", "padding", "out_channels"])
def test_float_sizes_in_a_model_are_refused_by_every_command(command, field, model, tmp_path, capsys):
    def edit(h):
        h["layers"][0][field] = float(h["layers"][0][field])
    path = write(tmp_path, "m.terwin", edited(model, edit))
    argv = [command, path] + (["--out", tmp_path / "rtl"] if command == "generate" else [])
    refused(argv, capsys, path, f"layers[0].{field}", "must be an integer")
    assert not (tmp_path / "rtl").exists()


@pytest.mark.parametrize("layer", [
    {"type": "conv2d", "out_channels": 8, "kernel": 3.0},
    {"type": "conv2d", "out_channels": 8.0, "kernel": 3},
    {"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1.0},
    {"type": "conv2d", "out_channels": 8, "kernel": True},
    {"type": "maxpool2d", "kernel": 2.0},
    {"type": "avgpool2d", "kernel": 2.0},
    {"type": "avgpool2d", "global": 1},
    {"type": "residual", "out_channels": 8.0},
    {"type": "residual", "out_channels": 8, "stride": True},
])
def test_float_sizes_in_a_network_description(layer, tmp_path, capsys):
    path = write(tmp_path, "net.json", {**NET, "layers": [layer, {"type": "linear", "out_channels": 10}]})
    refused(["simulate", path], capsys, path, "layers[0]")


# -- 6. --rtl files that are binary, broken or not files ---------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 8, "not UTF-8"),
    ("module terwin_top(input clk);\n  wire a = ;\nendmodule\n", "cannot compile it"),
    ("module terwin_top(input clk);\n  assign b = c\n", "cannot compile it"),
    ("// module terwin_top\nmodule other(); endmodule\n", "cannot compile it"),
    ("module other(); endmodule\n", "no module named 'terwin_top'"),
])
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_rtl_that_is_binary_or_does_not_compile(content, message, simulator, model_path, tmp_path, capsys):
    from terwin.sim import simulators
    if not simulators.SIMULATORS[simulator]().available():
        pytest.skip(f"{simulator} is not installed")
    rtl = write(tmp_path, "design.v", content)
    refused(["verify", model_path, "--rtl", rtl, "--simulator", simulator, "--quiet"], capsys, f"--rtl {rtl}",
            message if message != "cannot compile it" else f"{simulator} cannot compile it")


@pytest.mark.parametrize("top", ["../../evil", "a b", "1top", ""])
def test_verify_top_must_be_a_module_name(top, model_path, capsys):
    refused(["verify", model_path, "--top", top], capsys, "--top")


# -- 7. seeds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [str(10 ** 30), "-1", str(MAX_SEED + 1), "1.5", "seed"])
@pytest.mark.parametrize("command", ["compress", "verify", "build", "demo"])
def test_seed_out_of_range(command, value, model_path, tmp_path, capsys):
    argv = {"compress": ["compress", "--out", tmp_path / "c"],
            "verify": ["verify", model_path],
            "build": ["build", model_path, "--board", "icebreaker", "--out", tmp_path / "b"],
            "demo": ["demo", "--out", tmp_path / "d"]}[command]
    refused(argv + ["--seed", value], capsys, "--seed", str(MAX_SEED))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.terwin"]  # refused before any output


@pytest.mark.parametrize("seed", [-1, 2 ** 40, True, 1.0])
def test_network_seed_out_of_range(seed, tmp_path, capsys):
    path = write(tmp_path, "net.json", {**NET, "seed": seed})
    refused(["simulate", path], capsys, path, "seed")


# -- 8. back-pressure probabilities ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1.0", "1", "1.5", "nan", "inf", "-0.1", "-inf", "half"])
def test_backpressure_must_be_below_one(value, model_path, capsys):
    refused(["verify", model_path, f"--backpressure={value}"], capsys, "--backpressure", "[0, 1)")


# -- 9. files that are not regular files: FIFOs and devices (a subprocess, so a hang fails) -------------


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = tmp_path / "fifo.json"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make_argv", [
    lambda special, model: ["inspect", special],
    lambda special, model: ["simulate", special],
    lambda special, model: ["simulate", model, "--spec", special],
    lambda special, model: ["generate", special, "--out", os.path.join(os.path.dirname(model), "rtl")],
    lambda special, model: ["verify", model, "--rtl", special],
], ids=["inspect", "simulate-model", "simulate-spec", "generate", "verify-rtl"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_pipes_and_devices_are_refused_without_reading(special, make_argv, request, model_path):
    if special == "fifo":
        special = request.getfixturevalue("fifo")
    elif not os.path.exists(special):
        pytest.skip(f"no {special} here")
    refused_in_subprocess(make_argv(special, model_path), str(special), "not a regular file", timeout=60)


def test_oversized_files_are_refused_before_reading(model_path, tmp_path, capsys):
    big = tmp_path / "big.terwin"
    with open(big, "wb") as f:
        f.truncate(fileformat.MAX_FILE_BYTES + 1)  # sparse: nothing is written, and nothing may be read
    refused(["inspect", big], capsys, str(big), "512 MiB")
    doc = write(tmp_path, "big.json", "{" + " " * safeio.MAX_JSON_BYTES + "}")
    refused(["simulate", model_path, "--spec", doc], capsys, doc, "4 MiB")
    refused(["simulate", doc], capsys, doc, "4 MiB")


def test_a_directory_is_refused(tmp_path, capsys):
    refused(["inspect", tmp_path], capsys, str(tmp_path), "is a directory")


# -- 10. network descriptions asking for absurd sizes --------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3, "repeat": 1_000_000}]}, "layers[0].repeat"),
    ({"layers": [{"type": "conv2d", "out_channels": 1e12, "kernel": 3}]}, "layers[0] (conv2d).out_channels"),
    ({"layers": [{"type": "conv2d", "out_channels": 10 ** 12, "kernel": 3}]}, "output"),
    ({"input_shape": [64, 1, 1], "layers": [{"type": "conv2d", "out_channels": 2 ** 20, "kernel": 1}]}, "weight"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3000, "padding": 1500}]}, "weight"),
    ({"input_shape": [1, 2048, 2048], "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 1}]}, "output"),
    ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 1, "padding": 10 ** 9}]}, "output"),
    ({"layers": [{"type": "linear", "out_channels": 10 ** 9}]}, "layers[0] (linear).out_channels"),
    ({"input_shape": [1, 10 ** 5, 10 ** 5]}, "input_shape"),
    ({"input_shape": [1, 4096, 4096]}, "input_shape"),
    ({"layers": [{"type": "residual", "out_channels": 4, "repeat": 1_000_000}]}, "layers[0].repeat"),
    ({"layers": [{"type": "residual", "out_channels": 10 ** 12}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (residual): output"),
    ({"input_shape": [64, 1, 1], "layers": [{"type": "residual", "out_channels": 2 ** 20},
                                            {"type": "linear", "out_channels": 2}]}, "layers[0] (residual).weight"),
    ({"layers": [{"type": "avgpool2d", "kernel": 10 ** 12}, {"type": "linear", "out_channels": 2}]},
     "layers[0] (avgpool2d): input (1, 8, 8) gives an empty output"),
])
def test_network_sizes_are_bounded_before_allocation(change, field, tmp_path, capsys):
    path = write(tmp_path, "net.json", {**NET, **change})
    refused(["simulate", path], capsys, path, field)


# -- 11. valid models too large for the limits or for the accelerator's memories -----------------------------


def test_model_with_a_4096x4096_input_is_refused_by_every_command(tmp_path, capsys):
    small = one_conv_model(64, 64)

    def edit(h):
        h["input"]["shape"] = [1, 4096, 4096]
        h["layers"][0]["in_shape"] = [1, 4096, 4096]
    path = write(tmp_path, "big.terwin", edited(small, edit))
    assert 4096 * 4096 > MAX_MAP_ELEMENTS
    for argv in (["inspect", path], ["simulate", path], ["generate", path, "--out", tmp_path / "rtl"],
                 ["build", path, "--board", "icebreaker", "--out", tmp_path / "b"], ["verify", path]):
        refused(argv, capsys, path, "input_shape", f"{MAX_MAP_ELEMENTS:,}")
    assert not (tmp_path / "rtl").exists() and not (tmp_path / "b").exists()


def test_model_larger_than_the_accelerator_memories_is_refused_by_the_hardware_commands(tmp_path, capsys):
    path = write(tmp_path, "wide.terwin", one_conv_model(1024, 1024))  # within the limits: inspect reads it
    assert main(["inspect", path]) == 0
    capsys.readouterr()
    for argv in (["generate", path, "--out", tmp_path / "rtl"],
                 ["build", path, "--board", "icebreaker", "--out", tmp_path / "b"], ["verify", path]):
        refused(argv, capsys, path, "input_shape 1x1024x1024", "on-chip memory")
    assert not (tmp_path / "rtl").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("edit, field", [
    (_set("layers", [], ), "layers"),
    (lambda h: h["layers"].extend([h["layers"][2]] * 1100), "layers"),
    (lambda h: h["layers"][0].update(padding=10 ** 9), "layers[0] (conv0)"),
])
def test_header_sizes_are_bounded(edit, field, model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", edited(model, edit))
    refused(["inspect", path], capsys, path, field)


def test_oversized_header_length_is_refused(model, tmp_path, capsys):
    data = bytearray(model)
    data[8:16] = struct.pack("<Q", 2 ** 63)
    path = write(tmp_path, "m.terwin", bytes(data))
    refused(["inspect", path], capsys, path, "truncated")


# -- 12. a bool is not an int -----------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("pe_rows", True), ("pe_cols", True), ("mult_lanes", True),
                                          ("act_bits", True), ("winograd_tile", 2.0), ("pe_rows", 8.0),
                                          ("clock_mhz", True), ("weight_format", ["ternary"])])
def test_spec_file_fields_are_strictly_typed(field, value, model_path, tmp_path, capsys):
    path = write(tmp_path, "s.json", {**PE4X4.to_dict(), field: value})
    refused(["simulate", model_path, "--spec", path], capsys, path, field)


def test_spec_bool_in_a_model_header(model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", edited(model, _set("spec", "pe_rows", True)))
    refused(["inspect", path], capsys, path, "spec: pe_rows", "True")


def test_limits_are_documented():
    """Every limit is in docs/deployment-format.md, with the value the code enforces."""
    from pathlib import Path

    from terwin import deployment
    doc = (Path(__file__).parents[1] / "docs" / "deployment-format.md").read_text()
    for value in (fileformat.MAX_FILE_BYTES >> 20, safeio.MAX_JSON_BYTES >> 20, safeio.MAX_JSON_DEPTH,
                  deployment.MAX_LAYERS, deployment.MAX_MAP_ELEMENTS, deployment.MAX_LAYER_WEIGHTS,
                  deployment.MAX_TOTAL_WEIGHTS, deployment.MAX_NAME_CHARS, fileformat.MAX_ARRAY_DIMS,
                  deployment.MAX_ONCHIP_BITS, MAX_SEED):
        assert f"{value:,}" in doc, value


# -- 13. weight codecs (format version 3): corrupt tables and streams --------------------------------------


@pytest.fixture(scope="module")
def coded_model() -> bytes:
    import dataclasses
    dep = random_deployment(PE4X4, seed=3)
    return fileformat.to_bytes(dep.replace(layers=tuple(
        dataclasses.replace(l, codec="huffman") if hasattr(l, "weight") else l for l in dep.layers)))


def _stream_edit(change):
    """An edit of the coded model's data section: `change(blob, arrays of layer 0)`."""
    def apply(model: bytes) -> bytes:
        header, data = split(model)
        blob = bytearray(data)
        change(blob, header["layers"][0]["arrays"])
        return seal(json.dumps(header).encode(), bytes(blob))
    return apply


def _lengths(values):
    def change(blob, arrays):
        ref = arrays["codec_lengths"]
        blob[ref["offset"]:ref["offset"] + ref["nbytes"]] = bytes(values(ref["nbytes"]))
    return change


@pytest.mark.parametrize("edit, message", [
    (lambda m: edited(m, _set("layers", 0, "codec", "zip")), "layers[0] (conv0).codec: must be one of raw, huffman"),
    (lambda m: edited(m, _set("layers", 0, "codec_bits", 10 ** 15)), "layers[0].codec_bits"),
    (lambda m: edited(m, _set("layers", 0, "codec_bits", -1)), "layers[0].codec_bits"),
    (lambda m: edited(m, _set("layers", 0, "codec_bits", 1.5)), "layers[0].codec_bits"),
    (lambda m: edited(m, lambda h: h["layers"][0].pop("codec_bits")), "layers[0].codec_bits: missing"),
    (lambda m: edited(m, lambda h: h["layers"][0]["arrays"].pop("codec_stream")), "layers[0].codec_stream: missing"),
    (lambda m: edited(m, _set("layers", 0, "codec", "raw")), "layers[0].codec_lengths: present"),
    (lambda m: edited(m, _set("layers", 2, "codec", "huffman")), "layers[2].codec: a layer without weights"),
    (lambda m: edited(m, _set("format_version", 2)), "format_version: 2, but the model uses weight codecs"),
    (lambda m: edited(m, _set("layers", 0, "arrays", "codec_lengths", "dtype", "<i2")), "codec_lengths"),
    (lambda m: edited(m, _set("layers", 0, "arrays", "codec_lengths", "shape", [2 ** 40])), "codec_lengths"),
    (lambda m: edited(m, lambda h: h["layers"][0]["arrays"]["codec_lengths"].update(shape=[16], nbytes=16)),
     "codec_lengths: shape (16,) is not (256,)"),
    (_stream_edit(_lengths(lambda n: [1] * n)), "Kraft"),
    (_stream_edit(_lengths(lambda n: [200] * n)), "0 to 16"),
    (_stream_edit(_lengths(lambda n: [0] * n)), "no symbol"),
    (_stream_edit(_lengths(lambda n: [8] * n)), "0b10"),
    (_stream_edit(lambda b, a: b.__setitem__(a["codec_stream"]["offset"], b[a["codec_stream"]["offset"]] ^ 0x80)),
     "layers[0] (conv0).codec_stream"),
])
def test_corrupt_codec_tables_and_streams(edit, message, coded_model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", edit(coded_model))
    refused(["inspect", path], capsys, path, message)


def test_a_coded_model_loads_and_writes_back(coded_model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", coded_model)
    assert main(["inspect", path]) == 0
    assert fileformat.to_bytes(fileformat.load(path)) == coded_model


# -- 14. storage codecs: compressed model files ------------------------------------------------------------


@pytest.mark.parametrize("storage", ["xz", "bz2", "lzw"])
@pytest.mark.parametrize("change, message", [
    (lambda d: d[:len(d) // 2], "truncated"),
    (lambda d: d + b"junk", "follow the compressed data"),
    (lambda d: d[:len(d) // 2] + bytes([d[len(d) // 2] ^ 0x55]) + d[len(d) // 2 + 1:], "storage"),
    (lambda d: d[:8], "storage"),
])
def test_corrupt_compressed_model_files(storage, change, message, model, tmp_path, capsys):
    path = write(tmp_path, "m.terwin", change(fileformat.compress(model, storage)))
    refused(["inspect", path], capsys, path, f"{storage} storage", message)


@pytest.mark.parametrize("storage", ["xz", "bz2", "lzw"])
def test_a_decompression_bomb_is_refused_at_the_file_limit(storage, monkeypatch, tmp_path, capsys):
    """Decompression stops at MAX_FILE_BYTES + 1 bytes (here lowered to 64 KiB): a small file that would
    decompress to more is refused before more is allocated."""
    monkeypatch.setattr(fileformat, "MAX_FILE_BYTES", 64 << 10)
    bomb = fileformat.compress(b"\0" * (1 << 20), storage)
    assert len(bomb) < 4096
    path = write(tmp_path, "m.terwin", bomb)
    refused(["inspect", path], capsys, path, f"{storage} storage", "decompresses to more than")


def test_a_compressed_file_holding_a_corrupt_model_names_the_model_field(model, tmp_path, capsys):
    data = bytearray(model)
    data[-1] ^= 1
    path = write(tmp_path, "m.terwin", fileformat.compress(bytes(data), "xz"))
    refused(["inspect", path], capsys, path, "checksum mismatch")
