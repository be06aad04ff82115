import numpy as np
from PIL import Image

from sdstudio.cli import main
from sdstudio.history.png import read_png_parameters


def test_generate_writes_pngs_with_parameters_and_from_reproduces_them(tmp_path, capsys, tiny_path):
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_path), "--prompt", "red apple, shiny", "--negative", "dull",
            "--steps", "3", "--width", "64", "--height", "64", "--seed", "42", "--sampler", "DPM++ 2M",
            "--scheduler", "karras", "--batch", "2", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and "3/3" in captured.err
    text, ours = read_png_parameters(files[1])
    assert text.startswith("red apple, shiny\nNegative prompt: dull\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras")
    assert "Seed: 43" in text and ours["request"]["seed"] == 43

    assert main(["params", str(files[1])]) == 0
    assert "Seed: 43" in capsys.readouterr().out

    again = tmp_path / "again"
    assert main(["generate", "--from", str(files[1]), "--model", str(tiny_path), "--out", str(again)]) == 0
    rerun = next(again.glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(rerun)), np.asarray(Image.open(files[1])))


def test_generate_bad_input_exits_non_zero_with_one_line(tmp_path, capsys, tiny_path):
    assert main(["generate", "--model", str(tiny_path), "--width", "65", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: width 65 is not a multiple of 8") and err.count("\n") == 1


def test_generate_missing_model_file(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_params_of_image_without_parameters(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert main(["params", str(tmp_path / "plain.png")]) == 2
    assert "no generation parameters" in capsys.readouterr().err


def test_generate_device_flag(tmp_path, capsys, tiny_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["generate", "--model", str(tiny_path), "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_path), "--device", "cpu", "--steps", "1", "--out", str(tmp_path)]) == 0
    assert "runs on cpu fp32" in capsys.readouterr().err
