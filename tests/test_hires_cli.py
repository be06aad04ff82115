"""`generate`'s hires flags: they set the request, bad ones are refused before loading, and an image made
with hires fix re-runs from its file to the same pixels."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from sdstudio.cli import build_parser, main
from sdstudio.generate_cli import build_request
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import png_text_chunks


def args_for(*argv: str):
    return build_parser().parse_args(["generate", *argv])


def test_hires_flags_set_the_request():
    req = build_request(args_for("--seed", "1", "--hires-resize", "1024x0", "--hires-upscaler", "Lanczos",
                                 "--hires-steps", "7", "--denoising-strength", "0.35", "--hires-sampler", "Heun",
                                 "--hires-scheduler", "exponential", "--hires-prompt", "sharp", "--hires-negative",
                                 "soft", "--hires-cfg-scale", "3.5"))
    assert (req.hires, req.hires_resize_w, req.hires_resize_h, req.hires_upscaler) == (True, 1024, 0, "Lanczos")
    assert (req.hires_steps, req.strength, req.hires_sampler, req.hires_scheduler) == (7, 0.35, "Heun", "exponential")
    assert (req.hires_prompt, req.hires_negative_prompt, req.hires_cfg_scale) == ("sharp", "soft", 3.5)
    assert build_request(args_for("--seed", "1", "--hires-cfg-scale", "2")).hires  # it alone turns hires on
    scaled = build_request(args_for("--seed", "1", "--hires-scale", "1.5"))
    assert (scaled.hires, scaled.hires_scale, scaled.hires_upscaler) == (True, 1.5, "Latent")
    assert build_request(args_for("--seed", "1", "--hires")).hires
    assert not build_request(args_for("--seed", "1")).hires
    assert not build_request(args_for("--seed", "1", "--hires-scale", "2", "--no-hires")).hires


def test_bad_hires_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        args_for("--hires-scale", "2", "--hires-resize", "64x64")
    with pytest.raises(SystemExit):
        args_for("--hires-resize", "0x0")
    assert "not a size" in capsys.readouterr().err
    assert main(["generate", "--seed", "1", "--hires-scale", "9", "--out", "unused"]) == 2
    assert "hires scale 9.0 is out of range" in capsys.readouterr().err
    assert main(["generate", "--seed", "1", "--hires-cfg-scale", "-2", "--out", "unused"]) == 2
    assert "hires CFG scale -2.0 is out of range" in capsys.readouterr().err


def test_a_hires_image_reruns_from_its_file(home, tmp_path, capsys, tiny_path):
    out = tmp_path / "hires"
    assert main(["generate", "--model", str(tiny_path), "--prompt", "fox", "--steps", "2", "--seed", "3",
                 "--width", "64", "--height", "48", "--hires-scale", "1.5", "--hires-upscaler", "Nearest",
                 "--hires-steps", "2", "--denoising-strength", "0.4", "--hires-prompt", "fox, sharp",
                 "--hires-cfg-scale", "2.5", "--out", str(out)]) == 0
    [made] = out.glob("*.png")
    with open(made, "rb") as f:
        params = parse_parameters(png_text_chunks(f)["parameters"])
    assert (params["Size"], params["Hires upscale"], params["Hires upscaler"]) == ("64x48", "1.5", "Nearest")
    assert (params["Hires steps"], params["Denoising strength"], params["Hires prompt"]) == ("2", "0.4", "fox, sharp")
    assert params["Hires CFG Scale"] == "2.5"
    again = tmp_path / "again"
    assert main(["generate", "--model", str(tiny_path), "--from", str(made), "--out", str(again)]) == 0
    [rerun] = again.glob("*.png")
    with Image.open(made) as a, Image.open(rerun) as b:
        assert a.size == (96, 72)
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_a_hires_checkpoint_by_name_is_written_and_the_rerun_finds_it(home, tmp_path, capsys):
    from sdstudio.engine.model_files import model_hash
    from tests.tiny_checkpoint import write_tiny_checkpoint

    (home / "models").mkdir(parents=True)
    first = write_tiny_checkpoint(home / "models" / "first.safetensors", seed=0)
    second = write_tiny_checkpoint(home / "models" / "second.safetensors", seed=1)
    common = ["--prompt", "fox", "--steps", "2", "--seed", "3", "--width", "64", "--height", "64",
              "--hires-scale", "1.5", "--denoising-strength", "0.5"]
    out, same = tmp_path / "hires", tmp_path / "same"
    assert main(["generate", "--model", str(first), *common, "--hires-checkpoint", "second",
                 "--out", str(out)]) == 0
    assert main(["generate", "--model", str(first), *common, "--out", str(same)]) == 0
    [made], [plain] = out.glob("*.png"), same.glob("*.png")
    with open(made, "rb") as f:
        params = parse_parameters(png_text_chunks(f)["parameters"])
    assert params["Hires checkpoint"] == f"second [{model_hash(second)}]" and params["Model"] == "first"
    again = tmp_path / "again"
    assert main(["generate", "--from", str(made), "--out", str(again)]) == 0
    [rerun] = again.glob("*.png")
    with Image.open(made) as a, Image.open(rerun) as b, Image.open(plain) as c:
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None
        assert ImageChops.difference(a.convert("RGB"), c.convert("RGB")).getbbox() is not None
    assert main(["generate", "--model", str(first), *common, "--hires-checkpoint", "nowhere", "--out",
                 str(out)]) != 0
    assert "nowhere" in capsys.readouterr().err
