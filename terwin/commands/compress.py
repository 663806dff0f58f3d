"""`terwin compress`: train the digits CNN (float, then compressed) and export an integer model.

Writes DIR/model.terwin and DIR/compress.json, both at once when training succeeds; DIR is checked
before training starts (`terwin.outdir`). The family modules
(`terwin.algo.ternary.flow`, `terwin.algo.winograd.flow`) each provide `WEIGHT_FORMAT`,
`add_arguments(group)` for their own options, `options_from_args(args, spec)` (the family's options
dataclass) and `compress(options) -> (Deployment, compress.json dict)`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from terwin import engines, fileformat
from terwin.checks import seed
from terwin.errors import TerwinError
from terwin.outdir import OutputFolder
from terwin.spec import load_spec

# one compression family per engine (`terwin.engines`): the module of its flow
FAMILIES = {e.name: e.compress_flow for e in engines.ENGINES.values()}


def add_arguments(parser):
    parser.add_argument("--family", choices=sorted(FAMILIES), default="ternary", help="compression family (default: ternary)")
    flows = {family: importlib.import_module(module) for family, module in FAMILIES.items()}
    defaults = ", ".join(f"{flow.DEFAULT_SPEC.name} for {family}" for family, flow in flows.items())
    parser.add_argument("--spec", help=f"hardware spec: a preset name or a spec .json file (default: {defaults})")
    parser.add_argument("--seed", type=seed, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder for model.terwin and compress.json")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    for family, flow in flows.items():
        flow.add_arguments(parser.add_argument_group(f"{family} family"))


def run(args) -> int:
    module = importlib.import_module(FAMILIES[args.family])
    spec = module.DEFAULT_SPEC if args.spec is None else load_spec(args.spec)
    if spec.weight_format != args.family:  # an engine's name is the weight format it runs
        raise TerwinError(f"spec {spec.name} has weight_format {spec.weight_format!r}, "
                          f"but --family {args.family} needs {args.family!r}")
    out = Path(args.out)
    with OutputFolder(out, force=args.force) as stage:  # a bad --out is refused before training
        dep, report = module.compress(module.options_from_args(args, spec))
        report = {**report, "checksum": fileformat.save(dep, stage / "model.terwin")}
        (stage / "compress.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    summary = {k: report[k] for k in ("float_accuracy", "accuracy", "reference_mismatches") if k in report}
    print(f"wrote {out / 'model.terwin'} and {out / 'compress.json'}: {json.dumps(summary)}")
    return 0
