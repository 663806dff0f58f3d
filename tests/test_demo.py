"""`terwin demo`, the README's main command, end to end on a small sample of images."""
from __future__ import annotations

import json

import pytest

from terwin.cli import main


@pytest.mark.slow
@pytest.mark.cocotb
@pytest.mark.build
def test_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "3", "--winograd-images", "1"]) == 0
    stages = json.loads((out / "demo.json").read_text())["stages_seconds"]
    assert list(stages) == [f"{step} ternary-{s}" for s in (0, 50, 75) for step in ("compress", "simulate", "verify")] + [
        "generate", "compress winograd", "verify winograd", "simulate winograd", "build icebreaker", "report"]
    for name, images in (("ternary-0", 3), ("ternary-50", 3), ("ternary-75", 3), ("winograd", 1)):
        verify = json.loads((out / name / "verify.json").read_text())
        assert (verify["images"], verify["mismatches"], verify["cycles_match_model"]) == (images, 0, True)
    for name in ("ternary-0", "ternary-50", "ternary-75", "winograd"):
        assert json.loads((out / name / "compress.json").read_text())["reference_mismatches"] == 0
        assert (out / name / "simulate.json").is_file()
    build = json.loads((out / "ternary-50" / "build-icebreaker" / "report.json").read_text())
    assert build["fits"] and build["timing_met"]
    assert (out / "ternary-50" / "build-icebreaker" / "terwin.bin").stat().st_size > 100_000
    html = (out / "report.html").read_text()
    assert "ternary-50" in html and "winograd" in html and "icebreaker" in html
    assert "Missing" not in (out / "report.md").read_text()  # every stage left what the report reads
    assert "done in" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--images", "0"], "--images must be between 1 and 450, not 0"),
    (["--winograd-images", "many"], "--winograd-images must be a positive number or 'all', not 'many'"),
    (["--board", "arty"], "--board must be one of icebreaker, ulx3s-85f, not 'arty'"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *argv]) == 2
    assert capsys.readouterr().err == f"terwin demo: error: {message}\n"
    assert not out.exists()
