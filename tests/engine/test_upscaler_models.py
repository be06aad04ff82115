"""Upscaler files: found by name in A1111's folders, loaded from .pth/.safetensors (wrapped or not), run in
tiles that agree with the untiled run, and hostile files refused with a message."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdstudio.engine.errors import Cancelled, CheckpointError, RequestError
from sdstudio.engine.model_files import folder_models
from sdstudio.engine.upscaler_models import (
    ModelUpscalers,
    cancel_check,
    find_upscaler_file,
    list_upscaler_files,
    load_upscaler,
    run_tiled,
    upscale_pil,
)
from tests.engine.esrgan_files import basicsr_state, old_esrgan, old_state, unshuffled_esrgan


def _picture(w=37, h=29, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "ESRGAN").mkdir(parents=True)
    (root / "RealESRGAN").mkdir()
    ref = old_esrgan(scale=4, blocks=1, seed=5)
    torch.save(old_state(ref), root / "ESRGAN" / "4x-Random.pth")
    torch.save({"params_ema": basicsr_state(ref)}, root / "RealESRGAN" / "RealESRGAN_x4plus.pth")
    _, x2 = unshuffled_esrgan(2, seed=6)
    save_file({k: v.contiguous() for k, v in x2.items()}, root / "RealESRGAN" / "x2.safetensors")
    return root, ref


def test_random_esrgan_file_loads_and_upscales_by_its_scale(models):
    root, ref = models
    model = load_upscaler(root / "ESRGAN" / "4x-Random.pth")
    assert (model.name, model.scale) == ("4x-Random", 4)
    image = _picture()
    out = upscale_pil(model, image)
    assert out.size == (37 * 4, 29 * 4) and out.mode == "RGB"
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = (ref(x)[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(out).astype(int) - want.astype(int)).max() <= 1
    assert np.asarray(out).std() > 5  # not a flat image


def test_wrapped_pth_and_safetensors_load(models):
    root, _ = models
    assert load_upscaler(root / "RealESRGAN" / "RealESRGAN_x4plus.pth").scale == 4
    x2 = load_upscaler(root / "RealESRGAN" / "x2.safetensors")
    assert x2.scale == 2
    assert upscale_pil(x2, _picture(15, 9)).size == (30, 18)  # odd sides: padded for the unshuffle, cropped


@pytest.mark.parametrize("tile", [8, 12, 20])
def test_tiles_equal_the_untiled_run_when_the_overlap_covers_the_receptive_field(models, tile):
    root, _ = models
    model = load_upscaler(root / "ESRGAN" / "4x-Random.pth")
    x = torch.rand(1, 3, 29, 37, generator=torch.Generator().manual_seed(2))
    whole = run_tiled(model, x, tile=0)
    calls = []
    tiled = run_tiled(model, x, tile=tile, overlap=24, on_tile=lambda d, n: calls.append((d, n)))
    assert len(calls) == -(-29 // tile) * -(-37 // tile) > 1 and calls[-1][0] == calls[-1][1]
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    small = run_tiled(model, x, tile=tile, overlap=0)  # no context: the seams show, so the overlap matters
    assert (small - whole).abs().max() > 1e-3


def test_unshuffle_model_tiles_too(models):
    root, _ = models
    model = load_upscaler(root / "RealESRGAN" / "x2.safetensors")
    x = torch.rand(1, 3, 27, 30, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run_tiled(model, x, tile=10, overlap=30), run_tiled(model, x, tile=0),
                               atol=1e-5, rtol=1e-5)


def test_cancel_between_tiles(models):
    root, _ = models
    model = load_upscaler(root / "ESRGAN" / "4x-Random.pth")
    with pytest.raises(Cancelled):
        upscale_pil(model, _picture(), tile=8, on_tile=cancel_check(lambda: True))


def test_found_by_stem_in_a1111_folders(models):
    root, _ = models
    assert [p.name for p in list_upscaler_files(root)] == ["4x-Random.pth", "RealESRGAN_x4plus.pth",
                                                           "x2.safetensors"]
    assert find_upscaler_file("4x-random", root).name == "4x-Random.pth"
    with pytest.raises(RequestError, match="found: 4x-Random, RealESRGAN_x4plus, x2"):
        find_upscaler_file("4x-UltraSharp", root)
    assert folder_models(root) == []  # upscaler files are not checkpoints


def test_source_for_the_registry(models):
    root, _ = models
    source = ModelUpscalers(root)
    assert source.names() == ["4x-Random", "RealESRGAN_x4plus", "x2"]
    step = source.step("x2")
    assert step(_picture(10, 6), 3.0).size == (20, 12)  # a model scales by its own factor
    assert source.model("x2") is source.model("x2")  # kept loaded


@pytest.mark.parametrize("content, needle", [
    (b"not a model at all" * 10, "weights-only"),
    (b"", "weights-only"),
])
def test_garbage_pth_refused(tmp_path, content, needle):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=needle):
        load_upscaler(path)


def test_hostile_files_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError):
        load_upscaler(bad)
    lists = tmp_path / "list.pth"
    torch.save([torch.ones(2)], lists)
    with pytest.raises(CheckpointError, match="dictionary of named tensors"):
        load_upscaler(lists)
    other = tmp_path / "swinir.pth"
    torch.save({"params": {"layers.0.residual_group.blocks.0.attn.x": torch.ones(2)}}, other)
    with pytest.raises(CheckpointError, match="SwinIR"):
        load_upscaler(other)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"model.0.weight": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_upscaler(evil)
    truncated = tmp_path / "cut.pth"
    torch.save(old_state(old_esrgan(seed=9)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        load_upscaler(truncated)
    with pytest.raises(CheckpointError, match="no such file"):
        load_upscaler(tmp_path / "missing.pth")


def test_hires_fix_runs_a_model_upscaler_by_name(home, tiny_path):
    from sdstudio.engine.api import Engine
    from sdstudio.engine.request import GenerationRequest

    folder = home / "models" / "ESRGAN"
    folder.mkdir(parents=True)
    torch.save(old_state(old_esrgan(scale=2, blocks=1, seed=8)), folder / "2x-Tiny.pth")
    engine = Engine(device="cpu")
    req = GenerationRequest(prompt="fox", steps=1, seed=3, width=32, height=32, model=str(tiny_path), hires=True,
                            hires_scale=2.0, hires_steps=1, strength=0.3)
    from sdstudio.engine.upscale import upscaler_names

    assert "2x-Tiny" in upscaler_names()
    by_model = engine.generate(req.replace(hires_upscaler="2x-Tiny")).images[0]
    by_lanczos = engine.generate(req.replace(hires_upscaler="Lanczos")).images[0]
    assert by_model.size == by_lanczos.size == (64, 64)
    assert np.abs(np.asarray(by_model, dtype=int) - np.asarray(by_lanczos, dtype=int)).mean() > 1
    with pytest.raises(RequestError, match="4x-Missing"):
        engine.generate(req.replace(hires_upscaler="4x-Missing"))


def test_one_registered_source_whose_device_only_the_engine_moves():
    from sdstudio.engine.upscale import _SOURCES
    from sdstudio.engine.upscaler_models import register_model_upscalers

    a = register_model_upscalers("cpu")
    assert register_model_upscalers() is a and a.device == torch.device("cpu")  # the UI's call moves nothing
    assert _SOURCES.count(a) == 1
