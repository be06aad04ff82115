"""Stage 4: the built-in model's companion ControlNet (issue 16), edges and drawn outlines -> emoji.

Zhang, Rao & Agrawala 2023, "Adding Conditional Control to Text-to-Image Diffusion Models" (arXiv:2302.05543):
the ControlNet is a trainable copy of the UNet's encoder (initialised from the trained UNet's weights), joined to
the frozen UNet by zero-initialised 1x1 convolutions and fed the hint through a small conv stack whose last
layer is zero too, so training starts from exactly the frozen model. The loss is the diffusion loss of stage 2
(eps prediction, Min-SNR weighting) through the frozen UNet with the ControlNet's residuals added; the UNet and
the text encoder are those of the exported model file (what the app runs), read from `checkpoint`. Half the
captions are dropped (as Zhang et al. do), so an empty prompt with a hint works. Hints: control_hints.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from sdstudio.engine.clip_text import CLIPTextModel
from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.detect import CONFIG_KEY
from sdstudio.engine.schedules import scaled_linear_alphas_cumprod
from sdstudio.engine.unet import UNetModel
from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.control_hints import cached_hints
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.stage_autoencoder import encode_latents
from sdstudio.training.stage_diffusion import caption_tokens
from sdstudio.training.state import Checkpointer, LossLog, lr_at
from sdstudio.training.warm_start import load_text_and_unet, load_vae

# The parts of a ControlNet that copy the UNet's encoder under the same names (ldm's, as controlnet.py keeps).
COPIED = ("time_embed.", "input_blocks.", "middle_block.")


def stage_dir(plan: TrainingPlan) -> Path:
    return plan.work_dir / "controlnet"


def frozen_models(plan: TrainingPlan, checkpoint: Path) -> tuple[CLIPTextModel, UNetModel, float]:
    """The exported model's text encoder and UNet (eval, no gradients) and its latent scale factor."""
    text, unet = CLIPTextModel(plan.text_config()), UNetModel(plan.unet_config())
    load_text_and_unet(text, unet, checkpoint)
    with safe_open(str(checkpoint), "pt") as f:
        scale = float(json.loads(f.metadata()[CONFIG_KEY])["scale_factor"])
    for module in (text, unet):
        module.eval().requires_grad_(False)
    return text, unet, scale


def image_latents(plan: TrainingPlan, checkpoint: Path, images: np.ndarray) -> dict[str, torch.Tensor]:
    """Posterior means and stds (N, 4, 8, 8) of the unaugmented images under the exported model's encoder,
    cached: the hint must line up with the latent, so none of stage 2's shifted copies."""
    path = stage_dir(plan) / "latents.pt"
    if not path.exists():
        vae = AutoencoderKL(plan.vae_config())
        load_vae(vae, checkpoint)
        with torch.no_grad():
            means, stds = encode_latents(vae.eval(), torch.from_numpy(images), 1, plan.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"means": means[0], "stds": stds[0]}, tmp)
        tmp.replace(path)
    return torch.load(path, weights_only=True)


def controlnet_from_unet(unet: UNetModel, hint_channels: int = 3) -> ControlNet:
    """A ControlNet whose encoder copy starts as `unet`'s encoder, with zero convs (and the hint stack's last
    conv) at zero, so its residuals are exactly zero before training (Zhang et al. 2023, section 3.1)."""
    net = ControlNet(ControlNetConfig(unet.config, hint_channels))
    copied = {k: v for k, v in unet.state_dict().items() if k.startswith(COPIED)}
    missing, unexpected = net.load_state_dict(copied, strict=False)
    if unexpected or any(k.startswith(COPIED) for k in missing):
        raise ValueError(f"the UNet's encoder does not fit the ControlNet: {sorted(unexpected)[:3]}"
                         f" {sorted(k for k in missing if k.startswith(COPIED))[:3]}")
    zeroed: list[nn.Conv2d] = [zc[0] for zc in net.zero_convs]
    zeroed += [net.middle_block_out[0], net.input_hint_block[-1]]
    for conv in zeroed:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return net


