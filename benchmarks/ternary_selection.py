"""Which fine-tuning state to export: one ternary run, every selection rule, on the same trajectory.

    python benchmarks/ternary_selection.py --spec pe8x8 --tile-sparsity 0.75 --seed 1 [--set distill=1] \
        [--json out.json]

Runs the ternary family's `compress` (the recipe, `--set` overrides a `Schedule` field as in
`compression_sweep.py`) and records, at every fine-tuning epoch the flow validates (those with the
final zero budget, batch-norm statistics re-estimated), the state, the per-image correctness on the
validation images and the fake-quantized accuracy on the test images. Afterwards it builds, from the
same trajectory, the states the other rules would export and evaluates each as the integer model:

* ``best``: the flow's checkpoint choice (best validation accuracy, the later on a tie) — what
  `compress` reported (`Schedule.select="best"`);
* ``last``: the last epoch (`select="last"`);
* ``average-K``: the mean of the float parameters (latent weights, batch-norm affine, biases) over the
  last K validated epochs, ternarized, batch-norm statistics re-estimated (`select="average"`,
  stochastic weight averaging, Izmailov et al. 2018).

The per-image validation correctness lets the rules be compared on validation alone: ``last`` and
``average-K`` do not look at the validation images, so their validation accuracy is an unbiased
estimate; ``best`` is scored by 2-fold cross-validation (choose the epoch on one half of the
validation images, score it on the other, and the other way round). Test figures are reported for
docs/ternary.md as the diagnostic they are; the choice of rule reads validation only.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import terwin.algo.ternary.flow as flow  # noqa: E402
from compression_sweep import _parse_set  # noqa: E402
from terwin.algo.results import evaluate_deployment  # noqa: E402
from terwin.algo.ternary.export import export_ternary, sync_activation_scales  # noqa: E402
from terwin.algo.train import accuracy, reestimate_batchnorm  # noqa: E402
from terwin.spec import load_spec  # noqa: E402

AVERAGE_WINDOWS = (5, 10, 20)


class Recorder(flow.BestCheckpoint):
    """BestCheckpoint that also keeps every state it is offered (the second instance: fine-tuning)."""
    instances: list["Recorder"] = []
    data = None

    def __init__(self, net, x_val, y_val):
        super().__init__(net, x_val, y_val)
        Recorder.instances.append(self)
        self.trace = []

    @torch.no_grad()
    def offer(self, epoch: int) -> float:
        acc = super().offer(epoch)
        if len(Recorder.instances) >= 2 and self is Recorder.instances[-1]:
            was = self.net.training
            self.net.eval()
            correct = (self.net(self.x).argmax(dim=1) == self.y).numpy().astype(int).tolist()
            self.net.train(was)
            self.trace.append({"epoch": epoch + 1, "val_correct": correct,
                               "test_fake_quant": accuracy(self.net, Recorder.data.x_test, Recorder.data.y_test),
                               "state": copy.deepcopy(self.net.state_dict())})
        return acc


def _averaged(states: list[dict]) -> dict:
    """The last state with its float parameters replaced by their mean over `states`."""
    out = copy.deepcopy(states[-1])
    for key, value in out.items():
        if key.endswith(("parametrizations.weight.original", "bn.weight", "bn.bias", "fc.bias")):
            out[key] = torch.stack([s[key] for s in states]).mean(dim=0)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="pe8x8")
    parser.add_argument("--tile-sparsity", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--zero-budget", type=float, default=flow.DEFAULT_ZERO_BUDGET)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="smoke tests only")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = _parse_set(args.set)
    # the trajectory needs the checkpoint choice at every epoch: average=0 here, the averages are built below
    schedule = flow.dataclasses.replace(flow.DEFAULT_SCHEDULE, **{**overrides, "average": 0})
    spec = load_spec(args.spec)

    captured = {}
    real_train = flow.train_ternary

    def train_ternary(options, data):
        Recorder.data = data
        t = real_train(options, data)
        captured["trained"], captured["data"] = t, data
        return t

    flow.BestCheckpoint = Recorder
    flow.train_ternary = train_ternary
    options = flow.TernaryOptions(spec=spec, tile_sparsity=args.tile_sparsity, seed=args.seed, quiet=True,
                                  schedule=schedule, epochs_scale=args.epochs_scale,
                                  zero_budget=args.zero_budget)
    dep_best, report = flow.compress(options)
    t, data = captured["trained"], captured["data"]
    model, trace = t.model, Recorder.instances[-1].trace
    x_val, y_val = data.validation()

    def integer(state: dict, *, settle: bool) -> dict:
        model.load_state_dict(state)
        if settle:
            reestimate_batchnorm(model, data.x_train)
        sync_activation_scales(model)
        model.eval()
        with torch.no_grad():
            correct = (model(x_val).argmax(dim=1) == y_val).numpy().astype(int).tolist()
        dep = export_ternary(model, spec, tile_masks=t.pruner.tile_masks())
        ev = evaluate_deployment(dep, data)
        return {"tiles_kept_by_pruner": int(sum(m.sum() for m in t.pruner.tile_masks().values())),
                "tiles_in_model": int(sum(layer.tile_mask.sum() for layer in dep.weighted_layers)),
                "val_correct": correct, "val": float(np.mean(correct)),
                "test_fake_quant": accuracy(model, data.x_test, data.y_test), "test": ev["accuracy"],
                "compression": ev["compression_ratio"], "reference_mismatches": ev["reference_mismatches"]}

    rules = {"best": {"epoch": t.validation.get("finetune_epoch"), "val": t.validation["accuracy"],
                      "test": report["accuracy"], "test_fake_quant": report["fake_quant_accuracy"],
                      "compression": report["compression_ratio"],
                      "reference_mismatches": report["reference_mismatches"],
                      "tiles_kept_by_pruner": int(sum(m.sum() for m in t.pruner.tile_masks().values())),
                      "tiles_in_model": int(sum(layer.tile_mask.sum() for layer in dep_best.weighted_layers))},
             "last": {"epoch": trace[-1]["epoch"], **integer(trace[-1]["state"], settle=False)}}
    for k in AVERAGE_WINDOWS:
        window = trace[-k:]
        rules[f"average-{k}"] = {"epochs": [window[0]["epoch"], window[-1]["epoch"]],
                                 **integer(_averaged([r["state"] for r in window]), settle=True)}
    # 2-fold cross-validation of the checkpoint choice on the validation images
    n = len(y_val)
    gen = np.random.default_rng(args.seed)
    halves = np.array_split(gen.permutation(n), 2)
    per_epoch = np.array([r["val_correct"] for r in trace])          # [epochs, n]
    cv = []
    for a, b in ((0, 1), (1, 0)):
        score = per_epoch[:, halves[a]].mean(axis=1)
        pick = int(np.flatnonzero(score == score.max())[-1])            # the later on a tie, as BestCheckpoint
        cv.append(float(per_epoch[pick, halves[b]].mean()))
    rules["best"]["val_2fold"] = float(np.mean(cv))
    for name in rules:
        if name != "best":
            v = np.array(rules[name]["val_correct"])
            rules[name]["val_2fold"] = float(np.mean([v[halves[1]].mean(), v[halves[0]].mean()]))
    row = {"spec": args.spec, "tile_sparsity": args.tile_sparsity, "seed": args.seed, "overrides": overrides,
           "zero_budget": args.zero_budget, "mac_cycle_ratio": report["ternary"]["mac_cycle_ratio"],
           "float_accuracy": report["float_accuracy"], "validation": t.validation,
           "train_seconds": report["train_seconds"],
           "epochs": [{k: v for k, v in r.items() if k != "state"} for r in trace], "rules": rules}
    for name, r in rules.items():
        print(f"{name:11s} val {r['val']:.4f} (2-fold {r['val_2fold']:.4f}) test {r['test']:.4f} "
              f"drop {100 * (report['float_accuracy'] - r['test']):.2f} compression {r['compression']:.1f} "
              f"tiles {r['tiles_in_model']}/{r['tiles_kept_by_pruner']} "
              f"mismatches {r['reference_mismatches']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
