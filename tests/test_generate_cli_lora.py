"""`generate` with `<lora:…>` tags: files found in $SDSTUDIO_HOME/models/Lora and --lora-dir folders, bad
files refused with one line (exit 2, as every other refusal), `--from` naming a LoRA that is not here."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from sdstudio import paths
from sdstudio.cli import main
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.network_files import lora_short_hash
from sdstudio.history.parameters import parse_parameters
from sdstudio.history.png import read_image_text
from tests.engine.lora_files import lora_tensors, tiny_family_checkpoint, write_lora
from tests.test_generate_cli import args_for

BASE = ["generate", "--steps", "1", "--seed", "5", "--width", "64", "--height", "64", "--sampler", "Euler"]


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    path = tiny_family_checkpoint(tmp_path_factory.mktemp("sd1") / "sd1.safetensors", "sd1", seed=1)
    tensors, _ = lora_tensors(load_checkpoint(path), "kohya_ldm", rank=4, alpha=3.0, seed=2)
    return path, tensors


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*BASE, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def parameters(png) -> dict[str, str]:
    return parse_parameters(read_image_text(png).parameters)


def test_a_lora_in_the_data_folder_is_applied_and_recorded(home, tmp_path, capsys, sd1):
    paths.lora_dir().mkdir(parents=True)
    lora = write_lora(paths.lora_dir() / "ink.safetensors", sd1[1])
    code, out, err = run(capsys, "--model", str(sd1[0]), "--prompt", "<lora:ink:0.8> apple", "--out",
                         str(tmp_path / "a"))
    assert code == 0, err
    [png] = (tmp_path / "a").glob("*.png")
    params = parameters(png)
    assert params["Prompt"] == "<lora:ink:0.8> apple"
    assert params["Lora hashes"] == f"ink: {lora_short_hash(lora)}"
    code, _, err = run(capsys, "--model", str(sd1[0]), "--prompt", "<lora:ink:0> apple", "--out", str(tmp_path / "b"))
    [zero] = (tmp_path / "b").glob("*.png")
    with Image.open(png) as a, Image.open(zero) as b:
        assert a.tobytes() != b.tobytes()  # the LoRA made a difference


def test_lora_dir_adds_folders_in_order(home, tmp_path, capsys, sd1):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    found = write_lora(second / "far.safetensors", sd1[1])
    code, _, err = run(capsys, "--model", str(sd1[0]), "--prompt", "<lora:far:0.5> apple", "--out", str(tmp_path))
    assert code == 2 and "LoRA 'far' is not in" in err and str(paths.lora_dir()) in err
    code, _, err = run(capsys, "--model", str(sd1[0]), "--prompt", "<lora:far:0.5> apple", "--out", str(tmp_path),
                       "--lora-dir", str(first), "--lora-dir", str(second), "--embeddings-dir", str(first))
    assert code == 0, err
    [png] = tmp_path.glob("*.png")
    assert parameters(png)["Lora hashes"] == f"far: {lora_short_hash(found)}"
    args = args_for("--lora-dir", "a", "--lora-dir", "b", "--embeddings-dir", "c")
    assert (args.lora_dir, args.embeddings_dir) == (["a", "b"], ["c"])


def _bad_files(folder, sd1) -> dict[str, str]:
    """name -> what its one-line refusal says."""
    good = write_lora(folder / "good.safetensors", sd1[1])
    raw = good.read_bytes()
    (folder / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    write_lora(folder / "xl.safetensors", sd1[1], {"ss_base_model_version": "sdxl_base_v1-0"})
    write_lora(folder / "nomatch.safetensors", {"lora_unet_nowhere.lora_down.weight": torch.ones(2, 8),
                                                "lora_unet_nowhere.lora_up.weight": torch.ones(8, 2)})
    torch.save({"lora_unet_x.lora_down.weight": torch.ones(2, 2), "hook": print}, folder / "evil.pt")
    return {"truncated": "truncated", "xl": "SDXL", "nomatch": "2 of 2 keys were not applied",
            "evil": "evil.pt"}


def test_bad_lora_files_get_one_line_and_the_job_does_not_run(home, tmp_path, capsys, sd1):
    paths.lora_dir().mkdir(parents=True)
    for name, said in _bad_files(paths.lora_dir(), sd1).items():
        out = tmp_path / name
        code, printed, err = run(capsys, "--model", str(sd1[0]), "--prompt", f"<lora:good:1> <lora:{name}:1> apple",
                                 "--out", str(out))
        assert code == 2, (name, err)
        *before, last = err.strip().splitlines()  # before: at most the "model: …" line
        assert said in last and last.startswith("error: ") and all(not x.startswith("error") for x in before), err
        assert not list(out.glob("*.png")) and printed == ""


def test_a_bad_tag_is_refused_before_the_model_loads(home, tmp_path, capsys, monkeypatch):
    from sdstudio.engine import api

    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run(capsys, "--prompt", "<lora:x:abc> apple", "--out", str(tmp_path))
    assert code == 2 and "'abc' is not a number" in err
    code, _, err = run(capsys, "--prompt", "<lora:gone:1> apple", "--out", str(tmp_path))
    assert code == 2 and "LoRA 'gone' is not in" in err


def test_from_an_image_whose_lora_is_missing_names_it_and_its_hash(home, tmp_path, capsys, sd1):
    paths.lora_dir().mkdir(parents=True)
    lora = write_lora(paths.lora_dir() / "ink.safetensors", sd1[1])
    (home / "models").mkdir(exist_ok=True)
    shutil.copy(sd1[0], home / "models")
    code, _, err = run(capsys, "--model", str(home / "models" / "sd1.safetensors"), "--prompt", "<lora:ink:0.6> apple")
    assert code == 0, err
    [png] = paths.outputs_dir().rglob("*.png")
    short = lora_short_hash(lora)
    # Renamed: found by its hash, same pixels.
    moved = lora.rename(paths.lora_dir() / "ink-renamed.safetensors")
    code, _, err = main(["generate", "--from", str(png), "--out", str(tmp_path / "again")]), *capsys.readouterr()
    assert code == 0, err
    [again] = (tmp_path / "again").glob("*.png")
    with Image.open(png) as a, Image.open(again) as b:
        assert a.tobytes() == b.tobytes()
    moved.unlink()
    code = main(["generate", "--from", str(png), "--out", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert code == 2 and f"LoRA 'ink' (hash {short}) is not in" in err and len(err.strip().splitlines()) == 1
