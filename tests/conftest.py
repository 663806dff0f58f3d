"""Shared fixtures for the hardware and cocotb tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rtl_build_root(tmp_path_factory):
    """One folder for simulator builds across the session (keyed by simulator and sources; Verilator's runtime compiled once)."""
    return tmp_path_factory.mktemp("rtl-builds")
