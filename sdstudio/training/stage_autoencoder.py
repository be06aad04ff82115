"""Stage 1: the KL-regularised autoencoder of Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models" (CVPR 2022), section 3.1, trained at small scale.

The network is fully convolutional, so it trains on random crops (a quarter of the pixels, a quarter of
the cost) and still encodes whole images afterwards. The loss is pixel L1 + MSE, L1 on 4x4-patch mean
colours, plus a small KL term that keeps the latent near a unit Gaussian; the perceptual and adversarial
terms are left out (no pretrained network may be downloaded here). After training, the latent scale
factor is measured as 1 / std of the latents, as the paper does for its scale_factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.augment import shift_scale, to_tensor
from sdstudio.training.plan import StagePlan, TrainingPlan
from sdstudio.training.state import Checkpointer, LossLog, lr_at


def autoencoder_loss(model: AutoencoderKL, x: torch.Tensor, kl_weight: float, colour_weight: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    mean, logvar = model.encode(x)
    logvar = logvar.clamp(-30.0, 20.0)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    recon = model.decode(z)
    l1 = (recon - x).abs().mean()
    mse = F.mse_loss(recon, x)
    # Mean colours of 4x4 patches: without this term the first thousands of steps reproduce shapes in
    # the dataset's average colour (tried), yet colours are what the captions name.
    colour = (F.avg_pool2d(recon, 4) - F.avg_pool2d(x, 4)).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
    loss = l1 + mse + colour_weight * colour + kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "colour": colour.item(),
                  "kl": kl.item()}


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator, multiple: int) -> torch.Tensor:
    """One crop per image, aligned to the autoencoder's downsampling factor."""
    if size >= x.shape[-1]:
        return x
    positions = (x.shape[-1] - size) // multiple + 1
    out = torch.empty(x.shape[0], x.shape[1], size, size)
    for i, (top, left) in enumerate(torch.randint(0, positions, (x.shape[0], 2), generator=generator)):
        out[i] = x[i, :, top * multiple: top * multiple + size, left * multiple: left * multiple + size]
    return out


def train_autoencoder(plan: TrainingPlan, images: torch.Tensor) -> AutoencoderKL:
    """Train (or resume) the autoencoder on `images` (N, H, W, 3 uint8); return it in eval mode."""
    stage: StagePlan = plan.autoencoder
    torch.manual_seed(plan.seed)
    model = AutoencoderKL(plan.vae_config())
    opt = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.5, 0.9), weight_decay=0.0)
    ckpt = Checkpointer(plan.work_dir / "autoencoder" / "state.pt", plan.checkpoint_every_s, model=model,
                        opt=opt)
    step = ckpt.resume()
    log = LossLog(plan.log_dir / "autoencoder.csv", ["loss", "l1", "mse", "colour", "kl", "lr"])
    generator = torch.Generator().manual_seed(plan.seed + step)
    model.train()
    while step < stage.steps:
        idx = torch.randint(0, images.shape[0], (stage.batch_size,), generator=generator)
        x = shift_scale(to_tensor(images[idx]), generator)
        x = random_crops(x, plan.autoencoder_crop, generator, plan.vae_factor)
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, parts = autoencoder_loss(model, x, plan.kl_weight, plan.colour_weight, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % stage.log_every == 0 or step == stage.steps:
            log.write(step, lr=lr, **parts)
        ckpt.maybe_save(step)
    ckpt.save(step)
    return model.eval()


@torch.no_grad()
def encode_latents(model: AutoencoderKL, images: torch.Tensor, variants: int, seed: int,
                   batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds of `variants` augmented copies of every image: (V, N, 4, h, w) each.
    Variant 0 is the unaugmented image."""
    generator = torch.Generator().manual_seed(seed)
    means, stds = [], []
    for v in range(variants):
        m_parts, s_parts = [], []
        for start in range(0, images.shape[0], batch_size):
            x = to_tensor(images[start:start + batch_size])
            if v > 0:
                x = shift_scale(x, generator)
            mean, logvar = model.encode(x)
            m_parts.append(mean)
            s_parts.append(torch.exp(0.5 * logvar.clamp(-30.0, 20.0)))
        means.append(torch.cat(m_parts))
        stds.append(torch.cat(s_parts))
    return torch.stack(means), torch.stack(stds)


def latent_scale_factor(means: torch.Tensor) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (LDM's scale_factor)."""
    return float(1.0 / means.flatten().std())
