"""`CompressOptions`: what every compression family's options dataclass holds.

Each family subclasses it (`terwin.algo.ternary.TernaryOptions`, `terwin.algo.winograd.WinogradOptions`)
with its own fields and its default `spec`. Bad values raise `TerwinError` naming the command-line
flag, so `terwin compress` reports them as one line (exit 2).

`GraphInputs` is what a family's options for a *user's* model add (`--model`, `--data`,
`--weights`, the validation share), mixed into both families' `GraphOptions`;
`check_weight_format` is the one "this spec is for another engine" check of every flow's `compress`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from terwin.errors import TerwinError
from terwin.spec import HardwareSpec

from .data import VALIDATION_FRACTION


def check_number(value, flag: str, *, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """`value` as a float if it is a number in the interval, else a TerwinError naming `flag`."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise TerwinError(f"{flag} must lie in {interval}, not {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class CompressOptions:
    """Options every family shares.

    spec: the hardware the model is compressed for (each family has its default preset).
    seed: seeds the model's initialisation, batch order and augmentation.
    epochs_scale: every training stage's epochs × this (at least one epoch each); tests use tiny values.
    quiet: no progress lines.
    """
    spec: HardwareSpec
    seed: int = 0
    epochs_scale: float = 1.0
    quiet: bool = False

    family: ClassVar[str] = ""
    epochs_scale_flag: ClassVar[str] = "--epochs-scale"

    def __post_init__(self):
        if not isinstance(self.spec, HardwareSpec):
            raise TerwinError(f"spec must be a HardwareSpec, not {type(self.spec).__name__}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TerwinError(f"--seed must be an integer, not {self.seed!r}")
        self._set("epochs_scale", check_number(self.epochs_scale, self.epochs_scale_flag, lo=0, hi=100, lo_open=True))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def family_options(self) -> dict:
        """The family's own options as JSON values (compress.json's `options`): every field but
        spec, seed and quiet, which compress.json holds elsewhere or not at all."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("spec", "seed", "quiet")}


@dataclass(frozen=True, kw_only=True)
class GraphInputs:
    """Mixin of a family's options for a user's model (`class GraphOptions(GraphInputs, FamilyOptions)`).

    model_ref / data_ref / weights_ref: what was compressed (`--model`, `--data`, `--weights`), for
    compress.json. validation_fraction: the share of the training images set aside for validation,
    (0, 0.5]."""
    model_ref: str = ""
    data_ref: str = "digits"
    weights_ref: str | None = None
    validation_fraction: float = VALIDATION_FRACTION

    def __post_init__(self):
        object.__setattr__(self, "validation_fraction", check_number(
            self.validation_fraction, "validation_fraction", lo=0, hi=0.5, lo_open=True))
        super().__post_init__()

    @classmethod
    def from_args(cls, base: CompressOptions, args):
        """These options from the family's options `base` (its `options_from_args`) and the command
        line's --model, --data, --weights."""
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return cls(**fields, model_ref=args.model, data_ref=args.data or "digits", weights_ref=args.weights)


def check_weight_format(options: CompressOptions, weight_format: str) -> None:
    """A TerwinError unless `options.spec` is for this family's engine (`weight_format`)."""
    if options.spec.weight_format != weight_format:
        raise TerwinError(f"the {options.family} family needs a spec with weight_format {weight_format!r}; "
                          f"spec {options.spec.name} has {options.spec.weight_format!r}")


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


__all__ = ["CompressOptions", "GraphInputs", "check_number", "check_weight_format"]
