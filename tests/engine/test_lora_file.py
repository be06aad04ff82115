"""lora_file: reading LoRA files (and refusing bad ones) and the weights they patch, checked against ΔW computed
independently in tests/engine/lora_files.py, on tiny SD 1.x, SD 2.x and SDXL-layout models."""

import hashlib
import pickle
import struct

import pytest
import torch

from sdstudio.engine import lora_file
from sdstudio.engine.api import Engine
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import NetworkFileError
from sdstudio.engine.lora_file import lora_patch_set, read_lora
from sdstudio.engine.patches import NO_PATCHES, PatchSet
from tests.engine.lora_files import DIALECTS, UNET, lora_tensors, tiny_family_checkpoint, write_lora

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_models")
    return {fam: load_checkpoint(tiny_family_checkpoint(folder / f"{fam}.safetensors", fam, seed=3))
            for fam in FAMILIES}


def snapshot(model):
    """UNet and text weights (a LoRA never touches the VAE; apply() checks every target exists)."""
    return {t: model.weights.parameter(t).detach().clone() for t in model.weights.shapes()
            if not t.startswith("first_stage_model.")}


def assert_patched(model, before, expected, te, unet, atol=2e-6):
    changed = 0
    for target, original in before.items():
        now = model.weights.parameter(target).detach()
        if target in expected:
            strength = te if target.startswith("text.") else unet
            want = original + strength * expected[target].reshape(original.shape)
            assert torch.allclose(now, want, atol=atol, rtol=0), target
            changed += not torch.equal(now, original)
        else:
            assert torch.equal(now, original), f"{target} changed but the LoRA does not touch it"
    assert changed == sum(1 for t in expected if expected[t].abs().max() > 0 and (
        te if t.startswith("text.") else unet) != 0)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fam", FAMILIES)
def test_every_dialect_patches_every_layer_as_alpha_over_rank_up_down(models, tmp_path, fam, dialect):
    model = models[fam]
    tensors, expected = lora_tensors(model, dialect, rank=4, alpha=3.0, seed=10 * FAMILIES.index(fam) + DIALECTS.index(dialect))
    assert any(t.startswith("text.") for t in expected) and any(t.startswith(UNET) for t in expected)
    if dialect == "kohya_openclip" and fam != "sd1":  # OpenCLIP names, q/k/v fused
        assert any(k.endswith("transformer_resblocks_1_attn_in_proj.lora_up.weight") for k in tensors)
    lora = read_lora(write_lora(tmp_path / f"{dialect}.safetensors", tensors))
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model, te=0.6, unet=0.9))
    try:
        assert_patched(model, before, expected, 0.6, 0.9)
    finally:
        model.apply_patches(NO_PATCHES)
    assert all(torch.equal(model.weights.parameter(t), w) for t, w in before.items())


@pytest.mark.parametrize("fam", FAMILIES)
def test_peft_without_alpha_scales_by_one_and_fp16_files_compute_in_fp32(models, tmp_path, fam):
    model = models[fam]
    tensors, expected = lora_tensors(model, "peft", alpha=None, dtype=torch.float16, seed=7)
    assert all(v.dtype == torch.float16 for v in tensors.values())
    lora = read_lora(write_lora(tmp_path / "peft16.safetensors", tensors))
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model))
    try:
        assert_patched(model, before, expected, 1.0, 1.0)
    finally:
        model.apply_patches(NO_PATCHES)


@pytest.mark.parametrize("mid", [False, True], ids=["locon", "locon-tucker-mid"])
@pytest.mark.parametrize("flat_1x1", [False, True], ids=["conv-1x1", "linear-on-1x1"])
def test_conv_locon_with_and_without_mid(models, tmp_path, mid, flat_1x1):
    model = models["sd1"]  # conv proj_in/out (1x1), 3x3 resnet convs
    targets = [t for t, s in model.weights.shapes().items() if t.startswith(UNET) and len(s) == 4]
    assert any(model.weights.shapes()[t][2:] == (3, 3) for t in targets)
    assert any(model.weights.shapes()[t][2:] == (1, 1) for t in targets)
    tensors, expected = lora_tensors(model, "kohya_diffusers", targets=targets, mid=mid, flat_1x1=flat_1x1,
                                     rank=3, alpha=5.0, seed=11)
    assert any(k.endswith("lora_mid.weight") for k in tensors) == mid
    lora = read_lora(write_lora(tmp_path / "locon.safetensors", tensors))
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model, unet=1.3))
    try:
        assert_patched(model, before, expected, 1.0, 1.3)
    finally:
        model.apply_patches(NO_PATCHES)


