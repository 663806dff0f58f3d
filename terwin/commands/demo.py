"""`terwin demo` — not built yet (see the open issues)."""
from terwin.errors import TerwinError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args) -> int:
    raise TerwinError("'demo' is not implemented yet")
