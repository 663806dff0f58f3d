"""Reading a user's files without trusting them: regular files only, bounded sizes, strict JSON.

Every reader of user input (model files, spec files, network descriptions, `--rtl` Verilog) goes
through here, so a FIFO, a device, an oversized file, or JSON that is deeply nested or holds absurd
numbers is refused in one line, as the caller's `TerwinError` subclass, before anything large is
read or allocated. The limits are documented in docs/deployment-format.md ("Limits").
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from contextlib import contextmanager

import numpy as np

from .errors import TerwinError

MAX_JSON_BYTES = 4 << 20    # one JSON document: a spec file, a network description, a model header
MAX_JSON_DEPTH = 64         # nested arrays/objects
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1  # JSON integers: signed 64-bit
MAX_NUMBER_CHARS = 64       # characters of one JSON number literal

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@contextmanager
def open_regular(path, *, error=TerwinError, what: str = "file"):
    """Open `path` for binary reading if it is a regular file; yield (file, size in bytes).

    A FIFO, a device (/dev/zero), a socket or a directory is refused without blocking: the file is
    opened non-blocking and checked with fstat before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{path}: is a directory, not a {what}")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: not a regular file (a pipe, device or socket); give a {what}")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_file(path, *, limit: int, error=TerwinError, what: str = "file") -> bytes:
    """All bytes of the regular file `path`, refused if it is larger than `limit` bytes."""
    with open_regular(path, error=error, what=what) as (f, size):
        if size > limit:
            raise error(f"{path}: {size} bytes, more than the {_mib(limit)} a {what} may have")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"{path}: cannot read: {e.strerror}") from None
    if len(data) > limit:  # it grew while being read
        raise error(f"{path}: more than the {_mib(limit)} a {what} may have")
    return data


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def read_text(path, *, limit: int, error=TerwinError, what: str = "file") -> str:
    """The UTF-8 text of the regular file `path` (see `read_file`)."""
    data = read_file(path, limit=limit, error=error, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); give a {what}") from None


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in `text` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    b = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((b == ord("[")) | (b == ord("{")), 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max())


def parse_json(data: bytes | str, *, error=TerwinError, where: str = "JSON"):
    """Parse one JSON document strictly: UTF-8, at most MAX_JSON_BYTES, nesting at most
    MAX_JSON_DEPTH, integers within signed 64 bits, finite numbers only (no NaN/Infinity), strings
    of valid Unicode. Anything else raises `error` naming `where`."""
    if len(data) > MAX_JSON_BYTES:
        raise error(f"{where}: {len(data)} bytes of JSON, more than the limit of {_mib(MAX_JSON_BYTES)}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{where}: not UTF-8 text (at byte {e.start})") from None
    else:
        text = data
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested {depth} levels deep, more than the limit of {MAX_JSON_DEPTH}")

    def parse_int(s: str) -> int:
        value = int(s) if len(s) <= MAX_NUMBER_CHARS else None
        if value is None or not INT_MIN <= value <= INT_MAX:
            raise error(f"{where}: integer {s[:24]}{'...' if len(s) > 24 else ''} is outside the signed 64-bit range")
        return value

    def parse_float(s: str) -> float:
        value = float(s) if len(s) <= MAX_NUMBER_CHARS else math.inf
        if not math.isfinite(value):
            raise error(f"{where}: number {s[:24]}{'...' if len(s) > 24 else ''} is too long or out of range")
        return value

    def parse_constant(s: str):
        raise error(f"{where}: {s} is not a JSON number")

    try:
        value = json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    except json.JSONDecodeError as e:
        raise error(f"{where}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # not reached below MAX_JSON_DEPTH; a last guard
        raise error(f"{where}: JSON nested too deeply") from None
    _check_strings(value, error, where)
    return value


def _check_strings(value, error, where: str) -> None:
    """Refuse strings that are not valid Unicode (lone surrogates from \\udxxx escapes): they cannot be
    printed or written back as UTF-8. Recursion is bounded by MAX_JSON_DEPTH."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise error(f"{where}: a string holds an unpaired surrogate escape (not valid Unicode)") from None
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, error, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k, error, where)
            _check_strings(v, error, where)


def load_json(path, *, error=TerwinError, what: str = "JSON file"):
    """Read the regular file `path` (at most MAX_JSON_BYTES) and parse it with `parse_json`."""
    text = read_text(path, limit=MAX_JSON_BYTES, error=error, what=what)
    return parse_json(text, error=error, where=str(path))
