"""Finding the external programs terwin runs (Yosys, nextpnr, the packers, Icarus Verilog, programmers).

A tool is looked up next to the running interpreter first (`sys.executable`'s folder: the `bin/` of
the virtual environment terwin is installed in, whether or not it is activated), then on PATH.
An environment variable the user set for the tool (e.g. `YOSYS=/opt/yosys/bin/yosys`) wins over both.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .errors import TerwinError


def interpreter_bin() -> Path:
    return Path(sys.executable).parent


def which(name: str) -> str | None:
    """The path of program `name` (or of the path it names), or None."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    candidate = interpreter_bin() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def find_tool(*names: str, env_var: str | None = None, install: str, needed_for: str = "") -> str:
    """The first of `names` found (after `$env_var`, when set); else a TerwinError saying where it looked."""
    if env_var and os.environ.get(env_var):
        names = (os.environ[env_var],)
    for name in names:
        found = which(name)
        if found:
            return found
    where = f"{interpreter_bin()} or on PATH" if all(os.sep not in n for n in names) else "that path"
    set_by = f" (set by ${env_var})" if env_var and os.environ.get(env_var) else ""
    needed = f" (needed for {needed_for})" if needed_for else ""
    raise TerwinError(f"{' / '.join(names)}{set_by} not found in {where}{needed}: {install}")
