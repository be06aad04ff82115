import numpy as np
import pytest
import torch

from sdstudio.engine import api
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import PatchError
from sdstudio.engine.patches import NO_PATCHES, PatchSet, WeightPatch
from sdstudio.engine.request import GenerationRequest

UNET_CONV = "model.diffusion_model.input_blocks.0.0.weight"
UNET_ATTN = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
TEXT_Q = "text.0.text_model.encoder.layers.1.self_attn.q_proj.weight"
TEXT_FC = "text.0.text_model.encoder.layers.0.mlp.fc1.weight"
REQ = GenerationRequest(prompt="a red apple", steps=2, width=64, height=64, sampler="Euler", seed=5)


def random_delta(seed: int, scale: float = 0.05):
    """A textured ΔW: different in every element, so a patch that misses part of a weight shows."""
    def delta(weight: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return scale * torch.randn(weight.shape, generator=g)
    return delta


def patch(target: str, seed: int, strength: float = 1.0) -> WeightPatch:
    return WeightPatch(target, random_delta(seed), strength, source=f"test:{seed}")


def snapshot(model) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in model.weights.parts.items():
        out.update({prefix + k: v.clone() for k, v in module.state_dict().items()})
    return out


def assert_bit_identical(model, before):
    after = snapshot(model)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed[:3]


@pytest.fixture
def model(tiny_path):
    return load_checkpoint(tiny_path)


def test_apply_then_remove_is_bit_identical_on_unet_and_text(model):
    before = snapshot(model)
    strength = 0.7
    model.apply_patches(PatchSet((patch(UNET_CONV, 1, strength), patch(UNET_ATTN, 2, strength),
                                  patch(TEXT_Q, 3, strength), patch(TEXT_FC, 4, strength))))
    now = snapshot(model)
    for target in (UNET_CONV, UNET_ATTN, TEXT_Q, TEXT_FC):
        assert not torch.equal(now[target], before[target])
    untouched = [k for k in before if k not in (UNET_CONV, UNET_ATTN, TEXT_Q, TEXT_FC)]
    assert all(torch.equal(now[k], before[k]) for k in untouched)
    # Subtracting the delta again would not restore the bits: the test can tell exact from approximate.
    d = strength * random_delta(3)(before[TEXT_Q])
    assert not torch.equal((before[TEXT_Q] + d) - d, before[TEXT_Q])
    model.apply_patches(NO_PATCHES)
    assert_bit_identical(model, before)
    assert model.patches == NO_PATCHES and not model.weights._originals


def test_strength_scales_delta_and_patches_on_one_weight_add_up(model):
    w = model.unet.get_parameter(UNET_CONV.removeprefix("model.diffusion_model.")).clone()
    d1, d2 = random_delta(1)(w), random_delta(2)(w)
    for strength in (0.5, 2.0, -1.0):
        model.apply_patches(PatchSet((patch(UNET_CONV, 1, strength),)))
        assert torch.allclose(model.weights.parameter(UNET_CONV), w + strength * d1, atol=1e-7)
    model.apply_patches(PatchSet((patch(UNET_CONV, 1, 0.5), patch(UNET_CONV, 2, 0.25))))
    assert torch.allclose(model.weights.parameter(UNET_CONV), w + 0.5 * d1 + 0.25 * d2, atol=1e-7)
    model.apply_patches(NO_PATCHES)
    assert torch.equal(model.weights.parameter(UNET_CONV), w)


def test_swapping_patch_sets_restores_before_patching(model):
    before = snapshot(model)
    model.apply_patches(PatchSet((patch(UNET_CONV, 1),)))
    model.apply_patches(PatchSet((patch(TEXT_Q, 2),)))
    now = snapshot(model)
    assert torch.equal(now[UNET_CONV], before[UNET_CONV]) and not torch.equal(now[TEXT_Q], before[TEXT_Q])
    model.apply_patches(NO_PATCHES)
    assert_bit_identical(model, before)


def test_patches_apply_in_the_weights_own_dtype(tiny_path):
    model = load_checkpoint(tiny_path, dtype=torch.bfloat16)
    w = model.weights.parameter(UNET_ATTN).clone()
    model.apply_patches(PatchSet((patch(UNET_ATTN, 1, 0.3),)))
    patched = model.weights.parameter(UNET_ATTN)
    assert patched.dtype == torch.bfloat16
    assert torch.equal(patched, (w.float() + 0.3 * random_delta(1)(w)).to(torch.bfloat16))
    model.apply_patches(NO_PATCHES)
    assert torch.equal(model.weights.parameter(UNET_ATTN), w)


@pytest.mark.parametrize("target, message", [
    ("model.diffusion_model.input_blocks.0.0.nope", "'model.diffusion_model.input_blocks.0.0.nope' is not a weight"),
    ("text.1.text_model.encoder.layers.0.mlp.fc1.weight", "'text.1.text_model.*' names no part of this model"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in", "'lora_unet_down_blocks_0_attentions_0_proj_in' names no part"),
])
def test_an_unknown_target_is_an_error_naming_it_and_nothing_changes(model, target, message):
    before = snapshot(model)
    with pytest.raises(PatchError, match=message.replace(".", r"\.").replace(r"\.*", ".*")):
        model.apply_patches(PatchSet((patch(UNET_CONV, 1), patch(target, 2))))
    assert_bit_identical(model, before)
    assert model.patches == NO_PATCHES


def test_a_delta_of_the_wrong_shape_is_refused_and_undone(model):
    before = snapshot(model)
    wrong = WeightPatch(TEXT_Q, lambda w: torch.ones(3, 3), 1.0, source="test:wrong")
    with pytest.raises(PatchError, match=r"has shape \(3, 3\), but the weight is \(32, 32\)"):
        model.apply_patches(PatchSet((patch(UNET_CONV, 1), wrong)))
    assert_bit_identical(model, before)


def test_patch_set_key_is_its_content():
    a = PatchSet((patch(UNET_CONV, 1, 0.5),))
    assert a.key == PatchSet((WeightPatch(UNET_CONV, lambda w: w, 0.5, source="test:1"),)).key
    assert a == PatchSet((patch(UNET_CONV, 1, 0.5),)) and hash(a) == hash(PatchSet((patch(UNET_CONV, 1, 0.5),)))
    assert a.key != PatchSet((patch(UNET_CONV, 1, 0.6),)).key
    assert a.key != PatchSet((patch(UNET_CONV, 2, 0.5),)).key
    mixed = PatchSet((patch(UNET_CONV, 1), patch(TEXT_Q, 2)))
    assert mixed.under("text.").key == ((TEXT_Q, "test:2", 1.0),)
    with pytest.raises(PatchError, match="no source"):
        WeightPatch(UNET_CONV, random_delta(1))


def test_prompt_cache_follows_the_text_patches(model):
    prompts = model.text.prompts
    original = prompts.encode("a red apple")
    model.apply_patches(PatchSet((patch(TEXT_Q, 3, 5.0),)))
    patched = prompts.encode("a red apple")
    assert not torch.allclose(patched.context, original.context)
    model.apply_patches(PatchSet((patch(TEXT_Q, 3, 5.0), patch(UNET_CONV, 1))))
    assert prompts.encode("a red apple") is patched  # a UNet patch does not change prompt encodings
    model.apply_patches(NO_PATCHES)
    again = prompts.encode("a red apple")
    assert torch.equal(again.context, original.context)
    # Re-encoded from the restored weights (not just served from the cache) gives the same bits too.
    prompts._cache.clear()
    assert torch.equal(prompts.encode("a red apple").context, original.context)


def _pixels(result):
    return np.asarray(result.images[0]).astype(int)


def test_engine_swaps_patches_without_reloading_and_serves_nothing_stale(tiny_path, monkeypatch):
    loads = []
    real = api.load_checkpoint
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    engine = Engine(device="cpu")
    req = REQ.replace(model=str(tiny_path))
    plain = _pixels(engine.generate(req))
    engine.set_patches(PatchSet((patch(UNET_ATTN, 1, 8.0), patch(UNET_CONV, 2, 8.0))))
    unet_patched = _pixels(engine.generate(req))
    engine.set_patches(PatchSet((patch(TEXT_Q, 3, 8.0), patch(TEXT_FC, 4, 8.0))))
    text_patched = _pixels(engine.generate(req))
    engine.set_patches(NO_PATCHES)
    back = _pixels(engine.generate(req))
    assert len(loads) == 1
    assert np.abs(unet_patched - plain).max() > 0 and np.abs(text_patched - plain).max() > 0
    assert np.array_equal(back, plain)


def test_engine_keeps_its_patches_across_a_model_change(tiny_path, tmp_path):
    other = tmp_path / "copy.safetensors"
    other.write_bytes(tiny_path.read_bytes())
    engine = Engine(device="cpu")
    engine.set_patches(PatchSet((patch(UNET_CONV, 1),)))  # before any load: applied at the load
    engine.load_model(str(tiny_path))
    assert engine.model.patches == engine.patches
    engine.load_model(str(other))
    assert engine.model.patches == engine.patches


def test_engine_refuses_a_patch_set_that_does_not_fit_and_keeps_the_previous(tiny_path):
    engine = Engine(device="cpu")
    engine.load_model(str(tiny_path))
    good = PatchSet((patch(UNET_CONV, 1),))
    engine.set_patches(good)
    with pytest.raises(PatchError, match="nope"):
        engine.set_patches(PatchSet((patch("model.diffusion_model.nope.weight", 2),)))
    assert engine.patches == good
    engine.load_model(str(tiny_path))
    assert engine.model.patches == good


def test_shapes_lists_every_patchable_target_by_its_patch_name(model):
    shapes = model.weights.shapes()
    assert shapes[UNET_CONV] == tuple(model.weights.parameter(UNET_CONV).shape)
    assert shapes[TEXT_Q] == tuple(model.weights.parameter(TEXT_Q).shape)
    assert len(shapes) == sum(1 for m in model.weights.parts.values() for _ in m.parameters())
    assert all(model.weights.parameter(t).shape == s for t, s in shapes.items())
