"""Exact cycle model: `predict(dep)` -> per-layer cycles in the same form as `terwin verify --json`.

The model is the engine's (`terwin.engines`: `terwin.hw.<engine>.cycles`), over the same
`Program` the engine's top is built from. Report: {"engine", "spec", "layers": [{name, cycles,
mac_cycles, ideal_mac_cycles}], "cycles", "mac_cycles", "ideal_mac_cycles", "mac_ratio",
"io_cycles", "clock_mhz", "images_per_s"}.
`cycles` is compute only; images/s assumes one image at a time with full-rate streams
(compute + io_cycles per image).
"""
from __future__ import annotations

from terwin import engines


def predict(dep, *, program=None) -> dict:
    """The report for `dep` (`program`: its compiled `Program`, when the caller has it already)."""
    engine = engines.for_spec(dep.spec)
    raw = engine.predict(program if program is not None else engine.compile(dep))
    layers = raw["layers"]
    total = sum(int(l["cycles"]) for l in layers)
    mac = sum(int(l["mac_cycles"]) for l in layers)
    ideal = sum(int(l["ideal_mac_cycles"]) for l in layers)
    io = int(raw.get("io_cycles", 0))
    clock = float(dep.spec.clock_mhz)
    return {
        "engine": engine.name,
        "spec": dep.spec.to_dict(),
        "layers": layers,
        "cycles": total,
        "mac_cycles": mac,
        "ideal_mac_cycles": ideal,
        "mac_ratio": mac / ideal if ideal else None,
        "io_cycles": io,
        "clock_mhz": clock,
        "images_per_s": clock * 1e6 / (total + io) if total + io else None,
    }


def format_report(report: dict) -> str:
    lines = [f"{'layer':<16}{'cycles':>10}{'mac':>10}{'ideal':>10}{'mac/ideal':>11}"]
    for l in report["layers"]:
        ratio = f"{l['mac_cycles'] / l['ideal_mac_cycles']:.3f}" if l["ideal_mac_cycles"] else "-"
        lines.append(f"{l['name']:<16}{l['cycles']:>10}{l['mac_cycles']:>10}{l['ideal_mac_cycles']:>10}{ratio:>11}")
    r = report
    ratio = f"{r['mac_ratio']:.3f}" if r["mac_ratio"] else "-"
    lines.append(f"{'total':<16}{r['cycles']:>10}{r['mac_cycles']:>10}{r['ideal_mac_cycles']:>10}{ratio:>11}")
    if r.get("images_per_s"):
        lines.append(f"throughput: {r['images_per_s']:.1f} images/s at {r['clock_mhz']:g} MHz "
                     f"({r['cycles']} compute + {r['io_cycles']} stream cycles per image)")
    return "\n".join(lines)
