import hashlib

import pytest
import torch

from sdstudio.engine import api, model_files, passes
from sdstudio.engine.api import Engine
from sdstudio.engine.errors import CheckpointError, GenerationError, RequestError
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


def test_generate_refuses_a_job_beyond_the_devices_memory_before_sampling(tiny_path, monkeypatch):
    # A fake memory figure: 40 MiB holds the tiny model's sampling at 128x128 (2 KiB a pixel), not 256x256.
    asked = []
    monkeypatch.setattr(api, "job_memory", lambda device: asked.append(device) or (40 << 20, "this machine's"))
    engine, steps = Engine(), []
    big = REQ.replace(model=str(tiny_path), width=256, height=256)
    with pytest.raises(RequestError, match=r"^256x256 is 16x .* more than this machine's 0\.0 GiB of memory "
                                           r"\(about 128x128 per image would fit\)$"):
        engine.generate(big, on_step=steps.append)
    assert steps == [] and asked == [torch.device("cpu")]
    assert engine.generate(big.replace(width=128, height=128)).images[0].size == (128, 128)
    engine.check_memory = False  # the CLI's --yes
    assert engine.generate(big).images[0].size == (256, 256)


def test_the_memory_check_sizes_a_validated_request(tiny_path, monkeypatch):
    monkeypatch.setattr(api, "job_memory", lambda device: (1 << 30, "this machine's"))
    bad = REQ.replace(model=str(tiny_path), width=0, hires=True, hires_resize_w=128)  # no ZeroDivisionError
    with pytest.raises(RequestError, match="width 0 is out of range"):
        Engine().generate(bad)


def test_generate_tiles_the_vae_when_auto_and_the_untiled_decode_would_not_fit(tiny_path, monkeypatch):
    # 200 MiB: the sampling of 256x256 fits (128 MiB), its untiled decode (384 MiB) does not.
    monkeypatch.setattr(api, "job_memory", lambda device: (200 << 20, "this machine's"))
    tiled = []
    real = passes.tiled_decode
    monkeypatch.setattr(passes, "tiled_decode", lambda *a, **k: tiled.append(1) or real(*a, **k))
    engine = Engine()
    result = engine.generate(REQ.replace(model=str(tiny_path), width=256, height=256))
    assert tiled == [1] and result.requests[0].tiled_vae == "on"
    with pytest.raises(RequestError, match="turn the tiled VAE on"):
        engine.generate(REQ.replace(model=str(tiny_path), width=256, height=256, tiled_vae="off"))
    assert engine.generate(REQ.replace(model=str(tiny_path))).requests[0].tiled_vae == "auto"  # 64x64 fits
    assert tiled == [1]


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
