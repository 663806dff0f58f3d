"""Pick the accelerator for a `Deployment` from its spec's weight format."""
from __future__ import annotations

from amaranth.lib import wiring

from terwin.errors import TerwinError


def build_top(dep) -> wiring.Component:
    """The top component for `dep`: ternary PE array or sparse Winograd engine, with the same ports."""
    fmt = dep.spec.weight_format
    if fmt == "ternary":
        from .top import TernaryAccelerator
        return TernaryAccelerator(dep)
    if fmt == "winograd":
        from .winograd_top import WinogradAccelerator  # written separately; imported only when needed
        return WinogradAccelerator(dep)
    raise TerwinError(f"no hardware engine for weight format {fmt!r}")
