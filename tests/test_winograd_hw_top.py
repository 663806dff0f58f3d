"""The whole Winograd engine: Amaranth simulation of the top against `sim.reference` and the cycle model,
the multiply-stage efficiency, the cycles-vs-sparsity series, and the generated RTL under cocotb."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from amaranth.sim import Simulator

from terwin.errors import TerwinError
from terwin.hw.common.sim import full_rate_latency
from terwin.hw.winograd.program import compile_program
from terwin.hw.winograd.top import WinogradAccelerator
from terwin.sim import reference
from terwin.sim.cycles import predict
from terwin.spec import PRESETS, ceil_div
from terwin.synthetic import random_deployment
from terwin import winograd

DEFAULT_TOPOLOGY = (("winograd_conv2d", 16), ("winograd_conv2d", 16), ("maxpool2d", 2), ("linear", 10))


def synthetic(seed=0, *, density=0.4, lanes=4, topology=DEFAULT_TOPOLOGY, input_shape=(1, 8, 8), **spec_changes):
    spec = PRESETS["winograd"].replace(mult_lanes=lanes, **spec_changes)
    return random_deployment(spec, seed=seed, topology=topology, winograd_density=density, linear_int_bits=8,
                             input_shape=input_shape)


def simulate_top(dep, q, *, seed=0, pause_in=0.3, pause_out=0.3, deadline=400_000):
    """Stream the images through the top in Amaranth's simulator; return scores and counters per image."""
    top = WinogradAccelerator(dep)
    rng = np.random.default_rng(seed)
    n_scores = int(np.prod(dep.output_shape))
    results = []

    async def put(ctx, values):
        for v in values:
            while rng.random() < pause_in:
                ctx.set(top.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(top.i_stream.valid, 1)
            ctx.set(top.i_stream.payload, int(v))
            await ctx.tick().until(top.i_stream.ready)
        ctx.set(top.i_stream.valid, 0)

    async def bench(ctx):
        # a design that loads its weights takes them first (spec.weight_memory "loaded")
        await put(ctx, top.program.preamble())
        for img in q:
            await put(ctx, img.reshape(-1))
            scores = []
            while len(scores) < n_scores:
                ready = int(rng.random() >= pause_out)
                ctx.set(top.o_stream.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(top.o_stream.valid, top.o_stream.payload)
                if valid and ready:
                    scores.append(payload)
            ctx.set(top.o_stream.ready, 0)
            while ctx.get(top.busy):
                await ctx.tick()
            layers = []
            for i in range(len(dep.layers)):
                ctx.set(top.layer_sel, i)
                layers.append((ctx.get(top.layer_cycles), ctx.get(top.layer_mac_cycles)))
            results.append((scores, ctx.get(top.cycles), layers))

    async def watchdog(ctx):
        for _ in range(deadline):
            await ctx.tick()
        raise AssertionError(f"the top did not finish in {deadline} cycles")

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(watchdog, background=True)
    sim.run()
    return results


def check_against_models(dep, q, results):
    expected = reference.forward(dep, q)
    model = predict(dep)["layers"]
    for n, ((scores, cycles, layers), exp) in enumerate(zip(results, expected)):
        assert list(scores) == exp.tolist(), f"image {n}: scores {scores} != reference {exp.tolist()}"
        measured = [{"cycles": c, "mac_cycles": mc} for c, mc in layers]
        predicted = [{"cycles": l["cycles"], "mac_cycles": l["mac_cycles"]} for l in model]
        assert measured == predicted, f"image {n}: RTL cycles {measured} != model {predicted}"
        assert cycles == sum(l["cycles"] for l in model)


@pytest.mark.parametrize("case", [
    # odd map sizes (partial output tiles), 2 input channels, 8 lanes
    dict(seed=1, lanes=8, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 3)),
         input_shape=(2, 5, 6)),
    # one lane, a linear layer in the middle, very sparse
    dict(seed=2, lanes=1, density=0.1,
         topology=(("winograd_conv2d", 3), ("maxpool2d", 2), ("linear", 6), ("linear", 4)), input_shape=(1, 6, 6)),
    # dense Winograd weights, 2 lanes, pool of 3
    dict(seed=3, lanes=2, density=1.0, topology=(("winograd_conv2d", 4), ("maxpool2d", 3), ("linear", 5)),
         input_shape=(3, 7, 7)),
    # two class scores pushed back to back (found by random testing: a depth-2 score FIFO dropped one)
    dict(seed=5761, lanes=4, density=1.0, topology=(("winograd_conv2d", 2), ("linear", 2)), input_shape=(1, 8, 6),
         act_bits=6, winograd_weight_bits=6),
    # 6-bit activations, 5-bit Winograd weights
    dict(seed=4, lanes=4, topology=(("winograd_conv2d", 5), ("winograd_conv2d", 3), ("linear", 4)),
         input_shape=(1, 4, 5), act_bits=6, winograd_weight_bits=5),
    # lane counts that are no power of two: 3 (three partial sums into the adder tree's one group) and
    # 6 (a full group of 4 and a group of 2)
    dict(seed=6, lanes=3, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 3), ("maxpool2d", 2), ("linear", 3)),
         input_shape=(1, 6, 6)),
    dict(seed=8, lanes=6, density=0.6, topology=(("winograd_conv2d", 5), ("linear", 4)), input_shape=(2, 5, 4)),
])
def test_top_matches_reference_and_cycle_model(case):
    case = dict(case)
    seed = case.pop("seed")
    dep = synthetic(seed, **case)
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=seed))


