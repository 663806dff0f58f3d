"""The built-in ternary net's widths (`TernaryOptions.channels`, `terwin compress --channels`,
`benchmarks/compression_sweep.py --channels`): they reach the exported model, compress.json and the
model's meta; bad values are one-line user errors."""
import importlib.util
import json
from pathlib import Path

import pytest

from terwin import fileformat
from terwin.algo.ternary.flow import MAX_CHANNELS, Schedule, TernaryOptions, compress
from terwin.algo.ternary.net import DEFAULT_CHANNELS
from terwin.cli import main
from terwin.errors import TerwinError
from terwin.spec import PE8X8

ROOT = Path(__file__).resolve().parents[1]
ONE = Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=1)


def _shapes(dep):
    return {layer.name: tuple(layer.weight.shape) for layer in dep.weighted_layers}


def test_widths_reach_the_exported_layers_the_report_and_the_meta():
    dep, report = compress(TernaryOptions(spec=PE8X8, schedule=ONE, tile_sparsity=0.5, seed=0, quiet=True,
                                          channels=(8, 24, 40)))
    assert _shapes(dep) == {"conv1": (8, 1, 3, 3), "conv2": (24, 8, 3, 3), "conv3": (40, 24, 3, 3),
                            "fc": (10, 40 * 2 * 2)}
    assert report["options"]["channels"] == [8, 24, 40] and dep.meta["channels"] == [8, 24, 40]
    assert report["weights"] == 8 * 9 + 24 * 8 * 9 + 40 * 24 * 9 + 10 * 160
    assert report["reference_mismatches"] == 0


def test_the_default_widths_leave_the_model_file_as_it_was():
    dep, report = compress(TernaryOptions(spec=PE8X8, schedule=ONE, tile_sparsity=0.5, seed=0, quiet=True))
    assert DEFAULT_CHANNELS == (16, 32, 64) and report["options"]["channels"] == [16, 32, 64]
    assert "channels" not in dep.meta
    assert _shapes(dep)["conv3"] == (64, 32, 3, 3)
    same, _ = compress(TernaryOptions(spec=PE8X8, schedule=ONE, tile_sparsity=0.5, seed=0, quiet=True,
                                      channels="16,32,64"))
    assert fileformat.checksum(same) == fileformat.checksum(dep)


@pytest.mark.parametrize("bad", [(16, 32), (16, 32, 64, 64), (0, 32, 64), (16, -32, 64), (16, 32, MAX_CHANNELS + 1),
                                 (16.0, 32, 64), (True, 32, 64), "16,32", "a,b,c", "16,,32", 16, None])
def test_bad_widths_are_user_errors(bad):
    with pytest.raises(TerwinError, match="--channels must be three integers"):
        TernaryOptions(channels=bad)


def test_cli_channels(tmp_path, capsys, cli_compress):
    report, dep = cli_compress(tmp_path / "run", "--family", "ternary", "--channels", "8,16,16",
                               "--ternary-epochs-scale", "0.02")
    assert report["options"]["channels"] == [8, 16, 16] and dep.meta["channels"] == [8, 16, 16]
    assert _shapes(dep)["conv2"] == (16, 8, 3, 3) and _shapes(dep)["fc"] == (10, 64)
    capsys.readouterr()
    for bad in ("16,32", "16,32,999", "x,32,64", "16,0,64"):
        rc = main(["compress", "--family", "ternary", "--channels", bad, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "--channels must be three integers" in err, err
    rc = main(["compress", "--family", "ternary", "--model", "net.py:Net", "--channels", "24,48,48",
               "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "with --model the network is yours" in err, err
    assert not (tmp_path / "bad").exists()


def test_sweep_passes_the_widths_and_names_the_cells(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("compression_sweep", ROOT / "benchmarks" / "compression_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    args = ["--out", str(tmp_path), "--families", "ternary", "--specs", "pe8x8", "--tile-sparsities", "0.5",
            "--seeds", "0", "--epochs-scale", "0.02", "--backend", "serial", "--channels", "8,16,24"]
    assert sweep.main(args) == 0
    (row,) = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert row["cell"] == "ternary-wpc-c8x16x24-pe8x8-0.5" and row["channels"] == [8, 16, 24]
    assert row["reference_mismatches"] == 0 and row["weights"] == 8 * 9 + 16 * 8 * 9 + 24 * 16 * 9 + 10 * 96
    assert row["tiles"] == {"conv1": 2, "conv2": 18, "conv3": 54, "fc": 24}   # pe8x8: 8 rows x 8 lanes
    assert all(0 < row["tiles_kept"][k] <= row["tiles"][k] for k in row["tiles"])
    assert sum(row["layer_cycles"].values()) == row["cycles"]
    assert "| ternary | wpc (8,16,24) | pe8x8 | 0.5 | 0 |" in (tmp_path / "sweep.md").read_text()
    assert sweep.cell_name({"family": "ternary", "variant": "wpc", "spec": "pe8x8", "sparsity": 0.875,
                            "channels": sweep._parse_channels("16,32,64")}) == "ternary-wpc-pe8x8-0.875"
    capsys.readouterr()
    assert sweep.main(["--out", str(tmp_path), "--channels", "16,32"]) == 2
    assert "--channels must be three integers" in capsys.readouterr().err


def test_a_users_model_takes_no_widths():
    from terwin.algo.ternary.graph_flow import GraphOptions
    assert "channels" not in GraphOptions(spec=PE8X8).family_options()
    with pytest.raises(TerwinError, match="with --model the network is yours"):
        GraphOptions(spec=PE8X8, channels=(24, 48, 48))
