import hashlib

import pytest
import torch

from sdstudio.engine import api, model_files
from sdstudio.engine.api import Engine
from sdstudio.engine.errors import CheckpointError, GenerationError
from sdstudio.engine.model_files import list_models, model_hash
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


def test_engine_reports_what_it_loaded(tiny_path):
    engine = Engine(device="cpu")
    assert engine.describe() is None
    desc = engine.load_model(str(tiny_path))
    assert engine.describe() == desc and desc.placement == "cpu fp32"


def test_the_model_cache_key_includes_the_dtype(tiny_path, monkeypatch):
    loads = []
    real = api.load_checkpoint
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(k) or real(*a, **k))
    half = Engine(device="cpu", dtype=torch.bfloat16)
    half.load_model(str(tiny_path))
    half.load_model(str(tiny_path))
    assert len(loads) == 1 and loads[0]["device"] == torch.device("cpu") and loads[0]["dtype"] == torch.bfloat16
    assert half.describe().placement.startswith("cpu: UNet bf16")


def test_list_models_method_puts_the_builtin_model_first(tmp_path, monkeypatch):
    (tmp_path / "mine.safetensors").write_bytes(b"x")
    monkeypatch.setattr(model_files.paths, "models_dir", lambda: tmp_path)
    found = Engine(device="cpu").list_models()
    assert found == [str(p) for p in list_models(tmp_path)]
    assert found[-1] == str(tmp_path / "mine.safetensors") and all(isinstance(p, str) for p in found)
    if model_files.builtin_model_path().is_file():
        assert found[0] == str(model_files.builtin_model_path())


def test_a_generation_failure_keeps_its_cause(tiny_path, monkeypatch):
    engine = Engine(device="cpu")
    engine.load_model(str(tiny_path))

    def boom(*a, **k):
        raise RuntimeError("a kernel failed")

    monkeypatch.setattr(api, "generate", boom)
    with pytest.raises(GenerationError, match="a kernel failed") as info:
        engine.generate(REQ.replace(model=str(tiny_path)))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_generate_fills_ti_hashes_and_finds_extra_embedding_folders(tiny_path, tmp_path, home):
    from safetensors.torch import save_file

    from sdstudio.engine.errors import NetworkFileError

    (home / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 32)}, home / "embeddings" / "shiny.safetensors")
    save_file({"emb_params": torch.randn(1, 32)}, tmp_path / "ugly.safetensors")
    save_file({"emb_params": torch.randn(1, 768)}, tmp_path / "sd1.safetensors")
    engine = Engine()
    engine.embedding_dirs = [str(tmp_path)]
    result = engine.generate(REQ.replace(model=str(tiny_path), prompt="apple, shiny", negative_prompt="ugly"))
    digest = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
              for p in (home / "embeddings" / "shiny.safetensors", tmp_path / "ugly.safetensors")}
    assert result.requests[0].ti_hashes == (("shiny", digest["shiny"]), ("ugly", digest["ugly"]))
    assert engine.generate(REQ.replace(model=str(tiny_path))).requests[0].ti_hashes == ()
    assert engine.generate(REQ.replace(model=str(tiny_path), prompt="apple sd1")).requests[0].ti_hashes == ()
    with pytest.raises(NetworkFileError, match="sd1"):  # a plain word stays a word; asked for, it is refused
        engine.generate(REQ.replace(model=str(tiny_path), prompt="apple embedding:sd1"))
    engine.embedding_dirs = []
    with pytest.raises(NetworkFileError, match="'ugly' was not found"):
        engine.generate(REQ.replace(model=str(tiny_path), prompt="embedding:ugly"))


def test_ti_hashes_come_from_the_texts_prompt_editing_encodes(tiny_path, home):
    from safetensors.torch import save_file

    (home / "embeddings").mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 32)}, home / "embeddings" / "shiny.safetensors")
    save_file({"emb_params": torch.randn(1, 32)}, home / "embeddings" / "ugly.safetensors")
    engine = Engine()
    req = REQ.replace(model=str(tiny_path), prompt="[apple:shiny:1] AND pear", negative_prompt="[ugly|blur]")
    assert [name for name, _ in engine.generate(req).requests[0].ti_hashes] == ["shiny", "ugly"]
