"""Stage 2: text encoder + UNet, trained jointly as a latent diffusion model.

Objective of Ho et al., "Denoising Diffusion Probabilistic Models" (NeurIPS 2020): predict the noise eps
added at a uniformly drawn step t of the 1000-step scaled-linear schedule (LDM / Stable Diffusion), with the
loss weighted by Min-SNR-gamma (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy",
ICCV 2023), which speeds up convergence. Captions are replaced by the empty prompt with probability
`caption_dropout`, so the same model also gives the unconditional prediction that classifier-free guidance
(Ho & Salimans 2022) needs. Latents come from a cache of the autoencoder's posteriors (several augmented
copies per image), sampled afresh from each posterior every time.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from sdstudio.engine.clip_text import CLIPTextModel
from sdstudio.engine.prompt_grammar import parse_prompt
from sdstudio.engine.schedules import scaled_linear_alphas_cumprod
from sdstudio.engine.tokenizer import EOS, load_tokenizer, pad_chunk, tokenize
from sdstudio.engine.unet import UNetModel
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.state import EMA, Checkpointer, LossLog, lr_at
from sdstudio.training.warm_start import load_text_and_unet


def prompt_text(caption: str) -> str:
    """The text the engine tokenizes for a prompt equal to `caption`: A1111 emphasis syntax removes
    brackets ("A button (blood type)"), so training sees the same tokens (the 1.1 weight is not replayed)."""
    return "".join(text for text, weight in parse_prompt(caption) if weight >= 0)


def caption_tokens(names: list[str]) -> torch.Tensor:
    """(N, 77) token ids: BOS, caption, EOS, EOS padding (SD 1.x layout). Row N is the empty caption."""
    load_tokenizer()
    rows = [pad_chunk(tokens, EOS) for tokens in tokenize([prompt_text(n) for n in names])]
    rows.append(pad_chunk([], EOS))
    return torch.tensor(rows, dtype=torch.long)


class DiffusionModels(torch.nn.Module):
    """The two trained networks of stage 2, plus their exponential moving averages."""

    def __init__(self, plan: TrainingPlan) -> None:
        super().__init__()
        self.text = CLIPTextModel(plan.text_config())
        self.unet = UNetModel(plan.unet_config())
        self.ema_text = EMA(self.text, plan.ema_decay)
        self.ema_unet = EMA(self.unet, plan.ema_decay)

    def start_from(self, path: Path, decay: float) -> None:
        """Both networks from a shipped checkpoint's (EMA) weights, and their averages from those too."""
        load_text_and_unet(self.text, self.unet, path)
        self.ema_text = EMA(self.text, decay)
        self.ema_unet = EMA(self.unet, decay)

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.text.parameters(), *self.unet.parameters()]

    def update_ema(self) -> None:
        self.ema_text.update(self.text)
        self.ema_unet.update(self.unet)

    def averaged(self) -> tuple[CLIPTextModel, UNetModel]:
        """Copies of the networks holding the EMA weights, in eval mode."""
        text, unet = CLIPTextModel(self.text.config), UNetModel(self.unet.config)
        self.ema_text.copy_to(text)
        self.ema_unet.copy_to(unet)
        return text.eval(), unet.eval()


def prediction_target(z0: torch.Tensor, eps: torch.Tensor, ac: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the UNet learns to output: the noise (eps), or v = sqrt(ac)·eps - sqrt(1 - ac)·z0 (Salimans & Ho,
    "Progressive Distillation", ICLR 2022), as SD 2.x 768-v models predict."""
    if prediction == "v":
        return ac.sqrt() * eps - (1 - ac).sqrt() * z0
    return eps


def denoising_loss(predict, z0: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float,
                   generator: torch.Generator, prediction: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma weighted diffusion loss of `predict(zt, t)` at uniformly drawn steps t. For v-prediction
    the weight is min(SNR, gamma) / (SNR + 1) (Hang et al. 2023, section 3.4)."""
    t = torch.randint(0, len(alphas_cumprod), (z0.shape[0],), generator=generator)
    ac = alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = torch.randn(z0.shape, generator=generator)
    zt = ac.sqrt() * z0 + (1 - ac).sqrt() * eps
    pred = predict(zt, t)
    snr = (ac / (1 - ac)).view(-1)
    weight = snr.clamp(max=gamma) / (snr + 1 if prediction == "v" else snr)
    target = prediction_target(z0, eps, ac, prediction)
    return (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()


def diffusion_loss(models: DiffusionModels, z0: torch.Tensor, tokens: torch.Tensor,
                   alphas_cumprod: torch.Tensor, gamma: float, generator: torch.Generator) -> torch.Tensor:
    context = models.text(input_ids=tokens).last_hidden_state
    return denoising_loss(lambda zt, t: models.unet(zt, t.float(), context), z0, alphas_cumprod, gamma,
                          generator)


def train_diffusion(plan: TrainingPlan, latents: dict[str, torch.Tensor], names: list[str],
                    weights: torch.Tensor) -> DiffusionModels:
    """Train (or resume) stage 2 on cached latents; `weights` are the per-image sampling weights."""
    stage = plan.diffusion
    torch.manual_seed(plan.seed + 1)
    models = DiffusionModels(plan)
    opt = torch.optim.AdamW(models.trained_parameters(), lr=stage.lr, weight_decay=0.01)
    ckpt = Checkpointer(plan.work_dir / "diffusion" / "state.pt", plan.checkpoint_every_s, models=models,
                        opt=opt)
    step = ckpt.resume()
    if step == 0 and plan.init_from is not None:
        models.start_from(plan.init_from, plan.ema_decay)
    log = LossLog(plan.log_dir / "diffusion.csv", ["loss", "lr"])
    generator = torch.Generator().manual_seed(plan.seed + 1 + step)
    tokens = caption_tokens(names)
    alphas_cumprod = scaled_linear_alphas_cumprod().float()
    means, stds, scale = latents["means"], latents["stds"], float(latents["scale_factor"])
    variants, count = means.shape[:2]
    models.train()
    running, since_log = 0.0, 0
    while step < stage.steps:
        idx = torch.multinomial(weights, stage.batch_size, replacement=True, generator=generator)
        if variants > 1:
            var = torch.randint(1, variants, (stage.batch_size,), generator=generator)
        else:
            var = torch.zeros(stage.batch_size, dtype=torch.long)
        var[torch.rand(stage.batch_size, generator=generator) < plan.plain_fraction] = 0
        mean, std = means[var, idx], stds[var, idx]
        z0 = mean + std * torch.randn(mean.shape, generator=generator)
        drop = torch.rand(stage.batch_size, generator=generator) < plan.caption_dropout
        lr = lr_at(step, stage.steps, stage.lr, stage.warmup, plan.diffusion_restarts)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = diffusion_loss(models, z0 * scale, tokens[torch.where(drop, count, idx)], alphas_cumprod,
                              plan.min_snr_gamma, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models.trained_parameters(), 1.0)
        opt.step()
        models.update_ema()
        step += 1
        running, since_log = running + loss.item(), since_log + 1
        if step % stage.log_every == 0 or step == stage.steps:
            log.write(step, loss=running / since_log, lr=lr)
            running, since_log = 0.0, 0
        ckpt.maybe_save(step)
    ckpt.save(step)
    return models.eval()
