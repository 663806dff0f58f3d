"""`terwin report`: a self-contained HTML and a Markdown report from whatever a demo folder holds."""
from __future__ import annotations

import base64
import json
import re

import pytest

from terwin import fileformat
from terwin.cli import main
from terwin.errors import TerwinError
from terwin.report import build_row, collect, write_report
from terwin.sim import cycles
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = dict(input_shape=(1, 6, 6), topology=(("conv2d", 8), ("maxpool2d", 2), ("linear", 5)))

BUILD = {  # the fields terwin.build writes that the report reads
    "board": "icebreaker", "device": "iCE40UP5K", "luts": 2000, "logic_cells": 2500, "ffs": 1500, "brams": 10,
    "dsps": 1, "fmax_mhz": 50.0, "target_mhz": 40.0, "fits": True, "timing_met": True,
    "cycles_per_image": 5000, "dense_macs_per_image": 250_000,
    "utilization": {"ICESTORM_LC": {"used": 2500, "available": 5280}, "ICESTORM_RAM": {"used": 10, "available": 30},
                    "ICESTORM_DSP": {"used": 1, "available": 8}},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    for name, sparsity, acc in (("ternary-0", 0.0, 0.97), ("ternary-50", 0.5, 0.955)):
        d = root / name
        d.mkdir()
        dep = random_deployment(PRESETS["pe4x4"], seed=3, tile_sparsity=sparsity, **SMALL)
        fileformat.save(dep, d / "model.terwin")
        (d / "compress.json").write_text(json.dumps({"family": "ternary", "accuracy": acc, "float_accuracy": 0.975,
                                                      "sparsity": sparsity, "sparsity_measure": "tile_sparsity",
                                                      "compression_ratio": 20.0}))
        (d / "simulate.json").write_text(json.dumps(cycles.predict(dep)))
    (root / "ternary-50" / "build-icebreaker").mkdir()
    (root / "ternary-50" / "build-icebreaker" / "report.json").write_text(json.dumps(BUILD))
    (root / "winograd").mkdir()
    (root / "winograd" / "compress.json").write_text("{not json")
    html_path, md_path = write_report(root)
    return root, html_path.read_text(), md_path.read_text()


def test_throughput_row_arithmetic():
    row = build_row(BUILD)
    assert row["images_per_s"] == 50e6 / 5000 == 10_000
    assert row["gops"] == pytest.approx(2 * 250_000 * 10_000 / 1e9)          # 5.0
    assert row["gops_per_klut"] == pytest.approx(5.0 / 2.0)


def test_html_is_self_contained_with_every_plot(demo):
    root, text, _ = demo
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    # accuracy, cycles x2, tile masks x2, resources
    assert len(images) == 6, len(images)
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "http" not in text and "<script" not in text
    assert "95.5%" in text and "97.0%" in text


def test_markdown_links_pngs_beside_it(demo):
    root, _, md = demo
    links = re.findall(r"\]\((report_files/[^)]+\.png)\)", md)
    assert len(links) == 6, links
    for link in links:
        assert (root / link).read_bytes().startswith(PNG_MAGIC), link
    # the bitstream row: 50 MHz / 5000 cycles = 10,000 images/s; 5 GOPS over 2 kLUT
    assert "| ternary-50 | icebreaker | 2,000 | 2,500 | 1,500 | 10 | 1 | 50.0 | 40.0 | 5,000 | 10,000.0 | 2.500 |" in md


def test_missing_and_broken_inputs_are_listed_not_fatal(demo):
    _, _, md = demo
    missing = md.split("## Missing")[1]
    assert "ternary-0: no verify.json" in missing
    assert "winograd/compress.json: not valid JSON" in missing


def test_single_model_folder(tmp_path):
    dep = random_deployment(PRESETS["pe4x4"], seed=4, **SMALL)
    (tmp_path / "simulate.json").write_text(json.dumps(cycles.predict(dep)))
    runs = collect(tmp_path)
    assert [r.name for r in runs] == [tmp_path.name] and runs[0].simulate["cycles"] == cycles.predict(dep)["cycles"]
    write_report(tmp_path)
    assert (tmp_path / "report_files" / f"cycles_{tmp_path.name}.png").exists()


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(TerwinError, match="no model folders"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


def test_a_graph_model_is_reported(tmp_path):
    """A residual model with average pooling (format version 2): statistics and the table work; the cycle
    model runs it, or its engine's refusal is listed as a note."""
    from terwin import network
    from terwin.stats import model_stats
    net = {"input_shape": [3, 8, 8], "layers": [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                                                {"type": "residual", "out_channels": 16, "stride": 2},
                                                {"type": "avgpool2d", "global": True},
                                                {"type": "linear", "out_channels": 4}]}
    dep = network.network_deployment(net, PRESETS["pe4x4"])
    fileformat.save(dep, tmp_path / "model.terwin")
    [run] = collect(tmp_path)
    assert run.simulate is not None or any(p.startswith("cycle model: layer ") for p in run.problems), run.problems
    html_path, _ = write_report(tmp_path)
    ratio = model_stats(dep)["totals"]["compression_ratio"]
    assert f"{ratio:.1f}x" in html_path.read_text()
