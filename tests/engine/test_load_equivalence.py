"""Loading proof: a full-size single-file checkpoint loaded by `load_checkpoint` computes what diffusers'
and transformers' models compute when built from the same file by diffusers' own single-file conversion
(see reference_models.py), for SD 1.5, SD 1.5 inpainting, SD 2.1 (768-v) and SDXL base, in fp32.

Every output is compared as max |ours - reference| / max |reference| <= 1e-4. Ours are computed first and
freed before the references are built one component at a time, so memory holds one copy of the weights
(SDXL in fp32: ~14 GB). Slow and large: run under the shared lock, and -s prints the table:

    flock /tmp/sdstudio-big.lock pytest -m slow -s tests/engine/test_load_equivalence.py
"""

from __future__ import annotations

import gc

import pytest
import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.conditioning import sdxl_y
from sdstudio.engine.tokenizer import pad_chunk, tokenize
from tests.engine import reference_models as ref
from tests.engine.full_size import cached_checkpoint

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
PROMPTS = ["a photo of a cat", ""]
# family -> (our family name, inpainting, prediction, UNet in_channels, context width)
CASES = {
    "sd15": ("sd1", False, "eps", 4, 768),
    "sd15_inpaint": ("sd1", True, "eps", 9, 768),
    "sd21": ("sd2", False, "v", 4, 1024),
    "sdxl": ("sdxl", False, "eps", 4, 2048),
}
# SDXL size conditioning per batch row: original (h, w), crop (top, left), target (h, w).
SDXL_SIZES = [((1024, 1024), (0, 0), (1024, 1024)), ((768, 512), (16, 32), (768, 512))]


