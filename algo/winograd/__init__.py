"""The Winograd-sparse family (docs/winograd.md).

* `transforms` — F(m x m, 3x3) in torch: transform matrices, input tiles, `winograd_conv2d`
                 (float for training, int64 for `terwin.algo.torch_int`);
* `nn`         — `WinoConv`, `MaskedLinear`, `WinogradNet`, the family's CNN;
* `masks`      — magnitude pruning, joint pruning, the learnable partial-L2 regulariser;
* `export`     — freeze a trained `WinogradNet` to a `Deployment`, accumulator bounds;
* `flow`       — `WinogradOptions` and `compress(options)`, the `terwin compress` entry point;
* `graph_flow` — a user's plain captured model, folded into a `WinogradNet` and run through `flow.sparsify`.

The entry point is `terwin.algo.winograd.flow` (WinogradOptions, compress). This file imports nothing, so that
`terwin.algo.torch_int` can use `terwin.algo.winograd.transforms` without loading a family's flow.
"""
