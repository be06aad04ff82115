"""lora_keys: every dialect of LoRA module names resolves to the right patch target, for the real full-size
layouts of SD 1.x, SD 2.x and SDXL (shapes on the meta device) and the tiny test models."""

import re

import pytest

from sdstudio.engine.families import UNET, family
from sdstudio.engine.lora_keys import QKV, LoraKeys, Resolved, diffusers_to_ldm
from sdstudio.engine.text_encoder import clip_l_config, openclip_bigg_config, openclip_h_config
from sdstudio.engine.unet import UNetConfig, UNetModel
from tests.engine.family_shapes import clip_shapes
from tests.engine.lora_files import _openclip, ldm_to_diffusers


def full_size_targets(fam: str) -> dict[str, tuple[int, ...]]:
    """What PatchedWeights.shapes() gives for a full-size model of `fam` (UNet + text, our names)."""
    config = {"sd1": UNetConfig.sd15, "sd2": UNetConfig.sd21, "sdxl": UNetConfig.sdxl}[fam]()
    shapes = {UNET + k: tuple(v.shape) for k, v in UNetModel(config, device="meta").named_parameters()}
    texts = {"sd1": (clip_l_config(),), "sd2": (openclip_h_config(),),
             "sdxl": (clip_l_config(), openclip_bigg_config())}[fam]
    for i, text in enumerate(texts):
        shapes |= clip_shapes(text, f"text.{i}.")
    return shapes


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def full(request):
    shapes = full_size_targets(request.param)
    return request.param, shapes, LoraKeys(family(request.param), shapes, num_res_blocks=2)


def _adaptable(shapes):
    return [t.removesuffix(".weight") for t, s in shapes.items() if t.endswith(".weight") and len(s) in (2, 4)
            and (t.startswith(UNET) or ".encoder.layers." in t)]


def _prefix(fam, index, kohya):
    if kohya:
        return "lora_te_" if fam != "sdxl" else f"lora_te{index + 1}_"
    return "text_encoder." if index == 0 else f"text_encoder_{index + 1}."


def test_every_unet_and_text_layer_resolves_in_every_dialect(full):
    fam, shapes, keys = full
    stems = _adaptable(shapes)
    assert len(stems) > 200
    for stem in stems:
        if stem.startswith(UNET):
            ldm = stem[len(UNET):]
            diffusers = ldm_to_diffusers(ldm, 2)
            names = ["lora_unet_" + ldm.replace(".", "_"), "lora_unet_" + diffusers.replace(".", "_"),
                     "unet." + diffusers, "unet." + diffusers + ".lora"]
            if m := re.fullmatch(r"(.*attn[12])\.(to_[qkv]|to_out)(\.0)?", diffusers):
                names.append(f"unet.{m[1]}.processor.{m[2]}_lora")
        else:
            index, path = int(stem.split(".")[1]), stem.split(".", 2)[2]
            names = [_prefix(fam, index, True) + path.replace(".", "_"), _prefix(fam, index, False) + path,
                     _prefix(fam, index, False) + path + ".lora_linear_layer"]
            if family(fam).text_encoders[index].openclip and not re.search(r"\.[qkv]_proj$", path):
                names.append(_prefix(fam, index, True) + _openclip(path).replace(".", "_"))
        for name in names:
            assert keys.resolve(name) == Resolved(stem), name


def test_sdxl_kohya_ldm_names_of_deep_transformers():
    shapes = full_size_targets("sdxl")
    keys = LoraKeys(family("sdxl"), shapes, 2)
    assert keys.resolve("lora_unet_input_blocks_7_1_transformer_blocks_9_ff_net_0_proj") == Resolved(
        UNET + "input_blocks.7.1.transformer_blocks.9.ff.net.0.proj")
    assert keys.resolve("lora_unet_down_blocks_2_attentions_1_transformer_blocks_9_attn2_to_out_0") == Resolved(
        UNET + "input_blocks.8.1.transformer_blocks.9.attn2.to_out.0")
    assert keys.resolve("unet.add_embedding.linear_2") == Resolved(UNET + "label_emb.0.2")
    assert keys.resolve("lora_unet_up_blocks_1_upsamplers_0_conv") == Resolved(UNET + "output_blocks.5.2.conv")
    assert keys.resolve("lora_unet_up_blocks_2_upsamplers_0_conv") is None  # SDXL's last level has none


