"""Graphs on the ternary engine (#12): residual connections (identity and projection shortcuts, a
residual read from the network input), signed maps, average pools (global and 2x2, mid-network).

The whole top runs in Amaranth's simulator with random back-pressure against `terwin.sim.reference`
(scores, ==) and the cycle model (per-layer cycles, ==); the generated Verilog under Icarus through
`terwin verify`; the program's activation regions are checked for liveness over many random graphs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from terwin import fileformat
from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear
from terwin.errors import TerwinError
from terwin.hw.ternary.program import compile_program
from terwin.network import random_ternary_layer
from terwin.sim import cycles, reference
from terwin.spec import PE4X4, PE8X8, HardwareSpec
from terwin.synthetic import random_deployment, random_graph_deployment, resnet8_deployment

from test_hw_top import check_top  # scores == reference and every counter == the model, in Amaranth's simulator


def check_regions(program):
    """Every two maps live at the same time (a map: from the stage writing it to its last reader)
    occupy disjoint addresses, all within the banks; each stage reads and writes the maps it names."""
    maps = list(program.maps.values())
    for m in maps:
        assert 0 <= m.base and m.base + m.size <= program.bank_depth and m.size <= program.region
    for i, a in enumerate(maps):
        for b in maps[i + 1:]:
            if a.producer <= b.last_reader and b.producer <= a.last_reader:
                assert a.base + a.size <= b.base or b.base + b.size <= a.base, (a, b)
    for s in program.stages:
        assert s.in_base == program.maps[s.source].base
        if s.residual is not None:
            assert (s.res_base, s.res_signed) == (program.maps[s.residual].base, program.maps[s.residual].signed)
        if s.out_mode != "scores":
            assert s.out_base == program.maps[s.output].base


# -- hand-built graphs --------------------------------------------------------------------------------

GRAPHS = {
    # stem -> conv1 -> conv2 (+ stem): the block's input stays live across it, in a third region
    "identity": (PE4X4, dict(input_shape=(2, 6, 6), stem=6, blocks=[(6, 1, 3)], project=[False], pools=[False],
                             final_pool="none", classes=5)),
    # a 1x1 stride-2 projection (relu false: a signed map) computed first, then conv1 (stride 2), conv2 (+ proj)
    "projection": (HardwareSpec(pe_rows=4, pe_cols=8), dict(input_shape=(3, 8, 8), stem=8, blocks=[(12, 2, 3)],
                                                            project=[True], projection_first=[True], pools=[False],
                                                            final_pool="none", classes=4)),
    # conv2 (+ residual) with the global average pool fused into it, then the classifier
    "global_avgpool": (PE4X4, dict(input_shape=(1, 6, 6), stem=5, blocks=[(5, 1, 3)], project=[False], pools=[False],
                                   final_pool="global", classes=6)),
    # no stem: the first block's shortcut is the network input itself; a 2x2 average pool after the
    # block, 4-bit activations on a 2x4 array
    "input_residual": (HardwareSpec(pe_rows=2, pe_cols=4, act_bits=4),
                       dict(input_shape=(4, 6, 6), stem=0, blocks=[(4, 1, 3)], project=[False], pools=[True],
                            final_pool="none", classes=3)),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_hand_built_graph_equals_reference_and_cycle_model(name):
    spec, kw = GRAPHS[name]
    dep = random_graph_deployment(spec, seed=3, **kw)
    by_name = {layer.name: layer for layer in dep.layers}
    conv2 = by_name["block1_conv2"]
    program = compile_program(dep)
    check_regions(program)
    if name == "identity":
        assert conv2.residual == "stem" and program.slots == 3
    elif name == "projection":
        proj = by_name["block1_proj"]
        assert (proj.kernel, proj.stride, proj.relu) == (1, 2, False) and conv2.residual == proj.name
        assert [layer.name for layer in dep.layers].index(proj.name) < [layer.name for layer in dep.layers].index("block1_conv1")
        stage = next(s for s in program.stages if s.name == "block1_conv2")
        assert stage.res_signed and program.maps[proj.name].signed
        # the projection's map holds negative values: the sign extension matters
        q = np.random.default_rng(0).integers(0, spec.act_max + 1, size=(4, *dep.input_shape))
        assert (reference.trace(dep, q)[[layer.name for layer in dep.layers].index(proj.name)] < 0).any()
    elif name == "global_avgpool":
        gap = by_name["gap"]
        assert isinstance(gap, AvgPool2d) and gap.kernel == gap.in_shape[1] == gap.in_shape[2]
        assert next(s for s in program.stages if s.name == "block1_conv2").pool_kind == "avg"
    else:
        assert conv2.residual == INPUT and isinstance(by_name["block1_pool"], AvgPool2d)
    check_top(dep)
    model = cycles.predict(dep)
    assert {l["name"]: l.get("fused_into") for l in model["layers"] if "fused_into" in l} == \
        {layer.name: layer.source for layer in dep.layers if isinstance(layer, AvgPool2d)} | \
        ({"stem_pool": "stem"} if "stem_pool" in by_name else {})


def test_sequential_programs_keep_their_two_ping_pong_regions():
    for seed, spec in enumerate((PE4X4, PE8X8, HardwareSpec(pe_rows=2, pe_cols=1))):
        program = compile_program(random_deployment(spec, seed=seed))
        assert program.slots == 2 and not (program.has_residual or program.has_signed or program.has_avgpool)
        assert [s.in_base for s in program.stages] == [(n % 2) * program.region for n in range(len(program.stages))]
        assert program.bank_depth == 1 << (2 * program.region - 1).bit_length()
        check_regions(program)


def test_stored_model_compiles_to_the_same_memories_and_table():
    """Pin (taken before graphs were supported): the stored digits model's ROM images (as `terwin
    generate` writes them), stage table and regions. Graph support must leave a chain's program alone."""
    import hashlib
    from pathlib import Path
    dep = fileformat.load(Path(__file__).parents[1] / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin")
    program = compile_program(dep)
    def sha(words):
        return hashlib.sha256(" ".join(f"{w:x}" for w in words).encode()).hexdigest()[:16]

    images = {image.name: image for image in program.memories() if image.is_rom}
    digest = {name: (image.depth, image.width, sha(image.words())) for name, image in images.items()}
    # a kept tile's word was one 141-bit word (codes in its low 128 bits, then the header); it is now
    # the header in `weights` and the codes in `codes` at the same address: joined, the same words
    header, codes = digest.pop("weights"), digest.pop("codes")
    assert (header[:2], codes[:2]) == ((214, 13), (214, 128))
    joined = [h << 128 | c for h, c in zip(images["weights"].words(), images["codes"].words())]
    assert sha(joined) == "cb695173daf5cda0"
    assert digest == {"lane_map": (24, 72, "5e410e21b776d485"),
                      "params": (128, 32, "12f08a857a882712"), "og_table": (17, 5, "0d0ee98ace32e4e5")}
    table = json.dumps(program.stage_table(), sort_keys=True, default=int).encode()
    assert hashlib.sha256(table).hexdigest()[:16] == "281867dc952a27af"
    assert (program.region, program.bank_depth, program.slots) == (128, 256, 2)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.sampled_from([1, 2, 4, 8]), cols=st.sampled_from([1, 2, 4, 8, 16]))
def test_regions_by_liveness_never_overlap(seed, rows, cols):
    """Program only (no simulation), so it can look at many graphs."""
    dep = random_graph_deployment(HardwareSpec(pe_rows=rows, pe_cols=cols), seed=seed, calibration_images=2)
    program = compile_program(dep)
    check_regions(program)
    assert program.slots <= dep.live_maps()   # the bound `check_fits_hardware` counts with


def test_live_maps_count_what_a_residual_keeps():
    assert random_deployment(PE4X4, seed=0).live_maps() == 2
    dep = random_graph_deployment(PE4X4, seed=1, **GRAPHS["identity"][1])
    assert dep.live_maps() == 3        # stem's map while conv1 and conv2 run
    dep = resnet8_deployment(PE8X8, calibration_images=2)
    assert dep.live_maps() == 3 and dep.onchip_bits() == 3 * 16 * 32 * 32 * 8 + sum(   # the stem's map is largest
        layer.weight.size * 2 for layer in dep.weighted_layers)


# -- what the engine refuses, in one line naming the layer -------------------------------------------------

def _conv(name, in_shape, out, rng, **kw):
    w_shape = (out, in_shape[0], 3, 3)
    return random_ternary_layer(Conv2d, dict(name=name, in_shape=in_shape, out_channels=out, kernel=3, padding=1, **kw),
                                w_shape, PE4X4, rng, 0.0, 0.1)


def _linear(name, in_shape, rng, **kw):
    return random_ternary_layer(Linear, dict(name=name, in_shape=in_shape, out_channels=3, relu=False, **kw),
                                (3, int(np.prod(in_shape))), PE4X4, rng, 0.0, 0.1)


def _avg(name, in_shape, kernel, **kw):
    return AvgPool2d(name=name, in_shape=in_shape, kernel=kernel, stride=kernel, multiplier=1, shift=2, **kw)


@pytest.mark.parametrize("case", ["pool_reads_input", "pool_after_pool", "pooled_conv_read_elsewhere"])
def test_pools_the_engine_cannot_fuse_are_refused_by_name(case):
    rng = np.random.default_rng(0)
    shape = (4, 4, 4)
    if case == "pool_reads_input":
        layers = [_avg("early", shape, 2), _conv("c0", (4, 2, 2), 4, rng), _linear("fc", (4, 2, 2), rng)]
        bad, message = "early", "reads @input, which is not one"
    elif case == "pool_after_pool":
        layers = [_conv("c0", shape, 4, rng), _avg("p1", shape, 2), _avg("p2", (4, 2, 2), 2), _linear("fc", (4, 1, 1), rng)]
        bad, message = "p2", "reads p1, which is not one"
    else:   # c0's un-pooled map is also c1's residual: the pool cannot be fused into c0
        layers = [_conv("c0", shape, 4, rng), _avg("p", shape, 1),
                  _conv("c1", shape, 4, rng, residual="c0", residual_multiplier=np.ones(4, dtype=np.int64)),
                  _linear("fc", shape, rng)]
        bad, message = "p", "but c1 reads c0 too"
    dep = Deployment(spec=PE4X4, input_shape=shape, input_scale=1 / 255, layers=tuple(layers)).validate()
    assert reference.forward(dep, np.zeros((1, *shape), dtype=np.int64)).shape == (1, 3)   # a valid model
    with pytest.raises(TerwinError, match=f"^layer {bad}: .*{message}") as err:
        compile_program(dep)
    assert "\n" not in str(err.value)


# -- random graphs on random arrays ---------------------------------------------------------------------

@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(seed=st.integers(0, 10_000), rows=st.sampled_from([1, 2, 4, 8]), cols=st.sampled_from([1, 2, 4, 8]),
       act_bits=st.sampled_from([3, 4, 6, 8]), sparsity=st.sampled_from([0.0, 0.5, 0.9]))
def test_random_graphs_on_random_arrays(seed, rows, cols, act_bits, sparsity):
    """Random residual graphs (random strides, projections before or after conv1, residuals from the
    input, max/average/global pools, channel counts) on random arrays and activation widths: scores
    equal the reference, counters equal the cycle model."""
    spec = HardwareSpec(pe_rows=rows, pe_cols=cols, act_bits=act_bits)
    dep = random_graph_deployment(spec, seed=seed, tile_sparsity=sparsity, calibration_images=8)
    assume(cycles.predict(dep)["cycles"] <= 8000)   # keeps the Python simulator's share of the run short
    check_regions(compile_program(dep))
    check_top(dep, images=1, pause=0.2, seed=seed)


# -- the generated Verilog under Icarus -------------------------------------------------------------------

@pytest.mark.cocotb
def test_graph_rtl_verifies_through_the_cli(tmp_path, rtl_build_root):
    """`terwin verify` on a saved version-2 model (digits-shaped input, which is what it feeds):
    0 mismatches, every layer's RTL cycle counter equal to the cycle model."""
    from terwin.cli import main
    dep = random_graph_deployment(PE8X8, seed=11, input_shape=(1, 8, 8), stem=8, stem_pool=True,
                                  blocks=[(8, 1, 3), (16, 2, 3)], project=[False, True], projection_first=[False, False],
                                  pools=[False, False], final_pool="global", classes=10)
    path = tmp_path / "graph.terwin"
    fileformat.save(dep, path)
    assert fileformat.load(path).format_version == 2
    out = tmp_path / "verify.json"
    assert main(["verify", str(path), "--images", "3", "--json", str(out), "--build-dir", str(rtl_build_root),
                 "--backpressure", "0.2", "--quiet"]) == 0
    rep = json.loads(out.read_text())
    assert rep["images"] == 3 and rep["mismatches"] == 0
    model = cycles.predict(dep)
    assert [(l["name"], l["cycles"], l["mac_cycles"]) for l in rep["layers"]] == \
        [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]


@pytest.mark.cocotb
def test_graph_with_input_residual_and_average_pool_rtl_equals_reference(rtl_build_root):
    """The network input read as a residual, a 2x2 average pool after a block, a 1x1 projection
    computed before conv1, 6-bit activations on a 4x4 array: RTL == reference, cycles == model."""
    from terwin.sim import rtl
    spec = HardwareSpec(pe_rows=4, pe_cols=4, act_bits=6)
    dep = random_graph_deployment(spec, seed=12, input_shape=(4, 6, 6), stem=0, blocks=[(4, 1, 3), (6, 1, 1)],
                                  project=[False, True], projection_first=[True, True], pools=[True, False],
                                  final_pool="none", classes=5)
    assert dep.layers[1].residual == INPUT
    q = np.random.default_rng(2).integers(0, spec.act_max + 1, size=(3, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=1, pause_in=0.3, pause_out=0.3)
    assert res.mismatches == 0, res.first_mismatch
    model = cycles.predict(dep)
    assert [(l["name"], l["cycles"], l["mac_cycles"]) for l in res.layers] == \
        [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]
    assert res.cycles == [model["cycles"]] * len(q)


@pytest.mark.cocotb
@pytest.mark.slow
def test_resnet8_like_graph_verifies_on_icarus(rtl_build_root):
    """32x32x3 input, stem 16, blocks of 16/32/64 channels (projections for the stride-2 ones), global
    average pool, linear 10: within the on-chip bound, bit-exact and cycle-exact on two images."""
    from terwin.sim import rtl
    dep = resnet8_deployment(PE8X8, seed=0).check_fits_hardware()
    q = np.random.default_rng(1).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=rtl_build_root, progress=False, jobs=2)
    assert res.mismatches == 0, res.first_mismatch
    model = cycles.predict(dep)
    assert [(l["name"], l["cycles"], l["mac_cycles"]) for l in res.layers] == \
        [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]
    assert res.cycles == [model["cycles"]] * len(q)
