"""Training a LoRA on a loaded model: the diffusion objective of stage_diffusion on a folder of images.

Each step draws a batch from one aspect bucket (lora_data.py), encodes it with the model's VAE (a sample of
the posterior, times the model's latent scale), and minimises stage_diffusion.denoising_loss: noise at a
uniformly drawn step of the 1000-step scaled-linear schedule, eps or v as the loaded model predicts
(ModelDescription.prediction), Min-SNR-gamma weighting. Only the LoRA branches train (AdamW, gradients clipped
to norm 1, stage_diffusion's warm-up + cosine learning rate `state.lr_at`); the model runs in fp32 on the CPU.

Resumable: `state_dir` holds `settings.json` (a resume must train the same thing), `state.pt`
(state.Checkpointer: the LoRA, the optimiser, the step; rewritten atomically every `save_every_s` seconds and
at the end) and `loss.csv` (state.LossLog). Every random draw of step s comes from a generator seeded with
(seed, s), so a run resumed from any save draws what the uninterrupted run drew and ends with the same LoRA,
bit for bit."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from sdstudio.engine.conditioning import sdxl_y
from sdstudio.engine.errors import RequestError
from sdstudio.engine.schedules import scaled_linear_alphas_cumprod
from sdstudio.engine.tokenizer import CHUNK_TOKENS, pad_chunk, tokenize
from sdstudio.training.lora_data import BucketedImages, Example
from sdstudio.training.lora_network import LoraNetwork, checkpointed, freeze, lora_targets
from sdstudio.training.stage_diffusion import denoising_loss, prompt_text
from sdstudio.training.state import Checkpointer, LossLog, lr_at

OnStep = Callable[[int, int, float], None]  # (steps done, total, loss)


@dataclass(frozen=True)
class LoraSettings:
    """What a LoRA training run is; saved as settings.json in its state folder."""

    images: str
    trigger: str
    class_word: str = ""
    steps: int = 500
    rank: int = 4
    alpha: float = 4.0
    lr: float = 1e-4
    resolution: int = 0  # 0: the model's default size
    batch_size: int = 1
    text_encoder: bool = False
    conv: bool = False
    random_crop: bool = False
    flip: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    warmup: int = 0
    min_snr_gamma: float = 5.0
    base: str = ""  # the checkpoint; "": the built-in model
    out: str = ""  # the LoRA file to write

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoraSettings:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


class Conditioner:
    """Captions -> the UNet's (context, y): each encoder's hidden states for one 77-token chunk (kohya's
    default max_token_length 75), concatenated (SDXL), and SDXL's y from the pooled output and the image size.
    Encodings are cached when the text encoders do not train."""

    def __init__(self, model, trains: bool) -> None:
        self.text, self.trains = model.text, trains
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _encode(self, caption: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = tokenize([prompt_text(caption)])[0][:CHUNK_TOKENS]
        contexts, pooled = [], None
        for encoder in self.text.encoders:
            ids = torch.tensor([pad_chunk(tokens, encoder.pad_token)], device=encoder.device)
            hidden, pooled_out = encoder(ids)
            contexts.append(hidden.float())
            if pooled_out is not None:
                pooled = pooled_out.float()
        return torch.cat(contexts, dim=-1), pooled

    def __call__(self, captions: list[str],
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.trains:
            encoded = [self._encode(c) for c in captions]
        else:
            with torch.no_grad():
                for c in captions:
                    if c not in self._cache:
                        self._cache[c] = self._encode(c)
            encoded = [self._cache[c] for c in captions]
        context = torch.cat([e[0] for e in encoded])
        if not self.text.family.needs_y:
            return context, None
        pooled = torch.cat([e[1] for e in encoded])
        return context, sdxl_y(pooled, size, (0, 0), size)


def check_resume(state_dir: Path, settings: LoraSettings) -> None:
    """Write settings.json for a new run; for a resumed one, refuse other settings than the saved ones."""
    saved = state_dir / "settings.json"
    if saved.is_file():
        before = LoraSettings.from_json(saved.read_text())
        changed = [f.name for f in fields(settings) if getattr(before, f.name) != getattr(settings, f.name)]
        if changed:
            raise RequestError(f"{state_dir} holds a run with other settings ({', '.join(changed)}); resume "
                               "it with its own settings or start a new run")
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(settings.to_json())
    tmp.replace(saved)


def train_lora(model, examples: list[Example], settings: LoraSettings, state_dir: Path,
               save_every_s: float = 60.0, on_step: OnStep | None = None) -> LoraNetwork:
    """Train (or resume) a LoRA on `model` (checkpoint.LoadedModel, fp32) and return it."""
    check_resume(state_dir, settings)
    desc = model.description
    resolution = settings.resolution or desc.default_size
    # sides the UNet can halve at each level
    multiple = desc.vae_downscale * 2 ** (len(model.unet.config.channel_mult) - 1)
    data = BucketedImages(examples, resolution, multiple, settings.random_crop, settings.flip)
    freeze(model)
    torch.manual_seed(settings.seed)  # the LoRA's initial down weights
    network = LoraNetwork(lora_targets(model, settings.text_encoder, settings.conv), settings.rank,
                          settings.alpha)
    params = [p for p in network.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.01)
    ckpt = Checkpointer(state_dir / "state.pt", save_every_s, lora=network, opt=opt)
    step = ckpt.resume()
    log = LossLog(state_dir / "loss.csv", ["loss", "lr"])
    conditioner = Conditioner(model, settings.text_encoder)
    alphas_cumprod = scaled_linear_alphas_cumprod().float()
    with network.attached(), checkpointed(model.unet, settings.gradient_checkpointing):
        while step < settings.steps:
            g = step_generator(settings.seed, step)
            pixels, captions = data.batch(settings.batch_size, g)
            with torch.no_grad():
                mean, logvar = model.vae.encode(pixels)
                z0 = (mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)) * desc.scale_factor
            context, y = conditioner(captions, (pixels.shape[2], pixels.shape[3]))
            lr = lr_at(step, settings.steps, settings.lr, settings.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            def predict(zt, t, context=context, y=y):
                return model.unet(zt, t.float(), context, y)

            loss = denoising_loss(predict, z0, alphas_cumprod, settings.min_snr_gamma, g, desc.prediction)
            if not torch.isfinite(loss):
                raise RequestError(f"the loss became {loss.item()} at step {step + 1}; lower --lr and resume "
                                   f"from {state_dir}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            log.write(step, loss=loss.item(), lr=lr)
            ckpt.maybe_save(step)
            if on_step is not None:
                on_step(step, settings.steps, loss.item())
    ckpt.save(step)
    return network
