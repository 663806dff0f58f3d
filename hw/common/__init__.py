"""terwin.hw.common: what both engines share: the `Program` base, the top's ports, the requantizer,
the stage-constant table and cycle counters, and the Amaranth-simulator driver of a top."""
