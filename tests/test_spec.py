import json

import pytest

from terwin.errors import SpecError
from terwin.spec import PRESETS, HardwareSpec, load_spec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json(name):
    spec = PRESETS[name]
    again = HardwareSpec.from_json(spec.to_json())
    assert again == spec
    assert hash(again) == hash(spec)
    assert again.name == name


@pytest.mark.parametrize("field, value, message", [
    ("pe_cols", 6, "pe_cols must be a power of two"),
    ("pe_rows", 0, "pe_rows must be a power of two"),
    ("act_bits", 1, "act_bits must be an integer from 2 to 16"),
    ("weight_format", "binary", "weight_format must be one of ternary, winograd"),
    ("winograd_tile", 4, "winograd_tile must be 2"),
    ("clock_mhz", -3, "clock_mhz must be a number"),
    ("mult_lanes", 0, "mult_lanes must be an integer from 1 to 64"),
    ("mult_lanes", 65, "mult_lanes must be an integer from 1 to 64"),
    ("mult_lanes", 1.5, "mult_lanes must be an integer from 1 to 64"),
    ("requant", "lut", "requant must be one of multiply, threshold, logic"),
])
def test_invalid_fields_raise_one_line(field, value, message):
    with pytest.raises(SpecError) as info:
        HardwareSpec(**{field: value})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        PRESETS["pe8x8"].pe_rows = 4


def test_unknown_json_field_is_named():
    with pytest.raises(SpecError, match="unknown spec field 'pe_colz'"):
        HardwareSpec.from_dict({"pe_colz": 8})


def test_load_spec_from_file_and_errors(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"pe_rows": 4, "pe_cols": 16, "clock_mhz": 30}))
    spec = load_spec(str(path))
    assert (spec.pe_rows, spec.pe_cols, spec.lanes, spec.clock_mhz) == (4, 16, 64, 30)
    assert spec.name == f"spec-{spec.digest}"
    with pytest.raises(SpecError, match="unknown spec 'nope'"):
        load_spec("nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(str(tmp_path / "bad.json"))


def test_accumulator_bits_hold_the_worst_case():
    spec = PRESETS["pe8x8"]
    fan_in = 288
    bits = spec.accumulator_bits(fan_in=fan_in, weight_max=1)
    worst = fan_in * spec.act_max
    assert -(1 << (bits - 1)) <= -worst and worst <= (1 << (bits - 1)) - 1
    assert worst > (1 << (bits - 2)) - 1, "one bit fewer must not suffice"


def test_mult_lanes_need_not_be_a_power_of_two():
    """The Winograd engine deals its items onto any number of lanes (12 multipliers: see
    docs/winograd-hardware.md); the JSON round trip keeps the count."""
    spec = PRESETS["winograd"].replace(mult_lanes=12, requant="logic")
    again = HardwareSpec.from_json(spec.to_json())
    assert again == spec and again.mult_lanes == 12 and again.requant == "logic"
