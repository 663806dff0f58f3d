"""`terwin build MODEL --board BOARD --out DIR`: a bitstream with the open flow (yowasp Yosys and nextpnr).

Writes DIR/terwin.bin (iCE40) or DIR/terwin.bit (ECP5), DIR/report.json and the tools' files in
DIR/build/, through `terwin.outdir` (a failed build leaves DIR as it was). The accelerator sits
between a UART receiver and transmitter (see `terwin.hw.boards`).
"""
from __future__ import annotations

from terwin.build import BOARDS, DEFAULT_SEED
from terwin.checks import seed


def add_arguments(parser):
    parser.add_argument("model", help="model file (.terwin)")
    parser.add_argument("--board", required=True, choices=sorted(BOARDS), help="board to build for")
    parser.add_argument("--out", required=True, help="output folder for the bitstream and report.json")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="target clock in MHz (default: the spec's clock_mhz); the board clock goes "
                             "through a PLL to the closest frequency it can make")
    parser.add_argument("--seed", type=seed, default=DEFAULT_SEED, help=f"nextpnr placement seed (default: {DEFAULT_SEED})")
    parser.add_argument("--spec", help="build the model on another accelerator: a preset name or a spec .json file "
                                       "(the same weights and scores, re-tiled for another array; e.g. a Winograd "
                                       "model for the iCEBreaker: examples/winograd-icebreaker.json, one lane, "
                                       "its weights in SPRAM loaded at run time, quarter banks)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from terwin import fileformat
    from terwin import engines
    from terwin.build import DoesNotFitError, build_model, family_of, get_board
    from terwin.errors import TerwinError
    from terwin.outdir import check_folder

    if args.clock_mhz is not None and not 0 < args.clock_mhz <= 1000:
        raise TerwinError(f"--clock-mhz must be in (0, 1000], not {args.clock_mhz:g}")
    dep = fileformat.load(args.model, hardware=True)
    if args.spec is not None:
        from terwin.spec import load_spec
        dep = dep.retarget(load_spec(args.spec))
    check_folder(args.out, force=args.force)  # before the design is elaborated
    try:
        report = build_model(dep, board=args.board, out_dir=args.out, clock_mhz=args.clock_mhz, seed=args.seed,
                             quiet=args.quiet, force=args.force)
    except DoesNotFitError as e:
        hint = engines.for_spec(dep.spec).fit_hint(dep.spec, family_of(get_board(args.board)))
        if hint:
            raise DoesNotFitError(f"{e}; {hint}") from None
        raise
    timing = "met" if report["timing_met"] else "NOT met"
    print(f"{report['board']} ({report['device']}): {report['luts']} LUTs ({report['logic_cells']} logic cells), "
          f"{report['ffs']} FFs, {report['brams']} BRAMs, {report['dsps']} DSPs; "
          f"fmax {report['fmax_mhz']} MHz, target {report['target_mhz']:g} MHz: timing {timing}")
    cp = report.get("critical_path")
    if cp and not report["timing_met"]:
        print(f"critical path {cp['delay_ns']:.2f} ns ({cp['steps']} steps): {cp['from']} -> {cp['to']}")
    print(f"bitstream: {args.out}/{report['bitstream']} (sha256 {report['bitstream_sha256'][:16]}...)")
    return 0
