"""cocotb testbenches for the generated accelerator tops (run by `terwin.sim.rtl`)."""
