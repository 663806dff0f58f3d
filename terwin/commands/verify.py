"""`terwin verify MODEL [--images N|all] [--data digits|digits32|FILE.npz] [--rtl FILE.v] [--netlist ice40|ecp5] [--simulator NAME] [--shards K] [--ray ADDRESS] [--json OUT]`.

Streams test images (the built-in set of the model's input shape, or --data) through the generated top (or the given Verilog; or its netlist from the
same Yosys synthesis as `terwin build`) under the cocotb bench (Verilator or Icarus Verilog), with
seeded random gaps on the input stream and back-pressure on the output stream, and compares every
score bit for bit with `terwin.sim.reference`, every layer's cycle and MAC-cycle counter and the
total with the cycle model (`terwin simulate`), and the stream protocol; a watchdog stops a design
that runs past twice the model's cycles plus a margin.
Many images: `--shards K` splits them into K slices run as tasks of `terwin.parallel.Executor` (a
local Ray instance, or a process pool without Ray), `--ray ADDRESS` on a running Ray cluster; every
image sees the same pauses as in one run, and the merged result is the same.
Exit 0: all equal; 1: a score, a counter or the protocol differs, or the watchdog fired (the first
of each is printed, naming the layer and the counter, and a VCD of the failing image kept) — for
`--rtl` designs too; 2: user error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from terwin import fileformat, outdir
from terwin.algo.data import builtin_for, load_data
from terwin.checks import probability_below_one, seed
from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.sim import reference

DEFAULT_PAUSE = 0.2      # = terwin.sim.rtl.DEFAULT_PAUSE (not imported here: `terwin --help` loads no Amaranth)
FULL_RATE_EVERY = 8      # = terwin.sim.rtl.FULL_RATE_EVERY
SHOWN_ERRORS = 20        # counter and protocol errors listed in --json
RAY_SHARDS = 32          # shards of a --ray run unless --shards says
MAX_SHARDS = 4096


def add_arguments(parser):
    parser.add_argument("model", help="a .terwin model file")
    parser.add_argument("--images", default="20", help="number of test images, or 'all' (default 20)")
    add_data_argument(parser)
    parser.add_argument("--rtl", help="verify this Verilog file instead of generating the design")
    parser.add_argument("--top", default="terwin_top", help="top module name in --rtl (default terwin_top)")
    parser.add_argument("--json", help="write the results as JSON to this file (and a failing image's VCD beside it)")
    parser.add_argument("--force", action="store_true",
                        help="let --json (and the VCD beside it) replace an existing file that is not JSON "
                             "(an input file never is)")
    parser.add_argument("--build-dir", default=".terwin-build", help="simulator build folder (default .terwin-build)")
    parser.add_argument("--simulator", default=None,
                        help="verilator or icarus (default: the fastest installed, in that order)")
    parser.add_argument("--netlist", default=None, metavar="ice40|ecp5",
                        help="simulate the post-synthesis netlist of this FPGA family instead of the RTL")
    parser.add_argument("--backpressure", type=probability_below_one("--backpressure"), default=DEFAULT_PAUSE,
                        help="probability of an idle cycle before an input beat and of the output's ready "
                             f"being low, per cycle (default {DEFAULT_PAUSE}; every {FULL_RATE_EVERY}th image "
                             "runs at full rate)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the gaps and back-pressure (default 0)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="simulator processes run at once, each on a slice of the images (default: one per core)")
    parser.add_argument("--shards", type=int, default=None,
                        help="split the images into this many slices, each a task (one simulator process) on a "
                             "local Ray instance or a process pool; with --ray on the cluster "
                             f"(default with --ray: {RAY_SHARDS}, or one per image if fewer)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run the shards on a running Ray cluster (e.g. 10.0.0.5:6379); every node needs "
                             "terwin and the simulator installed")
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


def add_data_argument(parser) -> None:
    parser.add_argument("--data", metavar="digits|digits32|FILE.npz", default=None,
                        help="whose test images: a built-in set or a user's .npz (as for terwin compress); "
                             "default: the built-in set of the model's input shape")


def test_images(dep, images: str, data: str | None = None):
    """The first `images` (a count or 'all') test images of `data` (digits, digits32 or a .npz; by
    default the built-in set whose images have the model's input shape), quantized for `dep`, and
    their labels."""
    shape = tuple(dep.input_shape)
    if data is None:
        data = builtin_for(shape)
        if data is None:
            raise TerwinError(f"the model's input {shape} matches no built-in data set (digits 1x8x8, "
                              "digits32 1x32x32); name its test images with --data FILE.npz")
    split = load_data(data, act_bits=dep.spec.act_bits)
    x = split.x_test
    if tuple(x.shape[1:]) != shape:
        raise TerwinError(f"the model's input {shape} does not match the {split.name} test images {tuple(x.shape[1:])}")
    n = count_images(images, len(x))
    return reference.quantize_input(dep, x[:n]), split.y_test[:n]


def run(args) -> int:
    from terwin.hw import fpga
    from terwin.sim import cycles as cycle_model
    from terwin.sim import netlist as netlist_mod
    from terwin.sim import rtl, simulators

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", args.top):
        raise TerwinError(f"--top must be a Verilog module name (letters, digits, _ and $), not {args.top[:40]!r}")
    if args.netlist is not None:
        if args.netlist not in netlist_mod.FAMILIES:
            raise TerwinError(f"--netlist must be one of {', '.join(netlist_mod.FAMILIES)}, not {args.netlist[:40]!r}")
    sim = simulators.get(args.simulator) if args.simulator is not None else simulators.default()
    dep = fileformat.load(args.model, hardware=args.rtl is None)  # the design to generate must fit
    if args.jobs is not None and args.jobs < 1:
        raise TerwinError(f"--jobs must be at least 1, not {args.jobs}")
    if args.shards is not None and not 1 <= args.shards <= MAX_SHARDS:
        raise TerwinError(f"--shards must be from 1 to {MAX_SHARDS}, not {args.shards}")
    executor = None
    if args.shards is not None or args.ray is not None:
        from terwin.parallel import Executor
        executor = Executor.choose(workers=args.jobs or rtl.default_jobs(), ray_address=args.ray)
    if args.rtl is not None:
        rtl.read_rtl(args.rtl, top=args.top, simulator=sim)  # refused before any progress line, not mid-run
    inputs = (args.model, args.rtl)
    if args.json:
        outdir.check_file(args.json, inputs=inputs, force=args.force)
    outdir.check_folder(args.build_dir, shared=True, option="--build-dir")  # terwin's cache: any content
    q, _ = test_images(dep, args.images, args.data)
    n = len(q)
    progress = Progress("verify", quiet=args.quiet)
    what = ("the given RTL " + args.rtl) if args.rtl else "the generated design"
    if args.netlist:
        what = f"the {args.netlist} netlist (synth_{args.netlist} {' '.join(fpga.get(args.netlist).synth_opts)}) of {what}"
    options = dict(rtl=args.rtl, top=args.top, seed=args.seed, pause_in=args.backpressure,
                   pause_out=args.backpressure, vcd_dir=str(Path(args.build_dir).resolve()), simulator=sim.name, netlist=args.netlist,
                   synth_opts=fpga.get(args.netlist).synth_opts if args.netlist else ())
    if executor is None:
        progress.note(f"{n} image(s) on {what}, simulated by {sim.name}")
        res = rtl.verify(dep, q, build_root=args.build_dir, progress=not args.quiet, jobs=args.jobs, **options)
    else:
        shards = min(n, args.shards or RAY_SHARDS)
        progress.note(f"{n} image(s) on {what}, simulated by {sim.name}, in {shards} shard(s) on "
                      f"{executor.describe()}")
        res = rtl.verify_sharded(dep, q, executor=executor, shards=shards, build_root=args.build_dir,
                                 progress=Progress("verify shards", quiet=args.quiet), **options)
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
                       "ideal_mac_cycles": pred["ideal_mac_cycles"], "predicted_cycles": pred["cycles"],
                       "predicted_mac_cycles": pred["mac_cycles"]})
    total = sum(l["cycles"] for l in layers)
    mac = sum(l["mac_cycles"] for l in layers)
    ideal = sum(l["ideal_mac_cycles"] for l in layers)
    report = {"model": str(args.model), "rtl": args.rtl, "netlist": args.netlist, "simulator": res.simulator,
              "images": res.images, "completed": res.completed, "mismatches": res.mismatches,
              "first_mismatch": res.first_mismatch, "vcd": res.vcd, "layers": layers, "cycles": total,
              "mac_cycles": mac, "ideal_mac_cycles": ideal, "mac_ratio": mac / ideal if ideal else None,
              "cycles_match_model": not res.counter_errors and res.completed > 0,
              "counter_errors": res.counter_errors[:SHOWN_ERRORS], "counter_error_count": len(res.counter_errors),
              "protocol_errors": res.protocol_errors[:SHOWN_ERRORS],
              "protocol_error_count": len(res.protocol_errors), "timeout": res.timeout,
              "watchdog_cycles": res.watchdog_cycles, "backpressure": args.backpressure, "seed": args.seed,
              "seconds": res.seconds, "ok": res.ok}
    print(f"{'layer':<16}{'cycles':>10}{'model':>10}{'mac':>10}{'model':>10}{'ideal':>10}")
    for l in layers:
        print(f"{l['name']:<16}{_num(l['cycles']):>10}{l['predicted_cycles']:>10}{_num(l['mac_cycles']):>10}"
              f"{l['predicted_mac_cycles']:>10}{l['ideal_mac_cycles']:>10}")
    print(f"{'total':<16}{_num(total):>10}{predicted['cycles']:>10}{_num(mac):>10}{predicted['mac_cycles']:>10}"
          f"{ideal:>10}" + (f"   mac/ideal {mac / ideal:.3f}" if ideal else ""))
    if args.json:
        outdir.write_file(args.json, json.dumps(report, indent=2) + "\n", inputs=inputs, force=args.force)
    if not res.ok:
        for line in res.failures():
            print(line)
        if res.vcd:
            print(f"waves of the first failing image: {res.vcd}")
        return 1
    print(f"OK: {res.images} image(s), 0 mismatches, every counter equal to the cycle model ({res.simulator}"
          + (f", {args.netlist} netlist" if args.netlist else "") + ")")
    return 0


def _num(v) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)