@pytest.mark.parametrize("requant", ["threshold", "logic"])
@pytest.mark.parametrize("case", [
    # 8 lanes, odd map sizes, a fused pool: the fused maximum of requantized outputs
    dict(seed=1, lanes=8, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 3)),
         input_shape=(2, 5, 6)),
    # 7-bit activations (3 + 4 bits: coarse and fine tables of different sizes), a hidden linear layer,
    # and negative and zero multipliers on some channels (the direction bit, a constant output)
    dict(seed=4, lanes=4, topology=(("winograd_conv2d", 5), ("winograd_conv2d", 3), ("linear", 6), ("linear", 4)),
         input_shape=(1, 4, 5), act_bits=7, winograd_weight_bits=5, flip=True),
])
def test_top_without_a_dsp_requantizer_matches_reference_and_cycle_model(case, requant):
    """spec.requant "threshold" (tables, no multiplier) and "logic" (the multiply in carry-save adders):
    every score equals `sim.reference` (the multiply contract), every per-layer counter equals the cycle
    model (the same as with the multiplier)."""
    case = dict(case)
    seed, flip = case.pop("seed"), case.pop("flip", False)
    dep = synthetic(seed, requant=requant, **case)
    if flip:        # channel 0 of every hidden layer: m < 0; channel 1: m == 0
        layers = []
        for layer in dep.layers[:-1]:
            if hasattr(layer, "multiplier"):
                mult = np.array(layer.multiplier).copy()
                mult[0], mult[1] = -mult[0], 0
                layer = dataclasses.replace(layer, multiplier=mult.astype(np.asarray(layer.multiplier).dtype))
            layers.append(layer)
        dep = dep.replace(layers=(*layers, dep.layers[-1])).validate()
    program = compile_program(dep)
    names = {m.name for m in program.memories()}
    if requant == "threshold":
        assert program.threshold and {"thresh_coarse", "thresh_fine0"} <= names
    else:   # bias * m beside each channel's constants, no table
        params = next(m for m in program.memories() if m.name == "params")
        assert program.logic_multiplier and not program.threshold and not any(n.startswith("thresh") for n in names)
        assert [w["bias_mult"] for w in params.init] == [w["bias"] * w["mult"] for w in program.params]
    plain = compile_program(dep.replace(spec=dep.spec.replace(requant="multiply")))
    assert [ph.length for ph in program.phases] == [ph.length for ph in plain.phases]
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=seed))


