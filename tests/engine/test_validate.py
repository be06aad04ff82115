"""Request checks that run before any model is known, and the size checks that need the model's factor."""

import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.validate import check_side, validate, validate_settings


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"prompt": "caf\udce9 au lait"}, "prompt is not valid text \\(character 4"),
        ({"negative_prompt": "ok \udcff"}, "negative prompt is not valid text"),
        ({"prompt": b"bytes"}, "prompt must be text, not bytes"),
        ({"steps": 0}, "steps 0 is out of range"),
        ({"seed": -1}, "seed -1 is out of range"),
        ({"subseed": -1, "subseed_strength": 0.5}, "variation seed -1 is out of range"),
        ({"subseed": 2**32}, "variation seed 4294967296 is out of range"),
        ({"subseed_strength": 1.01}, "variation strength 1.01 is out of range"),
        ({"subseed_strength": -0.1}, "variation strength -0.1 is out of range"),
        ({"subseed_strength": float("nan")}, "variation strength nan is out of range"),
        ({"seed_resize_from_w": 512}, "seed resize height 0 is out of range"),
        ({"seed_resize_from_w": 4, "seed_resize_from_h": 64}, "seed resize width 4 is out of range"),
        ({"seed_resize_from_w": 64, "seed_resize_from_h": 5000}, "seed resize height 5000 is out of range"),
    ],
)
def test_settings_refused_without_a_model(changes, message):
    with pytest.raises(RequestError, match=message):
        validate_settings(GenerationRequest(**changes))
    with pytest.raises(RequestError, match=message):
        validate(GenerationRequest(**changes))


def test_valid_text_passes_as_given():
    req = validate_settings(GenerationRequest(prompt="café, 東京, emoji 🍎, (red:1.2)"))
    assert req.prompt == "café, 東京, emoji 🍎, (red:1.2)"


def test_sides():
    check_side("width", 60, multiple=1)  # before the model is known only the range counts
    with pytest.raises(RequestError, match="width 60 is not a multiple of 8"):
        check_side("width", 60, multiple=8)
    for bad in (0, -64, 4104, True, 64.0):
        with pytest.raises(RequestError, match="out of range"):
            check_side("height", bad, multiple=1)


def test_a_prompt_too_long_for_an_image_text_chunk_is_refused_before_any_work():
    from sdstudio.engine.validate import MAX_TEXT_BYTES

    ok = GenerationRequest(prompt="a" * MAX_TEXT_BYTES)
    validate(ok)
    with pytest.raises(RequestError, match="negative prompt is 256 KiB long; the limit is 256 KiB"):
        validate(ok.replace(prompt="fox", negative_prompt="é" * (MAX_TEXT_BYTES // 2 + 1)))


def test_variation_settings_in_range_pass():
    req = GenerationRequest(subseed=2**32 - 1, subseed_strength=1.0, seed_resize_from_w=8, seed_resize_from_h=4096)
    assert validate_settings(req).subseed_strength == 1.0
    assert req.seed_resize_from == (8, 4096) and GenerationRequest().seed_resize_from is None


@pytest.mark.parametrize("changes, message", [
    ({"blend_strength": 1.5, "blend_prompt": "x"}, "blend strength 1.5 is out of range"),
    ({"blend_strength": -0.1}, "blend strength -0.1 is out of range"),
    ({"blend_strength": 0.5, "blend_prompt": "<lora:x:1>"}, "cannot hold <lora:"),
    ({"blend_strength": 0.5, "blend_prompt": "[a:b:3]"}, "cannot use prompt editing, alternation or AND"),
    ({"blend_strength": 0.5, "blend_prompt": "a AND b"}, "cannot use prompt editing, alternation or AND"),
])
def test_a_bad_blend_is_refused_before_any_work(changes, message):
    with pytest.raises(RequestError, match=message):
        validate(GenerationRequest(prompt="a cat").replace(**changes))


def test_a_plain_blend_passes():
    assert validate(GenerationRequest(prompt="a cat", blend_prompt="(a dog:1.2), red", blend_strength=0.5))
