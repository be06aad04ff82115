"""Hint images fitted to the job's size by sd-webui-controlnet's three resize modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio import engine as engine_package
from sdstudio.engine.control_hint import Hint, control_map, fit_hint, hint_tensor
from sdstudio.engine.errors import RequestError
from sdstudio.engine.request import ControlUnit


def marked(width: int, height: int) -> Image.Image:
    """Red left column, blue right column, green top row, white centre pixel on grey: where each edge lands shows."""
    a = np.full((height, width, 3), 128, np.uint8)
    a[:, 0] = (255, 0, 0)
    a[:, -1] = (0, 0, 255)
    a[0, 1:-1] = (0, 255, 0)
    a[height // 2, width // 2] = 255
    return Image.fromarray(a)


def test_just_resize_stretches_to_the_target():
    out = fit_hint(marked(40, 20), 80, 80, "Just Resize")
    a = np.asarray(out)
    assert out.size == (80, 80)
    assert a[40, 0, 0] > 200 and a[40, -1, 2] > 200  # both side columns survive: nothing is cut


def test_crop_and_resize_covers_and_cuts_the_long_side_evenly():
    out = fit_hint(marked(40, 20), 64, 64, "Crop and Resize")
    a = np.asarray(out, dtype=np.int16)
    assert out.size == (64, 64)
    # scaled by 64/20 = 3.2 to 128x64, then 32 columns cut from each side: no red/blue edge left
    assert a[32, 0, 0] < 160 and a[32, -1, 2] < 160
    assert a[0, 32, 1] > 200  # the top row is kept


def test_resize_and_fill_fits_inside_on_the_median_border_colour():
    out = fit_hint(marked(40, 20), 64, 64, "Resize and Fill")
    a = np.asarray(out, dtype=np.int16)
    # 40x20 -> 64x32 (k = 1.6), centred at rows 16..47 on the median of the scaled map's border
    assert a[32, 0, 0] > 200 and a[32, -1, 2] > 200  # the sides are kept
    assert (a[:14] == a[0, 0]).all() and (a[50:] == a[0, 0]).all()
    scaled = np.asarray(marked(40, 20).resize((64, 32), Image.Resampling.LANCZOS))
    border = np.concatenate([scaled[0], scaled[-1], scaled[:, 0], scaled[:, -1]])
    assert tuple(a[0, 0]) == tuple(np.median(border, axis=0).astype(np.uint8))


@pytest.mark.parametrize("mode", ["Just Resize", "Crop and Resize", "Resize and Fill"])
def test_same_size_is_untouched_and_odd_sizes_hold(mode):
    image = marked(64, 48)
    assert np.array_equal(np.asarray(fit_hint(image, 64, 48, mode)), np.asarray(image))
    assert fit_hint(marked(3, 997), 72, 40, mode).size == (72, 40)


def test_shrinking_averages_areas():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    out = np.asarray(fit_hint(Image.fromarray(stripes), 32, 32, "Just Resize"))
    assert np.abs(out.astype(int) - 128).max() <= 1  # area average: pairs of columns blend to grey


def test_bad_mode_and_missing_image_are_refused():
    with pytest.raises(RequestError, match="resize mode"):
        fit_hint(marked(8, 8), 8, 8, "Stretch")
    with pytest.raises(RequestError, match="no control image"):
        control_map(ControlUnit("cn.safetensors"))


def test_hint_tensor_is_rgb_in_unit_range_and_prepared_once_per_size():
    unit = ControlUnit("cn.safetensors", image=marked(40, 20).convert("RGBA"), resize_mode="Just Resize")
    hint = Hint(unit)
    a = hint.at(64, 32)
    assert a.shape == (1, 3, 32, 64) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and a[0, 0, 16, 0] == 1.0
    assert hint.at(64, 32) is a and hint.at(128, 64).shape == (1, 3, 64, 128)
    assert torch.equal(hint_tensor(Image.new("RGB", (2, 2), (255, 0, 0)))[0, :, 0, 0], torch.tensor([1.0, 0, 0]))


def test_inpaint_map_marks_the_repaint_area_minus_one_and_fill_repaints():
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[5:10, 5:10, 3] = 0  # transparent: repaint
    image = Image.fromarray(rgba, "RGBA")
    t = hint_tensor(image)
    assert t.shape == (1, 3, 20, 40)
    assert (t[0, :, 7, 7] == -1).all() and torch.allclose(t[0, :, 15, 30], torch.full((3,), 200 / 255))
    filled = fit_hint(image, 64, 64, "Resize and Fill")
    assert filled.mode == "RGBA" and (hint_tensor(filled)[0, :, 0, 0] == -1).all()


def test_preprocessor_table_is_asked_for_named_preprocessors(monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("sdstudio.engine.preprocessors")
    fake.run = lambda name, image, params: calls.append((name, params)) or Image.new("L", image.size, 7)
    monkeypatch.setitem(sys.modules, "sdstudio.engine.preprocessors", fake)
    monkeypatch.setattr(engine_package, "preprocessors", fake, raising=False)  # once the real one is imported
    unit = ControlUnit("cn.safetensors", image=marked(8, 8), preprocessor="canny",
                       preprocessor_params=(("low", 100.0), ("high", 200.0)))
    out = control_map(unit)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (7, 7, 7)
    assert calls == [("canny", {"low": 100.0, "high": 200.0})]
