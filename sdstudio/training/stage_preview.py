"""Stage 3: the tiny preview decoder, distilled from the autoencoder's decoder.

TAESD (madebyollin/taesd) is trained to reproduce the full decoder's output from the same latents. Here the
student reads scaled latents (what the UNet sees) and is fit with L1 + MSE to the teacher's image mapped to
[0, 1]. Teacher images are computed once for every cached latent; the student trains on aligned crops of
latent and image, since it is fully convolutional. Every other image (unaugmented) is enough for a
preview and halves the cost of the teacher's decodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdstudio.engine.taesd import taesd_decoder
from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.state import Checkpointer, LossLog, lr_at


@torch.no_grad()
def teacher_images(vae: AutoencoderKL, means: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The full decoder's images of the posterior means, in [0, 1], stored as uint8 to save memory."""
    parts = []
    for start in range(0, means.shape[0], batch_size):
        image = (vae.decode(means[start:start + batch_size]) + 1) / 2
        parts.append((image.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(parts)


def aligned_crops(latents: torch.Tensor, images: torch.Tensor, size: int, factor: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching crops: `size` latent pixels and the `size * factor` image pixels they decode to."""
    positions = latents.shape[-1] - size + 1
    corners = torch.randint(0, positions, (latents.shape[0], 2), generator=generator)
    z = torch.stack([lat[:, t:t + size, s:s + size] for lat, (t, s) in zip(latents, corners, strict=True)])
    x = torch.stack([img[:, t * factor:(t + size) * factor, s * factor:(s + size) * factor]
                     for img, (t, s) in zip(images, corners, strict=True)])
    return z, x


def train_preview(plan: TrainingPlan, vae: AutoencoderKL,
                  latents: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """Train (or resume) the tiny decoder; returns it in eval mode."""
    stage = plan.preview
    torch.manual_seed(plan.seed + 2)
    decoder = taesd_decoder(4, plan.preview_width)
    opt = torch.optim.AdamW(decoder.parameters(), lr=stage.lr, weight_decay=0.0)
    ckpt = Checkpointer(plan.work_dir / "preview" / "state.pt", plan.checkpoint_every_s, decoder=decoder,
                        opt=opt)
    step = ckpt.resume()
    log = LossLog(plan.log_dir / "preview.csv", ["loss", "l1", "mse", "lr"])
    generator = torch.Generator().manual_seed(plan.seed + 2 + step)
    means = latents["means"][0, ::2]
    scale = float(latents["scale_factor"])
    targets = teacher_images(vae, means) if step < stage.steps else None
    decoder.train()
    while step < stage.steps:
        idx = torch.randint(0, means.shape[0], (stage.batch_size,), generator=generator)
        z, x = aligned_crops(means[idx] * scale, targets[idx], plan.preview_crop, plan.vae_factor, generator)
        x = x.float() / 255
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        out = decoder(z)
        l1, mse = (out - x).abs().mean(), F.mse_loss(out, x)
        loss = l1 + mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % stage.log_every == 0 or step == stage.steps:
            log.write(step, loss=loss.item(), l1=l1.item(), mse=mse.item(), lr=lr)
        ckpt.maybe_save(step)
    ckpt.save(step)
    return decoder.eval()
