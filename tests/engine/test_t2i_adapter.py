"""T2I-Adapter features against diffusers' T2IAdapter (random weights, tiny and the real SD 1.5 full config),
and our UNet with adapter features on its encoder path against diffusers' UNet2DConditionModel with
`down_intrablock_additional_residuals`."""

from __future__ import annotations

import pytest
import torch

from sdstudio.engine.residuals import Residuals
from sdstudio.engine.t2i_adapter import injection_points
from sdstudio.engine.t2i_adapter_file import load_adapter
from sdstudio.engine.unet import UNetConfig, UNetModel
from tests.engine.t2i_adapter_reference import (
    TINY_SD1,
    TINY_SD1_3,
    TINY_SDXL,
    original_state,
    reference,
    target,
    write,
)
from tests.engine.test_unet import TIME_DIM
from tests.engine.unet_reference import diffusers_twin, randomize_, sdxl_y


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    return ours.shape == theirs.shape and bool((ours - theirs).abs().max() <= 1e-4 * theirs.abs().max())


def _hint(size: int, channels: int = 3, seed: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed))


CASES = {  # name: (kind, channels, blocks, family, UNet it fits, hint size)
    "full": ("full", [32, 64], 1, "sd1", TINY_SD1, 32),
    "light": ("light", [32, 64], 2, "sd1", TINY_SD1_3, 32),  # light adds a pooled level after its channels
    "full_xl": ("full_xl", [32, 64, 128, 128], 1, "sdxl", TINY_SDXL, 64),
}


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("full", "diffusers"),
        ("full", "original"),
        ("light", "diffusers"),
        ("light", "original"),
        ("full_xl", "diffusers"),
    ],
)
def test_tiny_adapter_features_equal_diffusers(name, layout, tmp_path):
    """Every layout we read (SDXL adapters ship in diffusers' layout only)."""
    kind, channels, blocks, fam, unet, size = CASES[name]
    theirs = reference(kind, channels, blocks)
    state = theirs.state_dict() if layout == "diffusers" else original_state(theirs, kind)
    loaded = load_adapter(write(tmp_path / "a.safetensors", state), target(fam, unet))
    hint = _hint(size)
    with torch.no_grad():
        expected = theirs(hint)
        ours = loaded.adapter(hint)
    assert len(ours) == len(expected) and all(_close(a, b) for a, b in zip(ours, expected, strict=True))
    assert loaded.family == fam and loaded.hash


def test_one_channel_adapter_takes_the_hints_luma(tmp_path):
    theirs = reference("full", [32, 64], 1, in_channels=1)
    loaded = load_adapter(
        write(tmp_path / "sketch.safetensors", original_state(theirs, "full")), target("sd1", TINY_SD1)
    )
    hint = _hint(32)
    luma = (hint * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)
    with torch.no_grad():
        expected = theirs(luma)
    found = loaded.residuals(hint)
    assert [i for i, _ in found.encoder] == [1, 3] and found.middle is None and found.skips == ()
    assert all(_close(t, e) for (_, t), e in zip(found.encoder, expected, strict=True))


def test_real_sd15_full_adapter_config_equals_diffusers(tmp_path):
    theirs = reference("full", [320, 640, 1280, 1280], 2)  # diffusers' defaults: TencentARC's SD 1.x adapters
    loaded = load_adapter(
        write(tmp_path / "t2iadapter_canny_sd15v2.safetensors", original_state(theirs, "full")),
        target("sd1", UNetConfig.sd15()),
    )
    hint = _hint(128)
    with torch.no_grad():
        expected = theirs(hint)
    found = loaded.residuals(hint)
    assert [i for i, _ in found.encoder] == [2, 5, 8, 11]  # sd-webui-controlnet's t2i injection blocks
    assert all(_close(t, e) for (_, t), e in zip(found.encoder, expected, strict=True))
    assert [tuple(t.shape[1:]) for _, t in found.encoder] == [
        (320, 16, 16),
        (640, 8, 8),
        (1280, 4, 4),
        (1280, 2, 2),
    ]


def test_injection_points_of_the_real_unets():
    assert [i for i, _, _ in injection_points(UNetConfig.sd15())] == [2, 5, 8, 11]
    assert [i for i, _, _ in injection_points(UNetConfig.sd21())] == [2, 5, 8, 11]
    assert injection_points(UNetConfig.sdxl()) == [(3, 320, 2), (5, 640, 2), (8, 1280, 4)]


@pytest.mark.parametrize("name", ["full", "full_xl"])
def test_unet_with_adapter_features_equals_diffusers_down_intrablock_residuals(name, tmp_path):
    kind, channels, blocks, fam, config, size = CASES[name]
    theirs = reference(kind, channels, blocks)
    loaded = load_adapter(write(tmp_path / "a.safetensors", theirs.state_dict()), target(fam, config))
    unet = UNetModel(config).eval()
    randomize_(unet, 0)
    twin = diffusers_twin(unet, TIME_DIM)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)
    t = torch.tensor([999.0, 37.5])
    context = torch.randn(2, 5, config.context_dim, generator=g)
    kwargs, y = {}, None
    if config.adm_in_channels is not None:
        text_embeds = torch.randn(2, config.adm_in_channels - 6 * TIME_DIM, generator=g)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        y = sdxl_y(text_embeds, time_ids, TIME_DIM)
    hint = _hint(size)
    residuals = loaded.residuals(hint).scaled(0.8).repeated(2)
    if name == "full_xl":
        assert residuals.middle is not None  # the fourth feature goes to the middle block, as in diffusers
    with torch.no_grad():
        features = [f.expand(2, -1, -1, -1) * 0.8 for f in theirs(hint)]
        expected = twin(x, t, context, down_intrablock_additional_residuals=features, **kwargs).sample
        plain = unet(x, t, context, y)
        ours = unet(x, t, context, y, residuals=residuals)
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert (ours - plain).abs().max() > 1e-2 * plain.abs().max()  # the features did steer it


def test_adapter_and_controlnet_residuals_add_up():
    skips = Residuals((torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4)), torch.ones(1, 4, 2, 2))
    adapter = Residuals((), torch.full((1, 4, 2, 2), 2.0), ((1, torch.full((1, 2, 4, 4), 3.0)),))
    total = skips + adapter + adapter
    assert len(total.skips) == 2 and float(total.middle[0, 0, 0, 0]) == 5.0
    assert [(i, float(t[0, 0, 0, 0])) for i, t in total.encoder] == [(1, 6.0)]
    with pytest.raises(ValueError, match="twice"):
        Residuals((), None, ((1, torch.ones(1, 2, 4, 4)), (1, torch.ones(1, 2, 4, 4))))
