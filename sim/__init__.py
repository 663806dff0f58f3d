"""terwin.sim: the NumPy golden reference, the exact cycle model, and the cocotb benches."""
