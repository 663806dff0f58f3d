"""`terwin compress`: train the digits CNN (float, then compressed) and export an integer model.

Writes DIR/model.terwin and DIR/compress.json. The family modules
(`terwin.algo.ternary_flow`, `terwin.algo.winograd_flow`) each provide
`add_arguments(group)` for their own options and `compress(spec, args) -> (Deployment, dict)`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from terwin import fileformat
from terwin.errors import TerwinError
from terwin.spec import load_spec

FAMILIES = {"ternary": ("terwin.algo.ternary_flow", "pe8x8"), "winograd": ("terwin.algo.winograd_flow", "winograd")}


def add_arguments(parser):
    parser.add_argument("--family", choices=sorted(FAMILIES), default="ternary", help="compression family (default: ternary)")
    parser.add_argument("--spec", help="hardware spec: a preset name or a spec .json file "
                                       "(default: pe8x8 for ternary, winograd for winograd)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder for model.terwin and compress.json")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    for family, (module, _) in FAMILIES.items():
        group = parser.add_argument_group(f"{family} family")
        importlib.import_module(module).add_arguments(group)


def run(args) -> int:
    module_name, default_spec = FAMILIES[args.family]
    spec = load_spec(args.spec, default=default_spec)
    expected = "winograd" if args.family == "winograd" else "ternary"
    if spec.weight_format != expected:
        raise TerwinError(f"spec {spec.name} has weight_format {spec.weight_format!r}, "
                          f"but --family {args.family} needs {expected!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TerwinError(f"--out {out} exists and is not a folder")
    module = importlib.import_module(module_name)
    dep, report = module.compress(spec, args)
    out.mkdir(parents=True, exist_ok=True)
    report = {"family": args.family, "spec": spec.to_dict(), "seed": args.seed, **report,
              "checksum": fileformat.save(dep, out / "model.terwin")}
    tmp = out / ".compress.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "compress.json")
    summary = {k: report[k] for k in ("float_accuracy", "accuracy", "reference_mismatches") if k in report}
    print(f"wrote {out / 'model.terwin'} and {out / 'compress.json'}: {json.dumps(summary)}")
    return 0
