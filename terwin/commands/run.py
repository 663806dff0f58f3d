"""`terwin run MODEL --port PORT [--baud N] [--images N|all] [--data SET] [--report REPORT] [--json OUT] [--timeout S]`:
the model's test images (a built-in set or --data FILE.npz) through a programmed board, over the bitstream's UART bridge.

Sends each quantized test image (the reference's input), reads the board's class scores and compares
every one with `terwin.sim.reference` using `==`; prints the accuracy of the board's scores (argmax,
the lowest class index winning a tie) and the measured images/s. Exit 0: every score equal;
1: a mismatch (the first image and class are named); 2: a user error, a missing port or a silent board.
The protocol and the wiring: `terwin.runtime`, docs/boards.md ("Running on the board").
"""
from __future__ import annotations

import json
import time

import numpy as np

from terwin import fileformat, outdir
from terwin.commands.verify import add_data_argument
from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.runtime import DEFAULT_BAUD, DEFAULT_TIMEOUT, WIRING

EPILOG = (f"Wiring: {WIRING} Program the board first (terwin program BITSTREAM --board BOARD). Per image the "
          f"host sends one byte per input activation and reads every class score back (8N1, {DEFAULT_BAUD} baud "
          f"unless the build says otherwise); docs/boards.md has the protocol.")


def add_arguments(parser):
    parser.epilog = EPILOG
    parser.add_argument("model", help="the .terwin model file the board's bitstream was built from")
    parser.add_argument("--port", required=True,
                        help="the board's serial port, e.g. /dev/ttyUSB1 (iCEBreaker), /dev/ttyUSB0 (ULX3S); "
                             "or a pyserial URL")
    parser.add_argument("--baud", type=int, default=None,
                        help=f"baud rate (default: the --report's, else {DEFAULT_BAUD}, as terwin build makes)")
    parser.add_argument("--images", default="20", help="number of test images, or 'all' (default 20)")
    add_data_argument(parser)
    parser.add_argument("--report", help="the build's report.json: refuse to run unless the bitstream was built "
                                         "from this model (the board itself cannot be asked)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for one image's scores (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--json", help="write the results as JSON to this file (never one of the inputs)")
    parser.add_argument("--force", action="store_true",
                        help="let --json replace an existing file that is not JSON (an input file never is)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from terwin.commands.verify import test_images
    from terwin.runtime import BoardSession, Protocol, check_report, compare, open_port
    from terwin.sim import reference

    dep = fileformat.load(args.model)
    if args.json:
        outdir.check_file(args.json, inputs=(args.model, args.report), force=args.force)
    if args.baud is not None and args.baud <= 0:
        raise TerwinError(f"--baud must be a positive number, not {args.baud}")
    if not 0 < args.timeout <= 3600:  # NaN and inf fail too
        raise TerwinError(f"--timeout must be a positive number of seconds, at most 3600, not {args.timeout:g}")
    q, labels = test_images(dep, args.images, args.data)
    n = len(q)
    expected = reference.forward(dep, q)

    protocol = Protocol.for_model(dep)
    baud = args.baud
    if args.report:
        uart = check_report(args.report, dep, protocol)
        baud = baud or uart.get("baud")
    baud = baud or DEFAULT_BAUD

    progress = Progress("run", quiet=args.quiet)
    port = open_port(args.port, baud=baud)
    scores = np.zeros_like(expected)
    seconds = 0.0
    try:
        session = BoardSession(port, protocol, timeout=args.timeout, name=args.port)
        session.discard_input()
        if protocol.preamble:
            progress.note(f"the weights first (this bitstream loads them after a reset): a line break and "
                          f"{len(protocol.preamble)} bytes to {args.port}")
        session.start()
        progress.note(f"{n} image(s) to {args.port} at {baud} baud: {protocol.input_bytes} bytes out, "
                      f"{protocol.classes} x {protocol.score_bytes} bytes back per image")
        bad = 0
        for i in range(n):
            start = time.perf_counter()
            scores[i] = session.classify(q[i], index=i)
            seconds += time.perf_counter() - start
            if i == 0:
                # a bitstream of another model may answer with more bytes than this model's scores
                extra = session.extra_bytes()
                if extra:
                    raise TerwinError(
                        f"{args.port}: the board sent {protocol.answer_bytes + len(extra)} or more bytes for image 0, "
                        f"this model's answer is {protocol.answer_bytes}: its bitstream was built from another model")
            bad += int((scores[i] != expected[i]).sum())
            progress(i + 1, n, mismatches=bad, images_per_s=(i + 1) / seconds if seconds else 0.0)
    finally:
        port.close()

    cmp = compare(scores, expected)
    predicted = scores.argmax(axis=1)          # ties: the lowest class index
    correct = int((predicted == labels).sum())
    ref_correct = int((expected.argmax(axis=1) == labels).sum())
    rate = n / seconds if seconds > 0 else float("inf")
    print(f"board on {args.port} at {baud} baud: {n} image(s) in {seconds:.3f} s, {rate:.1f} images/s")
    print(f"accuracy {100 * correct / n:.2f} % ({correct}/{n}) from the board's scores "
          f"(reference {100 * ref_correct / n:.2f} %)")
    if args.json:
        result = {
            "model": str(args.model), "model_checksum": fileformat.checksum(dep), "report": args.report,
            "port": args.port, "baud": baud,
            "protocol": {"input_bytes": protocol.input_bytes, "classes": protocol.classes,
                         "score_bytes": protocol.score_bytes},
            "images": n, "scores_compared": int(expected.size), "mismatches": cmp.mismatches,
            "first_mismatch": cmp.first, "correct": correct, "accuracy": correct / n,
            "reference_accuracy": ref_correct / n, "seconds": round(seconds, 6), "images_per_s": round(rate, 3),
            "predictions": [int(p) for p in predicted],
        }
        outdir.write_file(args.json, json.dumps(result, indent=2) + "\n", inputs=(args.model, args.report),
                          force=args.force)
    if cmp.mismatches:
        fm = cmp.first
        print(f"MISMATCH: {cmp.mismatches} of {expected.size} score(s) differ over {n} image(s); first: image "
              f"{fm['image']}, class {fm['class']}: expected {fm['expected']}, got {fm['got']} "
              f"(a bitstream of another model, or a board left mid-image by an interrupted run: reprogram it)")
        return 1
    print(f"OK: {n} image(s), all {expected.size} scores equal to the reference")
    return 0
