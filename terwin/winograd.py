"""Winograd F(m x m, r x r) transform matrices (Lavin & Gray), shared by algo, sim and hw.

Only F(2x2, 3x3) is offered; code takes the output tile `m` as a parameter so that larger tiles
can be added by extending `matrices`.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def matrices(m: int = 2, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) for F(m x m, r x r): Y = A^T [(G g G^T) * (B^T d B)] A.

    B^T and A^T are integer (entries 0, +-1), G holds halves.
    """
    if (m, r) != (2, 3):
        raise ValueError(f"only F(2x2,3x3) is offered, not F({m}x{m},{r}x{r})")
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
    for a in (bt, g, at):
        a.setflags(write=False)
    return bt, g, at


def tiles_per_side(out_size: int, m: int = 2) -> int:
    return -(-out_size // m)
