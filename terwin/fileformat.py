"""The `.terwin` model file: one versioned, checksummed container for a `Deployment`.

    offset 0   8 bytes   magic b"TERWIN\\r\\n"
    offset 8   8 bytes   header length N, unsigned little-endian
    offset 16  N bytes   header: UTF-8 JSON (padded with spaces so that 16 + N is a multiple of 8)
    16 + N     D bytes   data: the arrays, raw little-endian C order, each at an 8-aligned offset
    end - 32   32 bytes  SHA-256 of every byte before it

docs/deployment-format.md describes every header field; this module is one reader of it.
"""
from __future__ import annotations

import bz2
import dataclasses
import hashlib
import json
import lzma
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from . import codec, dither, lzw, safeio
from .checks import is_int, short_repr
from .deployment import LAYER_TYPES, MAX_LAYER_WEIGHTS, MAX_LAYERS, VERSION_2_FIELDS, Deployment
from .errors import FormatError, SpecError
from .spec import HardwareSpec

MAGIC = b"TERWIN\r\n"
FORMAT_NAME = "terwin-deployment"
FORMAT_VERSION = 4              # the newest this terwin writes and reads
READS_VERSIONS = (1, 2, 3, 4)   # a model without graph features, codecs or dithered indices is still written as
                                # version 1, byte for byte
DIGEST_BYTES = 32
ALLOWED_DTYPES = {"|i1", "|u1", "<i2", "<i4", "<i8"}
MAX_FILE_BYTES = 512 << 20          # a whole model file
MAX_HEADER_BYTES = safeio.MAX_JSON_BYTES
MAX_ARRAY_DIMS = 4

# Storage codecs: the whole file compressed with the standard library's lzma (.xz container) or bz2,
# or with LZW (terwin.lzw), recognised by their magic bytes on load and decompressed (to at most
# MAX_FILE_BYTES) before anything else; the model (and its checksum) is the decompressed file.
STORAGE = {"raw": None, "xz": b"\xfd7zXZ\x00", "bz2": b"BZh", "lzw": lzw.MAGIC}


def _decompressor(data: bytes):
    if data.startswith(STORAGE["xz"]):
        return "xz", lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    if data.startswith(STORAGE["bz2"]):
        return "bz2", bz2.BZ2Decompressor()
    return "raw", None


def decompress(data: bytes) -> tuple[str, bytes]:
    """(storage codec, the model file's bytes) of a file as stored: an xz, bz2 or lzw file is decompressed,
    refused (FormatError, one line) when corrupt, truncated, followed by other data, or larger than
    MAX_FILE_BYTES once decompressed (checked as it is decompressed: a small bomb cannot fill memory)."""
    if data.startswith(STORAGE["lzw"]):
        return "lzw", lzw.decompress(data, max_bytes=MAX_FILE_BYTES)
    name, dec = _decompressor(data)
    if dec is None:
        return name, data
    try:
        out = dec.decompress(data, max_length=MAX_FILE_BYTES + 1)
    except (lzma.LZMAError, OSError, EOFError, ValueError) as e:
        raise FormatError(f"{name} storage: the compressed file is corrupt ({e})") from None
    if len(out) > MAX_FILE_BYTES:
        raise FormatError(f"{name} storage: decompresses to more than the {MAX_FILE_BYTES >> 20} MiB a model file may have")
    if not dec.eof:
        raise FormatError(f"{name} storage: the compressed file is truncated")
    if dec.unused_data:
        raise FormatError(f"{name} storage: {len(dec.unused_data)} bytes follow the compressed data")
    return name, out


def compress(data: bytes, storage: str) -> bytes:
    """A model file's bytes as stored with `storage` ("raw", "xz", "bz2" or "lzw"); deterministic."""
    if storage not in STORAGE:
        raise FormatError(f"storage: must be one of {', '.join(STORAGE)}, not {storage!r}")
    if storage == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)
    if storage == "bz2":
        return bz2.compress(data, 9)
    if storage == "lzw":
        return lzw.compress(data)
    return data


