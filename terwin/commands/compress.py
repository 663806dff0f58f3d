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

# one compression family per engine (`terwin.engines`): its flow module and default spec
FAMILIES = {e.name: (e.compress_flow, e.default_spec) for e in engines.ENGINES.values()}


def add_arguments(parser):
    parser.add_argument("--family", choices=sorted(FAMILIES), default="ternary", help="compression family (default: ternary)")
    parser.add_argument("--spec", help="hardware spec: a preset name or a spec .json file "
                                       "(default: pe8x8 for ternary, winograd for winograd)")
    parser.add_argument("--seed", type=seed, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder for model.terwin and compress.json")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    for family, (module, _) in FAMILIES.items():
        group = parser.add_argument_group(f"{family} family")
        importlib.import_module(module).add_arguments(group)


def run(args) -> int:
    module_name, default_spec = FAMILIES[args.family]
    spec = load_spec(args.spec, default=default_spec)
    expected = importlib.import_module(module_name).WEIGHT_FORMAT
    if spec.weight_format != expected:
        raise TerwinError(f"spec {spec.name} has weight_format {spec.weight_format!r}, "
                          f"but --family {args.family} needs {expected!r}")
    out = Path(args.out)
    with OutputFolder(out, force=args.force) as stage:  # a bad --out is refused before training
        module = importlib.import_module(module_name)
        dep, report = module.compress(module.options_from_args(args, spec))
        report = {**report, "checksum": fileformat.save(dep, stage / "model.terwin")}
        (stage / "compress.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    summary = {k: report[k] for k in ("float_accuracy", "accuracy", "reference_mismatches") if k in report}
    print(f"wrote {out / 'model.terwin'} and {out / 'compress.json'}: {json.dumps(summary)}")
    return 0
