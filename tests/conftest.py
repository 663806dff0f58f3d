"""Shared fixtures: simulator builds, and the digits split the training tests share."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def rtl_build_root(tmp_path_factory):
    """One folder for simulator builds across the session (keyed by simulator and sources; Verilator's runtime compiled once)."""
    return tmp_path_factory.mktemp("rtl-builds")


@pytest.fixture(scope="session")
def digits_tensors():
    """The built-in digits split as tensors, 10 % of the training images held out for validation (seed 0)."""
    from terwin.algo.data import load_digits_split
    from terwin.algo.train import Tensors

    return Tensors.from_split(load_digits_split(), validation=0.1, seed=0)


@pytest.fixture
def cli_compress():
    """Run ``terwin compress ARGS --out OUT --quiet`` through the CLI; assert it succeeded and return its
    compress.json report and the model it wrote."""
    import json

    from terwin import fileformat
    from terwin.cli import main

    def run(out, *args):
        rc = main(["compress", *args, "--out", str(out), "--quiet"])
        assert rc == 0
        return json.loads((out / "compress.json").read_text()), fileformat.load(out / "model.terwin")

    return run
