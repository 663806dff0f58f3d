"""Shared fixtures for the hardware and cocotb tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rtl_build_root(tmp_path_factory):
    """One folder for Icarus builds across the session (builds are keyed by the Verilog's hash)."""
    return tmp_path_factory.mktemp("rtl-builds")
