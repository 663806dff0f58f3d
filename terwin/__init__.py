"""terwin: compress CNNs into PE-aware pruned ternary or sparse Winograd integer models, generate
Amaranth hardware for them, verify the RTL bit for bit with cocotb, and build open-source bitstreams.

The Python API (`terwin.compress`, `load_data`, `save`, `load`, `scores`, `simulate`, `generate`,
`verify`, `build_bitstream`, `explore`; `terwin/api.py`) resolves on first use: `import terwin` itself loads
neither torch nor Amaranth. It does fix which CPU kernels torch will use (`terwin.numerics`: the same
float training on every x86-64 machine), before torch runs anything."""
from . import numerics as _numerics

_numerics.pin_environment()

from .deployment import Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d
from .errors import FormatError, SpecError, TerwinError
from .spec import PRESETS, HardwareSpec, load_spec

__version__ = "0.1.0"

_API = ("compress", "load_data", "save", "load", "scores", "simulate", "generate", "verify", "build_bitstream",
        "explore")


def __getattr__(name: str):
    if name in _API:
        # a lazy, torch-free entry point: the API module (torch, Amaranth, the flows) loads on first use
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'terwin' has no attribute {name!r}")


__all__ = ["HardwareSpec", "PRESETS", "load_spec", "Deployment", "Conv2d", "Linear", "MaxPool2d",
           "WinogradConv2d", "TerwinError", "SpecError", "FormatError", "__version__", *_API]
