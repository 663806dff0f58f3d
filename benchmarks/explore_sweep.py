"""The full design-space sweep of `terwin explore` on a local Ray instance, timed.

    python benchmarks/explore_sweep.py [--workers 2] [--model bitstreams/ulx3s-85f/ternary-50/model.terwin]
                                       [--net examples/resnet18.json] [--ray ADDRESS]

For each board: the default sweep of the reference ternary-50 model (pe_rows 2..32 x pe_cols 2..64 x
out_lanes 1..32, re-tiled: 100 valid points) scored by the exact cycle model and the calibrated resource/fmax model on
`terwin.parallel` (Ray: a local instance, or the cluster at --ray), then the same sweep serially; the
two must agree point for point. Prints each front and the wall-clock times (docs/explore.md). A network
description (--net) is swept too, with act_bits.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from terwin.dse import sweep

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "bitstreams" / "ulx3s-85f" / "ternary-50" / "model.terwin"))
    parser.add_argument("--net", default=None, help="a network description to sweep as well")
    parser.add_argument("--ray", default=None, help="a Ray cluster's address (default: a local instance)")
    args = parser.parse_args()
    inputs = [args.model] + ([args.net] if args.net else [])
    for model in inputs:
        for board in ("icebreaker", "ulx3s-85f"):
            started = time.monotonic()
            on_ray = sweep.explore(model, board=board, workers=args.workers, ray_address=args.ray, backend="ray")
            ray_s = time.monotonic() - started
            started = time.monotonic()
            serial = sweep.explore(model, board=board)
            serial_s = time.monotonic() - started
            assert on_ray["points"] == serial["points"], "the executor changed a result"
            print(sweep.format_table(on_ray))
            print(f"{Path(model).name} on {board}: {len(on_ray['points'])} points, {on_ray['executor']}: "
                  f"{ray_s:.1f} s (Ray start included); serial: {serial_s:.1f} s\n")


if __name__ == "__main__":
    main()
