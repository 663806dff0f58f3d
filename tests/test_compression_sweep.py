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


def test_update_docs_rewrites_only_between_the_markers(sweep, tmp_path):
    for rel, name in (("docs/ternary.md", "ternary"), ("docs/winograd.md", "winograd"), ("README.md", "summary")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"before\n<!-- compression sweep: {name} -->\nold\n"
                                    f"<!-- end of compression sweep: {name} -->\nafter\n")
    cell = {"family": "winograd", "variant": "liu", "spec": "winograd", "sparsity_target": 0.8, "seeds": [0, 1],
            "drop_median": 0.11, "drop_worst": 0.22, "drop_spread": 0.22, "drops": [0.0, 0.22],
            "accuracy_median": 0.98, "accuracy_worst": 0.9778, "compression_median": 11.25, "compression_min": 11.25,
            "cycles_median": 34776, "reference_mismatches": 0}
    sweep.update_docs([cell], "here", root=tmp_path)
    text = (tmp_path / "docs/winograd.md").read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text and "| 0.11 | 0.22 |" in text
    assert "| Winograd liu, 80% Winograd-domain zeros | 0,1 | 98.00% (97.78%) | 0.11 (0.22) |" in \
        (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text("no markers")
    with pytest.raises(sweep.TerwinError, match="markers"):
        sweep.update_docs([cell], "here", root=tmp_path)


def test_layer_budget_keeps_the_named_layers_tiles_and_the_total():
    """benchmarks/ternary_layer_budget.py: named layers keep N tiles, the rest of the target comes
    from the unnamed layers, the first layer stays dense."""
    spec = importlib.util.spec_from_file_location("ternary_layer_budget", ROOT / "benchmarks" / "ternary_layer_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from terwin.algo.ternary.net import DigitsNet
    from terwin.algo.ternary.pruning import TilePruner
    from terwin.errors import TerwinError
    from terwin.spec import PE8X8

    pruner = TilePruner(PE8X8, target=0.875).prepare(DigitsNet(act_bits=PE8X8.act_bits).weighted_layers())
    uniform = {layer.name: layer.final_count for layer in pruner.layers}
    assert uniform == {"conv1": 0, "conv2": 64, "conv3": 255, "fc": 56}      # keeps 4 / 8 / 33 / 8 of 428
    counts = module.keep_counts(pruner, {"conv2": 8, "fc": 16})
    assert counts == {"conv2": 64, "conv3": 263, "fc": 48} and sum(counts.values()) == 375
    pruner.assign(counts)
    assert [layer.groups.count - layer.final_count for layer in pruner.layers] == [4, 8, 25, 16]
    with pytest.raises(TerwinError, match="no layer conv9"):
        module.keep_counts(pruner, {"conv9": 1})
    with pytest.raises(TerwinError, match="would have to prune"):
        module.keep_counts(pruner, {"conv2": 72, "conv3": 288})