@torch.no_grad()
def caption_contexts(text: CLIPTextModel, names: list[str], batch_size: int = 256) -> torch.Tensor:
    """(N + 1, 77, width): the frozen text encoder's output for every caption, the empty caption last."""
    tokens = caption_tokens(names)
    return torch.cat([text(input_ids=tokens[i:i + batch_size]).last_hidden_state
                      for i in range(0, len(tokens), batch_size)])


def controlnet_loss(net: ControlNet, unet: UNetModel, z0: torch.Tensor, hint: torch.Tensor, context: torch.Tensor,
                    alphas_cumprod: torch.Tensor, gamma: float, generator: torch.Generator) -> torch.Tensor:
    """Stage 2's Min-SNR-weighted eps loss, the frozen UNet steered by the ControlNet's residuals."""
    t = torch.randint(0, len(alphas_cumprod), (z0.shape[0],), generator=generator)
    ac = alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = torch.randn(z0.shape, generator=generator)
    zt = ac.sqrt() * z0 + (1 - ac).sqrt() * eps
    residuals = net(zt, hint, t.float(), context)
    pred = unet(zt, t.float(), context, residuals=residuals)
    snr = (ac / (1 - ac)).view(-1)
    weight = snr.clamp(max=gamma) / snr
    return (weight * F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))).mean()


def train_controlnet(plan: TrainingPlan, checkpoint: Path, images: np.ndarray, names: list[str],
                     weights: torch.Tensor) -> ControlNet:
    """Train (or resume) stage 4 against the model file `checkpoint`; `weights` are the sampling weights."""
    stage = plan.controlnet
    torch.manual_seed(plan.seed + 4)
    text, unet, scale = frozen_models(plan, checkpoint)
    net = controlnet_from_unet(unet)
    opt = torch.optim.AdamW(net.parameters(), lr=stage.lr, weight_decay=0.0)
    ckpt = Checkpointer(stage_dir(plan) / "state.pt", plan.checkpoint_every_s, net=net, opt=opt)
    step = ckpt.resume()
    if step >= stage.steps:
        return net.eval()
    log = LossLog(plan.log_dir / "controlnet.csv", ["loss", "lr"])
    generator = torch.Generator().manual_seed(plan.seed + 4 + step)
    hints = torch.from_numpy(cached_hints(stage_dir(plan) / "hints.npz", images))
    latents = image_latents(plan, checkpoint, images)
    contexts = caption_contexts(text, names)
    alphas_cumprod = scaled_linear_alphas_cumprod().float()
    count = len(names)
    net.train()
    running, since_log = 0.0, 0
    while step < stage.steps:
        idx = torch.multinomial(weights, stage.batch_size, replacement=True, generator=generator)
        z0 = latents["means"][idx] + latents["stds"][idx] * torch.randn((stage.batch_size, 4, 8, 8),
                                                                        generator=generator)
        kind = (torch.rand(stage.batch_size, generator=generator) < plan.controlnet_scribble_fraction).long()
        hint = (hints[kind, idx].float() / 255.0)[:, None].expand(-1, 3, -1, -1)
        drop = torch.rand(stage.batch_size, generator=generator) < plan.controlnet_caption_dropout
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup, plan.controlnet_restarts)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = controlnet_loss(net, unet, z0 * scale, hint, contexts[torch.where(drop, count, idx)],
                               alphas_cumprod, plan.min_snr_gamma, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        running, since_log = running + loss.item(), since_log + 1
        if step % stage.log_every == 0 or step == stage.steps:
            log.write(step, loss=running / since_log, lr=lr)
            running, since_log = 0.0, 0
        ckpt.maybe_save(step)
    ckpt.save(step)
    return net.eval()


def saved_controlnet(plan: TrainingPlan, checkpoint: Path) -> tuple[ControlNet, int]:
    """The ControlNet as stage 4 last saved it, and its step."""
    path = stage_dir(plan) / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"stage 'controlnet' has no saved state at {path}; run it first")
    state = torch.load(path, weights_only=True)
    net = ControlNet(ControlNetConfig(frozen_models(plan, checkpoint)[1].config))
    net.load_state_dict(state["net"])
    return net.eval(), int(state["step"])

