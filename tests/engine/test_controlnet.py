"""Our ControlNet equals diffusers' ControlNetModel on the same weights (tiny configs here; full-size SD 1.5
and SDXL are slow tests)."""

from __future__ import annotations

import gc
import time
from dataclasses import replace

import pytest
import torch

from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.unet import UNetConfig
from tests.engine.controlnet_reference import TINY_CN_UNET, diffusers_twin, reference_y, run_reference
from tests.engine.unet_reference import randomize_

TINY_XL = replace(TINY_CN_UNET, context_dim=64, num_heads=-1, num_head_channels=16, use_linear_in_transformer=True,
                  transformer_depth=(0, 2), transformer_depth_middle=2, adm_in_channels=32 + 6 * 256)


def inputs(config: UNetConfig, latent: int, batch: int = 2, seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    args = {"x": torch.randn(batch, 4, latent, latent, generator=g),
            "hint": torch.rand(batch, 3, latent * 8, latent * 8, generator=g),
            "t": torch.tensor([981.0, 12.25][:batch]),
            "context": torch.randn(batch, 77, config.context_dim, generator=g)}
    if config.adm_in_channels is not None:
        args["text_embeds"] = torch.randn(batch, config.adm_in_channels - 6 * 256, generator=g)
        args["time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [48.0, 80.0, 8.0, 0.0, 56.0, 72.0]])
    return args


def compare(ours: ControlNet, args: dict) -> tuple[float, float]:
    theirs = diffusers_twin(ours)
    y = None
    if "text_embeds" in args:
        y = reference_y(args["text_embeds"], args["time_ids"])
    with torch.no_grad():
        got = ours(args["x"], args["hint"], args["t"], args["context"], y)
    down, mid = run_reference(theirs, args["x"], args["hint"], args["t"], args["context"],
                              args.get("text_embeds"), args.get("time_ids"))
    assert len(got.skips) == len(down)
    worst, scale = 0.0, 0.0
    for a, b in zip([*got.skips, got.middle], [*down, mid], strict=True):
        assert a.shape == b.shape
        worst = max(worst, (a - b).abs().max().item())
        scale = max(scale, b.std().item())
    return worst, scale


@pytest.mark.parametrize("config", [TINY_CN_UNET, TINY_XL], ids=["sd-like", "sdxl-like"])
def test_tiny_controlnet_matches_diffusers(config):
    torch.manual_seed(0)
    ours = ControlNet(ControlNetConfig(config)).eval()
    randomize_(ours, seed=1)
    worst, scale = compare(ours, inputs(config, latent=8))
    assert scale > 0.1
    assert worst <= 1e-5 * scale


def test_hint_reaches_the_residuals_and_needs_eight_times_the_latent():
    ours = ControlNet(ControlNetConfig(TINY_CN_UNET)).eval()
    randomize_(ours, seed=2)
    args = inputs(TINY_CN_UNET, latent=8, batch=1)
    with torch.no_grad():
        a = ours(args["x"], args["hint"], args["t"], args["context"])
        b = ours(args["x"], 1 - args["hint"], args["t"], args["context"])
        assert (a.skips[0] - b.skips[0]).abs().max() > 1e-3
        with pytest.raises(ValueError, match="8x the latent"):
            ours(args["x"], args["hint"][..., :32, :32], args["t"], args["context"])
    assert ours.skip_channels == [32, 32, 32, 64]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_full_size_controlnet_matches_diffusers(name):
    config = UNetConfig.sd15() if name == "sd15" else UNetConfig.sdxl()
    start = time.perf_counter()
    ours = ControlNet(ControlNetConfig(config), device="meta").to_empty(device="cpu").eval()
    randomize_(ours, seed=0)
    args = inputs(config, latent=16)
    worst, scale = compare(ours, args)
    print(f"\n{name} ControlNet: max|diff| {worst:.3e}  residual std {scale:.3e}  "
          f"{time.perf_counter() - start:.1f}s")
    del ours
    gc.collect()
    assert scale > 0.1
    assert worst <= 1e-4 * scale
