"""The stored models' post-synthesis netlists under the bench: `terwin verify --netlist FAMILY --images 50`.

    python benchmarks/netlist.py [--images 50] [--simulator verilator] [--json out.json]

Runs the real command for ternary-50 on iCE40 and ECP5 and for the Winograd model on ECP5 (it does
not fit the iCE40) in one fresh build folder, and prints a Markdown table (docs/hardware.md) of the
scores compared, mismatches, counters and the seconds of synthesis, compile and simulation. Every
run must pass (exit 0): this is the proof that the synthesized netlist computes what the reference
does. About 5 minutes on 2 cores with Verilator.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("ternary-50", ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin", "ice40"),
        ("ternary-50", ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin", "ecp5"),
        ("winograd", ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin", "ecp5")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="50")
    ap.add_argument("--simulator", default="verilator")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="terwin-netlist-") as work:
        for name, model, family in RUNS:
            out = Path(work) / f"{name}-{family}.json"
            cmd = [sys.executable, "-m", "terwin", "verify", str(model), "--netlist", family, "--images", args.images,
                   "--simulator", args.simulator, "--build-dir", str(Path(work) / "build"), "--json", str(out),
                   "--quiet"]
            start = time.monotonic()
            run = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.monotonic() - start
            if not out.exists():
                print(run.stdout, run.stderr, file=sys.stderr)
                failed += 1
                continue
            rep = json.loads(out.read_text())
            failed += run.returncode != 0
            row = {"model": name, "netlist": family, "rc": run.returncode, "images": rep["images"],
                   "mismatches": rep["mismatches"], "counters_equal": rep["cycles_match_model"],
                   "protocol_errors": rep["protocol_error_count"], "wall_s": round(wall, 1), **rep["seconds"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}\n")
    print("| model | netlist | images | mismatches | counters = model | synthesis (s) | compile (s) | simulate (s) | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['netlist']} | {r['images']} | {r['mismatches']} | {r['counters_equal']} | "
              f"{r['design']:.0f} | {r['build']:.0f} | {r['simulate']:.1f} | {r['images'] / r['simulate']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