def test_zero_text_strength_leaves_the_text_encoder_alone(models, tmp_path):
    model = models["sdxl"]
    tensors, expected = lora_tensors(model, "kohya_ldm", seed=2)
    lora = read_lora(write_lora(tmp_path / "l.safetensors", tensors))
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model, te=0.0, unet=1.0))
    try:
        assert_patched(model, before, expected, 0.0, 1.0)
    finally:
        model.apply_patches(NO_PATCHES)


def test_a_4_channel_conv_in_lora_on_an_inpainting_unet_pads_the_extra_channels(tmp_path):
    model = load_checkpoint(tiny_family_checkpoint(tmp_path / "inpaint.safetensors", "sd1", in_channels=9))
    conv_in = UNET + "input_blocks.0.0.weight"
    assert model.weights.shapes()[conv_in][1] == 9
    tensors, expected = lora_tensors(model, "kohya_diffusers", targets=[conv_in], conv_in_channels=4, seed=4)
    assert tensors["lora_unet_conv_in.lora_down.weight"].shape[1] == 4
    before = snapshot(model)
    model.apply_patches(lora_patch_set(read_lora(write_lora(tmp_path / "c.safetensors", tensors)), model))
    assert_patched(model, before, expected, 1.0, 1.0)
    now = model.weights.parameter(conv_in)
    assert torch.equal(now[:, 4:], before[conv_in][:, 4:]) and not torch.equal(now[:, :4], before[conv_in][:, :4])


def test_deltas_are_computed_when_applied_not_when_the_set_is_built(models, tmp_path, monkeypatch):
    model = models["sd1"]
    calls = []
    real = lora_file._product
    monkeypatch.setattr(lora_file, "_product", lambda *a: calls.append(1) or real(*a))
    tensors, expected = lora_tensors(model, "kohya_ldm", seed=5)
    patch_set = lora_patch_set(read_lora(write_lora(tmp_path / "l.safetensors", tensors)), model)
    assert not calls
    model.apply_patches(patch_set)
    model.apply_patches(NO_PATCHES)
    assert len(calls) == len(expected)


def test_engine_restores_bit_identical_weights_after_removal(models, tmp_path):
    path = tmp_path / "m.safetensors"
    tiny_family_checkpoint(path, "sd2", seed=9)
    engine = Engine(device="cpu")
    engine.load_model(str(path))
    model = engine.model
    before = snapshot(model)
    tensors, _ = lora_tensors(model, "kohya_openclip", seed=8)
    first = lora_patch_set(read_lora(write_lora(tmp_path / "a.safetensors", tensors)), model, 0.7, 1.1)
    tensors, _ = lora_tensors(model, "peft", seed=9)
    second = lora_patch_set(read_lora(write_lora(tmp_path / "b.safetensors", tensors)), model, 1.0, -0.5)
    engine.set_patches(PatchSet(first.patches + second.patches))
    assert sum(not torch.equal(model.weights.parameter(t), w) for t, w in before.items()) > 100
    engine.set_patches(NO_PATCHES)
    changed = [t for t, w in before.items() if not torch.equal(model.weights.parameter(t), w)]
    assert not changed, changed[:3]


