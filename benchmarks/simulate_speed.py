"""How long `terwin simulate` of a network description takes: building the Deployment (drawing the
random weights, validating) and the exact cycle model, median of repeats.

    python benchmarks/simulate_speed.py [NET.json ...] [--spec pe8x8] [--repeat 5] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from terwin import network
from terwin.sim import cycles
from terwin.spec import load_spec


def measure(path: str, spec, repeat: int) -> dict:
    build, model = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        dep = network.load_network(path, spec)
        mid = time.perf_counter()
        report = cycles.predict(dep)
        build.append(mid - start)
        model.append(time.perf_counter() - mid)
    return {"network": path, "spec": spec.name, "layers": len(dep.layers), "cycles": report["cycles"],
            "build_s": statistics.median(build), "cycle_model_s": statistics.median(model)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*", default=["examples/resnet18.json"])
    parser.add_argument("--spec", default="pe8x8")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    rows = [measure(p, spec, args.repeat) for p in args.networks]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}")
    for r in rows:
        print(f"{r['network']} on {r['spec']}: {r['layers']} layers, {r['cycles']:,} cycles; "
              f"build {r['build_s']:.3f} s, cycle model {r['cycle_model_s']:.3f} s (median of {args.repeat})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
