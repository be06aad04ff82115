"""kohya names of our UNet modules: the diffusers block names are checked against diffusers' own single-file
converter (run on marker tensors, lora_reference.diffusers_names), for every Linear/Conv2d of a UNet of SD
1.x's layout (2 res blocks, no attention on the lowest level) and of the built-in model's layout; and each
name resolves back through our loader's lora_keys to the same module."""

from __future__ import annotations

import pytest
import torch
from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

from sdstudio.engine.errors import RequestError
from sdstudio.engine.families import SD1
from sdstudio.engine.lora_keys import LoraKeys
from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.training.lora_names import ldm_to_diffusers, text_name, unet_name
from tests.engine import lora_reference as lr
from tests.engine import reference_models as ref
from tests.engine.lora_files import TINY_UNETS

BUILTIN_LAYOUT = UNetConfig(in_channels=4, out_channels=4, model_channels=64, channel_mult=(1, 2, 2),
                            num_res_blocks=1, transformer_depth=(1, 1, 1), transformer_depth_middle=1,
                            context_dim=128, num_heads=-1, num_head_channels=32,
                            use_linear_in_transformer=True)


def _layers(unet: UNetModel) -> list[str]:
    return [n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
            and n.startswith(("input_blocks.", "middle_block.", "output_blocks."))
            and n != "input_blocks.0.0"]


@pytest.mark.parametrize("config", [TINY_UNETS["sd1"], BUILTIN_LAYOUT], ids=["sd1_layout", "builtin"])
def test_diffusers_names_are_diffusers_converters(config):
    unet = UNetModel(config, device="meta")
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    params = dict(ref.ORIGINAL_CONFIGS["sd15"]["model"]["params"])
    unet_params = {**params["unet_config"]["params"], "model_channels": config.model_channels,
                   "channel_mult": list(config.channel_mult), "num_res_blocks": config.num_res_blocks,
                   "context_dim": config.context_dim,
                   "attention_resolutions": [2 ** i for i, d in enumerate(config.transformer_depth) if d],
                   "use_linear_in_transformer": config.use_linear_in_transformer}
    original = ref.ldm_config("unet_config", unet_params, 0.18215)
    meta = {ref.UNET + k: torch.empty(s, device="meta") for k, s in shapes.items()}
    diffusers_config = create_unet_diffusers_config_from_ldm(original, meta)
    theirs = lr.diffusers_names(shapes, diffusers_config)
    layers = _layers(unet)
    assert len(layers) > 20
    for path in layers:
        assert ldm_to_diffusers(path, config.num_res_blocks) + ".weight" == theirs[path + ".weight"], path


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_names_resolve_back_through_our_loader(family):
    config = TINY_UNETS[family]
    unet = UNetModel(config, device="meta")
    shapes = {ref.UNET + k: tuple(v.shape) for k, v in unet.state_dict().items()}
    from sdstudio.engine.families import family as fam

    keys = LoraKeys(fam(family), shapes, config.num_res_blocks)
    for path in _layers(unet):
        name = unet_name(family, path, config.num_res_blocks)
        assert name.startswith("lora_unet_down_blocks" if family == "sd1" and path.startswith("input")
                               else "lora_unet_")
        assert keys.resolve(name).targets() == (f"{ref.UNET}{path}.weight",), name


def test_sdxl_keeps_ldm_names_and_two_text_prefixes():
    assert unet_name("sdxl", "input_blocks.4.1.proj_in", 2) == "lora_unet_input_blocks_4_1_proj_in"
    assert unet_name("sd1", "input_blocks.4.1.proj_in", 2) == "lora_unet_down_blocks_1_attentions_0_proj_in"
    path = "text_model.encoder.layers.0.self_attn.q_proj"
    assert text_name(1, 0, path) == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert text_name(2, 1, path) == "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    assert SD1.name == "sd1"


def test_a_module_outside_the_blocks_has_no_name():
    with pytest.raises(RequestError, match="not a LoRA target"):
        ldm_to_diffusers("time_embed.0", 2)
