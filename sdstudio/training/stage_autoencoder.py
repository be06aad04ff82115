"""Stage 1: the KL-regularised autoencoder of Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models" (CVPR 2022), section 3.1, trained at small scale.

The network is fully convolutional, so it trains on random crops (a quarter of the pixels, a quarter of
the cost) and still encodes whole images afterwards. The loss is pixel L1 + MSE, L1 on 4x4-patch mean
colours, L1 on the opponent hue axes (per pixel, of 8x8-patch means, and of a linear read-out from the
latent), plus a small KL term that keeps the latent near a unit Gaussian; the perceptual and adversarial
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
from sdstudio.training.warm_start import load_vae


def opponent(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 2, H, W) opponent colour axes R - G and B - (R + G) / 2: the two axes of hue,
    which plain pixel losses weigh little next to brightness (generation 1 folded R - G into brightness)."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    return torch.stack([r - g, b - (r + g) / 2], 1)


def lab(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [-1, 1] -> CIE L*a*b* (D65), differentiable; colour.srgb_to_lab's formulas."""
    c = ((x + 1) / 2).clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]]) / torch.tensor([[0.95047], [1.0], [1.08883]])
    xyz = torch.einsum("ij,njhw->nihw", m, linear)
    edge = (6 / 29) ** 3
    f = torch.where(xyz > edge, xyz.clamp(min=edge).pow(1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def colour_head() -> torch.nn.Conv2d:
    """A linear read-out of each latent pixel's patch-mean opponent colour, trained with the autoencoder."""
    return torch.nn.Conv2d(4, 2, 1)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, plan: TrainingPlan,
                        factor: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The pixel and colour terms of stage 1's loss, which the decoder fine-tuning (stage 1b) reuses.
    `factor` is the autoencoder's downsampling: the size of the patch one latent pixel covers."""
    l1 = (recon - x).abs().mean()
    mse = F.mse_loss(recon, x)
    # Mean colours of 4x4 patches: without this term the first thousands of steps reproduce shapes in
    # the dataset's average colour (tried), yet colours are what the captions name.
    colour = (F.avg_pool2d(recon, 4) - F.avg_pool2d(x, 4)).abs().mean()
    chroma = ((opponent(recon) - opponent(x)).abs().mean()
              + (opponent(F.avg_pool2d(recon, factor)) - opponent(F.avg_pool2d(x, factor))).abs().mean())
    # CIE76 difference of 4x4-patch means, in tens: the measure the colour check uses on 16x16 thumbnails.
    difference = lab(F.avg_pool2d(recon.clamp(-1, 1), 4)) - lab(F.avg_pool2d(x, 4))
    delta_e = (difference.pow(2).sum(1) + 1e-6).sqrt().mean() / 10
    loss = (l1 + mse + plan.colour_weight * colour + plan.chroma_weight * chroma + plan.lab_weight * delta_e)
    return loss, {"l1": l1, "mse": mse, "colour": colour, "chroma": chroma, "delta_e": delta_e}


def autoencoder_loss(model: AutoencoderKL, x: torch.Tensor, plan: TrainingPlan, generator: torch.Generator,
                     head: torch.nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    mean, logvar = model.encode(x)
    logvar = logvar.clamp(-30.0, 20.0)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
    factor = x.shape[-1] // mean.shape[-1]
    loss, parts = reconstruction_loss(model.decode(z), x, plan, factor)
    patch_hue = opponent(F.avg_pool2d(x, factor))
    probe = (head(mean) - patch_hue).abs().mean() if head is not None else torch.zeros(())
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
    loss = loss + plan.probe_weight * probe + plan.kl_weight * kl
    return loss, {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "probe": probe.item(),
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
    head = colour_head()
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=stage.lr, betas=(0.5, 0.9),
                            weight_decay=0.0)
    ckpt = Checkpointer(plan.work_dir / "autoencoder" / "state.pt", plan.checkpoint_every_s, model=model,
                        head=head, opt=opt)
    step = ckpt.resume()
    if step == 0 and plan.init_from is not None:
        load_vae(model, plan.init_from)
    columns = ["loss", "l1", "mse", "colour", "chroma", "probe", "delta_e", "kl", "lr"]
    log = LossLog(plan.log_dir / "autoencoder.csv", columns)
    generator = torch.Generator().manual_seed(plan.seed + step)
    model.train()
    while step < stage.steps:
        idx = torch.randint(0, images.shape[0], (stage.batch_size,), generator=generator)
        x = shift_scale(to_tensor(images[idx]), generator)
        x = random_crops(x, plan.autoencoder_crop, generator, plan.vae_factor)
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup, plan.autoencoder_restarts)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, parts = autoencoder_loss(model, x, plan, generator, head)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *head.parameters()], 1.0)
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
