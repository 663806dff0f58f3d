"""`terwin demo`: the whole flow on the built-in default, the digits demo.

compress (ternary at several tile sparsities, and Winograd) -> generate -> verify -> simulate ->
build (iCE40) -> report, each stage through the same subcommands a user runs, into one folder.

The folder is checked before any training (`terwin.outdir`): it may hold only what terwin wrote
there, unless --force (which the stages are given too; a user's file is never deleted). Each stage
writes its own sub-folder or file all at once, so a failed demo leaves the stages done so far and
nothing half-written.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from terwin import outdir
from terwin.checks import seed
from terwin.errors import TerwinError
from terwin.progress import Progress

DEFAULT_SPARSITIES = (0.0, 0.5, 0.75)
DEMO_MODEL = "ternary-50"


def add_arguments(parser):
    parser.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    parser.add_argument("--images", default="50",
                        help="test images to run through the RTL simulation of each ternary model: a number or "
                             "'all' (default: 50)")
    parser.add_argument("--winograd-images", default="20",
                        help="test images for the Winograd engine's RTL simulation (about 2 s per image in "
                             "Icarus, ~70 per second in Verilator; default: 20)")
    parser.add_argument("--board", default="icebreaker", help="board to build for (default: icebreaker)")
    parser.add_argument("--no-build", action="store_true", help="skip the bitstream build")
    parser.add_argument("--no-winograd", action="store_true", help="skip the Winograd family")
    parser.add_argument("--seed", type=seed, default=0, help="training seed of every model (default: 0)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds files terwin did not write (they are kept)")


def _run(argv: list[str]) -> None:
    from terwin.cli import main
    rc = main(argv)
    if rc == 1:
        raise TerwinError(f"'terwin {' '.join(argv)}' found a mismatch (exit 1); see its output above")
    if rc:
        raise TerwinError(f"'terwin {' '.join(argv)}' failed with exit status {rc}")


def _check(args) -> None:
    """Refuse bad options before minutes of training, not at the stage that uses them."""
    from terwin.algo.data import load_digits_split
    from terwin.boards import BOARDS
    from terwin.commands.verify import count_images

    available = len(load_digits_split().y_test)
    count_images(args.images, available, option="--images")
    count_images(args.winograd_images, available, option="--winograd-images")
    if not args.no_build and args.board not in BOARDS:
        raise TerwinError(f"--board must be one of {', '.join(sorted(BOARDS))}, not {args.board!r}")
    outdir.check_folder(args.out, force=args.force)


def run(args) -> int:
    _check(args)
    out = Path(args.out)
    stages = []
    for sparsity in DEFAULT_SPARSITIES:
        name = f"ternary-{round(sparsity * 100)}"
        stages += [
            (f"compress {name}", ["compress", "--family", "ternary", "--tile-sparsity", str(sparsity),
                                  "--seed", str(args.seed), "--out", str(out / name)]),
            (f"simulate {name}", ["simulate", str(out / name / "model.terwin"), "--json", str(out / name / "simulate.json")]),
            (f"verify {name}", ["verify", str(out / name / "model.terwin"), "--images", str(args.images),
                                "--json", str(out / name / "verify.json")]),
        ]
    model = out / DEMO_MODEL / "model.terwin"
    stages.append(("generate", ["generate", str(model), "--out", str(out / DEMO_MODEL / "rtl")]))
    if not args.no_winograd:
        wmodel = out / "winograd" / "model.terwin"
        stages += [
            ("compress winograd", ["compress", "--family", "winograd", "--seed", str(args.seed), "--out", str(out / "winograd")]),
            ("verify winograd", ["verify", str(wmodel), "--images", str(args.winograd_images),
                                 "--json", str(out / "winograd" / "verify.json")]),
            ("simulate winograd", ["simulate", str(wmodel), "--json", str(out / "winograd" / "simulate.json")]),
        ]
    if not args.no_build:
        stages.append((f"build {args.board}", ["build", str(model), "--board", args.board,
                                               "--out", str(out / DEMO_MODEL / f"build-{args.board}")]))
    stages.append(("report", ["report", str(out)]))

    if args.force:
        stages = [(label, argv + ["--force"]) for label, argv in stages]
    progress = Progress("demo", every=0)
    timings = {}
    for i, (label, argv) in enumerate(stages, 1):
        progress.note(f"({i}/{len(stages)}) {label}: terwin {' '.join(argv)}")
        start = time.monotonic()
        _run(argv)
        timings[label] = round(time.monotonic() - start, 1)
    outdir.write_file(out / "demo.json", json.dumps({"stages_seconds": timings}, indent=2) + "\n", force=args.force)
    progress.note(f"done in {sum(timings.values()):.0f}s: open {out / 'report.html'}")
    return 0
