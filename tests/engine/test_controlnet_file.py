"""ControlNet files: both layouts (original with or without `control_model.`, diffusers) load to the same
network, which equals diffusers' ControlNetModel; families are told from shapes and mismatches refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.engine.controlnet_file import (
    TargetModel,
    config_from_shapes,
    family_of,
    file_family,
    from_diffusers,
    load_controlnet,
)
from sdstudio.engine.errors import CheckpointError, UnsupportedModelError
from sdstudio.engine.families import DEMO, SD1, SD2, SDXL
from sdstudio.engine.unet import UNetConfig, UNetModel
from tests.engine.controlnet_reference import (
    TINY_CN_UNET,
    diffusers_from_single_file,
    diffusers_state,
    diffusers_twin,
    reference_y,
    run_reference,
)
from tests.engine.unet_reference import randomize_

TARGET = TargetModel(DEMO, TINY_CN_UNET)


def tiny_net(seed: int = 0, config: UNetConfig = TINY_CN_UNET) -> ControlNet:
    net = ControlNet(ControlNetConfig(config)).eval()
    randomize_(net, seed)
    return net


def save(path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def outputs(net: ControlNet, seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, hint = torch.randn(1, 4, 8, 8, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    context = torch.randn(1, 77, net.config.unet.context_dim, generator=g)
    with torch.no_grad():
        return net(x, hint, torch.tensor([500.0]), context).tensors()


@pytest.mark.parametrize("layout", ["original", "control_model.", "diffusers"])
def test_every_layout_loads_the_same_network(tmp_path, layout):
    net = tiny_net()
    state = net.state_dict()
    if layout == "control_model.":
        # As the 1.0 .pth files: the ControlNet beside a whole SD model, whose keys are ignored.
        state = {"control_model." + k: v for k, v in state.items()} | {"model.diffusion_model.out.2.weight":
                                                                        torch.zeros(4, 32, 3, 3)}
    elif layout == "diffusers":
        state = diffusers_state(net)
    loaded = load_controlnet(save(tmp_path / "cn.safetensors", state), TARGET)
    assert loaded.family == "demo" and len(loaded.hash) == 8 and loaded.name == "cn"
    for a, b in zip(outputs(loaded.net), outputs(net), strict=True):
        assert torch.equal(a, b)


def test_loaded_file_matches_diffusers_controlnet(tmp_path):
    net = tiny_net(3)
    loaded = load_controlnet(save(tmp_path / "cn.safetensors", diffusers_state(net)), TARGET).net
    theirs = diffusers_twin(net)
    g = torch.Generator().manual_seed(9)
    x, hint = torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    context, t = torch.randn(2, 77, 32, generator=g), torch.tensor([900.0, 3.5])
    with torch.no_grad():
        ours = loaded(x, hint, t, context).tensors()
    down, mid = run_reference(theirs, x, hint, t, context)
    for a, b in zip(ours, [*down, mid], strict=True):
        assert (a - b).abs().max() <= 1e-5 * b.std()


def test_fp16_load_on_request(tmp_path):
    loaded = load_controlnet(save(tmp_path / "cn.safetensors", tiny_net().state_dict()), TARGET,
                             dtype=torch.float16)
    assert {p.dtype for p in loaded.net.parameters()} == {torch.float16}


FAMILY_CONFIGS = {"sd1": UNetConfig.sd15(), "sd2": UNetConfig.sd21(), "sdxl": UNetConfig.sdxl()}


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_family_and_config_from_full_size_shapes(name):
    config = FAMILY_CONFIGS[name]
    net = ControlNet(ControlNetConfig(config), device="meta")
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = family_of(shapes, "x")
    assert found is {"sd1": SD1, "sd2": SD2, "sdxl": SDXL}[name]
    assert config_from_shapes(shapes, found.unet_heads, "x") == ControlNetConfig(config)
    # diffusers' names read back to the same shapes
    twin_shapes = {k: tuple(v.shape) for k, v in diffusers_twin_meta(net).items()}
    assert {k: tuple(v.shape) for k, v in from_diffusers(twin_shapes_as_tensors(twin_shapes), "x").items()} == shapes


def diffusers_twin_meta(net: ControlNet) -> dict:
    from diffusers import ControlNetModel

    from tests.engine.controlnet_reference import controlnet_config

    with torch.device("meta"):
        return ControlNetModel(**controlnet_config(net.config)).state_dict()


def twin_shapes_as_tensors(shapes: dict) -> dict:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_wrong_family_is_refused_naming_both(tmp_path):
    sd15_cn = ControlNet(ControlNetConfig(UNetConfig.sd15()), device="meta")
    shapes = {k: tuple(v.shape) for k, v in sd15_cn.state_dict().items()}
    config = config_from_shapes(shapes, SD1.unet_heads, "x")
    from sdstudio.engine.controlnet_file import check_fits

    with pytest.raises(UnsupportedModelError, match=r"ControlNet for SD 1\.x; the checkpoint is SDXL"):
        check_fits(config, SD1, TargetModel(SDXL, UNetConfig.sdxl()), "cn.safetensors")
    check_fits(config, SD1, TargetModel(SD1, UNetConfig.sd15(9)), "cn.safetensors")  # inpainting UNet: fits


def test_structure_mismatch_on_metadata_family_is_refused(tmp_path):
    other = replace(TINY_CN_UNET, channel_mult=(1, 1))
    path = save(tmp_path / "cn.safetensors", tiny_net(config=other).state_dict())
    with pytest.raises(UnsupportedModelError, match="do not fit"):
        load_controlnet(path, TARGET)


def test_hostile_files_are_refused(tmp_path):
    with pytest.raises(UnsupportedModelError, match="not found"):
        load_controlnet(tmp_path / "missing.safetensors", TARGET)
    with pytest.raises(UnsupportedModelError, match="neither"):
        load_controlnet(save(tmp_path / "lora.safetensors", {"lora_unet_x.alpha": torch.ones(1)}), TARGET)
    state = diffusers_state(tiny_net())
    state["controlnet_strange.weight"] = torch.ones(1)
    with pytest.raises(UnsupportedModelError, match="unknown diffusers key 'controlnet_strange.weight'"):
        load_controlnet(save(tmp_path / "odd.safetensors", state), TARGET)
    state = tiny_net().state_dict()
    del state["zero_convs.2.0.bias"]
    with pytest.raises(UnsupportedModelError, match="zero_convs.2.0.bias"):
        load_controlnet(save(tmp_path / "cut.safetensors", state), TARGET)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_controlnet(garbage, TARGET)
    with pytest.raises(CheckpointError, match="pickle"):
        torch.save(tiny_net().state_dict(), tmp_path / "cn.pth")
        load_controlnet(tmp_path / "cn.pth", TARGET)
    assert load_controlnet(tmp_path / "cn.pth", TARGET, allow_pickle=True).family == "demo"


def test_target_of_a_loaded_unet():
    unet = UNetModel(TINY_CN_UNET, device="meta")
    assert TargetModel.of(DEMO, unet) == TARGET


def file_in_layout(net: ControlNet, layout: str, path) -> None:
    state = net.state_dict()
    if layout == "control_model.":
        state = {"control_model." + k: v for k, v in state.items()}
    elif layout == "diffusers":
        state = diffusers_state(net)
    save(path, state)


def residuals_vs_single_file(net: ControlNet, target: TargetModel, layout: str, folder, latent: int = 8):
    path = folder / f"cn-{layout.strip('.')}.safetensors"
    file_in_layout(net, layout, path)
    ours = load_controlnet(path, target).net
    theirs = diffusers_from_single_file(path, net.config, folder)
    g = torch.Generator().manual_seed(11)
    x, hint = torch.randn(2, 4, latent, latent, generator=g), torch.rand(2, 3, 8 * latent, 8 * latent, generator=g)
    context, t = torch.randn(2, 77, net.config.unet.context_dim, generator=g), torch.tensor([950.0, 40.5])
    with torch.no_grad():
        got = ours(x, hint, t, context).tensors()
    down, mid = run_reference(theirs, x, hint, t, context)
    worst = max((a - b).abs().max().item() for a, b in zip(got, [*down, mid], strict=True))
    scale = min(b.std().item() for b in [*down, mid])
    return worst, scale


@pytest.mark.parametrize("layout", ["original", "control_model.", "diffusers"])
def test_file_equals_diffusers_from_single_file(tmp_path, layout):
    worst, scale = residuals_vs_single_file(tiny_net(7), TARGET, layout, tmp_path)
    assert scale > 0.01 and worst <= 1e-5 * scale


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["control_model.", "diffusers"])
def test_full_size_sd15_file_equals_diffusers_from_single_file(tmp_path, layout):
    net = ControlNet(ControlNetConfig(UNetConfig.sd15()), device="meta").to_empty(device="cpu").eval()
    randomize_(net, seed=0)
    worst, scale = residuals_vs_single_file(net, TargetModel(SD1, UNetConfig.sd15()), layout, tmp_path, latent=16)
    print(f"\nSD 1.5 ControlNet file ({layout}) vs from_single_file: max|diff| {worst:.3e}, smallest std {scale:.3e}")
    assert worst <= 1e-4 * scale


@pytest.mark.parametrize("layout", ["original", "control_model.", "diffusers"])
def test_file_family_from_the_header_alone(tmp_path, layout):
    sd21 = replace(TINY_CN_UNET, context_dim=1024, num_heads=-1, num_head_channels=16, use_linear_in_transformer=True)
    net = tiny_net(config=sd21)
    file_in_layout(net, layout, tmp_path / "cn.safetensors")
    assert file_family(tmp_path / "cn.safetensors") is SD2
    file_in_layout(tiny_net(), layout, tmp_path / "tiny.safetensors")
    assert file_family(tmp_path / "tiny.safetensors") is None
    with pytest.raises(UnsupportedModelError, match="neither"):
        file_family(save(tmp_path / "lora.safetensors", {"lora_unet_x.alpha": torch.ones(1)}))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["diffusers"])
def test_full_size_sdxl_file_equals_diffusers_from_single_file(tmp_path, layout):
    """SDXL (1.25B parameters, 5 GB in float32), one copy in memory at a time besides the file. Only
    diffusers' layout: diffusers 0.42's from_single_file cannot load an original-layout SDXL ControlNet (its
    converter drops label_emb, left on the meta device: "Cannot copy out of meta tensor"; run on 2 Dec
    2026), so the original layout is proven through diffusers_twin, which adds label_emb from diffusers' own
    mapping table."""
    import gc

    net = ControlNet(ControlNetConfig(UNetConfig.sdxl()), device="meta").to_empty(device="cpu").eval()
    randomize_(net, seed=0)
    config = net.config
    path = tmp_path / f"cn-xl-{layout.strip('.')}.safetensors"
    file_in_layout(net, layout, path)
    del net
    gc.collect()
    g = torch.Generator().manual_seed(11)
    x, hint = torch.randn(2, 4, 16, 16, generator=g), torch.rand(2, 3, 128, 128, generator=g)
    context, t = torch.randn(2, 77, 2048, generator=g), torch.tensor([950.0, 40.5])
    text_embeds = torch.randn(2, 1280, generator=g)
    time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0],
                             [768.0, 1344.0, 16.0, 32.0, 768.0, 1344.0]])
    ours = load_controlnet(path, TargetModel(SDXL, UNetConfig.sdxl())).net
    with torch.no_grad():
        got = ours(x, hint, t, context, reference_y(text_embeds, time_ids)).tensors()
    del ours
    gc.collect()
    theirs = diffusers_from_single_file(path, config, tmp_path)
    down, mid = run_reference(theirs, x, hint, t, context, text_embeds, time_ids)
    worst = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, [*down, mid], strict=True))
    print(f"\nSDXL ControlNet file ({layout}) vs from_single_file: worst max|diff| / max|theirs| {worst:.3e}")
    assert worst <= 1e-4
