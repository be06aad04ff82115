"""Loading a single-file checkpoint into our modules, with weights straight from the file.

Modules are built on the meta device (no random initialisation, no allocation) and receive the file's
tensors with `load_state_dict(strict=True, assign=True)`: names match the checkpoint 1:1, so a missing or
extra key is a real incompatibility and is reported as such. Tensors are read one at a time (see
weights.py), so peak memory stays near the size of the loaded weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sdstudio.engine import text_loading
from sdstudio.engine.detect import VAE, ModelDescription, detect
from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.families import family
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, SafetensorsHeader, read_header
from sdstudio.engine.taesd import TAESD, decoder_shape, load_taesd_state
from sdstudio.engine.unet import UNetModel, unet_config_from_shapes
from sdstudio.engine.vae import AutoencoderKL, vae_config_from_shapes
from sdstudio.engine.weights import load_state_dict_file, load_tensors, open_pickle_checkpoint

Progress = Callable[[str, float], None]


@dataclass
class LoadedModel:
    description: ModelDescription
    unet: UNetModel
    vae: AutoencoderKL
    text: text_loading.TextStack
    taesd: TAESD | None
    dtype: torch.dtype
    load_seconds: float = 0.0


def assign_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Strict, zero-copy load into a meta-built module; a mismatch becomes a CheckpointError naming keys."""
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the {what} weights do not fit the detected architecture "
                              f"({_short(str(exc))})") from None
    leftover = [n for n, p in module.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: the {what} weights lack {leftover[0]}")


def _short(message: str, limit: int = 400) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + " ..."


def build_unet(header: SafetensorsHeader, desc: ModelDescription, dtype: torch.dtype) -> UNetModel:
    fam = family(desc.family).configured(desc.config)
    config = unet_config_from_shapes(header.shapes(fam.unet_prefix), fam.unet_heads)
    unet = UNetModel(config, device="meta")
    assign_weights(unet, load_tensors(header, fam.unet_prefix, dtype), "UNet", header.path.name)
    return unet.eval().requires_grad_(False)


def build_vae(state: dict[str, torch.Tensor], source: str) -> AutoencoderKL:
    vae = AutoencoderKL(vae_config_from_shapes({k: tuple(v.shape) for k, v in state.items()}), device="meta")
    assign_weights(vae, state, "VAE", source)
    return vae.eval().requires_grad_(False)


def load_vae_file(path: str | Path, dtype: torch.dtype) -> AutoencoderKL:
    """A standalone VAE (keys `encoder.*`/`decoder.*`, or a checkpoint's `first_stage_model.*`)."""
    state, _ = load_state_dict_file(path, dtype=dtype)
    if any(k.startswith(VAE) for k in state):
        state = {k[len(VAE):]: v for k, v in state.items() if k.startswith(VAE)}
    state = {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    if not any(k.startswith("decoder.") for k in state):
        raise CheckpointError(f"{Path(path).name}: not a VAE (no decoder.* tensors)")
    return build_vae(state, Path(path).name)


def load_taesd_file(path: str | Path, dtype: torch.dtype = torch.float32) -> TAESD:
    """A TAESD decoder file (madebyollin or diffusers layout), or a file with both halves."""
    state, _ = load_state_dict_file(path, dtype=dtype)
    # Every model we load has 4 latent channels, so a 16-channel (SD3/FLUX) file is refused by the strict
    # load below; the width is whatever the file was trained with.
    taesd = TAESD(dtype=dtype, width=decoder_shape(state)[1])
    if any(k.startswith(("encoder.", "decoder.")) for k in state):
        halves = {k for k in state if k.startswith(("encoder.", "decoder."))}
        if all(k.startswith("decoder.") for k in halves):
            load_taesd_state(taesd.decoder, {k[len("decoder."):]: v for k, v in state.items()})
        else:
            load_taesd_state(taesd, state)
    else:
        load_taesd_state(taesd.decoder, state)
    return taesd.eval().requires_grad_(False)


def load_checkpoint(path: str | Path, *, vae_path: str | Path | None = None, taesd_path: str | Path | None = None,
                    prediction: str = "", dtype: torch.dtype = torch.float32, allow_pickle: bool = False,
                    progress: Progress | None = None) -> LoadedModel:
    """Detect, build and load every part of a single-file checkpoint (optionally replacing its VAE)."""
    path = Path(path)
    report = progress or (lambda _msg, _frac: None)
    t0 = time.perf_counter()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            load_state_dict_file(path)  # raises the refusal message
        header = open_pickle_checkpoint(path)
    else:
        header = read_header(path)
    desc = detect(header, prediction)
    missing = [m for m in desc.missing if not (m == "VAE" and vae_path)]
    if missing:
        raise CheckpointError(f"{path.name}: the checkpoint lacks its {' and '.join(missing)}"
                              + ("; choose a separate VAE file" if "VAE" in missing else ""))
    report("UNet", 0.05)
    unet = build_unet(header, desc, dtype)
    report("VAE", 0.6)
    if vae_path:
        vae = load_vae_file(vae_path, dtype)
    else:
        vae = build_vae(load_tensors(header, VAE, dtype), path.name)
    report("text encoder", 0.7)
    text = text_loading.build_text_stack(header, desc, dtype)
    report("preview decoder", 0.95)
    taesd = load_taesd_file(taesd_path, dtype) if taesd_path else None
    report("ready", 1.0)
    return LoadedModel(desc, unet, vae, text, taesd, dtype, time.perf_counter() - t0)