@pytest.mark.parametrize("case", [
    # one lane: every item in one RAM; the banks as quarters (the iCEBreaker's design)
    dict(seed=2, lanes=1, density=0.3, topology=(("winograd_conv2d", 3), ("maxpool2d", 2), ("linear", 4)),
         input_shape=(1, 6, 6), bank_layout="quarters"),
    # 8 lanes on a tiny very sparse model: lanes without items send none; 4-bit activations (5 beats an item)
    dict(seed=7, lanes=8, density=0.05, topology=(("winograd_conv2d", 2), ("linear", 3)), input_shape=(1, 4, 4),
         act_bits=4),
    # 2 lanes, two Winograd layers, a hidden linear layer
    dict(seed=3, lanes=2, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 3), ("linear", 5), ("linear", 3)),
         input_shape=(2, 5, 5)),
])
def test_top_with_loaded_weights_matches_reference_and_cycle_model(case):
    """spec.weight_memory "loaded": the weight streams are RAMs the host fills through i_stream after
    reset (the preamble, with random pauses), then every score equals `sim.reference` and every counter
    the cycle model, the same cycles as the ROM design."""
    case = dict(case)
    seed = case.pop("seed")
    dep = synthetic(seed, weight_memory="loaded", **case)
    program = compile_program(dep)
    rom = compile_program(dep.replace(spec=dep.spec.replace(weight_memory="rom")))
    items = [m for m in program.memories() if m.name.startswith("items")]
    assert items and all(not m.is_rom and m.loaded is not None for m in items)
    assert [ph.length for ph in program.phases] == [ph.length for ph in rom.phases]
    # the preamble is every lane's items in order, each in item_beats beats of act_bits bits, low first
    beats = program.preamble()
    assert rom.preamble() == [] and all(0 <= v <= dep.spec.act_max for v in beats)
    words = [sum(v << (dep.spec.act_bits * b) for b, v in enumerate(beats[i:i + program.item_beats]))
             for i in range(0, len(beats), program.item_beats)]
    # ... the ROM design's item words, lane by lane
    assert words == [w for m in rom.memories() if m.name.startswith("items") for w in m.words()]
    assert words == [w for m in items for w in m.words()]
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=seed))


def test_loaded_weights_of_a_model_without_nonzero_weights():
    """Nothing to load: an empty preamble, and the design takes the image right after reset (scores =
    the biases, as the reference gives them)."""
    dep = synthetic(1, lanes=2, weight_memory="loaded", topology=(("winograd_conv2d", 2), ("linear", 3)),
                    input_shape=(1, 4, 4))
    layers = [dataclasses.replace(layer, weight=np.zeros_like(np.asarray(layer.weight)))
              if hasattr(layer, "weight") else layer for layer in dep.layers]
    dep = dep.replace(layers=tuple(layers)).validate()
    assert compile_program(dep).preamble() == []
    q = np.random.default_rng(1).integers(0, dep.spec.act_max + 1, size=(1, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=1))


def test_generate_writes_the_preamble_of_loaded_weights(tmp_path):
    """`terwin generate` of a design with loaded weights: no ROM image of the weight streams, and the
    preamble (what to send after reset) as preamble.hex, listed in the manifest."""
    import json

    from terwin.sim import rtl
    dep = synthetic(2, lanes=2, weight_memory="loaded", topology=(("winograd_conv2d", 3), ("linear", 4)),
                    input_shape=(1, 5, 5))
    manifest = rtl.generate(dep, tmp_path / "gen")
    beats = compile_program(dep).preamble()
    assert manifest["preamble"] == {"file": "preamble.hex", "beats": len(beats), "memories": ["items0", "items1"]}
    assert [int(v, 16) for v in (tmp_path / "gen" / "preamble.hex").read_text().split()] == beats
    assert not any(name.startswith("items") for name in manifest["memory_images"])
    assert json.loads((tmp_path / "gen" / "manifest.json").read_text()) == manifest
    rom = rtl.generate(dep.replace(spec=dep.spec.replace(weight_memory="rom")), tmp_path / "rom")
    assert "preamble" not in rom and {"items0", "items1"} <= set(rom["memory_images"])


def test_loaded_weights_refuse_huffman_and_ternary():
    from terwin.errors import SpecError
    with pytest.raises(SpecError, match="weight_memory loaded is a Winograd-engine option"):
        PRESETS["pe8x8"].replace(weight_memory="loaded")
    with pytest.raises(SpecError, match="weight_memory must be one of rom, loaded"):
        PRESETS["winograd"].replace(weight_memory="spram")
    spec = PRESETS["winograd"].replace(weight_memory="loaded")
    assert spec.to_dict()["weight_memory"] == "loaded" and "weight_memory" not in PRESETS["winograd"].to_dict()
    from terwin import codec
    dep = codec.with_codec(synthetic(1, density=0.5).replace(spec=spec), "huffman")
    with pytest.raises(TerwinError, match="Huffman-coded"):
        compile_program(dep)