def make_inputs(in_channels: int, context_dim: int, sdxl: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    inputs = {
        "x": torch.randn(2, in_channels, 8, 8, generator=g),
        "t": torch.tensor([999.0, 250.5]),
        "context": torch.randn(2, 77, context_dim, generator=g),
        "image": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1,
        "latent": torch.randn(1, 4, 8, 8, generator=g),
    }
    if sdxl:
        inputs["text_embeds"] = torch.randn(2, 1280, generator=g)
        inputs["time_ids"] = torch.tensor([[*o, *c, *t] for o, c, t in SDXL_SIZES], dtype=torch.float32)
    return inputs


def tokens_for(pad_token: int) -> torch.Tensor:
    return torch.tensor([pad_chunk(ids, pad_token) for ids in tokenize(PROMPTS)])


def write_taesd_decoder(path) -> AutoencoderTiny:
    """A random TAESD decoder file in madebyollin's layout (diffusers' `decoder.layers.N` is his `N + 1`)."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        reference = AutoencoderTiny().eval().requires_grad_(False)
        for name, p in reference.named_parameters():  # small biases keep ten ReLU blocks alive
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape))
    decoder = {}
    for key, value in reference.state_dict().items():
        if key.startswith("decoder.layers."):
            index, rest = key.removeprefix("decoder.layers.").split(".", 1)
            decoder[f"{int(index) + 1}.{rest}"] = value.contiguous()
    save_file(decoder, str(path))
    return reference


@torch.no_grad()
def our_outputs(path, family: str, inputs: dict, taesd_path) -> tuple[dict, dict]:
    model = load_checkpoint(path, taesd_path=taesd_path)
    desc = model.description
    facts = {"family": desc.family, "inpainting": desc.inpainting, "prediction": desc.prediction,
             "unet_params": sum(p.numel() for p in model.unet.parameters()),
             "vae_params": sum(p.numel() for p in model.vae.parameters()),
             "pads": [e.pad_token for e in model.text.encoders]}
    y = None
    if "text_embeds" in inputs:
        y = torch.cat([sdxl_y(inputs["text_embeds"][i:i + 1], *SDXL_SIZES[i]) for i in range(2)])
    out = {"UNet": model.unet(inputs["x"], inputs["t"], inputs["context"], y)}
    mean, logvar = model.vae.encode(inputs["image"])
    out |= {"VAE encode mean": mean, "VAE encode logvar": logvar,
            "VAE decode": model.vae.decode(inputs["latent"])}
    for encoder, reference in zip(model.text.encoders, ref.TEXT_REFERENCES[family], strict=True):
        hidden, pooled = encoder(tokens_for(reference.pad_token))
        out[f"text {reference.name}"] = hidden
        if reference.pooled:
            out[f"text {reference.name} pooled"] = pooled
    if taesd_path is not None:
        out["TAESD decode"] = model.taesd.decoder(inputs["latent"])
    return out, facts


@torch.no_grad()
def reference_outputs(path, family: str, inputs: dict, taesd: AutoencoderTiny | None) -> tuple[dict, dict]:
    """Each reference built from the file, run, and freed before the next."""
    out, counts = {}, {}
    unet = ref.reference_unet(path, ref.ORIGINAL_CONFIGS[family])
    counts["unet_params"] = sum(p.numel() for p in unet.parameters())
    extra = {}
    if "text_embeds" in inputs:
        extra = {"added_cond_kwargs": {"text_embeds": inputs["text_embeds"], "time_ids": inputs["time_ids"]}}
    out["UNet"] = unet(inputs["x"], inputs["t"], inputs["context"], **extra).sample
    del unet
    vae = ref.reference_vae(path, ref.ORIGINAL_CONFIGS[family])
    counts["vae_params"] = sum(p.numel() for p in vae.parameters())
    posterior = vae.encode(inputs["image"]).latent_dist
    out |= {"VAE encode mean": posterior.mean, "VAE encode logvar": posterior.logvar,
            "VAE decode": vae.decode(inputs["latent"]).sample}
    del vae
    for reference in ref.TEXT_REFERENCES[family]:
        encoder = ref.reference_text(path, reference)
        hidden, pooled = ref.run_text(encoder, reference, tokens_for(reference.pad_token))
        out[f"text {reference.name}"] = hidden
        if reference.pooled:
            out[f"text {reference.name} pooled"] = pooled
    if taesd is not None:
        out["TAESD decode"] = (taesd.decode(inputs["latent"]).sample + 1) / 2  # diffusers decodes to [-1, 1]
    return out, counts


def table(family: str, ours: dict, theirs: dict) -> list[tuple[str, float, float, float]]:
    rows = []
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape, (name, ours[name].shape, expected.shape)
        diff = (ours[name] - expected).abs().max().item()
        scale = expected.abs().max().item()
        rows.append((name, diff, scale, expected.std().item()))
    print(f"\n{family}: component | max abs diff | max |ref| | ref std | diff / max |ref|")
    for name, diff, scale, std in rows:
        print(f"{family} | {name} | {diff:.3e} | {scale:.3g} | {std:.3g} | {diff / scale:.2e}")
    return rows


@pytest.mark.parametrize("family", list(CASES))
def test_full_size_checkpoint_loads_equal_to_diffusers_single_file_conversion(family, tmp_path):
    our_family, inpainting, prediction, in_channels, context_dim = CASES[family]
    path = cached_checkpoint(family)
    assert ref.model_type(path) == ref.DIFFUSERS_MODEL_TYPE[family]
    taesd_path = tmp_path / "taesd_decoder.safetensors" if family == "sd15" else None
    taesd = write_taesd_decoder(taesd_path) if taesd_path else None
    inputs = make_inputs(in_channels, context_dim, family == "sdxl")
    ours, facts = our_outputs(path, family, inputs, taesd_path)
    gc.collect()
    theirs, counts = reference_outputs(path, family, inputs, taesd)
    assert (facts["family"], facts["inpainting"], facts["prediction"]) == (our_family, inpainting, prediction)
    assert facts["pads"] == [r.pad_token for r in ref.TEXT_REFERENCES[family]]
    assert (facts["unet_params"], facts["vae_params"]) == (counts["unet_params"], counts["vae_params"])
    for name, diff, scale, std in table(family, ours, theirs):
        assert std > 1e-3, f"{name}: degenerate reference output"
        assert diff <= TOLERANCE * scale, f"{name}: max abs diff {diff:.3e} vs output scale {scale:.3g}"