# Canonical storage dtype of each array field.
_FIELD_DTYPES = {"tile_mask": "|u1", "bias": "<i8", "multiplier": "<i4", "shift": "|u1", "residual_multiplier": "<i4"}
# What a layer with codec "huffman" adds (format version 3): arrays of its code and stream, and the stream's bits.
CODEC_ARRAYS = ("codec_lengths", "codec_stream")
CODEC_BITS = "codec_bits"
# Dithered weights (format version 4): a weighted layer stores the indices of dithered uniform quantization
# (`weight_indices`) instead of `weight`, and the dither's seed, step and layer number (`dither`); the
# weights are decoded on load (`terwin.dither.decode`). Written for a model whose `meta.dither` (the
# quantizer's record, `terwin.algo.winograd.quantize`) names its weighted layers and whose weights are all
# on that dithered grid.
DITHER = "dither"
DITHER_ARRAY = "weight_indices"
DITHER_VERSION = 4
MAX_DITHER_STEP = 1 << 16     # a step wider than any weight range (weight_bits <= 16): nothing to dither
MAX_DITHER_INDEX = 1 << 16    # |q|: keeps step * q far inside 64 bits


def _add_array(blobs: list, arrays: dict, name: str, value: np.ndarray, dtype: str, offset: int) -> int:
    """Append one array to the data section; return the next offset."""
    data = np.ascontiguousarray(value.astype(np.dtype(dtype), copy=False)).tobytes()
    arrays[name] = {"dtype": dtype, "shape": list(value.shape), "offset": offset, "nbytes": len(data)}
    pad = (-len(data)) % 8
    blobs.append(data + b"\0" * pad)
    return offset + len(data) + pad


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
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None  # JSON has no NaN: null in the free-form meta
                                                             # (validate() refuses it in every other field)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _meta_dither(meta) -> tuple[int, int, list] | None:
    """(seed, step, layer names) of a well-formed `meta.dither`, else None."""
    info = meta.get(DITHER) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        return None
    seed, step, names = info.get("seed"), info.get("step"), info.get("layers")
    if not (is_int(seed) and 0 <= seed < (1 << 63) and is_int(step) and 1 <= step <= MAX_DITHER_STEP
            and isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        return None
    return int(seed), int(step), list(names)


def dithered_indices(dep: Deployment) -> dict | None:
    """What the file stores for a dithered model: {layer name: (layer number, indices)} when `meta.dither`
    names the weighted layers in order and every weighted layer's weights are on its dithered grid
    (`terwin.dither.indices`), else None (the weights are stored)."""
    info = _meta_dither(dep.meta)
    weighted = dep.weighted_layers
    if info is None or not weighted or info[2] != [layer.name for layer in weighted]:
        return None
    seed, step, _ = info
    try:
        out = {layer.name: (i, dither.indices(layer.weight, step, seed, i)) for i, layer in enumerate(weighted)}
    except ValueError:
        return None
    if any(np.abs(q).max(initial=0) > MAX_DITHER_INDEX for _, q in out.values()):
        return None
    return out


def file_version(dep: Deployment, *, store_indices: bool = True) -> int:
    """The format version `to_bytes` writes for `dep`: 4 when it stores dithered indices, else the
    model's own (`Deployment.format_version`)."""
    if store_indices and dithered_indices(dep) is not None:
        return max(dep.format_version, DITHER_VERSION)
    return dep.format_version


def to_bytes(dep: Deployment, *, store_indices: bool = True) -> bytes:
    """The file's bytes. `store_indices`: a dithered model (`dithered_indices`) stores its indices and
    seed (format version 4); False writes its weights (the form before version 4, for comparison)."""
    dep.validate()
    blobs: list[bytes] = []
    offset = 0
    layers = []
    dithered = dithered_indices(dep) if store_indices else None
    info = _meta_dither(dep.meta) if dithered else None
    for layer in dep.layers:
        entry = {"kind": layer.kind}
        arrays = {}
        for f in dataclasses.fields(layer):
            value = getattr(layer, f.name)
            if f.name == "weight" and dithered and layer.name in dithered:
                index, q = dithered[layer.name]
                offset = _add_array(blobs, arrays, DITHER_ARRAY, q, _weight_dtype(q), offset)
                entry[DITHER] = {"seed": info[0], "step": info[1], "layer": index}
            elif isinstance(value, np.ndarray):
                offset = _add_array(blobs, arrays, f.name, value, _FIELD_DTYPES.get(f.name) or _weight_dtype(value), offset)
            elif value is None:
                if f.name not in VERSION_2_FIELDS:  # absent means None (version 1 wrote tile_mask: null)
                    entry[f.name] = None
            elif f.name == "codec" and value == "raw":
                pass                                # absent means raw: files without codecs stay as they were
            else:
                entry[f.name] = _jsonable(value)
        if getattr(layer, "codec", "raw") == "huffman":
            code = codec.encode_layer(layer, dep.spec)
            offset = _add_array(blobs, arrays, "codec_lengths", code.lengths, "|u1", offset)
            offset = _add_array(blobs, arrays, "codec_stream", np.frombuffer(code.data, dtype=np.uint8), "|u1", offset)
            entry[CODEC_BITS] = code.nbits
        entry["arrays"] = arrays
        layers.append(entry)
    header = {
        "format": FORMAT_NAME,
        "format_version": max(dep.format_version, DITHER_VERSION) if dithered else dep.format_version,
        "spec": dep.spec.to_dict(),
        "input": {"shape": list(dep.input_shape), "scale": float(dep.input_scale)},
        "class_names": list(dep.class_names),
        "meta": _jsonable(dep.meta),
        "layers": layers,
        "data_bytes": offset,
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    safeio.parse_json(text, error=FormatError, where="header")  # never write a header load() would refuse
    text += b" " * ((-(16 + len(text))) % 8)
    body = MAGIC + struct.pack("<Q", len(text)) + text + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def checksum(dep: Deployment) -> str:
    """SHA-256 (hex) of the file body: the model's identity in manifests and reports."""
    return to_bytes(dep)[-DIGEST_BYTES:].hex()


def save(dep: Deployment, path, *, storage: str = "raw") -> str:
    """Write atomically (no half-written file on failure), compressed with `storage` (`STORAGE`);
    return the checksum (of the model file, whatever its storage)."""
    path = Path(path)
    data = to_bytes(dep)
    stored = compress(data, storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(stored)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data[-DIGEST_BYTES:].hex()


def load(path, *, hardware: bool = False) -> Deployment:
    """Read and validate a model file: a regular file of at most MAX_FILE_BYTES (a FIFO or a device
    is refused before a byte is read). `hardware`: also refuse a model too large for any accelerator
    terwin generates (`Deployment.check_fits_hardware`), for the commands that build one."""
    data = safeio.read_file(path, limit=MAX_FILE_BYTES, error=FormatError, what="model file")
    try:
        dep = from_bytes(decompress(data)[1])
        return dep.check_fits_hardware() if hardware else dep
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None


def file_checksum(path) -> str:
    """The checksum stored in the last 32 bytes of the model file (load() has checked it); of the
    decompressed file when it is stored compressed (xz, bz2, lzw)."""
    with safeio.open_regular(path, error=FormatError, what="model file") as (f, size):
        if size < DIGEST_BYTES:
            raise FormatError(f"{path}: truncated file")
        head = f.read(8)
        if not any(magic and head.startswith(magic) for magic in STORAGE.values()):
            f.seek(size - DIGEST_BYTES)
            return f.read(DIGEST_BYTES).hex()
    try:
        data = decompress(safeio.read_file(path, limit=MAX_FILE_BYTES, error=FormatError, what="model file"))[1]
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    if len(data) < DIGEST_BYTES:
        raise FormatError(f"{path}: truncated file")
    return data[-DIGEST_BYTES:].hex()


def _field(obj: dict, key: str, types, where: str):
    if key not in obj:
        raise FormatError(f"{where}{key}: missing")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise FormatError(f"{where}{key}: has the wrong type ({type(value).__name__})")
    return value


def _tuples(value):
    """JSON lists as tuples (the dataclasses' sequences), at every depth; validate() checks the types."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def from_bytes(data: bytes) -> Deployment:
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise FormatError("not a terwin model file (bad magic)")
    if len(data) < 16 + DIGEST_BYTES:
        raise FormatError("truncated file (shorter than the fixed header)")
    if len(data) > MAX_FILE_BYTES:
        raise FormatError(f"{len(data)} bytes, more than the {MAX_FILE_BYTES >> 20} MiB a model file may have")
    (hlen,) = struct.unpack_from("<Q", data, 8)
    if 16 + hlen + DIGEST_BYTES > len(data):
        raise FormatError(f"truncated file (header says {hlen} header bytes, file has {len(data)} bytes)")
    if hlen > MAX_HEADER_BYTES:
        raise FormatError(f"header: {hlen} bytes, more than the limit of {MAX_HEADER_BYTES >> 20} MiB")
    body, digest = data[:-DIGEST_BYTES], data[-DIGEST_BYTES:]
    try:
        header = safeio.parse_json(data[16:16 + hlen], error=FormatError, where="header")
    except FormatError:
        if hashlib.sha256(body).digest() != digest:
            raise FormatError("checksum mismatch: the file is corrupt or truncated") from None
        raise
    if not isinstance(header, dict):
        raise FormatError("header: not a JSON object")
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"format: {short_repr(header.get('format'))} is not {FORMAT_NAME!r}")
    version = header.get("format_version")
    if not is_int(version) or version not in READS_VERSIONS:
        raise FormatError(f"format_version: {short_repr(version)} is not supported (this terwin reads versions "
                          f"{', '.join(map(str, READS_VERSIONS))})")
    data_bytes = _field(header, "data_bytes", int, "")
    if 16 + hlen + data_bytes + DIGEST_BYTES != len(data) or data_bytes < 0:
        raise FormatError(f"truncated or padded file: expected {16 + hlen + data_bytes + DIGEST_BYTES} bytes, found {len(data)}")
    if hashlib.sha256(body).digest() != digest:
        raise FormatError("checksum mismatch: the file is corrupt")
    blob = memoryview(data)[16 + hlen:16 + hlen + data_bytes]

    try:
        spec = HardwareSpec.from_dict(_field(header, "spec", dict, ""))
    except (SpecError, TypeError) as e:
        raise FormatError(f"spec: {e}") from None
    inp = _field(header, "input", dict, "")
    input_shape = _tuples(_field(inp, "shape", list, "input."))
    input_scale = _field(inp, "scale", (int, float), "input.")
    entries = _field(header, "layers", list, "")
    if len(entries) > MAX_LAYERS:
        raise FormatError(f"layers: {len(entries):,} layers, more than the limit of {MAX_LAYERS:,}")
    layers, codecs, dithered = [], [], []
    for i, entry in enumerate(entries):
        where = f"layers[{i}]."
        if not isinstance(entry, dict):
            raise FormatError(f"layers[{i}]: not a JSON object")
        kind = entry.get("kind")
        cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise FormatError(f"{where}kind: unsupported layer kind {short_repr(kind)} (known: {', '.join(LAYER_TYPES)})")
        arrays = _field(entry, "arrays", dict, where)
        kwargs = {}
        weights = _read_dither(blob, entry, arrays, where, version, cls)
        if weights is not None:
            dithered.append(i)
            kwargs["weight"] = weights
        for f in dataclasses.fields(cls):
            if f.name in kwargs:
                continue
            if f.name in arrays:
                kwargs[f.name] = _read_array(blob, arrays[f.name], f"{where}{f.name}")
            elif f.name in entry:
                kwargs[f.name] = _tuples(entry[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormatError(f"{where}{f.name}: missing")
        layers.append(cls(**kwargs))  # keyword names are the class's own fields: cannot fail
        codecs.append(_read_codec(blob, entry, arrays, where, coded="codec" in {f.name for f in dataclasses.fields(cls)}))
    dep = Deployment(spec=spec, input_shape=input_shape, input_scale=input_scale, layers=tuple(layers),
                     class_names=_tuples(header.get("class_names", [])), meta=header.get("meta", {}))
    if dithered:     # the dither's fields against the record they are written from, before the weights' checks
        _check_dither(dep, entries, dithered)
    dep.validate()
    if dep.format_version > version:
        features = "weight codecs (codec)" if dep.format_version == 3 else "graph features (source, residual, avgpool2d)"
        raise FormatError(f"format_version: {version}, but the model uses {features} of version {dep.format_version}")
    for i, (layer, coded) in enumerate(zip(dep.layers, codecs)):
        _check_codec(dep, i, layer, coded)
    return dep


def _read_dither(blob: memoryview, entry: dict, arrays: dict, where: str, version: int, cls):
    """A layer's weights decoded from its dithered indices (format version 4), or None when it stores
    its `weight` array."""
    if DITHER not in entry:
        if DITHER_ARRAY in arrays:
            raise FormatError(f"{where}{DITHER_ARRAY}: present, but the layer has no {DITHER}")
        return None
    if version < DITHER_VERSION:
        raise FormatError(f"format_version: {version}, but {where}{DITHER} (dithered indices) needs version {DITHER_VERSION}")
    if "weight" not in {f.name for f in dataclasses.fields(cls)}:
        raise FormatError(f"{where}{DITHER}: a layer without weights has no dither")
    info = entry[DITHER]
    if not isinstance(info, dict) or sorted(info) != ["layer", "seed", "step"]:
        raise FormatError(f"{where}{DITHER}: must be an object of exactly seed, step and layer")
    seed = _field(info, "seed", int, f"{where}{DITHER}.")
    step = _field(info, "step", int, f"{where}{DITHER}.")
    number = _field(info, "layer", int, f"{where}{DITHER}.")
    if not 0 <= seed < (1 << 63):
        raise FormatError(f"{where}{DITHER}.seed: must be from 0 to 2**63 - 1, not {seed}")
    if not 1 <= step <= MAX_DITHER_STEP:
        raise FormatError(f"{where}{DITHER}.step: must be from 1 to {MAX_DITHER_STEP}, not {step}")
    if not 0 <= number < MAX_LAYERS:
        raise FormatError(f"{where}{DITHER}.layer: must be from 0 to {MAX_LAYERS - 1}, not {number}")
    if "weight" in arrays:
        raise FormatError(f"{where}weight: present beside {DITHER_ARRAY} (a dithered layer stores its indices only)")
    if DITHER_ARRAY not in arrays:
        raise FormatError(f"{where}{DITHER_ARRAY}: missing (the layer has a {DITHER})")
    q = _read_array(blob, arrays[DITHER_ARRAY], f"{where}{DITHER_ARRAY}")
    if q.size > MAX_LAYER_WEIGHTS:    # before the decode allocates its 64-bit arrays
        raise FormatError(f"{where}{DITHER_ARRAY}: {q.size:,} weights, more than the limit of {MAX_LAYER_WEIGHTS:,} per layer")
    if q.dtype.kind != "i":
        raise FormatError(f"{where}{DITHER_ARRAY}: must be a signed integer array, not {q.dtype.str}")
    if q.size and np.abs(q.astype(np.int64)).max() > MAX_DITHER_INDEX:
        at = tuple(int(v) for v in np.argwhere(np.abs(q.astype(np.int64)) > MAX_DITHER_INDEX)[0])
        raise FormatError(f"{where}{DITHER_ARRAY}: index {int(q[at])} at {at} lies beyond ±{MAX_DITHER_INDEX}")
    w = dither.decode(q, step, seed, number)
    # the dtype a weight array of these values is stored in (`_weight_dtype`), as loading that gives;
    # wider values stay 64-bit, for validate() to refuse
    return w.astype(np.int8 if w.size == 0 or -128 <= w.min() and w.max() <= 127 else
                    np.int16 if -32768 <= w.min() and w.max() <= 32767 else np.int64)


def _check_dither(dep: Deployment, entries: list, dithered: list) -> None:
    """Every weighted layer dithered, as layer number 0, 1, ... in order, with the seed and step of
    `meta.dither`, which names them: the record the file is rewritten from (`dithered_indices`)."""
    weighted = [i for i, layer in enumerate(dep.layers) if hasattr(layer, "weight")]
    missing = [i for i in weighted if i not in dithered]
    if missing:
        i = missing[0]
        raise FormatError(f"layers[{i}] ({dep.layers[i].name}).{DITHER}: missing (another layer stores dithered "
                          f"indices: all weighted layers do)")
    info = _meta_dither(dep.meta)
    if info is None:
        raise FormatError(f"meta.{DITHER}: missing or malformed (the layers store dithered indices)")
    seed, step, names = info
    if names != [dep.layers[i].name for i in weighted]:
        raise FormatError(f"meta.{DITHER}.layers: not the model's weighted layers in order")
    for number, i in enumerate(weighted):
        d = entries[i][DITHER]
        where = f"layers[{i}] ({dep.layers[i].name}).{DITHER}"
        for key, want in (("seed", seed), ("step", step), ("layer", number)):
            if d[key] != want:
                raise FormatError(f"{where}.{key}: {d[key]}, not {want} ({'meta.dither' if key != 'layer' else 'its place among the weighted layers'})")


def _read_codec(blob: memoryview, entry: dict, arrays: dict, where: str, *, coded: bool):
    """A layer's coded stream as stored: None (no codec fields), or (lengths, stream bytes, bits).
    `coded`: the layer kind has weights (a codec). The arrays are bounded by the file (read like
    every array); the bits are checked against them."""
    present = [k for k in (*CODEC_ARRAYS, CODEC_BITS) if k in arrays or k in entry]
    if not coded and "codec" in entry:
        raise FormatError(f"{where}codec: a layer without weights has no codec")
    if entry.get("codec", "raw") != "huffman":
        if present and entry.get("codec", "raw") == "raw":
            raise FormatError(f"{where}{present[0]}: present, but the layer's codec is not huffman")
        return None
    for k in CODEC_ARRAYS:
        if k not in arrays:
            raise FormatError(f"{where}{k}: missing (the layer's codec is huffman)")
    lengths = _read_array(blob, arrays["codec_lengths"], f"{where}codec_lengths")
    stream = _read_array(blob, arrays["codec_stream"], f"{where}codec_stream")
    nbits = _field(entry, CODEC_BITS, int, where)
    for name, arr in (("codec_lengths", lengths), ("codec_stream", stream)):
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise FormatError(f"{where}{name}: must be a one-dimensional |u1 array")
    if not 0 <= nbits <= 8 * stream.size:
        raise FormatError(f"{where}{CODEC_BITS}: {nbits} is not within the {stream.size} bytes of codec_stream")
    return lengths, stream.tobytes(), nbits


def _check_codec(dep: Deployment, i: int, layer, coded) -> None:
    """Decode a huffman layer's stream and hold it to the layer's weights with ==."""
    if coded is None:
        return
    where = f"layers[{i}] ({layer.name})."
    lengths, stream, nbits = coded
    try:
        weights = codec.decode_layer(layer, dep.spec, lengths, stream, nbits)
    except FormatError as e:
        raise FormatError(f"{where}{e}") from None
    if not np.array_equal(weights, np.asarray(layer.weight)):
        bad = np.argwhere(weights != np.asarray(layer.weight))[0]
        raise FormatError(f"{where}codec_stream: decodes to {int(weights[tuple(bad)])} at weight {tuple(int(v) for v in bad)}, "
                          f"not the layer's {int(np.asarray(layer.weight)[tuple(bad)])}")


def _read_array(blob: memoryview, ref, where: str) -> np.ndarray:
    if not isinstance(ref, dict):
        raise FormatError(f"{where}: array reference is not an object")
    dtype, shape, offset, nbytes = (ref.get(k) for k in ("dtype", "shape", "offset", "nbytes"))
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise FormatError(f"{where}.dtype: {short_repr(dtype)} is not one of {', '.join(sorted(ALLOWED_DTYPES))}")
    if not isinstance(shape, list) or len(shape) > MAX_ARRAY_DIMS or not all(is_int(s) and s >= 0 for s in shape):
        raise FormatError(f"{where}.shape: must be a list of at most {MAX_ARRAY_DIMS} non-negative integers")
    if not is_int(offset) or not is_int(nbytes) or offset < 0 or nbytes < 0 or offset + nbytes > len(blob):
        raise FormatError(f"{where}: data range lies outside the file's data section")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != nbytes:  # Python integers: no overflow, so bounded by the file
        raise FormatError(f"{where}.nbytes: {nbytes} does not match shape {shape} of {dtype}")
    arr = np.frombuffer(blob[offset:offset + nbytes], dtype=dt).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)
