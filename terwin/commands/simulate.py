"""`terwin simulate MODEL|NET.json [--spec PRESET|spec.json] [--json OUT]`: per-layer cycles from the
exact cycle model, and throughput at the spec's clock.

MODEL is a `.terwin` file; `--spec` then re-targets it to another array shape or clock (the tile
masks are re-derived from the weights when the PE array changes). NET.json is a network description
(`terwin.network`): layer shapes only, weights drawn at random, for networks terwin did not train.
"""
from __future__ import annotations

import json

from terwin import fileformat, outdir
from terwin.errors import SpecError
from terwin.spec import load_spec


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file, or a network description .json (see terwin.network)")
    parser.add_argument("--spec", help="hardware spec: a preset name or a spec .json file "
                                       "(default: the model's own; pe8x8 for a network description)")
    parser.add_argument("--json", help="write the report as JSON to this file (never one of the inputs)")
    parser.add_argument("--force", action="store_true",
                        help="let --json replace an existing file that is not JSON (an input file never is)")


def retarget(dep, spec):
    """The same model on another array shape / clock (`Deployment.retarget`)."""
    return dep.retarget(spec)


def run(args) -> int:
    from terwin import network
    from terwin.sim import cycles

    if args.json:
        outdir.check_file(args.json, inputs=(args.model, args.spec), force=args.force)
    try:
        is_net = network.is_network_file(args.model)
    except OSError as exc:
        raise SpecError(f"cannot read {args.model}: {exc.strerror}") from None
    if is_net:
        dep = network.load_network(args.model, load_spec(args.spec))
    else:
        dep = fileformat.load(args.model)
        if args.spec is not None:
            dep = retarget(dep, load_spec(args.spec))
    report = cycles.predict(dep)
    print(cycles.format_report(report))
    if args.json:
        outdir.write_file(args.json, json.dumps(report, indent=2) + "\n", inputs=(args.model, args.spec),
                          force=args.force)
    return 0
