"""Draft decode (fast path) in the A1111 infotext: written as an extra field and read back for re-runs."""

from __future__ import annotations

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters

FAST = GenerationRequest(prompt="a fox, <lora:lcm-lora-sdv1-5:1>", sampler="LCM", scheduler="sgm_uniform",
                         steps=4, cfg_scale=1.0, seed=123, draft_decode=True)


def test_draft_decode_round_trips_with_the_fast_settings() -> None:
    text = format_parameters(FAST, "v1-5")
    assert "Steps: 4, Sampler: LCM, Schedule type: SGM Uniform, CFG scale: 1," in text
    assert text.endswith("Model: v1-5, Draft decode: True")
    assert request_from_parameters(parse_parameters(text)) == FAST


def test_a_full_decode_writes_no_field_and_reads_back_false() -> None:
    text = format_parameters(FAST.replace(draft_decode=False), "")
    assert "Draft decode" not in text
    assert request_from_parameters(parse_parameters(text)).draft_decode is False


@pytest.mark.parametrize(("value", "expected"), [("True", True), ("true", True), ("False", False)])
def test_reading_accepts_python_bools_in_any_case(value: str, expected: bool) -> None:
    params = parse_parameters(f"x\nSteps: 4, Sampler: LCM, Seed: 1, Draft decode: {value}")
    assert request_from_parameters(params).draft_decode is expected


def test_a_bad_value_is_refused_by_name() -> None:
    params = parse_parameters("x\nSteps: 4, Sampler: LCM, Seed: 1, Draft decode: maybe")
    with pytest.raises(RequestError, match="Draft decode must be True or False, got 'maybe'"):
        request_from_parameters(params)


def test_our_own_record_keeps_draft_decode_too() -> None:
    from sdstudio.history.record import request_from_dict, request_to_dict

    assert request_from_dict(request_to_dict(FAST)) == FAST
    with pytest.raises(ValueError, match="draft_decode should be bool"):
        request_from_dict({**request_to_dict(FAST), "draft_decode": "yes"})
