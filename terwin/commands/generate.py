"""`terwin generate` — not built yet (see the open issues)."""
from terwin.errors import TerwinError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args) -> int:
    raise TerwinError("'generate' is not implemented yet")
