"""What the float numerics of this process are: whether `terwin.numerics`' pin held (compress.json's
"numerics"). Reads ATen's kernel choice back from torch and MKL's branch from MKL itself."""
from __future__ import annotations

import ctypes
import os
import platform

import torch

from terwin.numerics import MODE_VARIABLE, PIN, mode


def cpu_info(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo ("vendor_id", "flags"), None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
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
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    value = get(1)   # MKL_CBWR_BRANCH
    return MKL_BRANCHES.get(value, str(value))


def report(environ=os.environ) -> dict:
    """What the float numerics are in this process: `pinned` (True when the choices `terwin.numerics`
    makes hold), and when not, `why`."""
    wanted = mode(environ)
    capability = torch.backends.cpu.get_cpu_capability()
    branch = mkl_branch()
    figures = {"mode": wanted, "aten_capability": capability, "mkl_cbwr": environ.get("MKL_CBWR"), "mkl_branch": branch,
               "machine": platform.machine(), "cpu_vendor": cpu_info("vendor_id"), "torch": torch.__version__}
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


__all__ = ["MKL_BRANCHES", "cpu_info", "mkl_branch", "report"]
