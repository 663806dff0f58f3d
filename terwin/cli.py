"""The `terwin` command line.

Each subcommand lives in `terwin.commands.<name>` with `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their command runs, so `terwin inspect` never imports torch.
A `TerwinError` (a user's mistake) prints one line on stderr and exits 2; anything else is a bug.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__
from .errors import TerwinError

DESCRIPTION = ("terwin: compress a CNN into a ternary PE-tile-pruned or Winograd-sparse integer model, generate "
               "its FPGA accelerator in Amaranth, prove the RTL bit-exact against the reference with cocotb, "
               "predict its cycles exactly, and build bitstreams with open-source tools.")

COMMANDS = {
    "compress": "train and compress a CNN (the built-in digits net, or your own with --model) into an integer model file",
    "inspect": "print a model file: layers, shapes, sparsity, bits",
    "generate": "generate Verilog, memory images and a manifest for a model",
    "verify": "simulate the RTL (or its netlist) under cocotb and compare every score, counter and handshake",
    "simulate": "predict per-layer cycles with the exact cycle model (a model, or a network description)",
    "build": "build a bitstream with Yosys/nextpnr for a board",
    "explore": "find the fastest accelerator of a model that fits a board (sweep, Pareto front, optional build)",
    "program": "load a bitstream onto a board over USB (iceprog / openFPGALoader)",
    "run": "run test images on a programmed board over its UART; compare every score with the reference",
    "report": "write a readable report (HTML + Markdown) from a demo folder",
    "demo": "run the whole flow on the digits demo: compress, generate, verify, simulate, build, report",
}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors (unknown option, missing or malformed value) as one-line user errors."""

    def error(self, message):
        raise TerwinError(f"{message} (see '{self.prog} --help')")


def _module(name: str):
    return importlib.import_module(f"terwin.commands.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="terwin", description=DESCRIPTION,
        epilog="Start with `terwin demo` (the whole flow on the digits demo); `terwin COMMAND --help` for each command.")
    parser.add_argument("--version", action="version", version=f"terwin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            _module(name).add_arguments(p)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so its output folders and files are cleaned up on the way
    out (a staging folder is removed, a file half-written never appears) as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # a SIGTERM (a job's timeout, `kill`) unwinds like Ctrl-C; only the main thread may set a handler
    trap = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if trap else None
    try:
        parser = build_parser(only=command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        return int(_module(args.command).run(args) or 0)
    except TerwinError as e:
        # one line, whatever a path or value in the message holds
        prefix = f"terwin {command}" if command in COMMANDS else "terwin"
        print("\\n".join(f"{prefix}: error: {e}".splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"terwin {command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"terwin {command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if trap:   # (None: a handler not set from Python, which cannot be put back; the default then)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
