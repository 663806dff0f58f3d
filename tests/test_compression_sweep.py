"""benchmarks/compression_sweep.py: one tiny sweep through terwin.parallel, resumed, summarized."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("compression_sweep", ROOT / "benchmarks" / "compression_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_sweep_writes_rows_tables_and_resumes(sweep, tmp_path, capsys):
    args = ["--out", str(tmp_path), "--families", "ternary", "--specs", "pe8x8", "--tile-sparsities", "0.5",
            "--seeds", "0", "--epochs-scale", "0.02", "--workers", "1"]
    assert sweep.main(args) == 0
    data = json.loads((tmp_path / "sweep.json").read_text())
    (row,) = data["rows"]
    assert row["cell"] == "ternary-wpc-pe8x8-0.5" and row["reference_mismatches"] == 0
    assert row["cycles"] > 0 and row["compression"] == row["compression_ratio"]
    (cell,) = data["summary"]
    assert cell["drop_median"] == cell["drop_worst"] == row["accuracy_drop_points"] and cell["drop_spread"] == 0
    assert "| ternary | wpc | pe8x8 | 0.5 | 0 |" in (tmp_path / "sweep.md").read_text()
    capsys.readouterr()
    assert sweep.main(args) == 0          # nothing left to run: the row on disk is kept
    assert "1 runs, 1 already in" in capsys.readouterr().out


def test_seed_order_and_bad_overrides(sweep, tmp_path, capsys):
    class Args:
        families, variants, specs, tile_sparsities = ["ternary", "winograd"], ["wpc"], ["pe8x8"], [0.5, 0.75]
        modes, winograd_sparsities, seeds, schedule, epochs_scale = ["liu"], [0.8], [0, 1], {}, 1.0
    items = sweep.cells(Args)
    assert [i["seed"] for i in items] == [0, 0, 0, 1, 1, 1]
    assert sweep.main(["--out", str(tmp_path), "--set", "nonsense=1"]) == 2
    assert "--set" in capsys.readouterr().err
