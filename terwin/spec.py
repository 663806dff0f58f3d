"""`HardwareSpec`: the accelerator's shape, shared by every stage of terwin.

A spec is frozen and validated on construction. Everything that follows from its fields
(lanes, accumulator widths, tile shapes) is a property or a method here, computed in one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from . import safeio
from .checks import is_int, short_repr
from .errors import SpecError

WEIGHT_FORMATS = ("ternary", "winograd")
REQUANT_MODES = ("multiply", "threshold", "logic")
WEIGHT_MEMORIES = ("rom", "loaded")
BANK_LAYOUTS = ("copies", "quarters")


def _is_pow2(n) -> bool:
    return is_int(n) and n > 0 and n & (n - 1) == 0


@dataclass(frozen=True, kw_only=True)
class HardwareSpec:
    """Shape of one accelerator instance.

    pe_rows: output channels computed in parallel (rows of the PE array).
    pe_cols: input lanes per PE row per cycle (columns of the PE array).
    act_bits: width of the unsigned activations between layers.
    weight_format: "ternary" (adder/subtractor PEs) or "winograd" (sparse Winograd engine).
    winograd_tile: output tile m of F(m x m, 3x3); only 2 is offered.
    winograd_weight_bits: signed width of the Winograd-domain weights.
    mult_lanes: multipliers of the Winograd engine's sparse multiply stage (any count from 1 to 64:
      its items are dealt onto the lanes by wrap-around).
    clock_mhz: target clock.
    out_lanes: requantizer/writer lanes of the ternary engine: output channels requantized, pooled
      and written per cycle (a power of two, at most pe_rows and pe_cols; 1 = one shared requantizer).
      A job of the PE array then costs max(its tiles, pe_rows / out_lanes) cycles, not
      max(tiles, pe_rows). Written to JSON only when not 1, so files and digests of specs without it
      stay byte-identical.
    requant: how the Winograd engine requantizes its ReLU outputs: "multiply" ((acc + bias) * m, a
      shared multiplier, 2 DSPs on the ECP5), "threshold" (the same results from exact per-channel
      threshold tables, no multiplier: `terwin.hw.common.requant_tables`) or "logic" (the same
      multiply as carry-save adders in LUTs, no DSP). Written to JSON only when not "multiply".
    weight_memory: where the Winograd engine keeps its compressed weight streams: "rom" (memories
      the bitstream initializes) or "loaded" (RAMs the host fills through `i_stream` after each
      reset, before the first image: on the iCE40 UP5K its single-port SPRAM, which no bitstream can
      initialize; `WinogradProgram.preamble`). Written to JSON only when not "rom".
    bank_layout: how the Winograd engine's output side reads four sums of a lane's accumulator bank a
      cycle: "copies" (one memory with four read ports, which synthesis makes four copies) or
      "quarters" (four interleaved quarter memories, one read port each, and a 4:1 select after
      them: fewer block RAMs where a bank copy is deeper than a block, as at one lane; elsewhere the
      same block RAMs and more LUTs). Written to JSON only when not "copies".
    """

    pe_rows: int = 8
    pe_cols: int = 8
    act_bits: int = 8
    weight_format: str = "ternary"
    winograd_tile: int = 2
    winograd_weight_bits: int = 8
    mult_lanes: int = 4
    clock_mhz: float = 24.0
    out_lanes: int = 1
    requant: str = "multiply"
    weight_memory: str = "rom"
    bank_layout: str = "copies"

    def __post_init__(self):
        for name in ("pe_rows", "pe_cols"):
            value = getattr(self, name)
            if not _is_pow2(value) or value > 64:
                raise SpecError(f"{name} must be a power of two between 1 and 64, not {short_repr(value)}")
        # the Winograd engine deals its items onto the lanes by wrap-around (any count): 12 lanes fill
        # a design that 16 would not, and use 12 multipliers
        if not is_int(self.mult_lanes) or not 1 <= self.mult_lanes <= 64:
            raise SpecError(f"mult_lanes must be an integer from 1 to 64, not {short_repr(self.mult_lanes)}")
        if not is_int(self.act_bits) or not 2 <= self.act_bits <= 16:
            raise SpecError(f"act_bits must be an integer from 2 to 16, not {short_repr(self.act_bits)}")
        if self.weight_format not in WEIGHT_FORMATS:
            raise SpecError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, not {short_repr(self.weight_format)}")
        if not is_int(self.winograd_tile) or self.winograd_tile != 2:
            raise SpecError(f"winograd_tile must be 2 (only F(2x2,3x3) is offered), not {short_repr(self.winograd_tile)}")
        if not is_int(self.winograd_weight_bits) or not 2 <= self.winograd_weight_bits <= 16:
            raise SpecError(f"winograd_weight_bits must be an integer from 2 to 16, not {short_repr(self.winograd_weight_bits)}")
        if not isinstance(self.clock_mhz, (int, float)) or isinstance(self.clock_mhz, bool) \
                or not 0 < self.clock_mhz <= 1000:  # NaN fails the comparison too
            raise SpecError(f"clock_mhz must be a number in (0, 1000], not {short_repr(self.clock_mhz)}")
        if not _is_pow2(self.out_lanes) or self.out_lanes > min(self.pe_rows, self.pe_cols):
            raise SpecError(f"out_lanes must be a power of two no larger than pe_rows and pe_cols "
                            f"({min(self.pe_rows, self.pe_cols)}), not {short_repr(self.out_lanes)}")
        if self.out_lanes != 1 and self.weight_format != "ternary":
            raise SpecError(f"out_lanes is a ternary-engine field: a {self.weight_format} spec keeps out_lanes 1")
        if self.requant not in REQUANT_MODES:
            raise SpecError(f"requant must be one of {', '.join(REQUANT_MODES)}, not {short_repr(self.requant)}")
        if self.requant != "multiply" and self.weight_format != "winograd":
            raise SpecError(f"requant {self.requant} is a Winograd-engine option: a {self.weight_format} spec keeps "
                            f"requant multiply")
        if self.weight_memory not in WEIGHT_MEMORIES:
            raise SpecError(f"weight_memory must be one of {', '.join(WEIGHT_MEMORIES)}, not "
                            f"{short_repr(self.weight_memory)}")
        if self.weight_memory != "rom" and self.weight_format != "winograd":
            raise SpecError(f"weight_memory {self.weight_memory} is a Winograd-engine option: a {self.weight_format} "
                            f"spec keeps weight_memory rom")
        if self.bank_layout not in BANK_LAYOUTS:
            raise SpecError(f"bank_layout must be one of {', '.join(BANK_LAYOUTS)}, not {short_repr(self.bank_layout)}")
        if self.bank_layout != "copies" and self.weight_format != "winograd":
            raise SpecError(f"bank_layout {self.bank_layout} is a Winograd-engine option: a {self.weight_format} "
                            f"spec keeps bank_layout copies")

    # -- derived figures -------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        """Weights consumed by the PE array per cycle (one PE tile)."""
        return self.pe_rows * self.pe_cols

    @property
    def act_max(self) -> int:
        return (1 << self.act_bits) - 1

    @property
    def winograd_input_tile(self) -> int:
        """Side of the input tile of F(m x m, 3x3): m + 3 - 1."""
        return self.winograd_tile + 2

    def accumulator_bits(self, *, fan_in: int, weight_max: int, bias_max: int = 0) -> int:
        """Signed width that holds any sum of `fan_in` products act*weight plus a bias, without overflow.

        |sum| <= fan_in * act_max * weight_max + bias_max; one more bit for the sign.
        """
        bound = fan_in * self.act_max * weight_max + bias_max
        return max(2, bound.bit_length() + 1)

    # -- serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every field, except those added after the format was fixed (`_OPTIONAL_FIELDS`) while they
        hold their default: a spec that does not use them serializes (and hashes) as before."""
        data = dataclasses.asdict(self)
        for name, default in _OPTIONAL_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareSpec":
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec field {short_repr(unknown[0])} (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "spec") -> "HardwareSpec":
        return cls.from_dict(safeio.parse_json(text, error=SpecError, where=where))

    @property
    def digest(self) -> str:
        """Short stable hash: names build folders and test ids."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        for preset_name, preset in PRESETS.items():
            if preset == self:
                return preset_name
        return f"spec-{self.digest}"

    def replace(self, **changes) -> "HardwareSpec":
        return dataclasses.replace(self, **changes)


# fields added later, with the default that reproduces the hardware before them; omitted from
# `to_dict` at that default (stored models and spec digests stay byte-identical)
_OPTIONAL_FIELDS = {"out_lanes": 1, "requant": "multiply", "weight_memory": "rom", "bank_layout": "copies"}

PE4X4 = HardwareSpec(pe_rows=4, pe_cols=4)
PE8X8 = HardwareSpec(pe_rows=8, pe_cols=8)
PE8X16 = HardwareSpec(pe_rows=8, pe_cols=16)
WINOGRAD = HardwareSpec(pe_rows=8, pe_cols=8, weight_format="winograd", mult_lanes=4)

PRESETS: dict[str, HardwareSpec] = {
    "pe4x4": PE4X4,
    "pe8x8": PE8X8,
    "pe8x16": PE8X16,
    "winograd": WINOGRAD,
}
DEFAULT_PRESET = "pe8x8"


def load_spec(ref: str | None, *, default: str = DEFAULT_PRESET) -> HardwareSpec:
    """A preset name or the path of a spec JSON file."""
    if ref is None:
        ref = default
    if ref in PRESETS:
        return PRESETS[ref]
    path = Path(ref)
    if not path.suffix == ".json" and not path.exists():
        raise SpecError(f"unknown spec {ref!r}: give a preset ({', '.join(PRESETS)}) or a .json file")
    data = safeio.load_json(path, error=SpecError, what="spec file")
    try:
        return HardwareSpec.from_dict(data)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["HardwareSpec", "PRESETS", "DEFAULT_PRESET", "PE4X4", "PE8X8", "PE8X16", "WINOGRAD",
           "load_spec", "ceil_div"]
