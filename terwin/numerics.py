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
numerics unpinned; `report()` says which (it reads ATen's choice back from torch and MKL's branch from
MKL), and every compress.json records it under "numerics".
"""
from __future__ import annotations

import os
import platform

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
    nothing on a bad mode: `report` names it when training starts). Called by `import terwin`."""
    try:
        if mode(environ) == "native":
            return
    except TerwinError:
        return
    for name, value in PIN.items():
        environ.setdefault(name, value)


def _cpu_vendor() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# MKL's conditional-numerical-reproducibility branches (mkl_cbwr.h)
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                10: "AVX2", 11: "AVX512_MIC", 12: "AVX512"}


def mkl_branch() -> str | None:
    """The branch torch's MKL runs now (what MKL_CBWR took when MKL started: setting the variable
    after torch's first matrix product changes nothing), read from MKL itself; None where this torch
    does not expose it."""
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    value = get(1)   # MKL_CBWR_BRANCH
    return MKL_BRANCHES.get(value, str(value))


def report(environ=os.environ) -> dict:
    """What the float numerics are in this process: `pinned` (True when every choice above holds),
    and when not, `why`. Loads torch."""
    import torch

    wanted = mode(environ)
    capability = torch.backends.cpu.get_cpu_capability()
    branch = mkl_branch()
    figures = {"mode": wanted, "aten_capability": capability, "mkl_cbwr": environ.get("MKL_CBWR"), "mkl_branch": branch,
               "machine": platform.machine(), "cpu_vendor": _cpu_vendor(), "torch": torch.__version__}
    why = None
    if wanted == "native":
        why = f"{MODE_VARIABLE}=native"
    elif platform.machine().lower() not in ("x86_64", "amd64"):
        why = f"not an x86-64 machine ({platform.machine()})"
    elif environ.get("MKL_CBWR") != PIN["MKL_CBWR"]:
        why = f"MKL_CBWR is {environ.get('MKL_CBWR')!r}, not {PIN['MKL_CBWR']!r}"
    elif branch is not None and branch != PIN["MKL_CBWR"]:
        why = f"MKL runs its {branch} branch, not {PIN['MKL_CBWR']} (torch multiplied matrices before terwin was imported)"
    elif capability != "AVX2":
        why = (f"torch runs its {capability} kernels, not AVX2 (a CPU without AVX2, ATEN_CPU_CAPABILITY set "
               f"otherwise, or torch used before terwin was imported)")
    figures.update(pinned=why is None, why=why)
    return figures


__all__ = ["MODE_VARIABLE", "MODES", "PIN", "MKL_BRANCHES", "mode", "pin_environment", "mkl_branch", "report"]
