"""Adopting shipped weights as the saved state of every stage, when the work folder is gone.

The stages resume from `build/training/<plan>/<stage>/state.pt`, which is not in git. A fresh checkout that
wants to continue the model that shipped (not retrain it from the generation before) adopts the shipped files:
each stage gets a state holding the shipped weights at the step the shipped file records, marked `adopted`.
Optimiser moments and the random state are not in a shipped file, so a stage resumed from an adopted state
starts them fresh (state.Checkpointer says so when it loads one); the diffusion stage's live weights and their
moving average both start from the shipped (averaged) weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sdstudio.engine.taesd import taesd_decoder
from sdstudio.engine.vae import AutoencoderKL
from sdstudio.training.export import model_paths
from sdstudio.training.plan import TrainingPlan
from sdstudio.training.stage_diffusion import DiffusionModels
from sdstudio.training.warm_start import load_vae

ADOPTED = "adopted"


def shipped_steps(checkpoint: Path) -> dict[str, int]:
    """The step of every stage recorded in a shipped file's provenance (export.py writes it)."""
    with safe_open(str(checkpoint), "pt") as f:
        provenance = json.loads((f.metadata() or {}).get("sdstudio.training", "{}"))
    steps = provenance.get("steps")
    if not steps:
        raise ValueError(f"{checkpoint} records no training steps: it was not exported by this trainer")
    return {stage: int(step) for stage, step in steps.items()}


def _write(path: Path, parts: dict, step: int, source: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**parts, "step": step, ADOPTED: source.name}, tmp)
    tmp.replace(path)


def adopt_shipped(plan: TrainingPlan, models_dir: Path) -> list[str]:
    """Write an adopted state for every stage that has none; return the stages written. Refuses to mix: a
    work folder with some stages saved and others missing is left as it is (delete it or finish it)."""
    checkpoint, preview = model_paths(models_dir)
    for path in (checkpoint, preview):
        if not path.is_file():
            raise FileNotFoundError(f"no shipped model to adopt at {path}")
    stages = ("autoencoder", "decoder", "diffusion", "preview")
    existing = [s for s in stages if (plan.work_dir / s / "state.pt").exists()]
    if existing:
        raise RuntimeError(f"{plan.work_dir} already holds saved stages ({', '.join(existing)}); adopting the "
                           f"shipped weights would mix two models: delete the folder first")
    steps = shipped_steps(checkpoint)
    vae = AutoencoderKL(plan.vae_config())
    load_vae(vae, checkpoint)
    # The shipped autoencoder has the fine-tuned decoder; its encoder is stage 1's (stage 1b never changes
    # it), and only the encoder feeds the latents and the hue gate.
    for stage in ("autoencoder", "decoder"):
        _write(plan.work_dir / stage / "state.pt", {"model": vae.state_dict()}, steps[stage], checkpoint)
    models = DiffusionModels(plan)
    models.start_from(checkpoint, plan.ema_decay)
    _write(plan.work_dir / "diffusion" / "state.pt", {"models": models.state_dict()}, steps["diffusion"],
           checkpoint)
    decoder = taesd_decoder(4, plan.preview_width)
    decoder.load_state_dict({k: v.float() for k, v in load_file(str(preview)).items()})
    _write(plan.work_dir / "preview" / "state.pt", {"decoder": decoder.state_dict()}, steps["preview"], preview)
    return list(stages)
