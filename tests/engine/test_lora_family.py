import pytest

from sdstudio.engine.families import FAMILIES
from sdstudio.engine.lora_family import lora_family
from tests.engine.family_shapes import checkpoint_shapes

R = 4


def kohya_sd1(ctx=768, te=768):
    return {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (R, ctx),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": (320, R),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha": (),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (R, te),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (te, R),
    }


CASES = {
    "kohya sd1": (kohya_sd1(), {}, "sd1"),
    "kohya sd2": (kohya_sd1(1024, 1024), {}, "sd2"),
    "kohya sd1, text only": ({k: v for k, v in kohya_sd1().items() if "lora_te" in k}, {}, "sd1"),
    "kohya sd2, text only (OpenCLIP names)": ({
        "lora_te_model_transformer_resblocks_0_attn_out_proj.lora_down.weight": (R, 1024)}, {}, "sd2"),
    "kohya sd2, unet only": ({k: v for k, v in kohya_sd1(1024, 1024).items() if "unet" in k}, {}, "sd2"),
    "kohya sdxl te1/te2": ({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (R, 768),
                            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (R, 1280)},
                           {}, "sdxl"),
    "kohya sdxl LDM unet only": ({
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_v.lora_down.weight": (R, 2048)}, {}, "sdxl"),
    "peft sd1": ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (R, 768)},
                 {}, "sd1"),
    "peft sdxl text_encoder_2": ({"text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight":
                                  (R, 1280)}, {}, "sdxl"),
    "peft sdxl add_embedding": ({"unet.add_embedding.linear_1.lora_A.weight": (R, 2816)}, {}, "sdxl"),
    "old diffusers processor": ({
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight": (R, 1024)},
        {}, "sd2"),
    "loha sd1": ({"lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b": (R, 768)},
                 {}, "sd1"),
    "full diff sdxl": ({"lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_k.diff": (1280, 2048)},
                       {}, "sdxl"),
    "self-attention only: cannot tell": ({
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_down.weight": (R, 320)},
        {}, None),
    "tiny widths: cannot tell": (kohya_sd1(32, 32), {}, None),
    "empty": ({}, {}, None),
    "modelspec v1 wins over shapes": (kohya_sd1(1024, 1024), {"modelspec.architecture": "stable-diffusion-v1/lora"},
                                      "sd1"),
    "modelspec xl": ({}, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "sdxl"),
    "modelspec xl refiner: not a family we run": (kohya_sd1(2048, 1280), {
        "modelspec.architecture": "stable-diffusion-xl-v1-refiner/lora"}, None),
    "modelspec v2": ({}, {"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "sd2"),
    "ss_base_model_version sdxl": (kohya_sd1(32, 32), {"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
    "ss_base_model_version sd_v2": ({}, {"ss_base_model_version": "sd_v2_768_v"}, "sd2"),
    "ss_base_model_version sd_v1": ({}, {"ss_base_model_version": "sd_v1"}, "sd1"),
    "ss_v2 True": ({}, {"ss_v2": "True"}, "sd2"),
    "ss_v2 False alone does not say sd1": ({}, {"ss_v2": "False"}, None),
    "ss_v2 False with sdxl names": ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (R, 1280)},
                                    {"ss_v2": "False"}, "sdxl"),
    "unknown architecture falls through to shapes": (kohya_sd1(), {"modelspec.architecture": "flux-1-dev/lora"},
                                                     "sd1"),
}


@pytest.mark.parametrize("name", CASES)
def test_lora_family(name):
    shapes, metadata, expected = CASES[name]
    assert lora_family(shapes, metadata) == expected


@pytest.mark.parametrize("fam", ["sd1", "sd2", "sdxl"])
def test_kohya_names_of_a_full_size_model_give_its_family(fam):
    """A LoRA with a module for every attention projection of the real model's UNet (LDM dialect)."""
    shapes = checkpoint_shapes(fam)
    lora = {}
    for key, shape in shapes.items():
        if key.startswith("model.diffusion_model.") and key.endswith(("to_k.weight", "to_q.weight")):
            name = "lora_unet_" + key.removeprefix("model.diffusion_model.").removesuffix(".weight").replace(".", "_")
            lora[name + ".lora_down.weight"] = (R, shape[1])
            lora[name + ".lora_up.weight"] = (shape[0], R)
    assert lora_family(lora, {}) == fam


def test_every_runnable_family_has_distinct_widths():
    runnable = [f for f in FAMILIES if f.context_dim is not None]
    assert len({f.context_dim for f in runnable}) == len(runnable)


def test_lora_family_imports_no_torch():
    """The UI's header-only catalog calls it for every file in a folder, without loading torch."""
    import subprocess
    import sys

    code = "import sys, sdstudio.engine.lora_family; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