def test_source_and_hashes_follow_the_file_content(models, tmp_path):
    model = models["sd1"]
    tensors, _ = lora_tensors(model, "kohya_ldm", targets=[UNET + "input_blocks.1.1.proj_in.weight"], seed=1)
    path = write_lora(tmp_path / "style.safetensors", tensors, {"ss_output_name": "my_style"})
    lora = read_lora(path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert lora.sha256_short == hashlib.sha256(raw[8 + n:]).hexdigest()[:12]
    assert lora.sha256 == hashlib.sha256(raw).hexdigest()
    assert (lora.name, lora.alias, lora.family) == ("style", "my_style", None)
    assert all(v.device.type == "cpu" for v in lora.tensors.values())
    key = lora_patch_set(lora, model).key
    assert key == lora_patch_set(read_lora(path), model).key
    assert key != lora_patch_set(lora, model, unet=0.5).key
    tensors = {k: v * 2 if k.endswith("up.weight") else v for k, v in tensors.items()}
    changed = read_lora(write_lora(path, tensors, {"ss_output_name": "my_style"}))
    assert changed.sha256_short != lora.sha256_short
    assert lora_patch_set(changed, model).key != key
    declared = read_lora(write_lora(path, tensors, {"sshs_model_hash": "0123456789ABCDEF" * 4}))
    assert declared.sha256_short == "0123456789ab"


def test_weights_only_pt_is_read(models, tmp_path):
    model = models["sd1"]
    tensors, expected = lora_tensors(model, "kohya_diffusers", seed=6)
    torch.save(tensors, tmp_path / "old.pt")
    lora = read_lora(tmp_path / "old.pt")
    assert lora.sha256_short == hashlib.sha256((tmp_path / "old.pt").read_bytes()).hexdigest()[:12]
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model))
    try:
        assert_patched(model, before, expected, 1.0, 1.0)
    finally:
        model.apply_patches(NO_PATCHES)


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_needs_code_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"lora_unet_x.lora_down.weight": torch.zeros(2, 2), "x": Payload()}, f)
    with pytest.raises(NetworkFileError) as info:
        read_lora(path)
    message = str(info.value)
    assert "\n" not in message and "evil.pt" in message and "weights-only" in message
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncated", "empty", "zero tensors", "not a lora", "garbage"])
def test_bad_files_get_one_line_errors(models, tmp_path, damage):
    tensors, _ = lora_tensors(models["sd1"], "kohya_ldm", seed=1)
    path = write_lora(tmp_path / "bad.safetensors", tensors)
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) - 100])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "zero tensors":
        write_lora(path, {})
    elif damage == "not a lora":
        write_lora(path, {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)})
    else:
        path.write_bytes(b"\x00" * 8 + b"hello")
    with pytest.raises(NetworkFileError) as info:
        read_lora(path)
    message = str(info.value)
    assert "\n" not in message and "bad.safetensors" in message
    want = {"truncated": "truncated", "empty": "too short", "zero tensors": "no tensors", "not a lora": "not a LoRA",
            "garbage": "safetensors"}[damage]
    assert want in message, message


def test_a_lora_for_another_family_is_refused_naming_both(models, tmp_path):
    tensors, _ = lora_tensors(models["sd1"], "kohya_ldm", seed=1)
    lora = read_lora(write_lora(tmp_path / "xl.safetensors", tensors, {"ss_base_model_version": "sdxl_base_v1-0"}))
    assert lora.family == "sdxl"
    with pytest.raises(NetworkFileError, match=r"xl\.safetensors.*made for SDXL.*loaded model is SD 1\.x"):
        lora_patch_set(lora, models["sd1"])


def test_unmatched_keys_are_counted_and_named_never_dropped(models, tmp_path):
    model = models["sd1"]
    tensors, _ = lora_tensors(model, "kohya_ldm", seed=1)
    total = len(tensors)
    extra = {"lora_unet_input_blocks_1_1_proj_sideways.lora_down.weight": torch.zeros(4, 32),
             "lora_unet_input_blocks_1_1_proj_sideways.lora_up.weight": torch.zeros(32, 4),
             "lora_te_\x1b[2Jevil.alpha": torch.tensor(1.0),
             "lora_unet_conv_in.dora_scale": torch.zeros(1)}
    lora = read_lora(write_lora(tmp_path / "partial.safetensors", {**tensors, **extra}))
    with pytest.raises(NetworkFileError) as info:
        lora_patch_set(lora, model)
    message = str(info.value)
    assert f"4 of {total + 4} keys were not applied" in message
    assert "proj_sideways.lora_down.weight" in message and "dora_scale" in message
    assert "\x1b" not in message and "\\x1b[2Jevil" in message and "\n" not in message


def test_more_than_five_unmatched_keys_are_elided(models, tmp_path):
    tensors, _ = lora_tensors(models["sd1"], "kohya_ldm", components=("text",), seed=1)
    lora = read_lora(write_lora(tmp_path / "sd1text.safetensors", tensors))
    with pytest.raises(NetworkFileError, match=rf"{len(tensors)} of {len(tensors)} keys were not applied: .*, …"):
        lora_patch_set(lora, models["sdxl"])  # lora_te_ names mean nothing to SDXL (lora_te1_, lora_te2_)


