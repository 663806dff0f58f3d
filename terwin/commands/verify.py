"""`terwin verify MODEL [--images N|all] [--rtl FILE.v] [--json OUT]`: the RTL under Icarus Verilog (cocotb).

Streams digits test images through the generated top (or the given Verilog), compares every score
bit for bit with `terwin.sim.reference` and reports per-layer cycles next to the cycle model's.
Exit 0: all equal; 1: a mismatch (the first is printed and a VCD of that image kept), or the generated
design's cycles differ from `terwin simulate`'s (for `--rtl` designs that is only noted); 2: user error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from terwin import fileformat, outdir
from terwin.checks import probability_below_one, seed
from terwin.errors import TerwinError
from terwin.progress import Progress


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file")
    parser.add_argument("--images", default="20", help="number of test images, or 'all' (default 20)")
    parser.add_argument("--rtl", help="verify this Verilog file instead of generating the design")
    parser.add_argument("--top", default="terwin_top", help="top module name in --rtl (default terwin_top)")
    parser.add_argument("--json", help="write the results as JSON to this file (and a mismatch's VCD beside it)")
    parser.add_argument("--force", action="store_true",
                        help="let --json (and the VCD beside it) replace an existing file that is not JSON "
                             "(an input file never is)")
    parser.add_argument("--build-dir", default=".terwin-build", help="simulator build folder (default .terwin-build)")
    parser.add_argument("--backpressure", type=probability_below_one("--backpressure"), default=0.0,
                        help="probability of an idle cycle on each stream (default 0)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the back-pressure generator (default 0)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="simulator processes run at once, each on a slice of the images (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def count_images(text: str, available: int, *, option: str = "--images") -> int:
    """The number of test images an --images option asks for: a number in 1..available, or 'all'."""
    if text == "all":
        return available
    try:
        n = int(text)
    except ValueError:
        raise TerwinError(f"{option} must be a positive number or 'all', not {text!r}") from None
    if not 1 <= n <= available:
        raise TerwinError(f"{option} must be between 1 and {available}, not {n}")
    return n


def run(args) -> int:
    from terwin.algo.data import load_digits_split
    from terwin.sim import cycles as cycle_model
    from terwin.sim import reference, rtl

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", args.top):
        raise TerwinError(f"--top must be a Verilog module name (letters, digits, _ and $), not {args.top[:40]!r}")
    dep = fileformat.load(args.model, hardware=args.rtl is None)  # the design to generate must fit
    if args.jobs is not None and args.jobs < 1:
        raise TerwinError(f"--jobs must be at least 1, not {args.jobs}")
    if args.rtl is not None:
        rtl.read_rtl(args.rtl, top=args.top)  # refused before any progress line, not mid-run
    inputs = (args.model, args.rtl)
    if args.json:
        outdir.check_file(args.json, inputs=inputs, force=args.force)
    outdir.check_folder(args.build_dir, shared=True, option="--build-dir")  # terwin's cache: any content
    split = load_digits_split()
    x = split.x_test
    if tuple(x.shape[1:]) != tuple(dep.input_shape):
        raise TerwinError(f"the model's input {dep.input_shape} does not match the digits images {tuple(x.shape[1:])}")
    n = count_images(args.images, len(x))
    q = reference.quantize_input(dep, x[:n])
    progress = Progress("verify", quiet=args.quiet)
    progress.note(f"{n} image(s) on {'the given RTL ' + args.rtl if args.rtl else 'the generated design'}")
    res = rtl.verify(dep, q, rtl=args.rtl, top=args.top, build_root=args.build_dir, seed=args.seed,
                     pause_in=args.backpressure, pause_out=args.backpressure, progress=not args.quiet,
                     vcd_dir=args.build_dir, jobs=args.jobs)
    beside = Path(args.json).parent / Path(res.vcd).name if res.vcd and args.json else None
    if beside is not None and beside.resolve() != Path(res.vcd).resolve():
        try:  # the waves go beside the results, unless that would replace a file terwin did not write
            outdir.write_file(beside, Path(res.vcd), inputs=inputs, force=args.force, option="VCD",
                              replace_json=False)
            Path(res.vcd).unlink()
            res.vcd = str(beside)
        except TerwinError as e:
            print(f"note: the waves stay in {res.vcd}: {e}")
    predicted = cycle_model.predict(dep)
    layers = []
    for got, pred in zip(res.layers, predicted["layers"]):
        layers.append({"name": got["name"], "cycles": got["cycles"], "mac_cycles": got["mac_cycles"],
                       "ideal_mac_cycles": pred["ideal_mac_cycles"], "predicted_cycles": pred["cycles"]})
    total = sum(l["cycles"] for l in layers)
    mac = sum(l["mac_cycles"] for l in layers)
    ideal = sum(l["ideal_mac_cycles"] for l in layers)
    report = {"model": str(args.model), "rtl": args.rtl, "images": res.images, "mismatches": res.mismatches,
              "first_mismatch": res.first_mismatch, "vcd": res.vcd, "layers": layers, "cycles": total,
              "mac_cycles": mac, "ideal_mac_cycles": ideal, "mac_ratio": mac / ideal if ideal else None,
              "cycles_match_model": all(l["cycles"] == l["predicted_cycles"] for l in layers)}
    print(f"{'layer':<16}{'cycles':>10}{'model':>10}{'mac':>10}{'ideal':>10}")
    for l in layers:
        print(f"{l['name']:<16}{l['cycles']:>10}{l['predicted_cycles']:>10}{l['mac_cycles']:>10}{l['ideal_mac_cycles']:>10}")
    print(f"{'total':<16}{total:>10}{predicted['cycles']:>10}{mac:>10}{ideal:>10}"
          + (f"   mac/ideal {mac / ideal:.3f}" if ideal else ""))
    if args.json:
        outdir.write_file(args.json, json.dumps(report, indent=2) + "\n", inputs=inputs, force=args.force)
    if res.mismatches:
        fm = res.first_mismatch
        print(f"MISMATCH: {res.mismatches} score(s) differ over {res.images} image(s); first: image {fm['image']}, "
              f"layer {fm['layer']}, output {fm['output']}: expected {fm['expected']}, got {fm['got']}"
              + (f"; waves in {res.vcd}" if res.vcd else ""))
        return 1
    if not report["cycles_match_model"]:
        diff = next(l for l in layers if l["cycles"] != l["predicted_cycles"])
        where = (f"layer {diff['name']}: RTL {diff['cycles']} cycles, model {diff['predicted_cycles']}")
        if args.rtl is None:
            # The generated design and `terwin simulate` must agree exactly; a difference is a terwin bug.
            print(f"CYCLES DIFFER from the cycle model ({where}); please report this as a terwin bug")
            return 1
        print(f"note: the given RTL's cycles differ from the cycle model ({where})")
    print(f"OK: {res.images} image(s), 0 mismatches")
    return 0