@pytest.mark.parametrize("fam", ["sd2", "sdxl"])
def test_openclip_in_proj_splits_into_q_k_v(fam):
    shapes = full_size_targets(fam)
    keys = LoraKeys(family(fam), shapes, 2)
    prefix = "lora_te_" if fam == "sd2" else "lora_te2_"
    index = 0 if fam == "sd2" else 1
    expected = Resolved(f"text.{index}.text_model.encoder.layers.3.self_attn", QKV)
    for name in ("transformer_resblocks_3_attn_in_proj", "model_transformer_resblocks_3_attn_in_proj",
                 "transformer_resblocks_3_attn"):
        assert keys.resolve(prefix + name) == expected
    assert expected.targets() == tuple(f"text.{index}.text_model.encoder.layers.3.self_attn.{q}.weight" for q in QKV)
    assert keys.resolve(prefix + "transformer_resblocks_3_mlp_c_fc") == Resolved(
        f"text.{index}.text_model.encoder.layers.3.mlp.fc1")


def test_diffusers_block_table_matches_the_documented_sd15_mapping():
    # docs/extensions.md (A1111's convert_diffusers_name_to_compvis), SD 1.5: 2 res blocks per level.
    table = {
        "down_blocks_0_attentions_1_proj_in": ("input_blocks_2_1_proj_in",),
        "down_blocks_2_resnets_1_conv1": ("input_blocks_8_0_in_layers_2",),
        "down_blocks_1_resnets_0_conv_shortcut": ("input_blocks_4_0_skip_connection",),
        "down_blocks_3_resnets_0_time_emb_proj": ("input_blocks_10_0_emb_layers_1",),
        "down_blocks_0_downsamplers_0_conv": ("input_blocks_3_0_op",),
        "down_blocks_2_downsamplers_0_conv": ("input_blocks_9_0_op",),
        "mid_block_attentions_0_transformer_blocks_0_attn1_to_q": ("middle_block_1_transformer_blocks_0_attn1_to_q",),
        "mid_block_resnets_1_conv2": ("middle_block_2_out_layers_3",),
        "up_blocks_1_attentions_2_proj_out": ("output_blocks_5_1_proj_out",),
        "up_blocks_3_resnets_2_conv_shortcut": ("output_blocks_11_0_skip_connection",),
        "up_blocks_0_upsamplers_0_conv": ("output_blocks_2_2_conv", "output_blocks_2_1_conv"),
        "time_embedding_linear_1": ("time_embed_0",),
        "time_embedding_linear_2": ("time_embed_2",),
        "conv_in": ("input_blocks_0_0",),
        "conv_out": ("out_2",),
        "input_blocks_1_1_proj_in": (),
    }
    for diffusers, ldm in table.items():
        assert diffusers_to_ldm(diffusers, 3) == ldm, diffusers


def test_names_of_nothing_in_the_model_resolve_to_none(full):
    fam, shapes, keys = full
    for name in ("lora_unet_down_blocks_9_attentions_0_proj_in", "lora_unet_input_blocks_1_1_proj_sideways",
                 "unet.down_blocks.0.attentions.0.transformer_blocks.7.attn1.to_q", "lora_unet_",
                 "some_other_network_layer", "lora_te3_text_model_encoder_layers_0_mlp_fc1",
                 "text_encoder_3.text_model.encoder.layers.0.mlp.fc1",
                 "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q_extra"):
        assert keys.resolve(name) is None, name
    # Each family accepts only its own text prefixes.
    other = "lora_te_" if fam == "sdxl" else "lora_te1_"
    assert keys.resolve(other + "text_model_encoder_layers_0_mlp_fc1") is None
