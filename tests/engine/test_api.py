import hashlib

import pytest
import torch

from sdstudio.engine import api
from sdstudio.engine.api import Engine, list_models, model_hash
from sdstudio.engine.errors import CheckpointError, GenerationError
from sdstudio.engine.request import GenerationRequest

REQ = GenerationRequest(prompt="apple", steps=2, width=64, height=64, sampler="Euler")


def test_model_hash_is_a1111s_sha256_prefix(tiny_path):
    assert model_hash(tiny_path) == hashlib.sha256(tiny_path.read_bytes()).hexdigest()[:10]


def test_generate_loads_once_and_stamps_the_model_hash(tiny_path, monkeypatch):
    engine = Engine()
    loads = []
    real = api.load_checkpoint
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    r1 = engine.generate(REQ.replace(model=str(tiny_path)))
    engine.generate(REQ.replace(model=str(tiny_path), seed=3))
    assert len(loads) == 1
    assert r1.requests[0].model_hash == model_hash(tiny_path)


def test_corrupt_model_fails_cleanly_and_the_engine_stays_usable(tiny_path, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(tiny_path.read_bytes()[:5000])
    engine = Engine()
    with pytest.raises(CheckpointError, match="truncated"):
        engine.generate(REQ.replace(model=str(bad)))
    assert engine.generate(REQ.replace(model=str(tiny_path))).images[0].size == (64, 64)


def test_out_of_memory_becomes_advice(tiny_path, monkeypatch):
    engine = Engine()
    engine.load_model(str(tiny_path))

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(api, "generate", boom)
    with pytest.raises(GenerationError, match="lower the width/height or batch size"):
        engine.generate(REQ.replace(model=str(tiny_path)))


def test_list_models_finds_user_checkpoints(tmp_path, tiny_path):
    (tmp_path / "sub").mkdir()
    target = tmp_path / "sub" / "mine.safetensors"
    target.write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = list_models(tmp_path)
    assert target in found and all(p.suffix == ".safetensors" for p in found)
