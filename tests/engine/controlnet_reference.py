"""diffusers' ControlNetModel as the reference for our ControlNet: same weights, same inputs.

Our original-layout weights go through diffusers' own single-file converter (`convert_controlnet_checkpoint`,
what `ControlNetModel.from_single_file` runs), so a wrong module name or wiring on our side shows up as a
missing key or a numeric difference. `diffusers_state` gives the diffusers-layout file of the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint
from PIL import Image
from torch import Tensor

from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.unet import UNetConfig
from tests.engine import a1111_reference as a1111
from tests.engine import kdiffusion_reference
from tests.engine.unet_reference import diffusers_config, sdxl_y

CONTROLNET_KEYS = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                   "transformer_layers_per_block", "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                   "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def controlnet_config(config: ControlNetConfig) -> dict:
    """The ControlNetModel config equal to ours (the encoder half of the UNet's)."""
    full = diffusers_config(config.unet)
    return {k: v for k, v in full.items() if k in CONTROLNET_KEYS} | {"conditioning_channels": config.hint_channels}


def diffusers_twin(ours: ControlNet) -> ControlNetModel:
    """A diffusers ControlNet holding the very tensors of `ours`, through diffusers' single-file converter."""
    cfg = controlnet_config(ours.config)
    state = dict(ours.state_dict())
    converted = convert_controlnet_checkpoint(state, {"layers_per_block": cfg["layers_per_block"]})
    # diffusers 0.42's converter leaves out SDXL's label_emb; its own mapping table names it.
    if "addition_embed_type" in cfg:
        for theirs, ldm in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
            converted[theirs] = state[ldm]
    with torch.device("meta"):
        twin = ControlNetModel(**cfg)
    twin.load_state_dict(converted, strict=True, assign=True)
    return twin.eval()


def diffusers_state(ours: ControlNet) -> dict[str, Tensor]:
    """The diffusers-layout state dict of `ours` (cloned, contiguous: ready for safetensors)."""
    return {k: v.detach().clone().contiguous() for k, v in diffusers_twin(ours).state_dict().items()}


def run_reference(theirs: ControlNetModel, x: Tensor, hint: Tensor, t: Tensor, context: Tensor,
                  text_embeds: Tensor | None = None, time_ids: Tensor | None = None,
                  scale: float = 1.0) -> tuple[list[Tensor], Tensor]:
    kwargs = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
    with torch.no_grad():
        down, mid = theirs(x, t, context, hint, conditioning_scale=scale, added_cond_kwargs=kwargs,
                           return_dict=False)
    return list(down), mid


def reference_y(text_embeds: Tensor, time_ids: Tensor) -> Tensor:
    return sdxl_y(text_embeds, time_ids)


TINY_CN_UNET = UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                          transformer_depth=(1, 1), transformer_depth_middle=1, context_dim=32, num_heads=2)


# --- A1111's txt2img with ControlNet units, over diffusers' UNet (`down_block_additional_residuals`) and
# diffusers' ControlNetModel, with sd-webui-controlnet's rules written out independently of ours. ---


@dataclass(frozen=True)
class ReferenceUnit:
    net: ControlNetModel
    hint: Tensor  # (1, 3, H, W) in [0, 1]
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str = "Balanced"


def reference_scales(unit: ReferenceUnit) -> list[float]:
    """A1111's 13 control_scales (zipped with fewer residuals on SDXL: the tail is unused)."""
    if unit.mode == "Balanced":
        return [unit.strength] * 13
    return [unit.strength * 0.825 ** float(12 - i) for i in range(13)]


class ControlledCFGDenoiser(a1111.CFGDenoiser):
    """A1111's CFGDenoiser with sd-webui-controlnet's hook: every unit's ControlNet on [cond; uncond], "ControlNet
    is more important" zeroing the uncond row (cond_mark), the scale list zipped with the residuals. The step is
    A1111's `state.sampling_step`: 0 at launch, then set to d["i"] by the sampler's callback."""

    def __init__(self, pipe, cond, uncond, scale, units: list[ReferenceUnit], steps: int):
        super().__init__(pipe, cond, uncond, scale)
        self.units, self.steps, self.step = units, steps, 0

    def callback_state(self, d) -> None:
        self.step = d["i"]

    def _eps(self, x, t, cond, image_cond=None):
        total = None
        cond_mark = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
        for unit in self.units:
            if not unit.start <= self.step / self.steps <= unit.end:
                continue
            down, mid = unit.net(x, t, cond, unit.hint.expand(x.shape[0], -1, -1, -1), return_dict=False)
            control = [*down, mid]
            if unit.mode == "ControlNet is more important":
                control = [c * cond_mark for c in control]
            control = [c * s for c, s in zip(control, reference_scales(unit), strict=False)]
            total = control if total is None else [a + b for a, b in zip(total, control, strict=True)]
        kwargs = {} if total is None else {"down_block_additional_residuals": total[:-1],
                                           "mid_block_additional_residual": total[-1]}
        return self.unet(x, t, encoder_hidden_states=cond, **kwargs).sample


@torch.no_grad()
def controlled_txt2img(pipe, units: list[ReferenceUnit], prompt: str, negative: str, seed: int, steps: int,
                       cfg: float, width: int, height: int) -> Image.Image:
    sampling, _ = kdiffusion_reference.load()
    sigmas = a1111.reference_sigmas(steps)
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    model = ControlledCFGDenoiser(pipe, cond, uncond, cfg, units, steps)
    x = sampling.sample_euler(model, a1111.a1111_noise(seed, height, width) * sigmas[0], sigmas, disable=True,
                              callback=model.callback_state)
    return a1111.a1111_pixels(pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample)


def diffusers_from_single_file(path, config: ControlNetConfig, folder) -> ControlNetModel:
    """diffusers' own single-file loader on `path`, told the architecture by a local config (no network)."""
    if not (Path(folder) / "config.json").exists():
        with torch.device("meta"):
            ControlNetModel(**controlnet_config(config)).save_config(folder)
    return ControlNetModel.from_single_file(str(path), config=str(folder), local_files_only=True).eval()
