"""The same float training on every x86-64 machine: one fixed set of CPU kernels for torch.

Float training is deterministic on one machine (one thread, seeded), but not across machines: torch
picks its vectorized kernels (ATen's dispatch: AVX2 or AVX-512), its BLAS (MKL) picks code paths by
the processor, and its convolutions (oneDNN) are JIT-compiled for the processor they run on, blocked
by its caches. Each choice changes the order of floating-point sums, so the same seed trains another
model on another CPU — the same recipe gave a float net of 99.11 % on one machine and 98.67 % on the
next (docs/ternary.md, "Same numerics on every machine").

terwin fixes the choice:

* `ATEN_CPU_CAPABILITY=avx2`: ATen's AVX2 kernels, whatever more the processor has;
* `MKL_CBWR=COMPATIBLE`: MKL's conditional numerical reproducibility on its SSE2 code path without
  approximation instructions, the one branch MKL keeps the same on Intel and other x86-64 processors
  (its AVX2 branch is Intel's only; measured here, no slower for these nets);
* oneDNN off while training (`algo.train.reproducible`): convolutions run as ATen's im2col + MKL GEMM.

Both variables are read when torch first needs them (its first operation, MKL's first call), so
`import terwin` sets them (`pin_environment`, unless already set) before torch does anything. A
program that ran torch before importing terwin, a CPU without AVX2, a variable the user set to
something else or `TERWIN_NUMERICS=native` (opt out: the machine's fastest kernels) leave the
numerics unpinned; `terwin.algo.numerics.report()` says which (it reads ATen's choice back from torch
and MKL's branch from MKL), and every compress.json records it under "numerics". This module is
core: it sets the variables and never loads torch.
"""
from __future__ import annotations

import os

from .errors import TerwinError

MODE_VARIABLE = "TERWIN_NUMERICS"
MODES = ("pinned", "native")
PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}


def mode(environ=os.environ) -> str:
    """"pinned" (the default) or "native"; a TerwinError for anything else."""
    value = environ.get(MODE_VARIABLE, "pinned").strip().lower() or "pinned"
    if value not in MODES:
        raise TerwinError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, not {environ[MODE_VARIABLE]!r}")
    return value


def pin_environment(environ=os.environ) -> None:
    """Set the variables of `PIN` that are not set yet (nothing under TERWIN_NUMERICS=native, and
    nothing on a bad mode: training refuses it, `algo.train.reproducible`). Called by `import terwin`."""
    try:
        if mode(environ) == "native":
            return
    except TerwinError:
        return
    for name, value in PIN.items():
        environ.setdefault(name, value)


__all__ = ["MODE_VARIABLE", "MODES", "PIN", "mode", "pin_environment"]
