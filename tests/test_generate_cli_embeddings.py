"""`generate` with textual-inversion embeddings: found in $SDSTUDIO_HOME/embeddings and --embeddings-dir,
recorded as A1111's "TI hashes", the picture changed by their vectors; a mismatched one refused in one line."""

from __future__ import annotations

import hashlib

import torch
from PIL import Image
from safetensors.torch import save_file

from sdstudio import paths
from sdstudio.cli import main
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import read_image_text

BASE = ["generate", "--steps", "1", "--seed", "5", "--width", "64", "--height", "64", "--sampler", "Euler"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*BASE, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def short_hash(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_embeddings_are_used_and_recorded_as_ti_hashes(home, tmp_path, capsys, tiny_path):
    paths.embeddings_dir().mkdir(parents=True)
    g = torch.Generator().manual_seed(3)
    shiny = paths.embeddings_dir() / "shiny.safetensors"
    save_file({"emb_params": torch.randn(3, 32, generator=g) * 3}, shiny)
    extra = tmp_path / "comfy"
    extra.mkdir()
    ugly = extra / "ugly.pt"
    torch.save({"string_to_param": {"*": torch.randn(1, 32, generator=g)}, "name": "ugly"}, ugly)
    code, _, err = run(capsys, "--model", str(tiny_path), "--prompt", "apple, (shiny:1.2)", "--negative",
                       "embedding:ugly", "--embeddings-dir", str(extra), "--out", str(tmp_path / "a"))
    assert code == 0, err
    [png] = (tmp_path / "a").glob("*.png")
    params = parse_parameters(read_image_text(png).parameters)
    assert params["TI hashes"] == f"shiny: {short_hash(shiny)}, ugly: {short_hash(ugly)}"
    save_file({"emb_params": torch.randn(3, 32, generator=g) * 3}, shiny)  # other vectors, same name
    code, _, err = run(capsys, "--model", str(tiny_path), "--prompt", "apple, (shiny:1.2)", "--negative",
                       "embedding:ugly", "--embeddings-dir", str(extra), "--out", str(tmp_path / "b"))
    assert code == 0, err
    [changed] = (tmp_path / "b").glob("*.png")
    hashes = parse_parameters(read_image_text(changed).parameters)["TI hashes"]
    assert hashes.startswith(f"shiny: {short_hash(shiny)}")
    with Image.open(png) as a, Image.open(changed) as b:
        assert a.tobytes() != b.tobytes()  # the vectors made the difference
    code, _, err = run(capsys, "--model", str(tiny_path), "--prompt", "apple", "--out", str(tmp_path / "c"))
    [plain] = (tmp_path / "c").glob("*.png")
    assert "TI hashes" not in parse_parameters(read_image_text(plain).parameters)


def test_an_embedding_for_another_model_is_refused_in_one_line(home, tmp_path, capsys, tiny_path):
    paths.embeddings_dir().mkdir(parents=True)
    xl = paths.embeddings_dir() / "xl.safetensors"
    save_file({"clip_l": torch.ones(1, 768), "clip_g": torch.ones(1, 1280)}, xl)
    code, _, err = run(capsys, "--model", str(tiny_path), "--prompt", "apple xl", "--out", str(tmp_path / "a"))
    assert code == 2
    [error] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "768 + 1280 (SDXL)" in error and "are 32" in error
    assert not list((tmp_path / "a").glob("*.png"))
