"""Strict checks of scalar values a user gives, shared by the command line and the file loaders.

A bool is not an int and a float is not a size. The command-line types here raise `TerwinError`
(not argparse's own error), so a bad value prints one line and exits 2 like every other user error,
before the command does any work.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import TerwinError

MAX_SEED = (1 << 31) - 1  # seeds: 0..2^31-1 (nextpnr's --seed is a C int; torch and NumPy take them all)


def is_int(value) -> bool:
    """An integer, strictly: a bool is not one, nor is a float with an integral value."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def short_repr(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a hostile value does not flood the one error line."""
    text = repr(value) if not isinstance(value, (dict, list, tuple)) or len(value) <= limit else \
        f"<{type(value).__name__} of {len(value)} items>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def names(keys, limit: int = 5) -> str:
    """Some user-given names (unknown fields, say) for a message: printable ones as they are."""
    keys = sorted(map(str, keys))
    shown = [k if k.isprintable() and len(k) <= 40 else short_repr(k, 40) for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_seed(value, where: str, error=TerwinError) -> int:
    if not is_int(value) or not 0 <= value <= MAX_SEED:
        raise error(f"{where} must be an integer from 0 to {MAX_SEED}, not {short_repr(value)}")
    return int(value)


def seed(text: str) -> int:
    """argparse type of --seed."""
    try:
        value = int(text)
    except ValueError:
        raise TerwinError(f"--seed must be an integer from 0 to {MAX_SEED}, not {short_repr(text)}") from None
    return check_seed(value, "--seed")


def probability_below_one(option: str):
    """argparse type of an option that is a probability p in [0, 1) (p = 1 would never let a cycle through)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value < 1:  # NaN fails too
            raise TerwinError(f"{option} must be a probability in [0, 1), not {short_repr(text)}")
        return value
    return parse
