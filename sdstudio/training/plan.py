"""What the built-in model is and how long each stage trains: one dataclass, a full and a quick variant.

Nearly all of the full plan's time is the diffusion stage (the decoder fine-tuning and the preview decoder
can run beside it, in a second process); docs/training.md has the measured times. The model: an f=8
autoencoder (64x64 images -> 8x8x4 latents, the same factor as Stable Diffusion, so the madebyollin tiny
decoder layout fits), a ~7 M parameter UNet, and a 4-layer CLIP text model of width 128 with the real
49,408-token vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sdstudio.engine.transformers_clip import CLIPTextConfig
from sdstudio.engine.unet import UNetConfig
from sdstudio.engine.vae import VAEConfig


@dataclass(frozen=True)
class StagePlan:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    log_every: int


@dataclass(frozen=True)
class TrainingPlan:
    work_dir: Path
    log_dir: Path
    seed: int = 0
    dataset_limit: int | None = None
    checkpoint_every_s: float = 180.0
    # Stage 1: autoencoder
    autoencoder: StagePlan = StagePlan(steps=2000, batch_size=8, lr=1e-3, warmup=50, log_every=25)
    autoencoder_crop: int = 32
    kl_weight: float = 1e-6
    colour_weight: float = 2.0
    # 64 channels at full resolution, not 32: with GroupNorm's 32 groups, 32 channels make every norm an
    # instance norm, which erases each image's mean colour (tried: reconstructions came out uniformly brown).
    vae_ch: int = 64
    vae_ch_mult: tuple[int, ...] = (1, 1, 2, 2)
    vae_res_blocks: int = 1
    # Stage 1b: decoder fine-tuning on the frozen latents, in parallel with stage 2
    decoder: StagePlan = StagePlan(steps=1500, batch_size=16, lr=5e-4, warmup=50, log_every=25)
    decoder_crop: int = 4
    # Stage 2: text encoder + UNet
    diffusion: StagePlan = StagePlan(steps=8000, batch_size=64, lr=8e-4, warmup=100, log_every=25)
    # A second cosine cycle from step 2,200 (where the first run ended, on a loaded machine) at half the peak.
    diffusion_restarts: tuple[tuple[int, float], ...] = ((2200, 4e-4),)
    latent_variants: int = 4
    # Share of samples drawn from the unaugmented latent (variant 0); the rest from the shifted/scaled
    # copies. Fidelity is judged against the centred images, so the centred copy gets half the draws.
    plain_fraction: float = 0.5
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    unet_channels: int = 64
    unet_mult: tuple[int, ...] = (1, 2, 2)
    unet_res_blocks: int = 1
    unet_head_channels: int = 32
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    # Stage 3: tiny preview decoder
    preview: StagePlan = StagePlan(steps=3000, batch_size=32, lr=2e-3, warmup=50, log_every=25)
    preview_crop: int = 4
    # TAESD's layout at an eighth of its width. At 64 channels one preview took longer than one UNet step of
    # this model (23 vs 18 ms); at 8 the cost is mostly per-layer overhead, under a tenth of a step.
    preview_width: int = 8

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae_ch_mult) - 1)

    def vae_config(self) -> VAEConfig:
        return VAEConfig(ch=self.vae_ch, ch_mult=self.vae_ch_mult, num_res_blocks=self.vae_res_blocks)

    def unet_config(self) -> UNetConfig:
        levels = len(self.unet_mult)
        return UNetConfig(in_channels=4, out_channels=4, model_channels=self.unet_channels,
                          channel_mult=self.unet_mult, num_res_blocks=self.unet_res_blocks,
                          transformer_depth=(1,) * levels, transformer_depth_middle=1,
                          context_dim=self.text_width, num_head_channels=self.unet_head_channels,
                          use_linear_in_transformer=True)

    def text_config(self) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408, hidden_size=self.text_width,
                              intermediate_size=4 * self.text_width, num_hidden_layers=self.text_layers,
                              num_attention_heads=self.text_heads, max_position_embeddings=77,
                              hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                              pad_token_id=49407)


def full_plan(work_dir: Path, log_dir: Path) -> TrainingPlan:
    return TrainingPlan(work_dir=work_dir, log_dir=log_dir)


def quick_plan(work_dir: Path, log_dir: Path) -> TrainingPlan:
    """Every stage for a few steps on a handful of images, with the full model shapes: a smoke test."""
    tiny = StagePlan(steps=3, batch_size=4, lr=1e-3, warmup=1, log_every=1)
    return replace(full_plan(work_dir, log_dir), dataset_limit=12, autoencoder=tiny, decoder=tiny,
                   diffusion=tiny, preview=tiny, latent_variants=2, diffusion_restarts=())
