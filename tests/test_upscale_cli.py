"""`python -m sdstudio upscale`: Lanczos and ESRGAN model files by name, the model's own factor by default,
SD upscale in tiles with the image's own parameters, and bad files / names refused with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdstudio.cli import main
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import png_text_chunks
from tests.engine.esrgan_files import old_esrgan, old_state


def _picture(path: Path, w=24, h=16) -> Path:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(path)
    return path


def _params(path: Path) -> dict[str, str]:
    return parse_parameters(_text(path))


def _text(path: Path) -> str:
    with open(path, "rb") as f:
        return png_text_chunks(f)["parameters"]


@pytest.fixture
def esrgan(home):
    folder = home / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    torch.save(old_state(old_esrgan(scale=4, blocks=1, seed=2)), folder / "4x-Tiny.pth")
    return folder


def test_lanczos_by_a_factor(home, tmp_path, capsys):
    src = _picture(tmp_path / "in.png")
    assert main(["upscale", str(src), "--upscaler", "Lanczos", "--scale", "2.5", "--out", str(tmp_path / "o")]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert Image.open(out).size == (60, 40)
    params = _params(out)
    assert params["Postprocess upscaler"] == "Lanczos" and params["Postprocess upscale by"] == "2.5"


def test_model_file_by_name_upscales_by_its_own_factor(esrgan, tmp_path, capsys):
    src = _picture(tmp_path / "in.png")
    out_dir = tmp_path / "o"
    assert main(["upscale", str(src), "--upscaler", "4x-Tiny", "--out", str(out_dir)]) == 0
    first = Path(capsys.readouterr().out.strip())
    assert Image.open(first).size == (96, 64)
    assert main(["upscale", str(src), "--upscaler", "4x-tiny", "--scale", "2", "--out", str(out_dir)]) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second != first and Image.open(second).size == (48, 32)
    # Any spelling of the name, or a path to the file: the model's own factor again.
    for name in ("4X-TINY", str(esrgan / "4x-Tiny.pth")):
        assert main(["upscale", str(src), "--upscaler", name, "--out", str(out_dir)]) == 0
        assert Image.open(capsys.readouterr().out.strip()).size == (96, 64)
    # The model's picture, not Lanczos's: the random network changes the colours.
    lanczos = Image.open(src).resize((96, 64), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(Image.open(first), dtype=int) - np.asarray(lanczos, dtype=int)).mean() > 5


def test_bad_model_file_and_unknown_names_are_refused(esrgan, tmp_path, capsys):
    (esrgan / "broken.pth").write_bytes(b"\x80\x02garbage" * 20)
    src = _picture(tmp_path / "in.png")
    assert main(["upscale", str(src), "--upscaler", "broken", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.pth" in err and "weights-only" in err and len(err.strip().splitlines()) == 1
    assert main(["upscale", str(src), "--upscaler", "4x-Nothing", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "4x-Nothing" in err and "4x-Tiny" in err and "Lanczos" in err
    assert main(["upscale", str(src), "--upscaler", "Latent", "--out", str(tmp_path / "o")]) == 2
    assert "latents" in capsys.readouterr().err
    assert main(["upscale", str(src), "--upscaler", "Lanczos", "--scale", "20", "--out", str(tmp_path / "o")]) == 2
    assert main(["upscale", str(tmp_path / "none.png"), "--upscaler", "Lanczos", "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_sd_upscale_refines_in_tiles_with_the_images_own_parameters(home, tmp_path, capsys, tiny_path):
    gen = tmp_path / "gen"
    assert main(["generate", "--model", str(tiny_path), "--prompt", "a fox", "--steps", "2", "--seed", "5",
                 "--width", "64", "--height", "64", "--out", str(gen)]) == 0
    src = Path(capsys.readouterr().out.strip())
    out_dir = tmp_path / "o"
    assert main(["upscale", str(src), "--upscaler", "Lanczos", "--scale", "2", "--out", str(out_dir)]) == 0
    plain = Path(capsys.readouterr().out.strip())
    assert main(["upscale", str(src), "--upscaler", "Lanczos", "--scale", "2", "--sd-strength", "0.5",
                 "--model", str(tiny_path), "--out", str(out_dir)]) == 0
    captured = capsys.readouterr()
    refined = Path(captured.out.strip())
    assert "tile 9/9" in captured.err  # 128 px in 64 px tiles with 64 px overlap... evenly spread: 3 × 3
    assert Image.open(refined).size == (128, 128)
    diff = np.abs(np.asarray(Image.open(refined), dtype=int) - np.asarray(Image.open(plain), dtype=int))
    assert diff.mean() > 1  # the SD pass changed the picture
    params = _params(refined)
    assert params["SD upscale strength"] == "0.5" and params["SD upscale tile"] == "64x64"
    assert _text(refined).startswith("a fox") and params["Seed"] == "5"


def test_sd_upscale_needs_a_prompt_for_an_image_without_parameters(home, tmp_path, capsys):
    src = _picture(tmp_path / "in.png")
    assert main(["upscale", str(src), "--upscaler", "Lanczos", "--sd-strength", "0.3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--prompt" in capsys.readouterr().err