def test_a_lora_of_the_wrong_width_is_refused_with_shapes(models, tmp_path):
    tensors = {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(4, 320),
               "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(320, 4)}
    lora = read_lora(write_lora(tmp_path / "wide.safetensors", tensors))
    with pytest.raises(NetworkFileError, match=r"320x320.*\(32, 32, 1, 1\).*another model"):
        lora_patch_set(lora, models["sd1"])


def test_inconsistent_ranks_are_refused(models, tmp_path):
    tensors = {"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(32, 3)}
    lora = read_lora(write_lora(tmp_path / "ranks.safetensors", tensors))
    with pytest.raises(NetworkFileError, match="inconsistent ranks"):
        lora_patch_set(lora, models["sd1"])


def test_lycoris_modules_go_through_loha_fused_in_proj_and_full_diff(models, tmp_path):
    """LyCORIS maths is lycoris.py's (tested there); here: lora_file dispatches it, resolves its names like
    plain LoRA's (a fused OpenCLIP in_proj split into q/k/v rows) and applies strengths."""
    model = models["sdxl"]
    shapes = model.weights.shapes()
    g = torch.Generator().manual_seed(21)
    tensors, expected = {}, {}

    def loha(name, out_dim, in_dim, rank=3, alpha=2.0):
        w1a, w1b = torch.randn(out_dim, rank, generator=g), torch.randn(rank, in_dim, generator=g)
        w2a, w2b = torch.randn(out_dim, rank, generator=g), torch.randn(rank, in_dim, generator=g)
        tensors.update({f"{name}.hada_w1_a": w1a, f"{name}.hada_w1_b": w1b, f"{name}.hada_w2_a": w2a,
                        f"{name}.hada_w2_b": w2b, f"{name}.alpha": torch.tensor(alpha)})
        return torch.einsum("or,ri->oi", w1a, w1b) * torch.einsum("or,ri->oi", w2a, w2b) * (alpha / rank)

    attn = UNET + "input_blocks.3.1.transformer_blocks.1.attn2.to_v.weight"
    expected[attn] = loha("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn2_to_v", *shapes[attn])
    layer = "text.1.text_model.encoder.layers.1.self_attn"
    width = shapes[f"{layer}.q_proj.weight"][1]
    fused = loha("lora_te2_transformer_resblocks_1_attn_in_proj", 3 * width, width)
    for i, q in enumerate("qkv"):
        expected[f"{layer}.{q}_proj.weight"] = fused[i * width:(i + 1) * width]
    out = UNET + "out.2"
    tensors[out.replace(UNET, "lora_unet_").replace(".", "_") + ".diff"] = diff = torch.randn(shapes[out + ".weight"],
                                                                                          generator=g)
    tensors["lora_unet_out_2.diff_b"] = diff_b = torch.randn(shapes[out + ".bias"], generator=g)
    expected[out + ".weight"], expected[out + ".bias"] = diff, diff_b
    lora = read_lora(write_lora(tmp_path / "loha.safetensors", tensors))
    before = snapshot(model)
    model.apply_patches(lora_patch_set(lora, model, te=0.5, unet=0.75))
    try:
        assert_patched(model, before, expected, 0.5, 0.75, atol=1e-5)
    finally:
        model.apply_patches(NO_PATCHES)


def test_a_broken_lycoris_module_is_named(models, tmp_path):
    tensors = {"lora_unet_out_2.hada_w1_a": torch.zeros(4, 2), "lora_unet_out_2.hada_w1_b": torch.zeros(3, 32)}
    lora = read_lora(write_lora(tmp_path / "broken.safetensors", tensors))
    with pytest.raises(NetworkFileError, match=r"broken\.safetensors.*lora_unet_out_2"):
        lora_patch_set(lora, models["sd1"])


@pytest.mark.parametrize("tensors", [
    {"lora_unet_out_2.lora_down.weight": torch.zeros(4), "lora_unet_out_2.lora_up.weight": torch.zeros(4, 4)},
    {"lora_unet_out_2.lora_down.weight": torch.zeros(4, 32, 3, 3), "lora_unet_out_2.lora_up.weight": torch.zeros(4, 4, 1, 1),
     "lora_unet_out_2.alpha": torch.zeros(2)},
    {"lora_unet_input_blocks_1_1_norm.lora_down.weight": torch.zeros(4, 32),
     "lora_unet_input_blocks_1_1_norm.lora_up.weight": torch.zeros(32, 4)},
    {"lora_unet_out_2.alpha": torch.tensor(1.0)},
    {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.diff_b": torch.zeros(32)},
], ids=["1-d down", "two alphas", "low rank on a norm", "alpha only", "bias diff without a bias"])
def test_malformed_modules_get_one_line_errors_naming_them(models, tmp_path, tensors):
    lora = read_lora(write_lora(tmp_path / "odd.safetensors", tensors))
    with pytest.raises(NetworkFileError) as info:
        lora_patch_set(lora, models["sd1"])
    message = str(info.value)
    assert "odd.safetensors" in message and "lora_unet_" in message and "\n" not in message, message
