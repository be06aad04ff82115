"""Interoperability: a LoRA file as `train lora` writes it (kohya names of lora_names.py, one alpha, ss_*
metadata), with random non-zero branches on every layer it adapts (UNet attention and, with --conv, ResBlocks
and resamplers; text encoders), loaded by diffusers (`load_lora_weights` + `fuse_lora` on a diffusers
conversion of the same tiny random checkpoint, test_lora_equivalence.tiny_pipeline) gives the fused weights
our loader gives (read_lora + lora_patch_set + apply_patches): max |ours - diffusers| / max |W| <= 1e-5 per
weight, and exactly the same set of weights changed. SD 1.x layout (diffusers UNet names, `lora_te_`) and SDXL
layout (LDM names, `lora_te1_` / `lora_te2_`)."""

from __future__ import annotations

import math

import pytest
import torch

import tests.engine.test_lora_equivalence as eq
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.lora_file import read_lora
from sdstudio.training.lora_export import export_lora, lora_metadata
from sdstudio.training.lora_network import LoraNetwork, lora_targets
from sdstudio.training.lora_train import LoraSettings
from tests.engine.lora_files import tiny_family_checkpoint

RANK, ALPHA = 4, 3.0


def trained_like_file(checkpoint, folder, family: str):
    """What `train lora --text-encoder --conv` exports, with random branches instead of trained ones."""
    model = load_checkpoint(checkpoint, dtype=torch.float32)
    network = LoraNetwork(lora_targets(model, text_encoder=True, conv=True), RANK, ALPHA)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for lora in network.loras.values():
            for w in (lora.down.weight, lora.up.weight):
                w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(w[0].numel()))
    settings = LoraSettings(images=str(folder), trigger="sks", rank=RANK, alpha=ALPHA, text_encoder=True,
                            conv=True)
    meta = lora_metadata(model, settings, [], "interop", 0.0, (64, 64))
    path = export_lora(network, folder / f"{family}.safetensors", meta)
    return path, len(network.loras)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_trained_lora_fuses_in_diffusers_as_ours(tmp_path, family):
    checkpoint = tiny_family_checkpoint(tmp_path / f"base-{family}.safetensors", family, seed=5)
    lora_path, modules = trained_like_file(checkpoint, tmp_path, family)
    lora = read_lora(lora_path)
    assert lora.family == family
    assert any(k.startswith("lora_te2_" if family == "sdxl" else "lora_te_") for k in lora.tensors)
    patched, shapes, ours_family = eq.ours(checkpoint, lora_path)
    assert ours_family == family and len(patched) == modules
    pipe = eq.tiny_pipeline(checkpoint, family)
    worst = eq.compare(f"trained-layout {family}", patched, shapes, pipe, lora_path,
                       ldm_names=family == "sdxl")
    assert worst <= eq.TOLERANCE
