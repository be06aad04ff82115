"""End-to-end proof: `generate` equals a reference pipeline assembled from independent parts, given the same
weights (a1111_reference.py: diffusers' pipelines and k-diffusion's Euler over diffusers' UNet/VAE and
transformers' CLIP, all built from the checkpoint file without sdstudio code), to within 1/255 per pixel.

Fast tests run the tiny demo-family checkpoint on every run; the full-size SD 1.5, SD 1.5 inpainting and SDXL
checkpoints are marked slow (several GB each; run under the shared lock, -s prints the numbers):

    flock /tmp/sdstudio-big.lock pytest -m slow -s tests/engine/test_reference_pipeline.py
"""

from __future__ import annotations

import gc
import json
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from transformers import CLIPTextConfig

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.tokenizer import EOS
from tests.engine import a1111_reference as a1111
from tests.engine import a1111_rng
from tests.engine import reference_models as ref
from tests.engine.full_size import CLIP_L_SD1, cached_checkpoint, random_tensor
from tests.tiny_checkpoint import TINY_CONFIG, TINY_TEXT, TINY_UNET, TINY_VAE, tiny_state_dict

SIZE = 64
BASE = GenerationRequest(prompt="a photo of a cat, highly detailed", negative_prompt="blurry", steps=4,
                         cfg_scale=7.0, sampler="Euler", scheduler="normal", seed=1234, width=SIZE,
                         height=SIZE)
STRENGTH = 0.6

TINY_ORIGINAL = ref.ldm_config(
    "unet_config",
    {"in_channels": 4, "out_channels": 4, "model_channels": TINY_UNET.model_channels,
     "attention_resolutions": [2**i for i, d in enumerate(TINY_UNET.transformer_depth) if d],
     "num_res_blocks": TINY_UNET.num_res_blocks, "channel_mult": list(TINY_UNET.channel_mult),
     "num_heads": TINY_UNET.num_heads, "transformer_depth": 1, "context_dim": TINY_UNET.context_dim},
    TINY_CONFIG["scale_factor"],
    {"embed_dim": 4, "ddconfig": {"z_channels": 4, "in_channels": 3, "out_ch": 3, "ch": TINY_VAE.ch,
                                  "ch_mult": list(TINY_VAE.ch_mult),
                                  "num_res_blocks": TINY_VAE.num_res_blocks}})
TINY_TEXT_REFERENCE = ref.TextReference("tiny CLIP", CLIP_L_SD1, False, CLIPTextConfig(**TINY_TEXT), -1, EOS)


def init_image() -> Image.Image:
    """A smooth colourful picture (gradients and a disc), so img2img has structure to keep."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 255
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    ImageDraw.Draw(image).ellipse((20, 12, 50, 42), fill=(230, 40, 90))
    return image


def mask_image() -> Image.Image:
    """White (repaint) ellipse whose edges cut through latent cells, so blur and rounding matter."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).ellipse((13, 18, 45, 53), fill=255)
    return mask


def requests() -> dict[str, GenerationRequest]:
    return {"txt2img": BASE,
            "img2img": BASE.replace(init_image=init_image(), strength=STRENGTH),
            "inpaint": BASE.replace(init_image=init_image(), strength=STRENGTH, mask=mask_image(),
                                    mask_blur=4)}


def ours(path, reqs: dict[str, GenerationRequest]) -> dict[str, Image.Image]:
    model = load_checkpoint(path)
    images = {name: generate(model, req).images[0] for name, req in reqs.items()}
    del model
    gc.collect()
    return images


def reference(pipe, req: GenerationRequest) -> Image.Image:
    if req.init_image is None:
        return a1111.txt2img(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                             req.width, req.height)
    return a1111.img2img(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                         req.init_image, req.strength, req.mask, req.mask_blur)


def compare(label: str, got: Image.Image, expected: Image.Image) -> int:
    a, b = np.asarray(got, dtype=np.int16), np.asarray(expected, dtype=np.int16)
    assert a.shape == b.shape == (SIZE, SIZE, 3)
    diff = np.abs(a - b)
    saturated = np.mean((b == 0) | (b == 255))
    print(f"\n{label}: max |diff| {diff.max()}/255, mean {diff.mean():.4f}, pixels differing "
          f"{np.mean(diff > 0):.2%}; reference std {b.std():.1f}, saturated {saturated:.1%}")
    assert b.std() > 8 and saturated < 0.5, f"{label}: the reference image is degenerate"
    return int(diff.max())


