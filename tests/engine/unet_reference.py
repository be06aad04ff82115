"""diffusers' UNet2DConditionModel as the reference for our LDM UNet: same weights, same inputs.

Weights go through diffusers' own single-file converter (`convert_ldm_unet_checkpoint`), so a wrong
module name or wiring on our side shows up as a missing key or a numeric difference.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint
from torch import Tensor, nn

from sdstudio.engine.unet import UNetConfig, UNetModel, timestep_embedding


def randomize_(model: nn.Module, seed: int) -> None:
    """Random weights that keep activations near unit scale, so attention is far from uniform.

    Fan-in scaled weights (not LDM's zero-init output layers, which would make outputs trivially zero),
    non-zero biases, and norm scales around 1 so that a swapped weight/bias pair cannot hide.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
                module.weight.normal_(1.0, 0.1, generator=gen)
                module.bias.normal_(0.0, 0.1, generator=gen)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5, generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)


def diffusers_config(config: UNetConfig, addition_time_embed_dim: int = 256) -> dict:
    """The UNet2DConditionModel config equal to `config` (what diffusers derives from an LDM YAML)."""
    widths = [config.model_channels * m for m in config.channel_mult]
    depths = [max(d, 1) for d in config.transformer_depth]
    # diffusers' mid block takes the last level's depth; SD 1.x/2.x have no attention there to disagree.
    if config.transformer_depth[-1] == 0:
        depths[-1] = config.transformer_depth_middle
    assert depths[-1] == config.transformer_depth_middle, "diffusers cannot express this middle depth"
    attends = [d > 0 for d in config.transformer_depth]
    result = {
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "block_out_channels": widths,
        "layers_per_block": config.num_res_blocks,
        "transformer_layers_per_block": depths,
        "cross_attention_dim": config.context_dim,
        # diffusers' `attention_head_dim` holds the number of heads (diffusers issue 2011).
        "attention_head_dim": [max(config.heads_at(w)[0], 1) for w in widths],
        "use_linear_projection": config.use_linear_in_transformer,
    }
    if config.adm_in_channels is not None:
        result |= {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": addition_time_embed_dim,
            "projection_class_embeddings_input_dim": config.adm_in_channels,
        }
    return result


def diffusers_twin(model: UNetModel, addition_time_embed_dim: int = 256) -> UNet2DConditionModel:
    """A diffusers UNet holding the very tensors of `model` (no copy): built on meta, then assigned."""
    cfg = diffusers_config(model.config, addition_time_embed_dim)
    checkpoint = {LDM_UNET_KEY + k: v for k, v in model.state_dict().items()}
    converted = convert_ldm_unet_checkpoint(checkpoint, cfg)
    with torch.device("meta"):
        twin = UNet2DConditionModel(**cfg)
    twin.load_state_dict(converted, strict=True, assign=True)
    return twin.eval()


def sdxl_y(text_embeds: Tensor, time_ids: Tensor, dim: int = 256) -> Tensor:
    """SDXL's `y`: pooled text, then the sinusoidal embedding of each of the six size/crop numbers."""
    sizes = timestep_embedding(time_ids.flatten(), dim).reshape(time_ids.shape[0], -1)
    return torch.cat([text_embeds, sizes], dim=-1)


def run_both(
    ours: UNetModel,
    theirs: UNet2DConditionModel,
    x: Tensor,
    timesteps: Tensor,
    context: Tensor,
    text_embeds: Tensor | None = None,
    time_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Both models on the same inputs; SDXL inputs go to diffusers as parts and to us as `y`."""
    with torch.no_grad():
        if text_embeds is None:
            expected = theirs(x, timesteps, context).sample
            return ours(x, timesteps, context), expected
        kwargs = {"text_embeds": text_embeds, "time_ids": time_ids}
        expected = theirs(x, timesteps, context, added_cond_kwargs=kwargs).sample
        y = sdxl_y(text_embeds, time_ids, theirs.config.addition_time_embed_dim)
        return ours(x, timesteps, context, y), expected
