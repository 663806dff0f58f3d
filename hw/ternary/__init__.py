"""terwin.hw.ternary: the PE-array engine for PE-aware pruned ternary models (docs/hardware.md).

`program` (compile, NumPy only) -> `cycles` (exact cycle model, NumPy only) and `top` (Amaranth).
"""
