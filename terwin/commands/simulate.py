"""`terwin simulate MODEL [--json OUT]`: per-layer cycles from the exact cycle model, and throughput."""
from __future__ import annotations

import json
from pathlib import Path

from terwin import fileformat


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file")
    parser.add_argument("--json", help="write the report as JSON to this file")


def run(args) -> int:
    from terwin.sim import cycles
    dep = fileformat.load(args.model)
    report = cycles.predict(dep)
    print(cycles.format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
