"""Bring your own model (#12): `terwin compress --model FILE.py:FACTORY [--weights] --data ...`, the
data sets (digits32, a user's .npz, the validation split), the Python API and the two examples —
on tiny samples and epochs."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import terwin
from terwin import fileformat, intmath
from terwin.algo import data as datasets
from terwin.algo.graph import load_model
from terwin.cli import main
from terwin.commands.verify import test_images as images_for
from terwin.errors import TerwinError
from terwin.sim import reference

ROOT = Path(__file__).resolve().parents[1]
# compress.json's keys, the same for every family and for a user's model (terwin.algo.results)
REPORT_KEYS = {"family", "spec", "seed", "options", "accuracy", "float_accuracy", "accuracy_drop_points",
               "fake_quant_accuracy", "test_images", "reference_mismatches", "sparsity", "sparsity_measure",
               "compression_ratio", "weight_bits_stored", "requant_bits", "weights", "nonzero_weights", "epochs",
               "train_seconds", "numerics", "checksum", "ternary",
               # the weight codec (terwin.codec, applied after export by the command and terwin.compress)
               "codec", "weight_stream_bits", "weight_stream", "weight_memory",
               # the file as written by the command (terwin compress --storage)
               "storage", "file_bytes", "stored_bytes"}
API_REPORT_KEYS = REPORT_KEYS - {"checksum", "storage", "file_bytes", "stored_bytes"}   # terwin.compress's report
TINY = ["--ternary-epochs-scale", "0.02", "--quiet"]

MODELS = textwrap.dedent("""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Tiny(nn.Module):
        def __init__(self, cin=1, classes=10):
            super().__init__()
            self.stem = nn.Conv2d(cin, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.conv1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.proj = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            x = F.relu(self.bn(self.stem(x)))
            y = F.relu(self.conv1(x))
            y = F.relu(self.bn2(self.conv2(y)) + self.proj(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    def tiny():
        return Tiny()

    def tiny_rgb4():
        return Tiny(cin=3, classes=4)

    class Gated(Tiny):
        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(torch.sigmoid(self.stem(x)), 1), 1)[:, :16])

    def gated():
        return Gated()
""")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


def _run(args, capsys):
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _npz(path, *, n_train=48, n_test=16, shape=(3, 6, 6), classes=4, dtype=np.uint8, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, *shape)).astype(dtype),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, size=(n_test, *shape)).astype(dtype),
        "y_test": np.arange(n_test) % classes,
    }
    if dtype != np.uint8:
        arrays["x_train"] = arrays["x_train"] / 255
        arrays["x_test"] = arrays["x_test"] / 255
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# -- the command line ---------------------------------------------------------------------------------


def test_cli_compresses_a_users_residual_model(model_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = _run(["compress", "--model", f"{model_file}:tiny", "--out", str(out), *TINY], capsys)
    assert rc == 0, err
    report = json.loads((out / "compress.json").read_text())
    assert set(report) == REPORT_KEYS
    assert report["reference_mismatches"] == 0 and report["test_images"] == 450
    assert report["options"]["model_ref"] == f"{model_file}:tiny" and report["options"]["data_ref"] == "digits"
    assert report["epochs"]["float"] == 1 and report["ternary"]["validation"]["images"] == 135
    dep = fileformat.load(out / "model.terwin")
    assert fileformat.file_checksum(out / "model.terwin") == report["checksum"]
    assert dep.format_version == 2
    layers = {layer.name: layer for layer in dep.layers}
    assert layers["conv2"].residual == "proj.0" and not layers["proj.0"].relu
    assert layers["adaptive_avg_pool2d"].kind == "avgpool2d" and dep.layers[-1].name == "fc"
    assert abs(report["sparsity"] - 0.5) < 0.05
    assert "wrote" in stdout


def test_cli_with_weights_fine_tunes_from_them(model_file, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("byom_models", model_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(3)
    trained = mod.tiny()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    data = _npz(tmp_path / "d.npz", shape=(1, 8, 8), classes=10, n_train=60, n_test=20)
    out = tmp_path / "out"
    rc, _, err = _run(["compress", "--model", f"{model_file}:tiny", "--weights", str(tmp_path / "w.pt"),
                       "--data", str(data), "--out", str(out), *TINY], capsys)
    assert rc == 0, err
    report = json.loads((out / "compress.json").read_text())
    assert report["epochs"]["float"] == 0 and "float_epoch" not in report["ternary"]["validation"]
    assert report["options"]["weights_ref"] == str(tmp_path / "w.pt") and report["test_images"] == 20
    # the float accuracy reported is that of the given weights
    split = datasets.load_npz(data)
    with torch.no_grad():
        trained.eval()
        acc = float((trained(torch.from_numpy(split.x_test)).argmax(1).numpy() == split.y_test).mean())
    assert report["float_accuracy"] == pytest.approx(acc)


def test_a_model_file_imports_the_modules_beside_it(tmp_path):
    """As `python FILE.py` would: the file's folder is on the module path while it loads (and only then)."""
    (tmp_path / "blocks_beside.py").write_text("from torch import nn\n\ndef head():\n    return nn.Linear(64, 10)\n")
    (tmp_path / "net.py").write_text("import torch\nfrom torch import nn\nfrom blocks_beside import head\n\n"
                                     "def net():\n    return nn.Sequential(nn.Flatten(), head())\n")
    before = list(os.sys.path)
    model = load_model(f"{tmp_path / 'net.py'}:net", seed=0)
    assert isinstance(model[1], nn.Linear) and os.sys.path == before


@pytest.mark.parametrize("args, words", [
    (["--model", "{models}:gated"], ["sigmoid", "torch.sigmoid", "supported"]),
    (["--model", "{models}:tiny", "--weights", "{weights}"], ["w.pt", "'fc.weight' has shape (4, 16)"]),
    (["--model", "{models}:tiny_rgb4", "--data", "digits"], ["images of shape 1x8x8"]),
    (["--model", "{models}"], ["FILE.py:FACTORY"]),
    (["--model", "{models}:nothing"], ["has no 'nothing'"]),
    (["--data", "digits32"], ["--data needs --model"]),
    (["--weights", "{weights}"], ["--weights needs --model"]),
    (["--model", "{models}:tiny", "--family", "winograd"], ["conv1: is a 3x3 stride-2 padding-1 conv",
                                                            "--family ternary"]),
    (["--model", "{models}:tiny", "--data", "{bad_npz}"], ["y_test", "one label per image"]),
    (["--model", "{models}:tiny", "--data", "nowhere.npz"], ["nowhere.npz: no such file"]),
])
def test_cli_refuses_in_one_line_before_training(model_file, tmp_path, capsys, args, words):
    state = load_model(f"{model_file}:tiny").state_dict()
    state["fc.weight"] = torch.zeros(4, 16)
    torch.save(state, tmp_path / "w.pt")
    bad = _npz(tmp_path / "bad.npz", shape=(1, 8, 8), classes=10, y_test=np.zeros(3, dtype=np.int64))
    fill = {"models": model_file, "weights": tmp_path / "w.pt", "bad_npz": bad}
    out = tmp_path / "out"
    rc, stdout, err = _run(["compress", *[a.format(**fill) for a in args], "--out", str(out),
                            "--ternary-epochs-scale", "0.02"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terwin compress: error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()


# -- data ---------------------------------------------------------------------------------------------


def test_digits32_is_the_digits_upsampled_by_nearest_neighbour():
    d8, d32 = datasets.load_digits_split(), datasets.load_digits32_split()
    assert d32.x_train.shape == (1347, 1, 32, 32) and d32.x_test.shape == (450, 1, 32, 32)
    assert np.array_equal(d32.y_test, d8.y_test)
    blocks = d32.x_test.reshape(450, 1, 8, 4, 8, 4)
    assert np.array_equal(blocks.min(axis=(3, 5)), d8.x_test) and np.array_equal(blocks.max(axis=(3, 5)), d8.x_test)
    q = np.rint(d32.x_test * 16)
    assert np.array_equal(q, d32.x_test * 16) and d32.input_scale == 1 / 16


@pytest.mark.parametrize("act_bits", [2, 3, 4, 5, 8])
def test_digits_input_scale_never_clamps_a_pixel(act_bits):
    """Narrow activations cannot hold the pixels 0..16: the input scale widens so that every pixel is
    rounded onto the grid and the brightest is the largest code, instead of clamping the bright ones."""
    s = datasets.load_data("digits", act_bits=act_bits)
    top = (1 << act_bits) - 1
    levels = np.arange(17, dtype=np.float64) / 16
    q = intmath.quantize_input(levels, scale=s.input_scale, act_bits=act_bits)
    assert q[-1] == min(top, 16) and q[0] == 0 and np.all(np.diff(q) >= 0)
    unclamped = np.floor(levels / s.input_scale + 0.5)
    assert np.array_equal(q, unclamped), "no pixel may reach the clamp"
    if act_bits >= 5:
        assert s.input_scale == 1 / 16 and np.array_equal(q, np.arange(17)), "q = pixel exactly"
    else:
        assert s.input_scale == 1 / top
    assert datasets.load_data("digits32", act_bits=act_bits).input_scale == s.input_scale


def test_npz_uint8_and_float(tmp_path):
    s = datasets.load_npz(_npz(tmp_path / "u.npz"))
    assert s.x_train.dtype == np.float32 and s.input_shape == (3, 6, 6) and s.classes == 4
    raw = np.load(tmp_path / "u.npz")["x_train"]
    q = intmath.quantize_input(s.x_train, scale=s.input_scale, act_bits=8)
    assert np.array_equal(q, raw), "uint8 images must quantize back to their own values"
    f = datasets.load_npz(_npz(tmp_path / "f.npz", dtype=np.float64, shape=(5, 5)))
    assert f.input_shape == (1, 5, 5) and f.input_scale == 1 / 255


def _write_npy(path, arrays: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in arrays.items():
            z.writestr(f"{name}.npy", data)


@pytest.mark.parametrize("override, words", [
    (dict(y_train=None), ["no array 'y_train'"]),
    (dict(extra=np.zeros(3)), ["unexpected array 'extra'"]),
    (dict(x_train=np.zeros((4, 1, 1, 2, 2), np.uint8)), ["x_train", "5 dimensions"]),
    (dict(x_train=np.zeros((48, 6, 6), np.int32)), ["x_train", "uint8 (0-255) or float (0-1)"]),
    (dict(x_test=np.full((16, 3, 6, 6), 1.5)), ["x_test", "float images must lie in [0, 1]"]),
    (dict(x_test=np.full((16, 3, 6, 6), np.nan)), ["x_test", "NaN"]),
    (dict(y_train=np.arange(48) * 0.5), ["y_train", "labels must be integers"]),
    (dict(y_train=np.arange(47) % 4), ["y_train", "one label per image"]),
    (dict(y_test=-np.ones(16, np.int64)), ["y_test", "labels must lie in"]),
    (dict(y_train=np.r_[np.zeros(47, np.int64), 1], y_test=np.arange(16) % 2), ["y_train", "class 1 has 1 image"]),
    (dict(x_test=np.zeros((16, 3, 5, 5), np.uint8)), ["x_test", "differ from x_train"]),
    (dict(x_train=np.array([object()] * 3, dtype=object)), ["x_train"]),
])
def test_malformed_npz_is_one_line_naming_the_array(tmp_path, override, words):
    path = tmp_path / "d.npz"
    if any(isinstance(v, np.ndarray) and v.dtype == object for v in override.values()):
        np.savez(path, **{**{k: v for k, v in np.load(_npz(tmp_path / "ok.npz")).items()}, **override})
    else:
        _npz(path, **override)
    with pytest.raises(TerwinError) as info:
        datasets.load_npz(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for word in words:
        assert word in msg, (word, msg)


def test_npz_container_problems(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(TerwinError, match="not an .npz file"):
        datasets.load_npz(tmp_path / "text.npz")
    # a header claiming more data than the member holds, and a header too large for the limits
    header = np.lib.format.header_data_from_array_1_0(np.zeros((4, 2, 2), np.uint8))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    _write_npy(tmp_path / "short.npz", {"x_train": buf.getvalue() + b"\0" * 3})
    with pytest.raises(TerwinError, match="x_train: 3 bytes of data, but shape"):
        datasets.load_npz(tmp_path / "short.npz")
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {**header, "shape": (1 << 40, 2, 2)})
    _write_npy(tmp_path / "huge.npz", {"x_train": buf.getvalue()})
    with pytest.raises(TerwinError, match="x_train: shape .* larger than the limits"):
        datasets.load_npz(tmp_path / "huge.npz")
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(TerwinError, match="not a regular file"):
        datasets.load_npz(tmp_path / "fifo.npz")


def test_validation_split_is_stratified_seeded_and_leaves_the_test_images():
    split = datasets.load_digits_split()
    a, (xa, ya) = datasets.validation_split(split, seed=0)
    b, (xb, yb) = datasets.validation_split(split, seed=0)
    c, (_, yc) = datasets.validation_split(split, seed=1)
    assert np.array_equal(ya, yb) and np.array_equal(xa, xb) and not np.array_equal(ya, yc)
    assert len(ya) == 135 and len(a.y_train) == 1347 - 135
    assert np.array_equal(a.x_test, split.x_test) and np.array_equal(a.y_test, split.y_test)
    # a partition of the training images, every class in proportion
    rows = lambda x: sorted(r.tobytes() for r in x)  # noqa: E731
    assert rows(np.concatenate([a.x_train, xa])) == rows(split.x_train)
    assert np.abs(np.bincount(ya, minlength=10) / len(ya) - np.bincount(split.y_train) / 1347).max() < 0.01


def test_every_flow_carves_validation_one_way():
    """`Tensors.from_split(split, validation=F, seed=S)` is `validation_split`, as tensors."""
    from terwin.algo.train import Tensors
    split = datasets.load_digits_split()
    t = Tensors.from_split(split, validation=0.1, seed=3)
    train_split, (xv, yv) = datasets.validation_split(split, fraction=0.1, seed=3)
    assert np.array_equal(t.x_val.numpy(), xv) and np.array_equal(t.y_val.numpy(), yv)
    assert np.array_equal(t.x_train.numpy(), train_split.x_train) and np.array_equal(t.y_test.numpy(), split.y_test)
    assert Tensors.from_split(split).x_val is None


def test_batchnorm_reestimation_gives_the_statistics_of_the_weights_as_they_are():
    from torch import nn

    from terwin.algo.quant import ActQuant
    from terwin.algo.train import reestimate_batchnorm
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), ActQuant(8))
    x = torch.rand(40, 1, 6, 6)
    net.train()
    for _ in range(3):
        net(x)                              # running stats of these weights ...
    with torch.no_grad():
        net[0].weight.mul_(-2.0)            # ... which then change (ternary codes flip)
    before_max = net[2].running_max.clone()
    net.eval()
    reestimate_batchnorm(net, x)
    y = net[0](x).detach()
    assert torch.allclose(net[1].running_mean, y.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(net[1].running_var, y.var(dim=(0, 2, 3), unbiased=True), rtol=1e-5)
    assert net[1].momentum == 0.1 and not net.training
    assert torch.equal(net[2].running_max, before_max)   # the activation calibration did not move


# -- the Python API -----------------------------------------------------------------------------------


def test_api_compress_takes_file_factory_and_recompress_repeats_it(model_file, tmp_path):
    """`terwin.compress("FILE.py:FACTORY", ...)` builds the network as `--model` does and records the
    reference, so `terwin explore --recompress` can run the same compression again: for the model's own
    spec that run gives the same model, byte for byte."""
    from terwin.dse import recompress
    data = _npz(tmp_path / "d.npz", shape=(3, 8, 8), n_train=64, n_test=24)
    ref = f"{model_file}:tiny_rgb4"
    dep, report = terwin.compress(ref, str(data), tile_sparsity=0.25, epochs_scale=0.02, quiet=True)
    by_module, _ = terwin.compress(load_model(ref, seed=0), str(data), tile_sparsity=0.25, epochs_scale=0.02,
                                   quiet=True)
    assert report["options"]["model_ref"] == ref and dep.meta["model"] == ref and dep.meta["data"] == str(data)
    assert by_module.meta["model"] == "Tiny"   # the same model otherwise, byte for byte
    assert fileformat.to_bytes(dep.replace(meta=by_module.meta)) == fileformat.to_bytes(by_module)
    terwin.save(dep, tmp_path / "m.terwin")
    recipe = recompress.recipe(dep, tmp_path / "m.terwin")
    assert (recipe["model"], recipe["data"], recipe["epochs_scale"], recipe["tile_sparsity"]) == (ref, str(data), 0.02,
                                                                                                  0.25)
    with pytest.raises(TerwinError, match=r"from a network passed to the Python API \(Tiny\)"):
        recompress.recipe(by_module, tmp_path / "m2.terwin")
    run = recompress.recompress_task((recipe, dep.spec.to_dict(), tmp_path / "again"))
    assert fileformat.to_bytes(fileformat.load(run["model"])) == fileformat.to_bytes(dep)
    assert run["accuracy"]["reference_mismatches"] == 0


def test_api_compress_save_load_scores(model_file, tmp_path, capsys):
    arrays = dict(np.load(_npz(tmp_path / "d.npz", shape=(3, 8, 8), n_train=64, n_test=24)))
    dep, report = terwin.compress(load_model(f"{model_file}:tiny_rgb4", seed=0), arrays, tile_sparsity=0.25,
                                  epochs_scale=0.02, quiet=True)
    assert set(report) == API_REPORT_KEYS and report["reference_mismatches"] == 0
    assert report["options"]["model_ref"] == "Tiny" and report["options"]["tile_sparsity"] == 0.25
    checksum = terwin.save(dep, tmp_path / "m.terwin")
    again = terwin.load(tmp_path / "m.terwin")
    assert fileformat.checksum(again) == checksum == fileformat.checksum(dep)
    # seeded and single-threaded: the same call writes the same model
    twin, _ = terwin.compress(load_model(f"{model_file}:tiny_rgb4", seed=0), arrays, tile_sparsity=0.25,
                              epochs_scale=0.02, quiet=True)
    assert fileformat.checksum(twin) == checksum
    x = arrays["x_test"] / np.float32(255)
    assert np.array_equal(terwin.scores(again, x), reference.forward(dep, reference.quantize_input(dep, x)))
    # verify takes the user's test images (--data), as compress did; no built-in set is 3x8x8
    rc, stdout, err = _run(["verify", str(tmp_path / "m.terwin"), "--data", str(tmp_path / "d.npz"),
                            "--images", "3", "--simulator", "icarus", "--build-dir", str(tmp_path / "b"),
                            "--quiet"], capsys)
    assert rc == 0 and "OK: 3 image(s), 0 mismatches" in stdout, stdout + err
    rc, _, err = _run(["verify", str(tmp_path / "m.terwin"), "--images", "3"], capsys)
    assert rc == 2 and "matches no built-in data set" in err and "--data FILE.npz" in err
    rc, _, err = _run(["verify", str(tmp_path / "m.terwin"), "--data", "digits"], capsys)
    assert rc == 2 and "does not match the digits test images (1, 8, 8)" in err
    with pytest.raises(TerwinError, match="unexpected keyword argument 'no_such_option'"):
        terwin.compress(load_model(f"{model_file}:tiny_rgb4"), arrays, no_such_option=1)
    with pytest.raises(TerwinError, match="built-in net trains on the 8x8 digits only"):
        terwin.compress(None, arrays)
    with pytest.raises(TerwinError, match="no engine 'nope'"):
        terwin.compress(None, family="nope")


def test_api_winograd_family_on_a_plain_user_model():
    """A plain chain (3x3 stride-1 convs with BN or bias, max-pools, a last linear) through the Winograd
    family: batch norm folded, the family's stages, layer names from the module paths."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    dep, report = terwin.compress(model, terwin.load_data("digits", limit=300), family="winograd",
                                  winograd_sparsity=0.5, epochs_scale=0.02, quiet=True)
    assert [(layer.name, layer.kind) for layer in dep.layers] == [
        ("0", "winograd_conv2d"), ("3", "maxpool2d"), ("4", "winograd_conv2d"), ("7", "linear")]
    assert report["reference_mismatches"] == 0 and report["family"] == "winograd"
    assert 0.45 < report["sparsity"] < 0.55 and report["winograd"]["validation"]["images"] == 30


# -- the examples -------------------------------------------------------------------------------------


def _example(name, monkeypatch):
    # as `python examples/NAME.py` runs it: examples/ first on the module path (float_training.py)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    spec = importlib.util.spec_from_file_location(f"terwin_example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_resnet8(tmp_path, capsys, monkeypatch):
    mod = _example("resnet8", monkeypatch)
    assert mod.main(["--out", str(tmp_path), "--limit", "64", "--epochs-scale", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "reference mismatches 0" in out
    dep = terwin.load(tmp_path / "model.terwin")
    assert dep.input_shape == (1, 32, 32) and dep.format_version == 2
    residuals = [layer for layer in dep.layers if getattr(layer, "residual", None)]
    projections = [layer for layer in dep.layers if layer.kind == "conv2d" and not layer.relu]
    assert len(residuals) == 3 and len(projections) == 2
    assert dep.layers[-2].kind == "avgpool2d" and dep.layers[-2].kernel == 8
    # verify and run pick the digits32 test images for a 1x32x32 model by themselves
    q, labels = images_for(dep, "5")
    split = datasets.load_digits32_split()
    assert np.array_equal(q, reference.quantize_input(dep, split.x_test[:5]))
    assert np.array_equal(labels, split.y_test[:5]) and q.shape == (5, 1, 32, 32)
    # --float-epochs: the example's own float training, saved; terwin then fine-tunes from it only,
    # and the CLI loads the same file (its sibling import included) with those weights
    tuned = tmp_path / "tuned"
    assert mod.main(["--out", str(tuned), "--limit", "64", "--epochs-scale", "0.02", "--float-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "float model (plain PyTorch, 1 epochs)" in out and "reference mismatches 0" in out
    assert fileformat.checksum(terwin.load(tuned / "model.terwin")) != fileformat.checksum(dep)
    data = _npz(tmp_path / "d32.npz", shape=(1, 32, 32), classes=10, n_train=40, n_test=10)
    rc, _, err = _run(["compress", "--model", f"{ROOT / 'examples' / 'resnet8.py'}:resnet8", "--weights",
                       str(tuned / "float.pt"), "--data", str(data), "--out", str(tmp_path / "cli"), *TINY], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "cli" / "compress.json").read_text())["epochs"]["float"] == 0


def test_example_bring_your_own(tmp_path, capsys, monkeypatch):
    mod = _example("bring_your_own", monkeypatch)
    args = ["--out", str(tmp_path), "--limit", "120", "--epochs", "1", "--epochs-scale", "0.02"]
    args.append("--hardware")   # simulate, generate, verify 20 images in Icarus, build for the ULX3S
    assert mod.main(args) == 0
    out = capsys.readouterr().out
    assert "RTL on 20 test images: 0 mismatching scores" in out, out
    assert "timing met" in out, out
    assert "reference mismatches 0" in out and (tmp_path / "float.pt").exists()
    assert terwin.load(tmp_path / "model.terwin").format_version == 2
