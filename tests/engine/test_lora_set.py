"""The engine's LoRA wiring: `<lora:…>` in the prompt -> files -> PatchSet -> patched weights, and back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from sdstudio import paths
from sdstudio.engine import api, lora_file
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import NetworkFileError, RequestError
from sdstudio.engine.lora_set import LoraFiles, resolve_loras
from sdstudio.engine.network_files import lora_short_hash
from sdstudio.engine.patches import NO_PATCHES
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.parameters import format_parameters, parse_parameters, request_from_parameters
from tests.engine.lora_files import lora_tensors, tiny_family_checkpoint, write_lora

REQ = GenerationRequest(prompt="apple", steps=2, width=64, height=64, sampler="Euler", seed=11)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    """A tiny SD 1.x-layout checkpoint and the tensors of a kohya LoRA (LDM names) for every weight of it."""
    path = tiny_family_checkpoint(tmp_path_factory.mktemp("sd1") / "sd1.safetensors", "sd1", seed=1)
    tensors, _ = lora_tensors(load_checkpoint(path), "kohya_ldm", rank=4, alpha=3.0, seed=2)
    return path, tensors


@pytest.fixture
def ink(home, sd1):
    """models/Lora/ink.safetensors in a fresh data folder."""
    paths.lora_dir().mkdir(parents=True)
    return write_lora(paths.lora_dir() / "ink.safetensors", sd1[1], {"ss_output_name": "inkstyle"})


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images])


def weights(engine: Engine) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for prefix, part in engine.model.weights.parts.items()
            for name, p in part.named_parameters(prefix=prefix.rstrip("."))}


def test_weight_zero_is_no_lora_bit_for_bit_and_a_weight_changes_the_image(sd1, ink):
    engine = Engine()
    req = REQ.replace(model=str(sd1[0]))
    plain = pixels(engine.generate(req))
    zero = engine.generate(req.replace(prompt="<lora:ink:0>apple"))
    assert np.array_equal(pixels(zero), plain)
    patched = pixels(engine.generate(req.replace(prompt="<lora:ink:0.8>apple")))
    assert not np.array_equal(patched, plain)
    te_only = pixels(engine.generate(req.replace(prompt="<lora:ink:0.8:0>apple")))
    assert not np.array_equal(te_only, plain) and not np.array_equal(te_only, patched)


def test_the_result_keeps_the_tagged_prompt_and_the_lora_hashes(sd1, ink):
    engine = Engine()
    result = engine.generate(REQ.replace(model=str(sd1[0]), prompt="a <lora:inkstyle:0.5> fox, <lora:ink:0.25>",
                                         batch_size=2))
    short = lora_short_hash(ink)
    for r in result.requests:
        assert r.prompt == "a <lora:inkstyle:0.5> fox, <lora:ink:0.25>"
        assert r.lora_hashes == (("inkstyle", short), ("ink", short))
    text = format_parameters(result.requests[0], result.model_name)
    assert f'Lora hashes: "inkstyle: {short}, ink: {short}"' in text
    assert request_from_parameters(parse_parameters(text)).lora_hashes == result.requests[0].lora_hashes
    assert engine.generate(REQ.replace(model=str(sd1[0]))).requests[0].lora_hashes == ()


def test_changing_the_weight_neither_reloads_the_model_nor_rereads_the_file(sd1, ink, monkeypatch):
    engine = Engine()
    loads, reads = [], []
    real_load, real_read = api.load_checkpoint, lora_file.read_lora
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(lora_file, "read_lora", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    req = REQ.replace(model=str(sd1[0]), steps=1)
    first = engine.generate(req.replace(prompt="<lora:ink:0.8>apple"))
    for weight in ("0.5", "1", "0.8", "-0.3:0.2"):
        engine.generate(req.replace(prompt=f"<lora:ink:{weight}>apple"))
    again = engine.generate(req.replace(prompt="<lora:ink:0.8>apple"))
    assert (len(loads), len(reads)) == (1, 1)
    assert np.array_equal(pixels(first), pixels(again))
    # A changed file is read again (new size or mtime).
    write_lora(ink, {k: v * 2 for k, v in sd1[1].items()})
    changed = engine.generate(req.replace(prompt="<lora:ink:0.8>apple"))
    assert len(reads) == 2 and not np.array_equal(pixels(changed), pixels(first))


def test_removing_the_tags_restores_every_weight_bit_for_bit(sd1, ink):
    engine = Engine()
    req = REQ.replace(model=str(sd1[0]))
    plain = pixels(engine.generate(req))
    original = weights(engine)
    engine.generate(req.replace(prompt="<lora:ink:0.7> <lora:inkstyle:-1.3:2>apple"))
    assert engine.model.patches and any(not torch.equal(w, original[n]) for n, w in weights(engine).items())
    assert np.array_equal(pixels(engine.generate(req)), plain)
    assert engine.model.patches == NO_PATCHES
    assert all(torch.equal(w, original[n]) for n, w in weights(engine).items())


def test_tags_in_the_negative_prompt_are_text_as_in_a1111(sd1, ink):
    engine = Engine()
    result = engine.generate(REQ.replace(model=str(sd1[0]), negative_prompt="<lora:ink:1>"))
    assert engine.model.patches == NO_PATCHES and result.requests[0].lora_hashes == ()
    assert result.requests[0].negative_prompt == "<lora:ink:1>"


def test_lora_problems_stop_the_job_before_it_runs(sd1, ink, tmp_path, monkeypatch):
    engine = Engine()
    ran = []
    monkeypatch.setattr(api, "generate", lambda *a, **k: ran.append(a))
    req = REQ.replace(model=str(sd1[0]))
    with pytest.raises(NetworkFileError, match="LoRA 'watercolor' is not in"):
        engine.generate(req.replace(prompt="<lora:watercolor:1>apple"))
    assert engine.model is None  # found missing before the model loads
    with pytest.raises(RequestError, match="is not a number"):
        engine.generate(req.replace(prompt="<lora:ink:abc>apple"))
    with pytest.raises(NetworkFileError, match="DYN 8"):
        engine.generate(req.replace(prompt="<lora:ink:1:1:8>apple"))
    # A file with keys this model lacks: refused whole, nothing patched.
    stray = dict(sd1[1])
    stray["lora_unet_nowhere_proj.lora_down.weight"] = torch.zeros(2, 8)
    stray["lora_unet_nowhere_proj.lora_up.weight"] = torch.zeros(8, 2)
    write_lora(paths.lora_dir() / "stray.safetensors", stray)
    with pytest.raises(NetworkFileError, match="2 of .* keys were not applied") as caught:
        engine.generate(req.replace(prompt="<lora:stray:1>apple"))
    assert "\n" not in str(caught.value)
    assert engine.model.patches == NO_PATCHES and ran == []


def test_extra_folders_are_searched_after_the_data_folder(sd1, home, tmp_path):
    extra = tmp_path / "a1111" / "models" / "Lora"
    extra.mkdir(parents=True)
    path = write_lora(extra / "far.safetensors", sd1[1])
    engine = Engine()
    req = REQ.replace(model=str(sd1[0]), prompt="<lora:far:0.5>apple", steps=1)
    with pytest.raises(NetworkFileError, match="'far' is not in"):
        engine.generate(req)
    engine.lora_dirs = [extra]
    assert engine.generate(req).requests[0].lora_hashes == (("far", lora_short_hash(path)),)


def test_a_rerun_finds_a_renamed_lora_by_its_hash_and_names_a_missing_one(sd1, ink):
    engine = Engine()
    req = REQ.replace(model=str(sd1[0]), prompt="<lora:ink:0.6>apple", steps=1)
    made = engine.generate(req)
    recorded = made.requests[0]
    renamed = paths.lora_dir() / "sub" / "ink_v1.safetensors"
    renamed.parent.mkdir()
    shutil.move(ink, renamed)
    again = engine.generate(recorded)
    assert np.array_equal(pixels(again), pixels(made)) and again.requests[0].lora_hashes == recorded.lora_hashes
    renamed.unlink()
    short = recorded.lora_hashes[0][1]
    with pytest.raises(NetworkFileError, match=rf"LoRA 'ink' \(hash {short}\) is not in .*models/Lora"):
        engine.generate(recorded)


def test_switching_models_drops_the_patches_made_for_the_old_one(sd1, ink, tmp_path):
    other = tiny_family_checkpoint(tmp_path / "sd2.safetensors", "sd2", seed=3)  # other shapes and names
    engine = Engine()
    engine.generate(REQ.replace(model=str(sd1[0]), prompt="<lora:ink:1>apple", steps=1))
    result = engine.generate(REQ.replace(model=str(other), steps=1))
    assert engine.model.patches == NO_PATCHES and result.requests[0].lora_hashes == ()


def test_lora_files_kept_are_bounded(sd1, ink):
    files = LoraFiles(kept=1)
    model = load_checkpoint(sd1[0])
    for i in range(4):
        write_lora(paths.lora_dir() / f"l{i}.safetensors", sd1[1])
        files.patch_set(resolve_loras(REQ.replace(prompt=f"<lora:l{i}:1>")), model)
    assert len(files) == 2  # the one in use and one more
    assert files.patch_set(resolve_loras(REQ), model) == NO_PATCHES
    small = LoraFiles(kept=4, kept_bytes=1)  # no room for any file not in use
    for i in range(3):
        small.patch_set(resolve_loras(REQ.replace(prompt=f"<lora:l{i}:1> <lora:l3:0.5>")), model)
        assert len(small) == 2


@pytest.mark.perf
def test_a_unet_step_with_a_lora_applied_costs_the_same_as_without(sd1, ink):
    """Patching merges ΔW into the weights once (W += s·ΔW), so a step runs the very same kernels; this shows
    it on the tiny SD 1.x layout (median of interleaved runs; generous bound for a shared machine)."""
    import statistics
    import time

    from sdstudio.engine.patches import PatchSet

    model = load_checkpoint(sd1[0])
    files = LoraFiles()
    lora = files.patch_set(resolve_loras(REQ.replace(prompt="<lora:ink:0.8>")), model)
    config = model.unet.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, config.in_channels, 32, 32, generator=g)
    context = torch.randn(2, 77, config.context_dim, generator=g)
    t = torch.tensor([500.0, 500.0])

    def step() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.unet(x, t, context)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"plain": [], "lora": []}
    for _ in range(2):
        step()
    for _ in range(15):
        for name, patches in (("plain", PatchSet()), ("lora", lora)):
            model.apply_patches(patches)
            times[name].append(step())
    model.apply_patches(PatchSet())
    plain, patched = statistics.median(times["plain"]), statistics.median(times["lora"])
    print(f"\nUNet step, tiny SD 1.x layout, 32x32 latent, batch 2: {plain * 1e3:.2f} ms without, "
          f"{patched * 1e3:.2f} ms with a LoRA on every weight ({patched / plain:.3f}x)")
    assert patched < plain * 1.3


def test_lora_and_ti_hashes_together_and_a_tag_is_no_embedding(sd1, ink):
    from safetensors.torch import save_file

    emb = paths.embeddings_dir()
    emb.mkdir(parents=True)
    save_file({"emb_params": torch.randn(2, 32)}, emb / "shiny.safetensors")
    save_file({"emb_params": torch.randn(1, 32)}, emb / "ink.safetensors")  # the LoRA's name, as an embedding
    engine = Engine()
    req = REQ.replace(model=str(sd1[0]), steps=1)
    result = engine.generate(req.replace(prompt="<lora:ink:0.5> apple, shiny"))
    [r] = result.requests
    assert r.lora_hashes == (("ink", lora_short_hash(ink)),)
    assert [name for name, _ in r.ti_hashes] == ["shiny"]  # the LoRA named ink is not the embedding ink
    text = format_parameters(r, result.model_name)
    assert 'Lora hashes: "ink: ' in text and 'TI hashes: "shiny: ' in text


def test_tags_add_to_the_engines_own_patches_and_leave_them_in_place(sd1, ink):
    from sdstudio.engine.patches import PatchSet
    from tests.engine.test_patches import UNET_CONV, patch

    engine = Engine()
    req = REQ.replace(model=str(sd1[0]), steps=1)
    engine.generate(req)
    base = PatchSet((patch(UNET_CONV, 1, 0.5),))
    engine.set_patches(base)
    based = pixels(engine.generate(req))
    engine.generate(req.replace(prompt="<lora:ink:0.8>apple"))
    assert engine.patches == base and engine.model.patches.patches[0] == base.patches[0]
    assert len(engine.model.patches.patches) > 1
    assert np.array_equal(pixels(engine.generate(req)), based) and engine.model.patches == base