def test_top_without_padding():
    """A Winograd layer with padding 0 (Ho = H - 2, odd: a partial tile) before the classifier."""
    base = synthetic(6, topology=(("winograd_conv2d", 3), ("linear", 4)), input_shape=(2, 7, 7))
    conv = dataclasses.replace(base.layers[0], padding=0)
    rng = np.random.default_rng(6)
    w = rng.integers(-127, 128, size=(4, int(np.prod(conv.out_shape))))
    w[rng.random(w.shape) < 0.3] = 0
    lin = dataclasses.replace(base.layers[1], in_shape=conv.out_shape, weight=w.astype(np.int8))
    dep = base.replace(layers=(conv, lin)).validate()
    assert conv.out_shape == (3, 5, 5)
    q = rng.integers(0, 256, size=(2, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=6))


@pytest.mark.slow
def test_top_default_synthetic_model_one_image():
    dep = synthetic(5)
    q = np.random.default_rng(5).integers(0, 256, size=(1, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, pause_in=0.1, pause_out=0.5))


# -- cycle model -------------------------------------------------------------------------------------

def test_ideal_counts_nonzero_winograd_multiplies():
    dep = synthetic(7)
    report = predict(dep)["layers"]
    for layer, row in zip(dep.layers, report):
        if hasattr(layer, "tile"):
            _, ho, wo = layer.out_shape
            tiles = winograd.tiles_per_side(ho) * winograd.tiles_per_side(wo)
            nnz = int(np.count_nonzero(layer.weight)) * tiles
        elif hasattr(layer, "weight"):
            nnz = int(np.count_nonzero(layer.weight))
        else:
            nnz = 0
        assert row["ideal_mac_cycles"] == ceil_div(nnz, dep.spec.mult_lanes), row


@pytest.mark.parametrize("seed", range(4))
def test_multiply_stage_within_15_percent_of_ideal(seed):
    dep = synthetic(seed)
    for row in predict(dep)["layers"]:
        if row["ideal_mac_cycles"]:
            assert row["mac_cycles"] <= 1.15 * row["ideal_mac_cycles"], row


def test_steps_overlap_input_multiply_and_output():
    """A step runs IN(s), MULT(s - 1), OUT(s - 2) and lasts as long as the longest, where an output
    tile other than the layer's last counts only its reads (R = OUT - OUT_TAIL_W: its tail runs on in
    the next step): a layer costs IN + max(IN, issue) + (T - 2) * max(IN, issue, R) + max(issue, R) + OUT,
    so a dense layer is multiply-bound (IN + T * issue + OUT) and a one-channel layer output-bound.
    The second layer's first IN runs in the first layer's last step (its first window reads none of the
    tiles still in flight): that step lasts max(OUT, IN of the next layer), and the next layer starts
    with IN(1) + MULT(0)."""
    from terwin.hw.winograd.program import OUT_START, OUT_TAIL_W, unit_lengths
    dep = synthetic(12, density=1.0, topology=(("winograd_conv2d", 8), ("winograd_conv2d", 8), ("linear", 3)))
    program = compile_program(dep)
    rows = predict(dep)["layers"]
    joined = [ph.stage for ph in program.phases if ph.in_next]
    assert joined == [0], joined      # wconv -> wconv joined; wconv -> linear not (the linear IN reads all)
    for n, (s, row) in enumerate(zip(program.stages, rows)):
        u = unit_lengths(s)
        if s.kind == "linear":
            assert row["cycles"] == u["in"] + u["mult"] + u["out"]
            continue
        t = s.tiles
        assert t >= 2
        r = u["out"] - OUT_TAIL_W
        assert u["out_reads"] == r == OUT_START + 4 * s.out_channels
        first = 0 if n - 1 in joined else u["in"]
        last = max(u["out"], unit_lengths(program.stages[n + 1])["in"]) if n in joined else u["out"]
        expected = (first + max(u["in"], u["mult"]) + (t - 2) * max(u["in"], u["mult"], r)
                    + max(u["mult"], r) + last)
        assert row["cycles"] == expected, (s.name, row, u)
    first, second = program.stages[0], program.stages[1]
    assert unit_lengths(first)["out"] > max(unit_lengths(first)["in"], first.issue)      # 1 input channel
    assert second.issue > max(unit_lengths(second)["in"], unit_lengths(second)["out"])  # dense 8 -> 8
    assert rows[1]["cycles"] == second.tiles * second.issue + unit_lengths(second)["out"]   # its IN(0) ran in wconv0


