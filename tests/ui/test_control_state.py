"""Control layers as plain data: the ControlUnits they make, the errors that stop a job, a re-run's layers."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import CONTROL_MODES, ControlUnit
from sdstudio.ui.control_state import (
    FILE,
    FROM_HISTORY,
    PAINT,
    ControlLayer,
    build_units,
    layers_from_units,
    preprocessor_choices,
    run_preprocessor,
    scribble_image,
)
from sdstudio.ui.prompt_state import PromptState, build_requests
from tests.ui import preprocessor_spy


def _textured(size=(24, 16), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8))


def _painting(h=16, w=24) -> np.ndarray:
    pixels = np.zeros((h, w), np.uint8)
    pixels[5, 2:20] = 255
    pixels[2:12, 7] = 180
    return pixels


def test_a_painted_layer_is_white_lines_on_black_with_no_preprocessor():
    layer = ControlLayer(source=PAINT, strength=0.8, start=0.1, end=0.9, mode=CONTROL_MODES[2])
    layer.choose_model("/m/control_v11p_sd15_canny.safetensors")
    assert layer.preprocessor == "canny"  # paired, but a painting is the map itself
    layer.preprocessor_params = (("low", 100.0),)
    [unit] = build_units([layer], [_painting()])
    assert unit.preprocessor == "none" and unit.preprocessor_params == ()
    pixels = np.asarray(unit.image)
    assert unit.image.mode == "RGB" and pixels.shape == (16, 24, 3)
    assert (pixels[..., 0] == _painting()).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert (unit.model, unit.strength, unit.start, unit.end, unit.mode) == (
        "/m/control_v11p_sd15_canny.safetensors", 0.8, 0.1, 0.9, "ControlNet is more important")


def test_image_layers_keep_their_preprocessor_and_a_copy_of_their_image():
    image = _textured()
    layer = ControlLayer(model="/m/c.safetensors", source=FILE, image=image, preprocessor="canny",
                         preprocessor_params=(("low", 50.0), ("high", 150.0)), resize_mode="Resize and Fill")
    [unit] = build_units([layer], [None])
    assert unit.preprocessor == "canny" and unit.preprocessor_params == (("low", 50.0), ("high", 150.0))
    assert unit.image is not image and np.array_equal(np.asarray(unit.image), np.asarray(image))
    assert unit.resize_mode == "Resize and Fill"


def test_disabled_layers_are_left_out_and_order_is_kept():
    a = ControlLayer(model="/m/a.safetensors", source=FILE, image=_textured(seed=1))
    b = ControlLayer(model="/m/b.safetensors", source=FILE, image=_textured(seed=2), enabled=False)
    c = ControlLayer(model="/m/c.safetensors", source=PAINT)
    units = build_units([a, b, c], [None, None, _painting()])
    assert [u.model for u in units] == ["/m/a.safetensors", "/m/c.safetensors"]
    assert build_units([b], [None]) == ()


@pytest.mark.parametrize(("layer", "painting", "said"), [
    (ControlLayer(source=PAINT), _painting(), "no ControlNet model"),
    (ControlLayer(model="/m/a.safetensors", source=PAINT), np.zeros((8, 8), np.uint8), "nothing painted"),
    (ControlLayer(model="/m/a.safetensors", source=PAINT), None, "nothing painted"),
    (ControlLayer(model="/m/a.safetensors", source=FILE), None, "open an image file"),
    (ControlLayer(model="/m/a.safetensors", source="canvas"), None, "use the canvas image"),
    (ControlLayer(model="/m/a.safetensors", source=PAINT, start=0.6, end=0.4), _painting(), "before its end"),
    (ControlLayer(model="/m/a.safetensors", source=PAINT, mode="Prompt"), _painting(),
     "unknown control setting"),
])
def test_an_enabled_layer_that_cannot_be_used_stops_the_job_saying_what_to_do(layer, painting, said):
    with pytest.raises(RequestError, match=said):
        build_units([layer], [painting])


def test_scribble_image_refuses_an_empty_array():
    with pytest.raises(RequestError):
        scribble_image(np.zeros((0, 0), np.uint8))


def test_a_re_runs_units_come_back_as_layers_that_make_the_same_units():
    units = (ControlUnit(model="/m/a.safetensors", image=_textured(seed=3), preprocessor="canny",
                         preprocessor_params=(("low", 10.0),), strength=0.55, start=0.2, end=0.7,
                         mode=CONTROL_MODES[1], resize_mode="Just Resize"),
             ControlUnit(model="/m/b.safetensors", image=_textured(seed=4)))
    layers = layers_from_units(units)
    assert all(layer.source == FILE and layer.image_name == FROM_HISTORY for layer in layers)
    again = build_units(layers, [None, None])
    assert again == units  # images are compared apart (compare=False)
    for a, b in zip(again, units, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_requests_carry_the_units_each_with_its_own_copy_of_the_image():
    unit = ControlUnit(model="/m/a.safetensors", image=_textured())
    state = PromptState(prompt="x", seed=5, batch_count=3)
    requests = build_requests(state, rng=random.Random(0), units=(unit,))
    assert [r.control_units for r in requests] == [(unit,)] * 3
    images = [r.control_units[0].image for r in requests]
    assert len({id(i) for i in images} - {id(unit.image)}) == 3
    assert build_requests(state, rng=random.Random(0))[0].control_units == ()


def test_preprocessors_come_from_the_engine_table_and_run_with_their_settings(monkeypatch):
    seen = preprocessor_spy.install(monkeypatch)
    choices = {name: why for name, _label, why in preprocessor_choices()}
    assert next(iter(choices)) == "none" and choices["canny"] == "" and choices["invert"] == ""
    assert "no annotator file" in choices["depth_midas"]  # listed, with the reason, not hidden
    image = _textured()
    inverted = run_preprocessor("invert", image, ())
    assert np.array_equal(np.asarray(inverted), 255 - np.asarray(image))
    run_preprocessor("canny", image, (("low", 50), ("high", 120)))
    assert seen.calls[1][:3] == ("canny", (24, 16), (("low", 50), ("high", 120)))
    with pytest.raises(RequestError, match="no annotator file"):
        run_preprocessor("depth_midas", image, ())


def test_choosing_a_preprocessor_sets_its_settings_to_their_defaults():
    layer = ControlLayer()
    layer.choose_model("/m/control_v11p_sd15_canny.safetensors")
    assert layer.preprocessor == "canny"
    assert dict(layer.preprocessor_params) == {"resolution": 512, "low": 100, "high": 200, "sigma": 0.0}
    layer.preprocessor_params = (("low", 10),)
    layer.choose_preprocessor("canny")  # the same one: the user's values stay
    assert layer.preprocessor_params == (("low", 10),)
    layer.choose_model("/m/control_v11p_sd15_lineart.safetensors")
    assert layer.preprocessor != "canny" and "low" not in dict(layer.preprocessor_params)
    layer.choose_model("/m/some_unknown_net.safetensors")
    assert (layer.preprocessor, layer.preprocessor_params) == ("none", ())