@pytest.fixture(scope="module")
def tiny():
    """Tiny demo-family checkpoints (4- and 9-channel UNets, weights scaled like the full-size ones), each
    loaded by us and as a reference pipeline: {in_channels: (LoadedModel, reference pipeline)}."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # ops this small only contend for a loaded 2-core machine with a second thread
    with tempfile.TemporaryDirectory() as folder:
        models = {}
        for channels in (4, 9):
            g = torch.Generator().manual_seed(channels)
            state = {k: random_tensor(k, tuple(v.shape), g) if v.is_floating_point() else v
                     for k, v in tiny_state_dict(0, channels).items()}
            path = f"{folder}/tiny{channels}.safetensors"
            save_file(state, path, metadata={"sdstudio.config": json.dumps(TINY_CONFIG)})
            config = json.loads(json.dumps(TINY_ORIGINAL))
            config["model"]["params"]["unet_config"]["params"]["in_channels"] = channels
            models[channels] = (load_checkpoint(path), a1111.sd_pipeline(path, config, TINY_TEXT_REFERENCE))
        yield models
    torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_tiny_model_generates_what_the_reference_pipeline_does(tiny, mode):
    model, pipe = tiny[4]
    req = requests()[mode]
    assert compare(f"tiny {mode}", generate(model, req).images[0], reference(pipe, req)) <= 1


def test_tiny_inpainting_model_generates_what_the_reference_pipeline_does(tiny):
    model, pipe = tiny[9]
    req = requests()["inpaint"]
    assert compare("tiny 9-channel inpaint", generate(model, req).images[0], reference(pipe, req)) <= 1


@pytest.mark.parametrize("label,changes,resize_hw", [
    ("variation seed 7 strength 0.3", {"subseed": 7, "subseed_strength": 0.3}, None),
    ("seed resize from 48x40, variation 0.5", {"subseed": 3, "subseed_strength": 0.5, "seed_resize_from_w": 48,
                                               "seed_resize_from_h": 40}, (5, 6)),
])
def test_tiny_variation_seed_image_equals_the_reference_with_a1111s_noise(tiny, label, changes, resize_hw):
    model, pipe = tiny[4]
    req = BASE.replace(**changes)
    noise, _ = a1111_rng.first_noise(req.seed, (4, SIZE // 8, SIZE // 8), req.subseed, req.subseed_strength,
                                     resize_hw)
    expected = a1111.txt2img(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                             req.width, req.height, latents=noise[None])
    assert compare(f"tiny {label}", generate(model, req).images[0], expected) <= 1
    plain = a1111.txt2img(pipe, req.prompt, req.negative_prompt, req.seed, req.steps, req.cfg_scale,
                          req.width, req.height)
    assert np.abs(np.asarray(plain, dtype=np.int16) - np.asarray(expected, dtype=np.int16)).max() > 8


def test_reference_schedule_is_what_sdstudio_uses():
    ours = get_sigmas("normal", BASE.steps, ModelSampling())
    torch.testing.assert_close(ours, a1111.reference_sigmas(BASE.steps))


@pytest.mark.slow
def test_sd15_txt2img_img2img_and_inpainting_equal_the_reference():
    path = cached_checkpoint("sd15")
    reqs = requests()
    got = ours(path, reqs)
    pipe = a1111.sd_pipeline(path, ref.ORIGINAL_CONFIGS["sd15"], ref.TEXT_REFERENCES["sd15"][0])
    worst = {mode: compare(f"SD 1.5 {mode}", got[mode], reference(pipe, req)) for mode, req in reqs.items()}
    assert max(worst.values()) <= 1, worst


@pytest.mark.slow
def test_sd15_inpainting_model_equals_the_reference():
    path = cached_checkpoint("sd15_inpaint")
    req = requests()["inpaint"]
    got = ours(path, {"inpaint": req})["inpaint"]
    pipe = a1111.sd_pipeline(path, ref.ORIGINAL_CONFIGS["sd15_inpaint"],
                             ref.TEXT_REFERENCES["sd15_inpaint"][0])
    assert compare("SD 1.5 inpainting model", got, reference(pipe, req)) <= 1


@pytest.mark.slow
def test_sdxl_txt2img_equals_the_reference():
    path = cached_checkpoint("sdxl")
    reqs = {"txt2img": BASE, "txt2img, empty negative (zeros)": BASE.replace(negative_prompt="")}
    got = ours(path, reqs)
    pipe = a1111.sdxl_pipeline(path, ref.ORIGINAL_CONFIGS["sdxl"])
    worst = {mode: compare(f"SDXL {mode}", got[mode], reference(pipe, req)) for mode, req in reqs.items()}
    assert max(worst.values()) <= 1, worst
