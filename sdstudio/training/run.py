"""The training pipeline as a sequence of resumable stages, each reading the previous one's saved output.

dataset -> autoencoder -> latents -> diffusion, and beside it decoder -> preview; then export; then the
companion ControlNet, trained on the exported model, and its export (export_controlnet). A stage
whose state says it is finished returns at once, so running all stages again only does what is left;
`export` can run at any time and ships the latest saved weights of every stage.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from sdstudio.engine.taesd import taesd_decoder
from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.augment import to_tensor
from sdstudio.training.colour import autoencoder_check
from sdstudio.training.dataset import EmojiDataset, build_dataset
from sdstudio.training.export import export_controlnet, export_model, latent_rgb_factors, model_paths
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.stage_autoencoder import encode_latents, latent_scale_factor, train_autoencoder
from sdstudio.training.stage_controlnet import saved_controlnet, train_controlnet
from sdstudio.training.stage_decoder import train_decoder
from sdstudio.training.stage_diffusion import DiffusionModels, train_diffusion
from sdstudio.training.stage_preview import train_preview

STAGES = ("dataset", "autoencoder", "latents", "diffusion", "decoder", "preview", "export", "controlnet",
          "export_controlnet")


def dataset_path(plan: TrainingPlan) -> Path:
    return plan.work_dir / "dataset.npz"


def latents_path(plan: TrainingPlan) -> Path:
    return plan.work_dir / "latents.pt"


def load_dataset(plan: TrainingPlan) -> EmojiDataset:
    path = dataset_path(plan)
    if not path.exists():
        build_dataset(plan.dataset_limit).save(path)
    return EmojiDataset.load(path)


def saved_part(plan: TrainingPlan, stage: str, part: str) -> dict:
    path = plan.work_dir / stage / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"stage '{stage}' has no saved state at {path}; run it first")
    return torch.load(path, weights_only=True)[part]


def load_autoencoder(plan: TrainingPlan, stage: str) -> AutoencoderKL:
    """The autoencoder as stage 1 ("autoencoder") or stage 1b ("decoder") left it."""
    vae = AutoencoderKL(plan.vae_config())
    vae.load_state_dict(saved_part(plan, stage, "model"))
    return vae.eval()


def make_latents(plan: TrainingPlan) -> dict[str, torch.Tensor]:
    path = latents_path(plan)
    if not path.exists():
        images = torch.from_numpy(load_dataset(plan).images)
        vae = load_autoencoder(plan, "autoencoder")
        means, stds = encode_latents(vae, images, plan.latent_variants, plan.seed)
        latents = {"means": means, "stds": stds, "scale_factor": torch.tensor(latent_scale_factor(means[0]))}
        tmp = path.with_suffix(".tmp")
        torch.save(latents, tmp)
        tmp.replace(path)
    return torch.load(path, weights_only=True)


def check_path(plan: TrainingPlan) -> Path:
    return plan.work_dir / "autoencoder_check.json"


def check_autoencoder(plan: TrainingPlan) -> dict[str, float]:
    """Issue 14's hue check of the stage-1 encoder (colour.autoencoder_check), cached in the work folder;
    raises when the plan has a gate and the latents do not carry hue, before any diffusion training. The
    colour difference is recorded here too but gated at export, on the decoder that ships (stage 1b):
    decoder fine-tuning cannot change the latents the diffusion stage learns."""
    path = check_path(plan)
    if not path.exists():
        figures = autoencoder_check(load_autoencoder(plan, "autoencoder"), load_dataset(plan).images)
        state = torch.load(plan.work_dir / "autoencoder" / "state.pt", weights_only=True)
        figures["step"] = int(state["step"])
        path.write_text(json.dumps(figures, indent=1))
    figures = json.loads(path.read_text())
    print(json.dumps({"autoencoder_check": figures}))
    if plan.min_hue_r2 is not None:
        axes = (("R-G", "probe_r2_red_green"), ("B-Y", "probe_r2_blue_yellow"))
        problems = [f"{axis} {figures[key]:.3f} < {plan.min_hue_r2}" for axis, key in axes
                    if figures[key] < plan.min_hue_r2]
        if problems:
            raise RuntimeError(f"the autoencoder's latents do not carry hue yet ({'; '.join(problems)}): "
                               f"train it further (raise plan.autoencoder.steps) and delete {path}")
    return figures


def check_decoder(plan: TrainingPlan, vae: AutoencoderKL, images: np.ndarray) -> dict[str, float]:
    """The shipped autoencoder's colour figures; raises when its reconstructions miss the plan's CIE76
    bound."""
    figures = autoencoder_check(vae, images)
    print(json.dumps({"decoder_check": figures}))
    if plan.max_delta_e is not None and figures["mean_delta_e"] > plan.max_delta_e:
        raise RuntimeError(f"reconstructions differ by mean CIE76 {figures['mean_delta_e']:.2f} > "
                           f"{plan.max_delta_e}: train the decoder stage further before exporting")
    return figures


def export(plan: TrainingPlan, out_dir: Path) -> None:
    latents = torch.load(latents_path(plan), weights_only=True)
    models = DiffusionModels(plan)
    models.load_state_dict(saved_part(plan, "diffusion", "models"))
    text, unet = models.averaged()
    decoder = taesd_decoder(4, plan.preview_width)
    decoder.load_state_dict(saved_part(plan, "preview", "decoder"))
    steps = {stage: int(torch.load(plan.work_dir / stage / "state.pt", weights_only=True)["step"])
             for stage in ("autoencoder", "decoder", "diffusion", "preview")}
    data = load_dataset(plan)
    info = data.info
    scale = float(latents["scale_factor"])
    latent_rgb = latent_rgb_factors(latents["means"][0] * scale, to_tensor(torch.from_numpy(data.images)))
    provenance = {"steps": steps, "dataset": {k: v for k, v in info.items() if k != "skipped"},
                  "started_from": plan.init_from.name if plan.init_from else "random initialisation",
                  "torch": torch.__version__, "python": platform.python_version()}
    vae = load_autoencoder(plan, "decoder")
    provenance["colour"] = {k: round(v, 4) for k, v in check_decoder(plan, vae, data.images).items()}
    paths = export_model(plan, out_dir, unet, vae, text, decoder, scale, latent_rgb, provenance)
    print(json.dumps({"exported": [str(p) for p in paths], **provenance}))


def ship_controlnet(plan: TrainingPlan, out_dir: Path) -> None:
    """Export the ControlNet as stage 4 last saved it (at any time, like `export`)."""
    checkpoint = model_paths(out_dir)[0]
    net, step = saved_controlnet(plan, checkpoint)
    data = load_dataset(plan)
    provenance = {"steps": {"controlnet": step}, "model": checkpoint.name,
                  "hints": ["canny", "outline"], "caption_dropout": plan.controlnet_caption_dropout,
                  "dataset": {k: v for k, v in data.info.items() if k != "skipped"},
                  "torch": torch.__version__, "python": platform.python_version()}
    path = export_controlnet(out_dir, net, provenance)
    print(json.dumps({"exported": [str(path)], **provenance}))


def run_stages(plan: TrainingPlan, stages: list[str], out_dir: Path) -> None:
    for stage in STAGES:
        if stage not in stages:
            continue
        if stage == "dataset":
            load_dataset(plan)
        elif stage == "autoencoder":
            train_autoencoder(plan, torch.from_numpy(load_dataset(plan).images))
        elif stage == "latents":
            make_latents(plan)
        elif stage == "diffusion":
            check_autoencoder(plan)
            data = load_dataset(plan)
            train_diffusion(plan, make_latents(plan), data.names, torch.from_numpy(data.weights))
        elif stage == "decoder":
            images = torch.from_numpy(load_dataset(plan).images)
            train_decoder(plan, load_autoencoder(plan, "autoencoder"), images, make_latents(plan))
        elif stage == "preview":
            train_preview(plan, load_autoencoder(plan, "decoder"), make_latents(plan))
        elif stage == "export":
            export(plan, out_dir)
        elif stage == "controlnet":
            # Against the exported model file: the UNet and text encoder the app runs, frozen.
            data = load_dataset(plan)
            train_controlnet(plan, model_paths(out_dir)[0], data.images, data.names, torch.from_numpy(data.weights))
        else:
            ship_controlnet(plan, out_dir)
