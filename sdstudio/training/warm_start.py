"""Starting a training stage from a shipped checkpoint instead of random weights.

Generation 2 of the built-in model (issue 14) continues from generation 1: its autoencoder is retrained with
colour terms, and its text encoder and UNet carry on from the EMA weights that shipped, on the new latents.
The checkpoint is read with the export's own key prefixes, so what is loaded is exactly what shipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from sdstudio.training.export import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX


def _part(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"the checkpoint to start from is missing: {path}")
    part = {k[len(prefix):]: v.float() for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    if not part:
        raise ValueError(f"{path} has no weights under '{prefix}'")
    return part


def load_part(module: nn.Module, path: Path, prefix: str) -> None:
    """Load the weights under `prefix` into `module`; every parameter must be there (buffers such as CLIP's
    position ids, which the export leaves out, may be missing)."""
    missing, unexpected = module.load_state_dict(_part(path, prefix), strict=False)
    parameters = {name for name, _ in module.named_parameters()}
    if unexpected or parameters & set(missing):
        absent = sorted(parameters & set(missing))[:5]
        raise ValueError(f"{path} does not fit under '{prefix}': missing {absent},"
                         f" unexpected {sorted(unexpected)[:5]}")


def load_vae(module: nn.Module, path: Path) -> None:
    load_part(module, path, VAE_PREFIX)


def load_text_and_unet(text: nn.Module, unet: nn.Module, path: Path) -> None:
    load_part(text, path, TEXT_PREFIX)
    load_part(unet, path, UNET_PREFIX)
