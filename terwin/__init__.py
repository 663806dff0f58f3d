"""terwin: compress CNNs into PE-aware pruned ternary or sparse Winograd integer models, generate
Amaranth hardware for them, verify the RTL bit for bit with cocotb, and build open-source bitstreams."""
from .deployment import Conv2d, Deployment, Linear, MaxPool2d, WinogradConv2d
from .errors import FormatError, SpecError, TerwinError
from .spec import PRESETS, HardwareSpec, load_spec

__version__ = "0.1.0"

__all__ = ["HardwareSpec", "PRESETS", "load_spec", "Deployment", "Conv2d", "Linear", "MaxPool2d",
           "WinogradConv2d", "TerwinError", "SpecError", "FormatError", "__version__"]
