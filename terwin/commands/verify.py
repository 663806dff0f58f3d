"""`terwin verify` — not built yet (see the open issues)."""
from terwin.errors import TerwinError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args) -> int:
    raise TerwinError("'verify' is not implemented yet")
