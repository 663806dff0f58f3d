"""Design-space exploration (`terwin explore`): which accelerator of a model is fastest on a board.

* `terwin.dse.resources`: the resource and fmax model — features of a design read from its engine's
  `Program` (memories, widths) and spec, block RAMs counted from the memories the way Yosys maps them,
  LUTs / logic cells / FFs / DSPs / fmax fitted per FPGA family and engine on real builds
  (`calibration.json`, `coefficients.json`: package data; `benchmarks/calibrate_resources.py` makes them);
* `terwin.dse.sweep`: the sweep over `HardwareSpec` fields, scored by the exact cycle model and that
  model, its Pareto front, the best point, and (optionally) its real build and verification.

Named `dse` (not `explore`) so that the module never shadows the API function `terwin.explore`.
"""
