"""terwin's Python API: the command line's steps as functions on a `Deployment`.

    import terwin
    dep, report = terwin.compress(model, "digits32", family="ternary", tile_sparsity=0.5, seed=0)
    terwin.save(dep, "runs/m/model.terwin")          # the .terwin file; returns its checksum
    dep = terwin.load("runs/m/model.terwin")
    terwin.scores(dep, images)                        # the integer model's class scores (NumPy reference)
    terwin.simulate(dep)                              # cycles per layer (the exact cycle model)
    terwin.generate(dep, "runs/m/rtl")                # Verilog, memory images, manifest
    terwin.verify(dep, images)                        # the RTL under Icarus, every score compared (==)
    terwin.build_bitstream(dep, board="icebreaker", out_dir="runs/m/ice")
    terwin.explore(dep, board="ulx3s-85f")           # the fastest accelerator of it that fits the board

`import terwin` loads none of this (and no torch): `terwin/__init__.py` resolves these names on first
use. The bitstream step is `terwin.build_bitstream` at the package level because `terwin.build` is
the module that builds (`terwin.build.build_model`); here it is also `terwin.api.build`.

Mistakes (a spec that does not exist, a model terwin cannot capture, malformed data) raise
`TerwinError` with the one line the command line would print.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from terwin import codec as codecs
from terwin import engines, fileformat
from terwin.algo.data import BUILTIN, Split, first, load_data as _load_data, split_from_arrays
from terwin.build import DEFAULT_SEED, build_model
from terwin.deployment import Deployment
from terwin.errors import TerwinError
from terwin.sim import cycles, reference, rtl
from terwin.spec import HardwareSpec, load_spec


def load_data(ref="digits", *, limit: int | None = None, act_bits: int = 8) -> Split:
    """A data set: "digits", "digits32", an .npz file, a mapping or tuple of the four arrays
    (x_train, y_train, x_test, y_test), or a `Split`; `limit`: only the first N training and test
    images (small runs)."""
    if isinstance(ref, Split):
        split = ref
    elif isinstance(ref, (str, Path)):
        split = _load_data(str(ref), act_bits=act_bits)
    elif isinstance(ref, (Mapping, tuple, list)):
        split = split_from_arrays(ref, act_bits=act_bits)
    else:
        raise TerwinError(f"data must be {', '.join(BUILTIN)}, an .npz file, the four arrays or a Split, "
                          f"not a {type(ref).__name__}")
    return first(split, limit)


def _spec(spec, default: HardwareSpec) -> HardwareSpec:
    if spec is None:
        return default
    if isinstance(spec, HardwareSpec):
        return spec
    if isinstance(spec, str):
        return load_spec(spec)
    raise TerwinError(f"spec must be a preset name, a spec .json file or a HardwareSpec, not {type(spec).__name__}")


def compress(model: torch.nn.Module | str | None = None, data="digits", *, spec=None, family: str = "ternary",
             tile_sparsity: float | None = None, seed: int = 0, weights=None, epochs_scale: float = 1.0,
             quiet: bool = False, codec: str = "raw", **options) -> tuple[Deployment, dict]:
    """Compress `model` (a torch.nn.Module, or "FILE.py:FACTORY" as `terwin compress --model` takes it:
    FACTORY() built under `seed`, the model file records that name; None: the family's built-in digits
    CNN) trained on `data` (`load_data`) into an integer model for `spec` (a preset name, a spec file or a HardwareSpec;
    default: the family's). `weights`: the model's trained state_dict (a mapping or a file) — the
    float training is skipped. `codec`: "raw" or "huffman", how the weight stream is stored
    (`terwin.codec`; the report gains `codec`, `weight_stream_bits` — the design's weight memory bits on chip — and `weight_memory`). `options`: the family's other options (e.g. regularizer="group-lasso",
    zero_budget=0.05; see the family's options dataclass). Returns (Deployment, the compress.json
    dict, without "checksum": `save` returns it). Training starts from the model's weights as given
    (seed torch before building it, for a reproducible start) and is seeded by `seed`."""
    engine = engines.get(family)
    flow = importlib.import_module(engine.compress_flow)
    spec = _spec(spec, flow.DEFAULT_SPEC)
    if tile_sparsity is not None:
        options["tile_sparsity"] = tile_sparsity
    common = dict(spec=spec, seed=seed, epochs_scale=epochs_scale, quiet=quiet, **options)
    if model is None:
        if weights is not None or not (isinstance(data, str) and data == "digits"):
            raise TerwinError("the built-in net trains on the 8x8 digits only: give a model for other data or weights")
        return _with_codec(*flow.compress(_options(flow.OPTIONS, common)), codec)
    if engine.model_flow is None:
        raise TerwinError(f"family {family} compresses only its built-in digits net; a model needs family "
                          f"{' or '.join(e.name for e in engines.ENGINES.values() if e.model_flow)}")
    model_flow = importlib.import_module(engine.model_flow)
    model_ref = None
    if isinstance(model, str):
        from terwin.algo.graph import load_model
        model_ref, model = model, load_model(model, seed=seed)   # its initial weights: FACTORY() under seed
    split = load_data(data, act_bits=spec.act_bits)
    name = data if isinstance(data, (str, Path)) else split.name
    weights_ref = str(weights) if isinstance(weights, (str, Path)) else None if weights is None else "state_dict"
    opts = _options(model_flow.OPTIONS, dict(common, model_ref=model_ref or type(model).__name__,
                                              data_ref=str(name), weights_ref=weights_ref))
    return _with_codec(*model_flow.compress(opts, model, split, weights=weights), codec)


def _with_codec(dep: Deployment, report: dict, name: str) -> tuple[Deployment, dict]:
    """The post-export step of every flow: the chosen weight codec (the weights stay the same)."""
    if name not in codecs.CODECS:
        raise TerwinError(f"codec must be one of {', '.join(codecs.CODECS)}, not {name!r}")
    dep = codecs.with_codec(dep, name)
    return dep, {**report, **engines.codec_report_fields(dep)}


def _options(cls, values: dict):
    try:
        return cls(**values)
    except TypeError as e:  # an option the family does not have
        raise TerwinError(f"{cls.__name__}: {e}") from None


def save(dep: Deployment, path, *, storage: str = "raw") -> str:
    """Write the model file (atomically; `storage` "xz" or "bz2": compressed); returns its checksum."""
    return fileformat.save(dep, path, storage=storage)


def load(path) -> Deployment:
    """Read and validate a model file."""
    return fileformat.load(path)


def scores(dep: Deployment, images) -> np.ndarray:
    """The integer model's class scores int64 [N, classes] for float images [N, C, H, W] (or
    [C, H, W]) in the data's range: quantized with the model's input scale, run by the NumPy
    reference. The predicted class is the argmax (the lowest index on a tie)."""
    return reference.forward(dep, reference.quantize_input(dep, images))


def simulate(dep: Deployment) -> dict:
    """The exact cycle model's report (`terwin simulate`): per-layer and total cycles, images/s."""
    return cycles.predict(dep)


def generate(dep: Deployment, out_dir, *, force: bool = False) -> dict:
    """Verilog, memory images and manifest.json in `out_dir` (`terwin generate`); returns the manifest."""
    return rtl.generate(dep.check_fits_hardware(), out_dir, force=force)


def verify(dep: Deployment, images, *, jobs: int | None = None, build_root=None, progress: bool = False,
           shards: int | None = None, ray_address: str | None = None):
    """Run the generated RTL under the fastest installed simulator (Verilator, else Icarus; cocotb)
    over float `images` [N, C, H, W] and compare every score with the reference and every counter with
    the cycle model (`terwin verify`); returns `terwin.sim.rtl.VerifyResult` (`.ok`; `.mismatches` is 0
    when every score is equal, `.layers` holds the per-layer cycles). `shards` / `ray_address`: split
    the images into that many tasks on a local Ray instance (or a process pool) / a Ray cluster."""
    q = reference.quantize_input(dep.check_fits_hardware(), images)
    if shards is None and ray_address is None:
        return rtl.verify(dep, q, jobs=jobs, build_root=build_root, progress=progress)
    from terwin.parallel import Executor
    executor = Executor.choose(workers=jobs or rtl.default_jobs(), ray_address=ray_address)
    return rtl.verify_sharded(dep, q, executor=executor, shards=shards or 32, build_root=build_root)


def build(dep: Deployment, board: str, out_dir, *, clock_mhz: float | None = None, seed: int = DEFAULT_SEED,
          force: bool = False, quiet: bool = False) -> dict:
    """A bitstream for `board` in `out_dir` with Yosys and nextpnr (`terwin build`); returns the build report."""
    return build_model(dep.check_fits_hardware(), board=board, out_dir=out_dir, clock_mhz=clock_mhz, seed=seed,
                       quiet=quiet, force=force)


build_bitstream = build


def explore(model, *, board: str, objective: str = "images_per_s", axes: dict | None = None, spec=None,
            accuracy_budget: float | None = None, workers: int = 1, ray_address: str | None = None,
            build: bool = False, out=None, images: int = 20, force: bool = False, quiet: bool = True,
            min_fmax: float | None = None, build_tries: int = 1, recompress: int = 0) -> dict:
    """Design-space exploration (`terwin explore`): sweep the accelerators of `model` (a .terwin path, a
    network description .json path, or a Deployment, saved to a temporary file for the sweep's workers)
    for `board`; `axes`: {HardwareSpec field: values} (default: the engine's array); `min_fmax`: only
    points predicted to reach this clock (MHz) are candidates (`build_tries`: builds tried, in order, until
    one reaches it); `recompress` K: compress the model again for the K best arrays (a model file that
    records its recipe; `out` needed) and choose the best among the new models. Returns the sweep:
    {"points": [{"spec", "predicted"}], "front", "best": {"spec", "predicted"[, "built", "verify"]}, ...}
    (`terwin.dse.sweep`)."""
    import tempfile

    from terwin.dse import sweep
    if isinstance(model, Deployment):
        with tempfile.TemporaryDirectory(prefix="terwin-explore-") as tmp:
            path = Path(tmp) / "model.terwin"
            fileformat.save(model, path)
            return explore(path, board=board, objective=objective, axes=axes, spec=spec,
                           accuracy_budget=accuracy_budget, workers=workers, ray_address=ray_address, build=build,
                           out=out, images=images, force=force, quiet=quiet, min_fmax=min_fmax,
                           build_tries=build_tries, recompress=recompress)
    return sweep.explore(model, board=board, objective=objective, axes=axes, spec=_spec(spec, None) if spec else None,
                         accuracy_budget=accuracy_budget, workers=workers, ray_address=ray_address, build=build,
                         out=out, images=images, force=force, quiet=quiet, min_fmax=min_fmax,
                         build_tries=build_tries, recompress=recompress)

__all__ = ["compress", "load_data", "save", "load", "scores", "simulate", "generate", "verify", "build",
           "build_bitstream", "explore"]
