"""Model files: A1111's hashes, and finding the checkpoint an image names by hash or name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sdstudio.engine import model_files
from sdstudio.engine.errors import ModelNotFound
from sdstudio.engine.model_files import legacy_model_hash, model_hash, resolve_model


def checkpoint(path: Path, seed: int, size: int = 0x110000 + 100) -> Path:
    """A fake checkpoint, bigger than 1 MiB + 64 KiB so the legacy hash reads real bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest()
    path.write_bytes((block * (size // len(block) + 1))[:size])
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    checkpoint(folder / "anything-v3.safetensors", 1)
    checkpoint(folder / "sub" / "dreamshaper_8.safetensors", 2)
    (folder / "notes.txt").write_text("not a model")
    return folder


def test_hashes_are_a1111s(models: Path) -> None:
    path = models / "anything-v3.safetensors"
    data = path.read_bytes()
    assert model_hash(path) == hashlib.sha256(data).hexdigest()[:10]
    assert legacy_model_hash(path) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_hash_is_cached_by_size_and_mtime_and_redone_when_the_file_changes(models: Path, monkeypatch) -> None:
    path = models / "anything-v3.safetensors"
    first = model_hash(path)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert model_hash(path) == first and opened == []
    checkpoint(path, 9)
    os.utime(path, ns=(1, 1))
    assert model_hash(path) != first and opened == [path]


def test_resolve_by_hash_in_a_subfolder_whatever_the_name(models: Path) -> None:
    target = models / "sub" / "dreamshaper_8.safetensors"
    assert resolve_model("renamed-by-someone", model_hash(target), models) == target
    assert resolve_model("", legacy_model_hash(target), models) == target  # old 8-hex AutoV1 hash


def test_resolve_by_name_when_no_hash_is_given(models: Path) -> None:
    assert resolve_model("dreamshaper_8", "", models) == models / "sub" / "dreamshaper_8.safetensors"


def test_name_matches_are_hashed_first(models: Path, monkeypatch) -> None:
    target = models / "anything-v3.safetensors"
    wanted = model_hash(target)
    hashed = []
    real = model_files._sha256
    monkeypatch.setattr(model_files, "_sha256", lambda p: hashed.append(Path(p)) or real(p))
    assert resolve_model("anything-v3", wanted, models) == target
    assert hashed == [target]


def test_unknown_hash_names_model_hash_and_folder_and_never_falls_back(models: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("anything-v3", "0123456789", models)
    message = str(caught.value)
    assert "'anything-v3'" in message and "0123456789" in message and str(models) in message
    assert "different hash" in message  # a same-named file is there, but it is another model
    assert "\n" not in message and "choose a model" in message


def test_unknown_name_and_no_name_at_all(models: Path) -> None:
    with pytest.raises(ModelNotFound, match="'nope'.*not in"):
        resolve_model("nope", "", models)
    with pytest.raises(ModelNotFound, match="does not say which model"):
        resolve_model("", "", models)


def test_two_files_with_the_same_name_and_no_hash_is_ambiguous(models: Path) -> None:
    checkpoint(models / "other" / "anything-v3.safetensors", 3)
    with pytest.raises(ModelNotFound, match="several checkpoints are named 'anything-v3'"):
        resolve_model("anything-v3", "", models)


def test_upscaler_models_are_listed_by_stem_and_are_not_checkpoints(tmp_path):
    from sdstudio.engine.model_files import folder_models, upscaler_model_names

    for rel in ("ESRGAN/4x-A.pth", "ESRGAN/sub/4x-B.safetensors", "RealESRGAN/4x-A.pt", "SwinIR/x.pth",
                "ESRGAN/notes.txt", "Stable-diffusion/m.safetensors"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert upscaler_model_names(tmp_path) == ["4x-A", "4x-B", "x"]
    assert [p.name for p in folder_models(tmp_path)] == ["m.safetensors"]
