"""`generate --tiled-vae on|off|auto`: into the request, and the untiled decode's memory check before loading."""

from types import SimpleNamespace

import pytest

from sdstudio import generate_cli
from sdstudio.cli import build_parser
from sdstudio.engine.errors import RequestError
from sdstudio.generate_cli import build_request, fit_to_model


def args_for(*argv: str):
    return build_parser().parse_args(["generate", *argv])


def test_tiled_vae_flag_reaches_the_request_and_defaults_to_auto():
    assert build_request(args_for("--prompt", "x", "--seed", "1")).tiled_vae == "auto"
    for mode in ("on", "off", "auto"):
        assert build_request(args_for("--prompt", "x", "--seed", "1", "--tiled-vae", mode)).tiled_vae == mode
    with pytest.raises(SystemExit):
        args_for("--tiled-vae", "maybe")


SD15 = SimpleNamespace(default_size=512, vae_downscale=8)


def test_an_untiled_decode_too_big_for_the_machine_is_refused_with_what_would_fit(monkeypatch):
    monkeypatch.setattr(generate_cli, "physical_memory", lambda: 16 << 30)
    args = args_for("--prompt", "x", "--seed", "1", "--width", "2048", "--height", "2048", "--tiled-vae", "off")
    with pytest.raises(RequestError, match=r"untiled VAE decode of 2048x2048 .* at most about \d+x\d+"):
        fit_to_model(build_request(args), args, SD15)
    auto = args_for("--prompt", "x", "--seed", "1", "--width", "2048", "--height", "2048")
    assert fit_to_model(build_request(auto), auto, SD15).width == 2048  # tiles instead: it fits
