"""`train lora` / `train dreambooth` on the command line: mistakes are one line (exit code 2) said before any
model loads, and nothing is written or replaced."""

from __future__ import annotations

import pytest
from PIL import Image

from sdstudio import paths
from sdstudio.cli import main
from sdstudio.train_cli import TrainProgress, default_name, output_path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (10, 20 * i, 30)).save(folder / f"{i}.png")
    return folder


def _fails(capsys, argv: list[str], match: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert match in err, err
    return err


def test_missing_and_empty_folders(home, tmp_path, capsys):
    lora = ["train", "lora", "--trigger", "sks", "--images"]
    _fails(capsys, [*lora, str(tmp_path / "nope")], "no such folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    _fails(capsys, [*lora, str(tmp_path / "empty")], "no images there")
    _fails(capsys, [*lora, str(tmp_path / "empty" / "notes.txt")], "not a folder")


@pytest.mark.parametrize("flags,match", [
    (["--rank", "0"], "--rank 0"), (["--rank", "100000"], "--rank 100000"), (["--steps", "0"], "--steps 0"),
    (["--lr", "nan"], "--lr nan"), (["--alpha", "-2"], "--alpha -2.0"),
    (["--resolution", "100000"], "--resolution 100000"), (["--threads", "-1"], "--threads -1")])
def test_absurd_numbers(home, images, capsys, flags, match):
    _fails(capsys, ["train", "lora", "--images", str(images), "--trigger", "sks", *flags], match)


def test_unreadable_image_is_named_and_nothing_is_written(home, images, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    err = _fails(capsys, ["train", "lora", "--images", str(images), "--trigger", "sks"], "'broken.png'")
    assert "cannot be read as an image" in err
    assert not (paths.home() / "training").exists() and not paths.lora_dir().exists()


def test_an_existing_lora_is_never_replaced(home, images, capsys):
    paths.lora_dir().mkdir(parents=True)
    taken = paths.lora_dir() / "sks_dog.safetensors"
    taken.write_bytes(b"mine")
    _fails(capsys, ["train", "lora", "--images", str(images), "--trigger", "sks", "--class", "dog"], "exists")
    assert taken.read_bytes() == b"mine"


def test_needs_images_and_trigger_or_a_resume_folder(home, images, tmp_path, capsys):
    _fails(capsys, ["train", "lora", "--images", str(images)], "--trigger")
    _fails(capsys, ["train", "lora", "--resume", str(tmp_path)], "not a LoRA training folder")


def test_dreambooth_is_listed_and_refuses(home, capsys):
    _fails(capsys, ["train", "dreambooth", "--images", "x"], "not built yet")


def test_names_and_paths():
    assert default_name("sks", "red dog") == "sks_red_dog"
    assert default_name("../x", "") == "x"
    assert output_path("mine") == paths.lora_dir() / "mine.safetensors"
    assert output_path("/tmp/a/b.safetensors").name == "b.safetensors"


def test_progress_line_has_step_loss_speed_and_eta(capsys):
    import io

    stream = io.StringIO()
    progress = TrainProgress(stream)
    progress(1, 4, 0.25)
    progress(2, 4, 0.125)
    line = stream.getvalue().split("\r")[-1]
    assert line.startswith("step 2/4  loss 0.1250") and "s/step" in line and "ETA 0:00:0" in line
