"""The upscaler registry: latent modes as A1111's, pixel upscalers and A1111's resize rule, model sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.engine import upscale
from sdstudio.engine.errors import RequestError
from sdstudio.engine.names import LATENT_UPSCALERS
from sdstudio.engine.upscale import (
    PixelUpscaler,
    check_upscaler,
    is_latent,
    register_source,
    upscale_image,
    upscale_latent,
    upscaler_names,
)
from tests.engine.test_images import textured


@pytest.mark.parametrize("name", list(LATENT_UPSCALERS))
def test_latent_upscalers_are_interpolate_with_a1111s_modes(name):
    x = torch.randn(2, 4, 7, 9, generator=torch.Generator().manual_seed(3))
    mode, antialias = {"Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
                       "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
                       "Latent (nearest)": ("nearest", False),
                       "Latent (nearest-exact)": ("nearest-exact", False)}[name]
    got = upscale_latent(name, x, 14, 20)
    assert got.shape == (2, 4, 14, 20)
    assert torch.equal(got, torch.nn.functional.interpolate(x, size=(14, 20), mode=mode, antialias=antialias))
    assert is_latent(name)


def test_the_latent_modes_differ_from_each_other():
    """At a factor off the integers (antialiasing changes only a downscale, so those pairs are left out)."""
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    names = ["Latent", "Latent (bicubic)", "Latent (nearest)", "Latent (nearest-exact)"]
    outs = [upscale_latent(name, x, 13, 13) for name in names]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.equal(outs[i], outs[j])


@pytest.mark.parametrize("name,resample", [("Lanczos", Image.Resampling.LANCZOS),
                                           ("Nearest", Image.Resampling.NEAREST)])
def test_pixel_upscalers_at_an_exact_factor_are_one_pil_resize(name, resample):
    image = textured(40, 24)
    got = upscale_image(name, image, 80, 48)
    assert np.array_equal(np.asarray(got), np.asarray(image.resize((80, 48), resample=resample)))
    assert not is_latent(name)


def test_a_factor_off_the_grid_ends_with_lanczos_to_the_asked_size():
    """A1111: step to int(w * scale), Lanczos to the size rounded down to 8, then Lanczos to the target."""
    image = textured(30, 20)
    got = upscale_image("Nearest", image, 75, 50)
    near = image.resize((75, 50), Image.Resampling.NEAREST)
    expected = near.resize((72, 48), Image.Resampling.LANCZOS).resize((75, 50), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_a_model_upscaler_is_applied_until_the_target_is_reached(monkeypatch):
    """A x2 model asked for x4 runs twice (at most three times, A1111), then fits the size."""
    calls = []

    def double(image, scale):
        calls.append(image.size)
        return image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)

    class Source:
        def names(self):
            return ["2x_Test"]

        def get(self, name):
            return PixelUpscaler(name, double) if name == "2x_Test" else None

    monkeypatch.setattr(upscale, "_SOURCES", [])
    register_source(source := Source())
    register_source(source)
    assert upscaler_names().count("2x_Test") == 1 and upscaler_names()[:2] == ["Latent", "Latent (antialiased)"]
    image = textured(16, 16)
    got = upscale_image("2x_Test", image, 64, 64)
    assert calls == [(16, 16), (32, 32)] and got.size == (64, 64)
    check_upscaler("2x_Test")
    calls.clear()
    assert upscale_image("2x_Test", image, 16, 16).size == (16, 16) and calls == []  # no growth, no model


def test_an_unknown_upscaler_is_refused_by_name():
    with pytest.raises(RequestError, match="no upscaler named .*ESRGAN_4x.*Latent, .*Lanczos, Nearest"):
        check_upscaler("ESRGAN_4x")
