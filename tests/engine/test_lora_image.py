"""End-to-end LoRA proof: a 64x64 image generated with a kohya LoRA (attention, LoCon convs, text encoder;
alphas varying per module) patched at strength 0.8 on UNet and text encoder, what `<lora:NAME:0.8>` asks
for, equals within 1/255 the reference pipeline (a1111_reference.py: diffusers + k-diffusion, no sdstudio
code) run on a checkpoint merged here by plain tensor maths on the LDM keys: W + 0.8 · alpha / r · up @ down.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.lora_file import lora_patch_set, read_lora
from sdstudio.engine.patches import NO_PATCHES
from sdstudio.engine.pipeline import generate
from tests.engine import a1111_reference as a1111
from tests.engine.full_size import CLIP_L_SD1, UNET, random_tensor
from tests.engine.test_reference_pipeline import BASE, TINY_ORIGINAL, TINY_TEXT_REFERENCE, compare
from tests.tiny_checkpoint import TINY_CONFIG, tiny_state_dict

STRENGTH = 0.8
RANK = 4


def kohya_name(key: str) -> str | None:
    """The kohya LDM-dialect module name of a checkpoint weight, or None when kohya does not adapt it."""
    if key.startswith(UNET) and key.endswith(".weight"):
        return "lora_unet_" + key[len(UNET):-len(".weight")].replace(".", "_")
    if key.startswith(CLIP_L_SD1 + "encoder.layers.") and key.endswith("proj.weight") or \
            key.startswith(CLIP_L_SD1 + "encoder.layers.") and ".mlp.fc" in key and key.endswith(".weight"):
        return "lora_te_text_model_" + key[len(CLIP_L_SD1):-len(".weight")].replace(".", "_")
    return None


def make_lora(state: dict[str, torch.Tensor], seed: int) -> tuple[dict[str, torch.Tensor],
                                                                  dict[str, torch.Tensor]]:
    """(LoRA file tensors, {checkpoint key: ΔW at scale alpha / r}) for each 2-D / 4-D weight kohya adapts."""
    g = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for i, (key, w) in enumerate(sorted(state.items())):
        name = kohya_name(key)
        if name is None or w.ndim not in (2, 4):
            continue
        fan_in = math.prod(w.shape[1:])
        down = torch.randn(RANK, *w.shape[1:], generator=g) / math.sqrt(fan_in)
        up = torch.randn(w.shape[0], RANK, *([1, 1] if w.ndim == 4 else []), generator=g) / math.sqrt(RANK)
        alpha = 0.5 + (i % 5) * 0.25  # 0.5 .. 1.5, never the rank
        tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                    f"{name}.alpha": torch.tensor(alpha)}
        deltas[key] = alpha / RANK * (up.reshape(w.shape[0], RANK).double() @ down.reshape(RANK, -1).double()
                                      ).reshape(w.shape)
    return tensors, deltas


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny base checkpoint (demo family, weights scaled like full-size ones), the LoRA, and the base
    merged with the LoRA at STRENGTH by plain tensor maths."""
    folder = tmp_path_factory.mktemp("lora-image")
    g = torch.Generator().manual_seed(4)
    state = {k: random_tensor(k, tuple(v.shape), g) if v.is_floating_point() else v
             for k, v in tiny_state_dict(0, 4).items()}
    metadata = {"sdstudio.config": json.dumps(TINY_CONFIG)}
    base = folder / "base.safetensors"
    save_file(state, str(base), metadata=metadata)
    tensors, deltas = make_lora(state, seed=5)
    lora = folder / "tiny_lora.safetensors"
    save_file(tensors, str(lora))
    with safe_open(str(base), framework="pt") as f:
        merged_state = {k: f.get_tensor(k) for k in f.keys()}
    for key, delta in deltas.items():
        merged_state[key] = (merged_state[key].double() + STRENGTH * delta).float()
    merged = folder / "merged.safetensors"
    save_file(merged_state, str(merged), metadata=metadata)
    return base, lora, merged, len(deltas)


def test_lora_image_equals_the_reference_on_an_independently_merged_checkpoint(files):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base, lora_path, merged, modules = files
        model = load_checkpoint(base)
        plain = generate(model, BASE).images[0]
        patch_set = lora_patch_set(read_lora(lora_path), model, te=STRENGTH, unet=STRENGTH)
        assert len(patch_set.patches) == modules
        model.apply_patches(patch_set)
        got = generate(model, BASE).images[0]
        model.apply_patches(NO_PATCHES)
        restored = generate(model, BASE).images[0]
        expected = a1111.txt2img(a1111.sd_pipeline(merged, TINY_ORIGINAL, TINY_TEXT_REFERENCE), BASE.prompt,
                                 BASE.negative_prompt, BASE.seed, BASE.steps, BASE.cfg_scale, BASE.width,
                                 BASE.height)
    finally:
        torch.set_num_threads(previous)
    changed = np.abs(np.asarray(plain, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    print(f"\nthe LoRA moves pixels by up to {changed.max()}/255 (mean {changed.mean():.1f})")
    assert changed.mean() > 5, "the LoRA barely changes the image: the comparison would prove nothing"
    assert compare("tiny txt2img with a LoRA at 0.8", got, expected) <= 1
    assert np.array_equal(np.asarray(restored), np.asarray(plain)), "removing the LoRA must restore the image"
