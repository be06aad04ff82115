import os

import pytest
from PIL import Image

from sdstudio import selftest
from sdstudio.engine.request import GenerationResult


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    home = tmp_path / "user-home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(home))
    return home


def test_self_test_passes_reports_every_check_and_leaves_user_data_alone(qapp, tiny_path, user_home, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    assert selftest.run(["--self-test", "--model", str(tiny_path), "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name, _ in selftest.CHECKS:
        assert f"ok   {name}" in printed
    assert "self-test passed" in printed
    image = Image.open(out / "self-test.png")
    assert image.size == (64, 64) and "Steps: 2" in image.info["parameters"]
    assert os.environ["SDSTUDIO_HOME"] == str(user_home)
    assert not user_home.exists()


def test_a_missing_model_fails_with_its_path(user_home, tmp_path, capsys):
    missing = tmp_path / "gone.safetensors"
    assert selftest.run(["--self-test", "--model", str(missing)]) == 1
    printed = capsys.readouterr().out
    assert f"FAIL resources: missing from this installation: {missing}" in printed
    assert "self-test passed" not in printed


class _Description:
    default_size = 64


class _BlankEngine:
    """An engine whose images come out flat, as from a broken VAE or NaN latents."""

    def load_model(self, path):
        return _Description()

    def generate(self, request):
        image = Image.new("RGB", (request.width, request.height), (0, 0, 0))
        return GenerationResult(images=[image], requests=[request.replace(model_hash="0123456789")],
                                model_name="blank")


def test_a_blank_image_fails_the_generate_check(monkeypatch, tiny_path, user_home, capsys):
    monkeypatch.setattr("sdstudio.engine.api.Engine", _BlankEngine)
    assert selftest.run(["--self-test", "--model", str(tiny_path)]) == 1
    assert "FAIL generate: the image is blank: pixel std 0.00, 1 colours" in capsys.readouterr().out


def test_bad_arguments_exit_with_2(capsys):
    assert selftest.run(["--self-test", "--steps", "many"]) == 2


def test_pixel_spread_tells_flat_from_textured_images():
    flat = Image.new("RGB", (8, 8), (200, 10, 10))
    textured = Image.frombytes("RGB", (8, 8), bytes(range(192)))
    assert selftest.pixel_spread(flat) == (0.0, 1)
    std, colours = selftest.pixel_spread(textured)
    assert std > selftest.MIN_PIXEL_STD and colours == 64
