"""terwin.algo: the PyTorch side — data, training, quantization, torch integer evaluation, and one
package per compression family (`terwin.algo.ternary`, `terwin.algo.winograd`).

Common to every family:

* `data`      — the digits split, digits32, a user's .npz, the validation split (NumPy only; `terwin verify`
                and `terwin demo` import it without torch);
* `graph`     — a user's network: torch.fx capture, lowering to the Deployment's layers, `GraphNet`;
* `train`     — the one training loop (`train`, `evaluate`, `accuracy`, `BestCheckpoint`, `Tensors`, epoch
                scaling, single-threading);
* `quant`     — activation/weight fake quantizers (`ActQuant` with an explicit calibration rule,
                `PerChannelQuant`, `InputQuant`), batch-norm folding, requantizer fitting;
* `torch_int` — the one torch integer evaluator of any `Deployment` (every layer kind);
* `options`   — `CompressOptions`, the base of each family's options dataclass;
* `results`   — the compress.json figures every family reports, computed one way.

This file imports nothing, so `import terwin.algo.data` stays torch-free.
"""
