"""`generate --from X.png`: init image and mask come back, the model is found by hash/name, flags override."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from sdstudio.cli import main
from sdstudio.engine.model_files import model_hash
from sdstudio.engine.request import GenerationRequest
from sdstudio.generate_cli import build_request
from sdstudio.history.store import HistoryStore
from tests.history.test_file_parameters import a1111_with_hash, ragged_mask, same_pixels, textured
from tests.test_generate_cli import args_for


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_from_restores_init_and_mask_and_flags_still_override(home, mode) -> None:
    store = HistoryStore(home / "outputs")
    request = GenerationRequest(prompt=mode, seed=4, width=24, height=24, strength=0.55, init_image=textured(),
                                mask=ragged_mask() if mode == "inpaint" else None)
    entry = store.add(textured().rotate(90), request, "sd15")
    store.close()
    built = build_request(args_for("--from", str(entry.file), "--steps", "3"))
    assert built.mode == mode and built.steps == 3 and built == request.replace(steps=3)
    assert same_pixels(built.init_image, request.init_image)
    if mode == "inpaint":
        assert same_pixels(built.mask, request.mask)


def test_from_an_inpainting_entry_reproduces_its_pixels(home, tmp_path, tiny_path) -> None:
    from sdstudio.engine.api import Engine

    store = HistoryStore(home / "outputs")
    init = textured(64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 8, 48, 40))
    request = GenerationRequest(prompt="an apple", steps=2, width=64, height=64, seed=13, strength=0.6,
                                init_image=init, mask=mask, model=str(tiny_path))
    [entry] = store.add_result(Engine().generate(request))
    store.close()
    (home / "models").mkdir()
    shutil.copy(tiny_path, home / "models")  # records name the model, not its path: it is found there
    out = tmp_path / "again"
    assert main(["generate", "--from", str(entry.file), "--out", str(out)]) == 0
    [again] = out.glob("*.png")
    with Image.open(again) as rerun, Image.open(entry.file) as original:
        assert np.array_equal(np.asarray(rerun.convert("RGB")), np.asarray(original.convert("RGB")))


def test_from_an_a1111_png_finds_its_model_by_hash(home, tmp_path) -> None:
    models = home / "models" / "sd15"
    models.mkdir(parents=True)
    target = models / "mine.safetensors"
    target.write_bytes(b"a small stand-in checkpoint")
    png = a1111_with_hash(tmp_path / "a.png", "theirs", model_hash(target))
    built = build_request(args_for("--from", str(png)))
    assert built.model == str(target) and built.steps == 12


def test_from_an_a1111_png_whose_model_is_not_here_fails_clearly(home, tmp_path, capsys, monkeypatch) -> None:
    from sdstudio.engine import api

    monkeypatch.setattr(api.Engine, "load_model", lambda *a, **k: pytest.fail("must not run any model"))
    png = a1111_with_hash(tmp_path / "a.png", "anything-v3", "0123456789")
    assert main(["generate", "--from", str(png), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'anything-v3'" in err and "0123456789" in err and "choose a model" in err and err.count("\n") == 1
    # Naming the model on the command line is the way out.
    assert build_request(args_for("--from", str(png), "--model", "/some/model.safetensors")).model == "/some/model.safetensors"


def test_from_an_entry_whose_mask_is_gone_fails_instead_of_running_txt2img(home) -> None:
    store = HistoryStore(home / "outputs")
    request = GenerationRequest(prompt="x", width=24, height=24, init_image=textured(), mask=ragged_mask())
    entry = store.add(textured(), request)
    store.close()
    next(entry.file.parent.glob("*.mask.png")).unlink()
    from sdstudio.engine.errors import RequestError

    with pytest.raises(RequestError, match="mask image .* is missing"):
        build_request(args_for("--from", str(entry.file)))
