"""Stage 1b: fine-tune the autoencoder's decoder with the encoder frozen, while stage 2 trains.

Once the latents are cached, the latent space is fixed; only the decoder can still improve. Stable
Diffusion's released VAEs (`sd-vae-ft-mse`, `sd-vae-ft-ema`) were made this way: the decoder fine-tuned on
the frozen encoder's latents, which keeps every trained UNet compatible. Here it lets the autoencoder keep
learning in parallel with the diffusion stage instead of before it. The decoder trains on aligned crops of
posterior samples of the cached latents (unaugmented variant) and the original images, with stage 1's
reconstruction loss (pixel and colour terms; no KL or latent read-out, the encoder is frozen).
"""

from __future__ import annotations

import torch

from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.augment import to_tensor
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.stage_autoencoder import reconstruction_loss
from sdstudio.training.stage_preview import aligned_crops
from sdstudio.training.state import Checkpointer, LossLog, lr_at


def train_decoder(plan: TrainingPlan, vae: AutoencoderKL, images: torch.Tensor,
                  latents: dict[str, torch.Tensor]) -> AutoencoderKL:
    """Fine-tune (or resume) `vae`'s decoder and post_quant_conv; returns the autoencoder in eval mode."""
    stage = plan.decoder
    torch.manual_seed(plan.seed + 3)
    vae.requires_grad_(False)
    trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=stage.lr, betas=(0.5, 0.9), weight_decay=0.0)
    ckpt = Checkpointer(plan.work_dir / "decoder" / "state.pt", plan.checkpoint_every_s, model=vae, opt=opt)
    step = ckpt.resume()
    log = LossLog(plan.log_dir / "decoder.csv", ["loss", "l1", "mse", "colour", "chroma", "delta_e", "lr"])
    generator = torch.Generator().manual_seed(plan.seed + 3 + step)
    means, stds = latents["means"][0], latents["stds"][0]
    vae.train()
    while step < stage.steps:
        idx = torch.randint(0, means.shape[0], (stage.batch_size,), generator=generator)
        z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=generator)
        z, x = aligned_crops(z, to_tensor(images[idx]), plan.decoder_crop, plan.vae_factor, generator)
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup, plan.decoder_restarts)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, parts = reconstruction_loss(vae.decode(z), x, plan, plan.vae_factor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        step += 1
        if step % stage.log_every == 0 or step == stage.steps:
            log.write(step, loss=loss.item(), **{k: v.item() for k, v in parts.items()}, lr=lr)
        ckpt.maybe_save(step)
    ckpt.save(step)
    return vae.eval()
