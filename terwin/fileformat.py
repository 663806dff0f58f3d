"""The `.terwin` model file: one versioned, checksummed container for a `Deployment`.

    offset 0   8 bytes   magic b"TERWIN\\r\\n"
    offset 8   8 bytes   header length N, unsigned little-endian
    offset 16  N bytes   header: UTF-8 JSON (padded with spaces so that 16 + N is a multiple of 8)
    16 + N     D bytes   data: the arrays, raw little-endian C order, each at an 8-aligned offset
    end - 32   32 bytes  SHA-256 of every byte before it

docs/deployment-format.md describes every header field; this module is one reader of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from .deployment import LAYER_TYPES, Deployment
from .errors import FormatError, SpecError
from .spec import HardwareSpec

MAGIC = b"TERWIN\r\n"
FORMAT_NAME = "terwin-deployment"
FORMAT_VERSION = 1
DIGEST_BYTES = 32
ALLOWED_DTYPES = {"|i1", "|u1", "<i2", "<i4", "<i8"}

# Canonical storage dtype of each array field.
_FIELD_DTYPES = {"tile_mask": "|u1", "bias": "<i8", "multiplier": "<i4", "shift": "|u1"}


def _weight_dtype(arr: np.ndarray) -> str:
    if arr.size == 0 or (arr.min() >= -128 and arr.max() <= 127):
        return "|i1"
    return "<i2"


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def to_bytes(dep: Deployment) -> bytes:
    dep.validate()
    blobs: list[bytes] = []
    offset = 0
    layers = []
    for layer in dep.layers:
        entry = {"kind": layer.kind}
        arrays = {}
        for f in dataclasses.fields(layer):
            value = getattr(layer, f.name)
            if isinstance(value, np.ndarray):
                dtype = _FIELD_DTYPES.get(f.name) or _weight_dtype(value)
                data = np.ascontiguousarray(value.astype(np.dtype(dtype), copy=False)).tobytes()
                arrays[f.name] = {"dtype": dtype, "shape": list(value.shape), "offset": offset, "nbytes": len(data)}
                pad = (-len(data)) % 8
                blobs.append(data + b"\0" * pad)
                offset += len(data) + pad
            elif value is None:
                entry[f.name] = None
            else:
                entry[f.name] = _jsonable(value)
        entry["arrays"] = arrays
        layers.append(entry)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "spec": dep.spec.to_dict(),
        "input": {"shape": list(dep.input_shape), "scale": float(dep.input_scale)},
        "class_names": list(dep.class_names),
        "meta": _jsonable(dep.meta),
        "layers": layers,
        "data_bytes": offset,
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * ((-(16 + len(text))) % 8)
    body = MAGIC + struct.pack("<Q", len(text)) + text + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def checksum(dep: Deployment) -> str:
    """SHA-256 (hex) of the file body: the model's identity in manifests and reports."""
    return to_bytes(dep)[-DIGEST_BYTES:].hex()


def save(dep: Deployment, path) -> str:
    """Write atomically (no half-written file on failure); return the checksum."""
    path = Path(path)
    data = to_bytes(dep)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data[-DIGEST_BYTES:].hex()


def load(path) -> Deployment:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return from_bytes(data)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None


def file_checksum(path) -> str:
    data = Path(path).read_bytes()
    return data[-DIGEST_BYTES:].hex()


def _field(obj: dict, key: str, types, where: str):
    if key not in obj:
        raise FormatError(f"{where}{key}: missing")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise FormatError(f"{where}{key}: has the wrong type ({type(value).__name__})")
    return value


def from_bytes(data: bytes) -> Deployment:
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a terwin model file (bad magic)")
    if len(data) < 16 + DIGEST_BYTES:
        raise FormatError("truncated file (shorter than the fixed header)")
    (hlen,) = struct.unpack_from("<Q", data, 8)
    if 16 + hlen + DIGEST_BYTES > len(data):
        raise FormatError(f"truncated file (header says {hlen} header bytes, file has {len(data)} bytes)")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    try:
        header = json.loads(data[16:16 + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        if hashlib.sha256(body).digest() != digest:
            raise FormatError("checksum mismatch: the file is corrupt or truncated") from None
        raise FormatError("header: not valid UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise FormatError("header: not a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"format: {header.get('format')!r} is not {FORMAT_NAME!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"format_version: {version!r} is not supported (this terwin reads version {FORMAT_VERSION})")
    data_bytes = _field(header, "data_bytes", int, "")
    if 16 + hlen + data_bytes + DIGEST_BYTES != len(data):
        raise FormatError(f"truncated or padded file: expected {16 + hlen + data_bytes + DIGEST_BYTES} bytes, found {len(data)}")
    if hashlib.sha256(body).digest() != digest:
        raise FormatError("checksum mismatch: the file is corrupt")
    blob = memoryview(data)[16 + hlen:16 + hlen + data_bytes]

    try:
        spec = HardwareSpec.from_dict(_field(header, "spec", dict, ""))
    except (SpecError, TypeError) as e:
        raise FormatError(f"spec: {e}") from None
    inp = _field(header, "input", dict, "")
    input_shape = tuple(_field(inp, "shape", list, "input."))
    input_scale = float(_field(inp, "scale", (int, float), "input."))
    layers = []
    for i, entry in enumerate(_field(header, "layers", list, "")):
        where = f"layers[{i}]."
        if not isinstance(entry, dict):
            raise FormatError(f"layers[{i}]: not a JSON object")
        kind = entry.get("kind")
        cls = LAYER_TYPES.get(kind)
        if cls is None:
            raise FormatError(f"{where}kind: unsupported layer kind {kind!r} (known: {', '.join(LAYER_TYPES)})")
        arrays = _field(entry, "arrays", dict, where)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in arrays:
                kwargs[f.name] = _read_array(blob, arrays[f.name], f"{where}{f.name}")
            elif f.name in entry:
                value = entry[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormatError(f"{where}{f.name}: missing")
        try:
            layers.append(cls(**kwargs))
        except TypeError as e:
            raise FormatError(f"{where[:-1]}: {e}") from None
    dep = Deployment(spec=spec, input_shape=input_shape, input_scale=input_scale, layers=tuple(layers),
                     class_names=tuple(header.get("class_names", ())), meta=header.get("meta", {}))
    try:
        return dep.validate()
    except (TypeError, ValueError) as e:
        raise FormatError(f"inconsistent model: {e}") from None


def _read_array(blob: memoryview, ref, where: str) -> np.ndarray:
    if not isinstance(ref, dict):
        raise FormatError(f"{where}: array reference is not an object")
    dtype, shape, offset, nbytes = (ref.get(k) for k in ("dtype", "shape", "offset", "nbytes"))
    if dtype not in ALLOWED_DTYPES:
        raise FormatError(f"{where}.dtype: {dtype!r} is not one of {', '.join(sorted(ALLOWED_DTYPES))}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FormatError(f"{where}.shape: must be a list of non-negative integers")
    if not isinstance(offset, int) or not isinstance(nbytes, int) or offset < 0 or offset + nbytes > len(blob):
        raise FormatError(f"{where}: data range lies outside the file's data section")
    dt = np.dtype(dtype)
    if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != nbytes:
        raise FormatError(f"{where}.nbytes: {nbytes} does not match shape {shape} of {dtype}")
    arr = np.frombuffer(blob[offset:offset + nbytes], dtype=dt).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)
