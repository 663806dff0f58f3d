"""Which of torch's kernel choices change a trained model (docs/ternary.md, issue 14, sixth part).

Trains the ternary digits net briefly (4 + 4 + 4 epochs, pe8x8, tile sparsity 0.75, seed 0) once per
kernel configuration, each in its own process (the choices are read when torch first runs), and
prints the SHA-256 of the trained parameters and buffers. Configurations that print the same digits
train the same model; the pin (`terwin.numerics`) must give the same digits whatever the machine's
MKL and oneDNN are told they may use.

    python benchmarks/numerics_probe.py [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

NATIVE = {"TERWIN_NUMERICS": "native"}
LESSER = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"}
CONFIGS = [  # (label, environment, oneDNN on while training)
    ("this machine's own kernels", NATIVE, True),
    ("ATen told AVX2", {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2"}, True),
    ("ATen told none (default)", {**NATIVE, "ATEN_CPU_CAPABILITY": "default"}, True),
    ("oneDNN off", NATIVE, False),
    ("oneDNN off, ATen default", {**NATIVE, "ATEN_CPU_CAPABILITY": "default"}, False),
    ("oneDNN off, ATen default, MKL_CBWR=COMPATIBLE",
     {**NATIVE, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}, False),
    ("the same, MKL capped at SSE4.2",
     {**NATIVE, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", **LESSER}, False),
    ("the pin (terwin's default)", {}, False),
    ("the pin, MKL capped at SSE4.2 and oneDNN at SSE4.1", LESSER, False),
    ("oneDNN off, ATen AVX2, MKL_CBWR=AVX2", {**NATIVE, "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}, False),
]


def child(onednn: bool) -> None:
    import hashlib

    import terwin  # noqa: F401  (pins the numerics unless TERWIN_NUMERICS=native)
    import torch

    from terwin.algo.numerics import report
    from terwin.algo import train as train_module
    from terwin.algo.data import load_digits_split
    from terwin.algo.ternary.flow import Schedule, TernaryOptions, train_ternary
    from terwin.spec import PE8X8

    if onednn:   # the machine's convolutions: reproducible() without its "no oneDNN"
        import contextlib

        from terwin.algo.ternary import flow
        pinned = flow.reproducible

        @contextlib.contextmanager
        def keep_onednn():
            with pinned():
                torch.backends.mkldnn.enabled = True
                yield
        flow.reproducible = keep_onednn
    data = train_module.Tensors.from_split(load_digits_split(), validation=0.1, seed=0)
    sched = Schedule(float_epochs=4, joint_epochs=4, finetune_epochs=4, average=2)
    trained = train_ternary(TernaryOptions(spec=PE8X8, schedule=sched, tile_sparsity=0.75, seed=0, quiet=True), data)
    h = hashlib.sha256()
    for name, value in sorted(trained.model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().numpy().tobytes())
    print(json.dumps({"sha256": h.hexdigest(), "numerics": report()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--child", choices=("onednn", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child == "onednn")
        return 0
    base = {k: v for k, v in os.environ.items()
            if k not in ("TERWIN_NUMERICS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", *LESSER)}
    rows = []
    print("| kernels | model (first 16 hex digits) | ATen |\n|---|---|---|")
    for label, env, onednn in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--child", "onednn" if onednn else "plain"],
                             env={**base, **env}, capture_output=True, text=True, check=True)
        row = {"kernels": label, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"| {label} | {row['sha256'][:16]} | {row['numerics']['aten_capability']} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
