"""Cycles of the Winograd engine as Winograd-domain density falls (docs/winograd-hardware.md).

    python benchmarks/winograd_sparsity.py

Synthetic models (`terwin.synthetic.random_deployment`, seed 0, int8 classifier) of the digits
topology with every conv a Winograd conv, one per density (fraction of nonzero Winograd-domain
weights), through the engine's exact cycle model (`terwin.hw.winograd.cycles`). Prints nnz(U) of
the Winograd layers, their multiply-stage cycles, the ideal ceil(nonzero multiplies / lanes), the
ratio, the total compute cycles per image and their ratio to the ideal multiply cycles of every
layer (the classifier's included). Seconds on one core.
"""
from __future__ import annotations

import numpy as np

from terwin import engines
from terwin.deployment import WinogradConv2d
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment

DIGITS_TOPOLOGY = (("winograd_conv2d", 16), ("winograd_conv2d", 32), ("maxpool2d", 2), ("winograd_conv2d", 32),
                   ("maxpool2d", 2), ("linear", 10))


def sparsity_series(densities=(1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1), *, spec=None, seed: int = 0,
                    topology=DIGITS_TOPOLOGY) -> list[dict]:
    """Per density: nnz(U), multiply-stage and ideal cycles of the Winograd layers, total cycles."""
    spec = spec or PRESETS["winograd"]
    engine = engines.for_spec(spec)
    rows = []
    for d in densities:
        dep = random_deployment(spec, seed=seed, topology=topology, winograd_density=d, linear_int_bits=8)
        layers = engine.predict(engine.compile(dep))["layers"]
        wl = [l for l, layer in zip(layers, dep.layers) if layer.kind == WinogradConv2d.kind]
        rows.append({
            "density": d,
            "winograd_nonzeros": sum(int(np.count_nonzero(x.weight)) for x in dep.layers
                                     if x.kind == WinogradConv2d.kind),
            "winograd_mac_cycles": sum(l["mac_cycles"] for l in wl),
            "winograd_ideal_mac_cycles": sum(l["ideal_mac_cycles"] for l in wl),
            "cycles": sum(l["cycles"] for l in layers),
            "ideal_mac_cycles": sum(l["ideal_mac_cycles"] for l in layers),
        })
    return rows


def main() -> None:
    print(f"{'density':>8}{'nnz(U)':>9}{'mult cyc':>10}{'ideal':>8}{'ratio':>7}{'cycles':>9}{'/ideal':>8}")
    for r in sparsity_series():
        print(f"{r['density']:>8.2f}{r['winograd_nonzeros']:>9}{r['winograd_mac_cycles']:>10}"
              f"{r['winograd_ideal_mac_cycles']:>8}{r['winograd_mac_cycles'] / r['winograd_ideal_mac_cycles']:>7.3f}"
              f"{r['cycles']:>9}{r['cycles'] / r['ideal_mac_cycles']:>8.3f}")


if __name__ == "__main__":
    main()
