"""The accelerator engines, in one place: everything that depends on which engine runs a model asks here.

An engine runs the models whose `HardwareSpec.weight_format` is its name. It lives in its own
package `terwin.hw.<name>` (folder `hw/<name>/`) with three modules:

* `program`: `compile_program(dep) -> Program` (NumPy only): the deployment lowered for the
  engine — stages, per-stage constants, memories with their layouts and contents, the schedule
  (`terwin.hw.common.program.Program`);
* `cycles`: `predict(program) -> {"layers", "io_cycles"}` (NumPy only): the exact cycle model over
  that program;
* `top`: the Amaranth top, a `wiring.Component` built from the program, with the shared ports
  (`terwin.hw.common.ports.accelerator_signature`): class `Accelerator(dep, program=None)`;
* `huffman_program`: the engine's Huffman-coded weight path, and `memory_bits(program) -> dict`: the
  bits of the weight path's memories as built (width x depth, decoder tables included), per memory
  and in all (`"total"`), for whichever codec the program's layers have.

Adding an engine is its folder and one line in `ENGINES`. Entries import their modules only when
used, so this module (and `terwin inspect`) needs neither torch nor Amaranth.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .errors import TerwinError


@dataclass(frozen=True)
class Engine:
    name: str                          # the HardwareSpec.weight_format it runs, and the compress family
    compress_flow: str                 # its `terwin compress --family NAME` module (terwin/commands/compress.py;
                                       # the module's DEFAULT_SPEC is the family's spec without --spec)
    plot_style: tuple[str, str]        # marker and colour of its series in the report's plots
    model_flow: str | None = None      # its `terwin compress --family NAME --model FILE.py:FACTORY` module (a
                                       # user's network: `options_from_args`, `compress(options, model, data,
                                       # weights=)`), or None when the family compresses only its built-in net
    explore_axes: tuple = ()           # `terwin explore`'s default sweep: ((HardwareSpec field, values), ...)
    resource_regressors: tuple = ()    # its resource model (terwin.dse.resources): ((quantity, regressors), ...)

    @property
    def package(self) -> str:
        return f"terwin.hw.{self.name}"

    def _module(self, part: str):
        return importlib.import_module(f"{self.package}.{part}")

    def compile(self, dep):
        """The engine's `Program` for `dep` (whose spec names this engine)."""
        return self._module("program").compile_program(dep)

    def predict(self, program) -> dict:
        """The exact cycle model over `program`: {"layers": [{name, cycles, mac_cycles,
        ideal_mac_cycles}], "io_cycles"}."""
        return self._module("cycles").predict(program)

    def build_top(self, dep, *, program=None):
        """The Amaranth top for `dep` (built from `program`, compiled here when not given)."""
        return self._module("top").Accelerator(dep, program=program)

    def weight_memory_bits(self, program) -> dict:
        """The weight path's memory bits as built for `program`: {memory: bits, ..., "total"}."""
        return self._module("huffman_program").memory_bits(program)

    def describe(self, spec) -> str:
        """The accelerator `spec` shapes, in words (`terwin inspect`): "8x8 PEs", "4 multiplier lanes"."""
        return self._module("program").describe_spec(spec)

    def fit_hint(self, spec, family) -> str | None:
        """What would make a design of `spec` that does not fit a device of `family` (an
        `terwin.hw.fpga.FpgaFamily`) fit, in words, or None (`terwin build` adds it to the error)."""
        return self._module("program").fit_hint(spec, family)

    def memory_images(self, program) -> list:
        """The design's ROMs (`MemoryImage`s with contents), as `terwin generate` writes them."""
        return [image for image in program.memories() if image.is_rom]


ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("ternary", compress_flow="terwin.algo.ternary.flow",
           plot_style=("o", "tab:blue"), model_flow="terwin.algo.ternary.graph_flow",
           # the array and its output bandwidth (the requantizer lanes: a large array needs several)
           explore_axes=(("pe_rows", (2, 4, 8, 16, 32)), ("pe_cols", (2, 4, 8, 16, 32, 64)),
                         ("out_lanes", (1, 2, 4, 8, 16, 32))),
           resource_regressors=(("luts", ("one", "pe_bits", "pes", "acc_bits", "logic_mem_luts", "distributed_luts",
                                          "requant_lanes")),
                                ("logic_cells", ("one", "pe_bits", "pes", "acc_bits", "logic_mem_luts",
                                                 "distributed_luts", "requant_lanes")),
                                ("ffs", ("one", "pe_bits", "acc_bits", "requant_lanes")), ("dsps", ("dsp_tiles",)),
                                ("period_ns", ("one", "log2_cols", "dsp_tiles")))),
    Engine("winograd", compress_flow="terwin.algo.winograd.flow",
           plot_style=("s", "tab:orange"), model_flow="terwin.algo.winograd.graph_flow",
           explore_axes=(("mult_lanes", (1, 2, 4, 8, 12, 16)),),
           resource_regressors=(("luts", ("one", "mult_lanes")), ("logic_cells", ("one", "mult_lanes")),
                                ("ffs", ("one", "mult_lanes")), ("dsps", ("requant_mults", "mult_lanes")),
                                ("period_ns", ("one",)))),
)}


def names() -> list[str]:
    return sorted(ENGINES)


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise TerwinError(f"no engine {name!r} (known: {', '.join(names())})") from None


def for_spec(spec) -> Engine:
    """The engine running models of `spec` (by its weight format)."""
    if spec.weight_format not in ENGINES:
        raise TerwinError(f"no hardware engine for weight format {spec.weight_format!r}")
    return ENGINES[spec.weight_format]


def compile_program(dep):
    """`dep` lowered for its engine: the `Program` both the cycle model and the top read."""
    return for_spec(dep.spec).compile(dep)


def build_top(dep, *, program=None):
    """The accelerator top for `dep`: its engine's `Accelerator`, with the shared ports."""
    return for_spec(dep.spec).build_top(dep, program=program)


def weight_memory_report(dep) -> dict:
    """What the weight memories of `dep`'s design hold on chip (width x depth as built, decoder tables
    included), for its codec and for `raw`: {"codec", "bits", "raw_bits", "saving", "memories"}, or
    {"error": ...} when the model does not lower onto its engine (e.g. a layer it cannot run): compress
    still writes such a model, and `terwin simulate`/`build` then name the problem."""
    from .codec import model_codec, with_codec
    engine = for_spec(dep.spec)
    codec = model_codec(dep)
    try:
        coded = engine.weight_memory_bits(engine.compile(dep))
        raw = coded if codec == "raw" else engine.weight_memory_bits(engine.compile(with_codec(dep, "raw")))
    except TerwinError as e:
        return {"error": str(e)}
    return {"codec": codec, "bits": coded["total"],
            "raw_bits": raw["total"], "saving": round(1 - coded["total"] / raw["total"], 4) if raw["total"] else 0.0,
            "memories": {k: v for k, v in coded.items() if k != "total"}}


def codec_report_fields(dep) -> dict:
    """compress.json's codec fields: `terwin.codec.report_fields` (the file's coded streams per layer) with
    `weight_stream_bits` the bits the design's weight memories hold on chip, decoder tables included
    (`weight_memory`: per memory, and against raw); the file's own stream total stays in
    `weight_stream["weight_stream_bits"]`."""
    from .codec import report_fields
    fields = report_fields(dep)
    memory = weight_memory_report(dep)
    if "bits" in memory:
        fields["weight_stream_bits"] = memory["bits"]
    return {**fields, "weight_memory": memory}
