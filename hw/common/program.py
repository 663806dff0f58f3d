"""The engine boundary: a `Program` is one `Deployment` lowered for one engine.

Both the exact cycle model (`terwin.hw.<engine>.cycles`) and the Amaranth top
(`terwin.hw.<engine>.top`) read the same `Program`, so "cycle model = RTL" holds by construction
(and is still tested): the model sums the program's schedule, the top runs it.

Every engine's program has

* `stages`: what the controller steps through, each with the position of its layer in
  `Deployment.layers` (`index`) and of layers fused into it (`fused`: they take no cycles of their
  own), and per-stage constants (`stage_table()`: name -> one value per stage, the numbers the
  controller selects by the current stage);
* `memories()`: every on-chip memory of the design by name, with its shape (an `amaranth.lib.data`
  layout or a plain shape), depth and contents (`init`; None for a RAM the design fills itself).
  The top builds its memories from these records, `terwin generate` writes the ROMs as
  `$readmemh` images from the same records.

NumPy only at import time: `memories()` imports Amaranth when it is called (the cycle model and
`terwin simulate` never call it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryImage:
    """One on-chip memory of a design: `shape` is an Amaranth shape or `amaranth.lib.data` layout;
    `init` the contents (values the layout can `const`: dicts for structs, lists for arrays, ints),
    None for a RAM written at run time; `loaded`: the contents of a RAM that the host writes at run
    time (`Program.preamble`), None for any other."""
    name: str
    shape: object
    depth: int
    init: list | None = None
    loaded: list | None = None

    @property
    def width(self) -> int:
        from amaranth.hdl import Shape
        return Shape.cast(self.shape).width

    @property
    def is_rom(self) -> bool:
        return self.init is not None

    def words(self) -> list[int]:
        """The contents as raw words (the bits the memory holds), `init` (or `loaded`) order."""
        from amaranth.hdl import Const, Shape
        from amaranth.lib import data
        values = self.init if self.init is not None else self.loaded or []
        if isinstance(self.shape, data.Layout):
            return [Const.cast(self.shape.const(v)).value for v in values]
        mask = (1 << Shape.cast(self.shape).width) - 1
        return [int(v) & mask for v in values]

    def memory(self, attrs=None):
        """The `amaranth.lib.memory.Memory` holding this image (`attrs`: synthesis attributes)."""
        from amaranth.lib import memory
        return memory.Memory(shape=self.shape, depth=self.depth, init=self.init or [], attrs=attrs)


def write_hex(path, image: MemoryImage) -> None:
    """One word per line, zero-padded hex (a `$readmemh` image)."""
    digits = max(1, -(-image.width // 4))
    with open(path, "w") as f:
        for v in image.words():
            f.write(f"{v:0{digits}x}\n")


@dataclass
class ProgramStage:
    """What every engine's stage has: its layer and the layers fused into it."""
    index: int                 # position of the stage's layer in Deployment.layers
    name: str

    @property
    def fused(self) -> tuple[int, ...]:
        """Positions of layers this stage also runs (they take no cycles of their own)."""
        return ()


@dataclass
class Program:
    """Base of the engines' programs (see the module docstring)."""
    spec: object
    input_shape: tuple[int, int, int]
    layer_names: tuple[str, ...]    # every layer of the deployment, in order
    stages: list                    # the engine's `ProgramStage`s, in run order
    n_scores: int                   # scores per image (o_stream beats)

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def n_inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def stage_table(self) -> dict[str, list[int]]:
        """Per-stage constants of the controller: name -> one value per stage."""
        raise NotImplementedError

    def memories(self) -> list[MemoryImage]:
        raise NotImplementedError

    def preamble(self) -> list[int]:
        """What the host sends through `i_stream` after each reset, before the first image (one value
        per beat, each less than 2**act_bits): the contents of the memories the design fills at run time
        (`MemoryImage.loaded`). Empty for a design whose memories the bitstream initializes."""
        return []

    def memory(self, name: str) -> MemoryImage:
        for image in self.memories():
            if image.name == name:
                return image
        raise KeyError(name)

    def per_layer(self, per_stage: list[dict]) -> list[dict]:
        """Per-stage figures -> one row per layer of the deployment, {"name", **figures}; a layer
        fused into a stage gets zeros and `fused_into`."""
        rows: dict[int, dict] = {}
        for stage, figures in zip(self.stages, per_stage):
            rows[stage.index] = dict(figures)
            for i in stage.fused:
                rows[i] = {**{k: 0 for k in figures}, "fused_into": stage.name}
        return [{"name": name, **rows[i]} for i, name in enumerate(self.layer_names)]
