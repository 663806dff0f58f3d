"""Trace of the ternary fine-tuning: batch-norm running statistics against re-estimated ones, epoch by epoch.

    python benchmarks/ternary_bn_trace.py [--spec pe8x16] [--tile-sparsity 0.75] [--seed 0] [--json out.json]

Runs the ternary family's `compress` (the recipe as it is) and, each time the flow re-estimates the
batch-norm statistics before a checkpoint choice (every fine-tuning epoch with the final zero budget),
records the accuracy on the validation, test and training images and the validation loss with the
running statistics as training left them ("run") and after re-estimation ("re"). Training does not
depend on the running statistics (training-mode batch norm normalizes by the batch's), so one run
measures both, on the same weights: an exact ablation of the re-estimation per epoch. The test
figures are a diagnostic for docs/ternary.md; the flow's choices read only the validation images.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch.nn import functional as F

import terwin.algo.ternary.flow as flow
from terwin.algo.data import VALIDATION_FRACTION, load_digits_split
from terwin.algo.train import Tensors, accuracy, reestimate_batchnorm
from terwin.spec import load_spec


@torch.no_grad()
def _loss(net, x, y) -> float:
    was = net.training
    net.eval()
    value = float(F.cross_entropy(net(x), y))
    net.train(was)
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="pe8x16")
    parser.add_argument("--tile-sparsity", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    data = Tensors.from_split(load_digits_split(), validation=VALIDATION_FRACTION, seed=args.seed)
    rows = []

    def traced(model, x, **kw):
        row = {"val_run": accuracy(model, data.x_val, data.y_val), "test_run": accuracy(model, data.x_test, data.y_test),
               "val_loss_run": _loss(model, data.x_val, data.y_val)}
        reestimate_batchnorm(model, x, **kw)
        row.update(val_re=accuracy(model, data.x_val, data.y_val), test_re=accuracy(model, data.x_test, data.y_test),
                   val_loss_re=_loss(model, data.x_val, data.y_val),
                   train_re=accuracy(model, data.x_train, data.y_train))
        rows.append(row)
        print(len(rows), " ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)

    flow.reestimate_batchnorm = traced
    _, report = flow.compress(flow.TernaryOptions(spec=load_spec(args.spec), tile_sparsity=args.tile_sparsity,
                                                  seed=args.seed, quiet=True))
    gain = [r["test_re"] - r["test_run"] for r in rows]
    print(f"{len(rows)} epochs: test accuracy with running statistics {statistics.mean(r['test_run'] for r in rows):.2%} "
          f"mean ({min(r['test_run'] for r in rows):.2%} .. {max(r['test_run'] for r in rows):.2%}), re-estimated "
          f"{statistics.mean(r['test_re'] for r in rows):.2%} ({min(r['test_re'] for r in rows):.2%} .. "
          f"{max(r['test_re'] for r in rows):.2%}); gain {statistics.mean(gain) * 100:.2f} points mean, positive in "
          f"{sum(g > 0 for g in gain)} of {len(gain)}; training images (re-estimated) "
          f"{min(r['train_re'] for r in rows):.2%} .. {max(r['train_re'] for r in rows):.2%}; "
          f"last epoch: test {rows[-1]['test_re']:.2%}; kept epoch {report['ternary']['validation']['finetune_epoch']}: "
          f"integer accuracy {report['accuracy']:.2%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "accuracy": report["accuracy"]}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