def test_next_layer_first_tile_waits_for_tiles_in_flight():
    """The next layer's first IN joins the previous layer's last step only when its first window reads
    none of the outputs of the tiles still in the output pipeline: on a 4x4 map (4 tiles, every
    window overlapping the last tiles' outputs) it keeps its own step, and the engine stays exact."""
    from terwin.hw.winograd.program import _first_window, _tile_writes
    small = synthetic(14, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 4), ("linear", 3)),
                      input_shape=(1, 4, 4))
    program = compile_program(small)
    assert not any(ph.in_next for ph in program.phases)
    first, second = program.stages[0], program.stages[1]
    assert _tile_writes(first, 1, 1) & _first_window(second)
    q = np.random.default_rng(14).integers(0, 256, size=(2, *small.input_shape))
    check_against_models(small, q, simulate_top(small, q, seed=14))


def test_two_by_two_pools_are_fused_into_the_winograd_layer():
    """A 2x2 stride-2 max-pool right after a Winograd layer takes no cycles of its own (the layer writes
    the maximum of each output tile); other pools keep their POOL step."""
    dep = synthetic(13, topology=(("winograd_conv2d", 4), ("maxpool2d", 2), ("maxpool2d", 2), ("linear", 3)),
                    input_shape=(1, 9, 9))
    rows = {r["name"]: r for r in predict(dep)["layers"]}
    names = [layer.name for layer in dep.layers]
    assert rows[names[1]]["cycles"] == 0 and rows[names[1]]["fused_into"] == names[0]
    assert rows[names[2]]["cycles"] == 4 * 2 * 2 * 4 + 1 and "fused_into" not in rows[names[2]]   # 4x4 -> 2x2
    q = np.random.default_rng(13).integers(0, 256, size=(1, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=13))


