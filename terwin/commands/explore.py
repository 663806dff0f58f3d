"""`terwin explore MODEL|NET.json --board BOARD`: the fastest accelerator of a model that fits a board.

Sweeps `HardwareSpec` fields (the PE array by default; `--axis FIELD=V1,V2,...` for any field),
scores every point with the exact cycle model and the resource/fmax model calibrated on real builds
(`terwin.dse`), keeps those that fit the board (and, with `--min-fmax MHZ`, are predicted to reach that
clock), prints the Pareto front (images/s vs LUTs, block RAMs, DSPs) and the best point;
`--json OUT` writes every point; `--out DIR` the plot (DIR/pareto.png) and DIR/explore.json;
`--build` builds the best point for real in DIR/build and verifies its RTL, beside the prediction;
`--recompress K` compresses a model file's model again for the K best arrays (`terwin.dse.recompress`)
and chooses the best among the new models.
"""
from __future__ import annotations

from terwin.boards import BOARDS


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file, or a network description .json (see terwin.network)")
    parser.add_argument("--board", required=True, choices=sorted(BOARDS), help="the board the design must fit")
    parser.add_argument("--objective", default="images_per_s", choices=("images_per_s", "images_per_s_per_klut"),
                        help="what the best point maximises among those that fit (default: images_per_s)")
    parser.add_argument("--min-fmax", type=float, default=None, metavar="MHZ",
                        help="the clock the design must run at: only points predicted to reach it are candidates, "
                             "and --build asks nextpnr for it (default: no floor; the build asks for the clock "
                             "the calibration builds did)")
    parser.add_argument("--accuracy-budget", type=float, default=None, metavar="PTS",
                        help="accuracy points (float minus integer model) a recompressed model may lose (a model's "
                             "re-tiled points all keep its accuracy)")
    parser.add_argument("--axis", action="append", default=None, metavar="FIELD=V1,V2,...",
                        help="sweep this HardwareSpec field over these values (repeatable; replaces the default "
                             "axes: pe_rows, pe_cols and out_lanes for ternary, mult_lanes for Winograd, and act_bits for "
                             "a network description)")
    parser.add_argument("--spec", help="the base spec the axes vary (a preset or spec .json; default: the model's "
                                       "own, pe8x8 for a network description)")
    parser.add_argument("--json", help="write the sweep (every point, the front, the best) as JSON to this file")
    parser.add_argument("--workers", type=int, default=1, help="points scored at once (default 1)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="score the points on a running Ray cluster (e.g. 10.0.0.5:6379)")
    parser.add_argument("--build", action="store_true",
                        help="build the best point for real (Yosys/nextpnr) and verify its RTL; needs --out")
    parser.add_argument("--build-tries", type=int, default=1, metavar="N",
                        help="with --min-fmax: when a build misses the clock, build the next candidate, up to N "
                             "builds in all (default 1)")
    parser.add_argument("--recompress", type=int, default=0, metavar="K",
                        help="a model file: compress the model again (the recipe its file records) for the K best "
                             "arrays of the sweep, score the new models with their accuracy and choose the best among "
                             "them (within --accuracy-budget); needs --out (default 0: the model re-tiled only)")
    parser.add_argument("--out", help="output folder: pareto.png, explore.json, build/ with --build, recompress/ "
                                      "with --recompress")
    parser.add_argument("--images", type=int, default=20, help="images --build verifies (default 20)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out / --json even where files terwin did not write are (they are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    import json

    from terwin import outdir
    from terwin.dse import sweep
    from terwin.errors import TerwinError
    from terwin.spec import load_spec

    if not 1 <= args.workers <= 4096:
        raise TerwinError(f"--workers must be from 1 to 4096, not {args.workers}")
    if not 1 <= args.images <= 10000:
        raise TerwinError(f"--images must be from 1 to 10000, not {args.images}")
    if args.accuracy_budget is not None and not 0 <= args.accuracy_budget <= 100:
        raise TerwinError(f"--accuracy-budget must be from 0 to 100 points, not {args.accuracy_budget:g}")
    inputs = (args.model, args.spec)
    if args.json:
        outdir.check_file(args.json, inputs=inputs, force=args.force)
    axes = dict(sweep.parse_axis(a) for a in args.axis) if args.axis else None
    spec = load_spec(args.spec) if args.spec is not None else None
    result = sweep.explore(args.model, board=args.board, objective=args.objective, axes=axes, spec=spec,
                           accuracy_budget=args.accuracy_budget, workers=args.workers, ray_address=args.ray,
                           build=args.build, out=args.out, images=args.images, force=args.force,
                           quiet=args.quiet, min_fmax=args.min_fmax,
                           build_tries=args.build_tries, recompress=args.recompress)
    print(sweep.format_table(result))
    if args.out:
        print(f"plot: {result['plot']}")
    if args.json:
        outdir.write_file(args.json, json.dumps(result, indent=1) + "\n", inputs=inputs, force=args.force)
    best = result["best"]
    if best is not None and "verify" in best and not best["verify"]["ok"]:
        return 1
    return 0
