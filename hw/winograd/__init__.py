"""terwin.hw.winograd: the sparse Winograd engine (docs/winograd-hardware.md).

`program` (compile, NumPy only) -> `cycles` (exact cycle model, NumPy only) and `top` (Amaranth).
"""
