import numpy as np
import pytest
import torch

from sdstudio.engine import devices, noise
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.devices import Placement, choose_placements, placement_label, resolve_device
from sdstudio.engine.errors import Cancelled, SDStudioError
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest

REQ = GenerationRequest(prompt="a red apple", steps=3, width=64, height=64, sampler="Euler a", seed=11)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(no_gpu, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("") == torch.device("cpu")
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cpu_is_always_there(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("cuda", "sees no CUDA GPU.*--device cpu"),
    ("cuda:0", "sees no CUDA GPU"),
    ("mps", "Metal backend is not available"),
    ("tpu", "unknown device 'tpu'; choose one of: auto, cpu, cuda, mps"),
])
def test_a_device_that_is_not_there_is_an_error_saying_what_to_do(no_gpu, name, message):
    with pytest.raises(SDStudioError, match=message):
        resolve_device(name)


def test_engine_refuses_a_missing_device_before_loading_anything(no_gpu):
    with pytest.raises(SDStudioError, match="CUDA"):
        Engine(device="cuda")


def test_cpu_runs_everything_in_fp32():
    places = choose_placements("cpu")
    assert set(places) == {"unet", "text", "vae", "taesd"}
    assert all(p == Placement(torch.device("cpu"), torch.float32) for p in places.values())
    assert placement_label(places) == "cpu fp32"


def test_gpus_run_half_precision_except_the_vae():
    for kind in ("cuda", "mps"):
        places = choose_placements(torch.device(kind))
        assert {k: p.dtype for k, p in places.items()} == {
            "unet": torch.float16, "text": torch.float16, "taesd": torch.float16, "vae": torch.float32}
        assert all(p.device.type == kind for p in places.values())
    label = placement_label(choose_placements("cuda"))
    assert label == "cuda: UNet fp16, text encoders fp16, VAE fp32, preview decoder fp16"


def test_an_explicit_dtype_replaces_the_default_but_never_halves_the_vae():
    assert {p.dtype for p in choose_placements("cuda", torch.float32).values()} == {torch.float32}
    places = choose_placements("cpu", torch.bfloat16)
    assert (places["unet"].dtype, places["vae"].dtype) == (torch.bfloat16, torch.float32)


def test_a_cpu_load_reports_its_placements(tiny_path):
    model = load_checkpoint(tiny_path, device="cpu")
    assert set(model.placements) == {"unet", "text", "vae"}  # no preview decoder was loaded
    assert all(p.label() == "cpu fp32" for p in model.placements.values())
    assert model.description.placement == "cpu fp32"
    assert model.description.summary().endswith("runs on cpu fp32")
    for name, module in (("unet", model.unet), ("vae", model.vae), ("text", model.text.encoders[0])):
        place = model.placements[name]
        assert (devices.module_device(module), devices.module_dtype(module)) == (place.device, place.dtype)


def test_each_component_is_loaded_in_its_own_dtype(tiny_path):
    model = load_checkpoint(tiny_path, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in model.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.text.encoders[0].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vae.parameters()} == {torch.float32}
    assert model.description.placement == "cpu: UNet bf16, text encoders bf16, VAE fp32"


def _pixels(result):
    return [np.asarray(im) for im in result.images]


def test_engine_on_the_cpu_gives_the_pixels_of_a_plain_load(tiny_path, no_gpu):
    engine = Engine(device="cpu")
    ours = _pixels(engine.generate(REQ.replace(model=str(tiny_path))))
    plain = _pixels(generate(load_checkpoint(tiny_path), REQ.replace(model=str(tiny_path))))
    auto = _pixels(Engine().generate(REQ.replace(model=str(tiny_path))))
    assert engine.describe().placement == "cpu fp32"
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(ours, plain, auto, strict=True))
    assert ours[0].std() > 0  # a textured image, not a flat one that any run would match


def test_noise_is_drawn_on_the_cpu_whatever_the_device(monkeypatch):
    drawn = []
    real_randn = torch.randn

    def spy(*args, **kwargs):
        assert kwargs["generator"].device.type == "cpu" and "device" not in kwargs
        drawn.append(real_randn(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(noise.torch, "randn", spy)
    on_meta = noise.SeededNoise([1, 2], (4, 8, 8), device="meta", dtype=torch.float16).draw()
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float16 and on_meta.shape == (2, 4, 8, 8)
    meta_draws = list(drawn)
    on_cpu = noise.SeededNoise([1, 2], (4, 8, 8), device="cpu").draw()
    assert torch.equal(torch.stack(meta_draws), on_cpu)
    assert torch.equal(on_cpu[1], real_randn((4, 8, 8), generator=torch.Generator().manual_seed(2)))


def test_progress_is_reported_often_and_ends_at_one(tiny_path):
    calls = []
    load_checkpoint(tiny_path, progress=lambda stage, fraction: calls.append((stage, fraction)))
    assert len(calls) >= 50
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 < fractions[len(fractions) // 2] < 1
    stages = [s for s, _ in calls]
    assert stages[0] == "UNet" and stages[-1] == "ready"
    assert {"VAE", "text encoder"} <= set(stages)


def test_cancelling_from_progress_aborts_the_load_and_the_next_load_works(tiny_path):
    engine = Engine(device="cpu")
    seen = []

    def cancel_in_the_unet(stage, fraction):
        seen.append((stage, fraction))
        if len(seen) == 5:
            raise Cancelled("the window was closed")

    with pytest.raises(Cancelled):
        engine.load_model(str(tiny_path), progress=cancel_in_the_unet)
    assert len(seen) == 5 and seen[-1][0] == "UNet" and seen[-1][1] < 0.5  # stopped early, not at the end
    assert engine.model is None and engine.describe() is None
    assert engine.load_model(str(tiny_path)).family == "demo"
    assert engine.generate(REQ.replace(model=str(tiny_path))).images[0].size == (64, 64)


def test_a_cancelled_load_keeps_no_model_even_when_one_was_loaded(tiny_path, tmp_path):
    engine = Engine(device="cpu")
    engine.load_model(str(tiny_path))
    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_path.read_bytes())

    def cancel(stage, fraction):
        if stage == "text encoder":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        engine.load_model(str(other), progress=cancel)
    assert engine.model is None
    assert engine.load_model(str(other)).path.endswith("other.safetensors")


def test_job_memory_is_the_machines_ram_on_the_cpu():
    from sdstudio.engine.devices import job_memory
    from sdstudio.engine.job_size import physical_memory

    assert job_memory(torch.device("cpu")) == (physical_memory(), "this machine's")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_job_memory_on_a_gpu_counts_the_allocators_unused_blocks_as_free():
    from sdstudio.engine.devices import job_memory

    device = torch.device("cuda")
    before, where = job_memory(device)
    held = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    during, _ = job_memory(device)
    del held  # back to torch's cache, not to the driver: still free to this process
    after, _ = job_memory(device)
    total = torch.cuda.mem_get_info(device)[1]
    print(f"job_memory: {before / 2**30:.2f} / {during / 2**30:.2f} / {after / 2**30:.2f} GiB of {total / 2**30:.1f}")
    assert where == "the GPU's free" and 0 < during < before <= total
    assert abs(before - during - (256 << 20)) < 64 << 20 and abs(after - before) < 64 << 20