def test_stored_winograd_model_runs_within_1_3_of_its_ideal():
    """The reference Winograd model (bitstreams/): whole-image cycles (compute + streams) at most 1.3x
    its ideal multiply cycles (nonzero Winograd-domain multiplies / lanes)."""
    from pathlib import Path

    from terwin import fileformat
    dep = fileformat.load(Path(__file__).parents[1] / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin")
    report = predict(dep)
    assert report["cycles"] + report["io_cycles"] <= 1.3 * report["ideal_mac_cycles"], report


def test_cycles_fall_as_winograd_sparsity_rises():
    densities = [1.0, 0.8, 0.6, 0.4, 0.2, 0.1]
    series = []
    for d in densities:
        dep = synthetic(11, density=d)
        layers = predict(dep)["layers"]
        wl = [l for l, layer in zip(layers, dep.layers) if layer.kind == "winograd_conv2d"]
        series.append((sum(l["mac_cycles"] for l in wl), sum(l["cycles"] for l in layers)))
    macs, totals = zip(*series)
    assert all(a > b for a, b in zip(macs, macs[1:])), macs
    assert all(a > b for a, b in zip(totals, totals[1:])), totals


def test_unsupported_models_are_user_errors():
    spec = PRESETS["winograd"]
    dep = random_deployment(spec, seed=0, topology=(("winograd_conv2d", 4), ("conv2d", 4), ("linear", 3)))
    with pytest.raises(TerwinError, match="conv2d"):
        compile_program(dep)
    dep = random_deployment(spec, seed=0, topology=(("winograd_conv2d", 4), ("linear", 3)))
    with pytest.raises(TerwinError, match="Winograd engine cannot run"):
        compile_program(dep.replace(spec=PRESETS["pe8x8"]))
    fc = dep.layers[-1]
    relu_last = dep.replace(layers=dep.layers[:-1] + (dataclasses.replace(fc, relu=True),))
    with pytest.raises(TerwinError, match="cannot end in a ReLU"):  # it would output raw scores regardless
        compile_program(relu_last)


# -- generated RTL under cocotb ---------------------------------------------------------------------

def _cocotb_available():
    import shutil
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        return False
    return shutil.which("iverilog") is not None


@pytest.mark.cocotb
@pytest.mark.slow
def test_rtl_bit_exact_under_cocotb(tmp_path):
    assert_rtl_matches_model(synthetic(1), tmp_path)


def assert_rtl_matches_model(dep, build_root, images: int = 3):
    """The generated Verilog under cocotb (Icarus) on `images` random images with random stalls on both
    streams: every score equals the reference, and every layer's cycles and MAC cycles and each
    image's total equal the cycle model."""
    if not _cocotb_available():
        pytest.fail("cocotb and Icarus Verilog are required")
    from terwin.sim import rtl
    q = np.random.default_rng(1).integers(0, 256, size=(images, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=build_root, pause_in=0.2, pause_out=0.3, progress=False)
    assert res.mismatches == 0
    model = predict(dep)["layers"]
    assert [(l["cycles"], l["mac_cycles"]) for l in res.layers] == [(l["cycles"], l["mac_cycles"]) for l in model]
    assert res.cycles == [sum(l["cycles"] for l in model)] * len(q)


@pytest.mark.cocotb
@pytest.mark.slow
def test_broken_rtl_fails_verify(tmp_path, monkeypatch):
    """A design with a one-sign typo in the input transform's B^T must fail verify."""
    if not _cocotb_available():
        pytest.fail("cocotb and Icarus Verilog are required")
    from amaranth.hdl import signed, unsigned

    import terwin.hw.winograd.operands as operands
    from terwin.hw.winograd.top import WinogradAccelerator
    from terwin.hw.winograd.transform import _SandwichStage
    from terwin.sim import rtl

    class TypoInputTransform(_SandwichStage):
        def __init__(self, *, act_bits, m=2):
            bt = winograd.matrices(m, 3)[0].copy()
            bt[3, 3] = 1  # [0, 1, 0, +1] instead of [0, 1, 0, -1]
            self.v_bits = 12
            super().__init__(bt, in_shape=unsigned(act_bits), out_shape=signed(self.v_bits))

    dep = synthetic(1, topology=(("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 3)))
    monkeypatch.setattr(operands, "InputTransform", TypoInputTransform)
    broken = tmp_path / "broken.v"
    broken.write_text(rtl.to_verilog(dep, top=WinogradAccelerator(dep)))
    monkeypatch.undo()
    q = np.random.default_rng(2).integers(0, 256, size=(3, *dep.input_shape))
    res = rtl.verify(dep, q, rtl=broken, build_root=tmp_path / "build", progress=False)
    assert res.mismatches > 0 and not res.ok


def test_io_cycles_at_full_rate():
    """From the first input beat to `busy` falling, with both streams at full rate: compute + io_cycles."""
    for weight_memory in ("rom", "loaded"):    # loaded: the weights go in first, then the image is timed
        dep = synthetic(8, topology=(("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 3)), input_shape=(1, 6, 6),
                        weight_memory=weight_memory)
        total, compute = full_rate_latency(WinogradAccelerator(dep), dep)
        report = predict(dep)
        assert compute == sum(l["cycles"] for l in report["layers"])
        assert total == compute + report["io_cycles"], (total, compute, report["io_cycles"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), lanes=st.sampled_from([1, 2, 4, 8]), density=st.sampled_from([0.05, 0.3, 1.0]),
       act_bits=st.sampled_from([4, 6, 8]), wbits=st.sampled_from([4, 6, 8]),
       shape=st.tuples(st.integers(1, 3), st.integers(3, 6), st.integers(3, 6)),
       weight_memory=st.sampled_from(["rom", "loaded"]), bank_layout=st.sampled_from(["copies", "quarters"]),
       data=st.data())
def test_random_networks_on_random_engines(seed, lanes, density, act_bits, wbits, shape, weight_memory, bank_layout,
                                           data):
    """Random lanes, widths, map sizes, layer stacks, weight memories (ROM, or loaded after reset) and
    bank layouts: scores equal the reference, counters the model."""
    topology, (h, w) = [], shape[1:]
    for _ in range(data.draw(st.integers(1, 2), label="winograd layers")):
        topology.append(("winograd_conv2d", data.draw(st.integers(1, 5), label="channels")))
        if min(h, w) >= 2 and data.draw(st.booleans(), label="pool"):
            k = data.draw(st.integers(2, min(3, h, w)), label="pool size")
            topology.append(("maxpool2d", k))
            h, w = (h - k) // k + 1, (w - k) // k + 1
    if data.draw(st.booleans(), label="hidden linear"):
        topology.append(("linear", data.draw(st.integers(1, 6), label="hidden features")))
    topology.append(("linear", data.draw(st.integers(1, 6), label="classes")))
    dep = synthetic(seed, lanes=lanes, density=density, topology=tuple(topology), input_shape=shape,
                    act_bits=act_bits, winograd_weight_bits=wbits, weight_memory=weight_memory,
                    bank_layout=bank_layout)
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(1, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=seed, deadline=100_000))
