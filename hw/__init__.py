"""terwin.hw: Amaranth components of the accelerators and their board builds."""
