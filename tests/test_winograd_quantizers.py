"""The Winograd family's quantizers and low-precision regularizer through `terwin compress` (tiny
epochs): the weights the model holds (and its file decodes to) are exactly the quantizer's output
on the exported integer weights; bad values are one-line errors."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from terwin import cli, fileformat
from terwin.algo import quantizers as Q
from terwin.algo.ecsq import ecsq
from terwin.algo.results import evaluate_deployment
from terwin.algo.winograd import quantize
from terwin.algo.winograd.flow import WinogradOptions, compress
from terwin.algo.winograd.lowprec import LowPrecisionRegularizer
from terwin.algo.winograd.nn import WinogradNet
from terwin.errors import FormatError, TerwinError

TINY = 0.02


def _limits(layer):
    qmax = (1 << (layer.weight_bits - 1)) - 1
    return -qmax, qmax


@pytest.fixture(scope="module")
def hessian_run():
    """A tiny compress with --quantizer hessian-kmeans, the trained net and exported model kept."""
    kept = {}

    def keep(net, dep, data):
        kept.update(net=net, dep=dep, data=data)
    options = WinogradOptions(epochs_scale=TINY, quiet=True, quantizer="hessian-kmeans", kmeans_clusters=6)
    dep, report = compress(options, on_export=keep)
    return options, dep, report, kept


def test_hessian_kmeans_model_is_exactly_the_weighted_kmeans_of_the_export(hessian_run):
    options, dep, report, kept = hessian_run
    moments = quantize.gradient_moments(kept["net"], kept["data"].x_train, kept["data"].y_train, per_sample=False)
    exported = {layer.name: layer for layer in kept["dep"].weighted_layers}
    assert [layer.name for layer in dep.weighted_layers] == list(exported)
    for layer in dep.weighted_layers:
        src = exported[layer.name]
        scale = np.asarray(src.weight_scale).reshape((-1,) + (1,) * (src.weight.ndim - 1))
        want = Q.weighted_kmeans(src.weight, moments[layer.name] * scale ** 2, 6, lo=-127, hi=127)
        assert np.array_equal(layer.weight.astype(np.int64), want), layer.name
        assert len(np.unique(layer.weight[layer.weight != 0])) <= 6
        assert np.all(layer.weight[src.weight == 0] == 0)
    q = report["winograd"]["quantizer"]
    assert q["name"] == "hessian-kmeans" and q["distinct_values"] <= 7 * len(exported)
    assert report["accuracy"] == evaluate_deployment(dep, kept["data"])["accuracy"]
    assert report["reference_mismatches"] == 0
    assert report["options"]["quantizer"] == "hessian-kmeans" and report["options"]["kmeans_clusters"] == 6


def test_every_quantizer_on_the_exported_model(hessian_run):
    options, _, _, kept = hessian_run
    src = kept["dep"]
    direct = {
        ("uniform", 1): lambda w, lo, hi, i: w,
        ("uniform", 3): lambda w, lo, hi, i: Q.uniform_step(w, 3, lo=lo, hi=hi),
        ("ecsq", 1): lambda w, lo, hi, i: ecsq(w, options.ecsq_lambda, lo=lo, hi=hi),
        ("kmeans", 1): lambda w, lo, hi, i: Q.weighted_kmeans(w, np.ones(w.shape), 6, lo=lo, hi=hi),
        ("dithered", 3): lambda w, lo, hi, i: Q.dither_decode(Q.dither_encode(w, 3, 11, i, lo=lo, hi=hi), 3, 11, i),
    }
    for (name, step), f in direct.items():
        o = dataclasses.replace(options, quantizer=name, quant_step=step, dither_seed=11)
        dep, fig = quantize.apply(o, src)
        for i, (a, b) in enumerate(zip(src.weighted_layers, dep.weighted_layers)):
            lo, hi = _limits(a)
            assert np.array_equal(b.weight.astype(np.int64), f(a.weight.astype(np.int64), lo, hi, i)), (name, a.name)
        assert fig["name"] == name and fig["weights"] == sum(layer.weight.size for layer in src.weighted_layers)
    o = dataclasses.replace(options, quantizer="importance-kmeans")
    dep, _ = quantize.apply(o, src, kept["net"], kept["data"])
    moments = quantize.gradient_moments(kept["net"], kept["data"].x_train[:40], kept["data"].y_train[:40],
                                        per_sample=True)
    batch = quantize.gradient_moments(kept["net"], kept["data"].x_train[:40], kept["data"].y_train[:40],
                                      per_sample=False, batch=40)
    # one image at a time is not the squared mean gradient: E[g^2] >= (E g)^2, and larger somewhere
    for name in moments:
        assert np.all(moments[name] >= batch[name] * (1 - 1e-12)) and np.any(moments[name] > batch[name] * 1.01)
    assert all(len(np.unique(layer.weight[layer.weight != 0])) <= 6 for layer in dep.weighted_layers)


def test_cli_dithered_model_file_holds_the_seed_and_decodes_exactly(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["compress", "--family", "winograd", "--winograd-epochs-scale", str(TINY), "--quiet",
                   "--quantizer", "dithered", "--quant-step", "4", "--dither-seed", "12345", "--storage", "xz",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "compress.json").read_text())
    dep = fileformat.load(out / "model.terwin")
    assert dep.meta["dither"] == {"seed": 12345, "step": 4, "layers": [layer.name for layer in dep.weighted_layers]}
    indices = quantize.dither_indices(dep)      # the dither regenerated from the file's seed
    for i, layer in enumerate(dep.weighted_layers):
        assert np.array_equal(Q.dither_decode(indices[layer.name], 4, 12345, i), layer.weight.astype(np.int64))
    q = report["winograd"]["quantizer"]
    assert q["name"] == "dithered" and q["universal_bytes"] == Q.universal_sizes(indices.values())
    assert report["reference_mismatches"] == 0 and report["storage"] == "xz"
    # the file stores the indices and the seed (format version 4), not the weights
    data = fileformat.decompress((out / "model.terwin").read_bytes())[1]
    header = json.loads(data[16:16 + int.from_bytes(data[8:16], "little")])
    assert header["format_version"] == 4
    weighted = [e for e in header["layers"] if "dither" in e]
    assert len(weighted) == len(dep.weighted_layers) and not any("weight" in e["arrays"] for e in weighted)
    assert [e["dither"] for e in weighted] == [{"seed": 12345, "step": 4, "layer": i} for i in range(len(weighted))]
    # another seed in the file: the weights are no longer those its dither decodes to
    wrong = dep.replace(meta={**dep.meta, "dither": {**dep.meta["dither"], "seed": 12346}})
    with pytest.raises(FormatError, match="not on the dithered grid"):
        quantize.dither_indices(wrong)
    with pytest.raises(FormatError, match="meta.dither"):
        quantize.dither_indices(dep.replace(meta={}))


def test_bad_quantizer_options_are_one_line_errors(tmp_path, capsys):
    for kwargs, flag in (({"quantizer": "lloyd"}, "--quantizer"), ({"ecsq_lambda": -1.0}, "--ecsq-lambda"),
                         ({"kmeans_clusters": 0}, "--kmeans-clusters"), ({"quant_step": 0}, "--quant-step"),
                         ({"dither_seed": -1}, "--dither-seed"), ({"lowprec_lambda": -0.5}, "--lowprec-lambda"),
                         ({"kmeans_clusters": 2.5}, "--kmeans-clusters")):
        with pytest.raises(TerwinError, match=flag):
            WinogradOptions(**kwargs)
    for argv, text in ((["--quantizer", "lloyd"], "invalid choice"), (["--kmeans-clusters", "0"], "integer >= 1"),
                       (["--quant-step", "x"], "not an integer"), (["--ecsq-lambda", "-2"], "number >= 0"),
                       (["--lowprec-lambda", "nan"], "number >= 0"), (["--dither-seed", "-3"], "integer >= 0")):
        assert cli.main(["compress", "--family", "winograd", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1, err


def test_lowprec_regularizer_pulls_weights_to_the_export_grid():
    torch.manual_seed(0)
    net = WinogradNet(m=2)
    net.set_mode("winograd")
    reg = LowPrecisionRegularizer(net, bits=4, lam=0.01)
    before = float(reg.error().detach())
    assert 0 < before <= 0.25 + 1e-9      # in steps: at most half a step, squared
    params = [c.weight_wd for c in net.convs()] + [fc.weight for fc in net.linears()]
    opt = torch.optim.Adam([{"params": params, "lr": 1e-3}, {"params": list(reg.parameters()), "lr": 0.05}])
    for _ in range(150):
        opt.zero_grad()
        reg().backward()
        opt.step()
    fig = reg.figures()
    assert fig["grid_error"] < before / 4 and fig["exp_alpha"] > 1   # closer to the grid, a growing weight
    # weights exactly on the grid: no error
    with torch.no_grad():
        for c in net.convs():
            q, s = reg.conv_quant.codes(c.weight_wd)
            c.weight_wd.copy_(q * s.view(-1, 1, 1, 1))
        for fc in net.linears():
            q, s = reg.linear_quant.codes(fc.weight)
            fc.weight.copy_(q * s.view(-1, 1))
    assert float(reg.error().detach()) < 1e-20
    with pytest.raises(ValueError, match="lambda"):
        LowPrecisionRegularizer(net, bits=4, lam=0.0)


def test_compress_with_the_regularizer_reports_it():
    dep, report = compress(WinogradOptions(epochs_scale=TINY, quiet=True, weight_bits=4, lowprec_lambda=0.01))
    fig = report["winograd"]["lowprec_regularizer"]
    assert fig["lambda"] == 0.01 and 0 <= fig["grid_error"] <= 0.25 and fig["exp_alpha"] > 0
    assert report["reference_mismatches"] == 0 and report["options"]["lowprec_lambda"] == 0.01
    assert "lowprec_regularizer" not in compress(WinogradOptions(epochs_scale=TINY, quiet=True))[1]["winograd"]


def test_example_lenet5_is_a_net_the_winograd_engine_runs():
    from pathlib import Path

    from terwin.algo.graph import GraphNet, capture, load_model
    from terwin.algo.winograd.graph_flow import to_winograd_net, topology
    from terwin.spec import WINOGRAD
    model = load_model(f"{Path(__file__).resolve().parents[1] / 'examples' / 'lenet5.py'}:lenet5", seed=0)
    net = GraphNet(capture(model, (1, 32, 32)), act_bits=8, input_scale=1 / 16)
    topology(net)                                     # refuses any layer the engine cannot run
    wnet = to_winograd_net(net, WINOGRAD)
    assert [type(layer).__name__ for layer in wnet.layers].count("WinoConv") == 3
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(wnet(x), model.eval()(x), atol=1e-4)   # float: the same network
