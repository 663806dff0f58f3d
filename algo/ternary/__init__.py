"""The PE-aware structured-pruned ternary family (docs/ternary.md).

* `ternarize` — the ternarizer (He et al.) and its `torch.nn.utils.parametrize` parametrization;
* `pruning`   — PE-tile groups, Weight Penalty Clipping / group lasso, allocation, `TilePruner`;
* `net`       — `DigitsNet`, the family's CNN;
* `export`    — freeze a trained `DigitsNet` to a `Deployment`;
* `flow`      — `TernaryOptions`, the schedule and `compress(options)`, the `terwin compress` entry point;
* `graph_flow` — a user's captured model (`terwin.algo.graph`) through the same stages, and its export.

The entry point is `terwin.algo.ternary.flow` (TernaryOptions, compress). This file imports nothing, so that
`terwin.algo.torch_int` can use `terwin.algo.winograd.transforms` without loading a family's flow.
"""
