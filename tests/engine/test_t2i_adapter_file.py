"""Reading T2I-Adapter files: the architecture from shapes in each layout, and one-line refusals of files that
are not adapters SD Studio runs (wrong shapes, missing or unknown keys, another family, a variant never
released)."""

from __future__ import annotations

import pytest
import torch

from sdstudio.engine.errors import UnsupportedModelError
from sdstudio.engine.t2i_adapter_file import config_from_shapes, load_adapter, our_layout
from sdstudio.engine.unet import UNetConfig
from tests.engine.t2i_adapter_reference import TINY_SD1, original_state, reference, target, write


def _shapes(kind: str, channels: list[int], blocks: int, in_channels: int = 3, layout: str = "diffusers"):
    with torch.device("meta"):
        adapter = reference(kind, channels, blocks, in_channels)
    state = adapter.state_dict() if layout == "diffusers" else original_state(adapter, kind)
    return {k: tuple(v.shape) for k, v in our_layout(state, "a").items()}


@pytest.mark.parametrize(
    ("kind", "channels", "blocks", "in_channels", "layout", "expected"),
    [
        (
            "full",
            [320, 640, 1280, 1280],
            2,
            3,
            "original",
            ("full", 3, (320, 640, 1280, 1280), 2),
        ),  # canny sd15v2
        (
            "full",
            [320, 640, 1280, 1280],
            2,
            1,
            "original",
            ("full", 1, (320, 640, 1280, 1280), 2),
        ),  # sketch sd14v1
        (
            "light",
            [320, 640, 1280],
            4,
            3,
            "original",
            ("light", 3, (320, 640, 1280, 1280), 4),
        ),  # color sd14v1
        ("full_xl", [320, 640, 1280, 1280], 2, 3, "diffusers", ("full_xl", 3, (320, 640, 1280, 1280), 2)),
    ],
)
def test_real_adapter_configs_are_read_from_shapes(kind, channels, blocks, in_channels, layout, expected):
    config = config_from_shapes(_shapes(kind, channels, blocks, in_channels, layout), "a")
    assert (config.kind, config.in_channels, config.channels, config.num_res_blocks) == expected
    assert config.architecture.family == ("sdxl" if kind == "full_xl" else "sd1")


@pytest.fixture
def tiny_state():
    return original_state(reference("full", [32, 64], 1), "full")


def _refused(tmp_path, state, match, fam="sd1", unet=TINY_SD1):
    with pytest.raises(UnsupportedModelError, match=match) as info:
        load_adapter(write(tmp_path / "bad.safetensors", state), target(fam, unet))
    assert "\n" not in str(info.value) and "bad.safetensors" in str(info.value)


def test_a_mis_shaped_tensor_is_refused(tmp_path, tiny_state):
    tiny_state["body.1.block1.weight"] = torch.zeros(64, 64, 1, 1)
    _refused(tmp_path, tiny_state, "size mismatch for body.1.resnets.0.block1.weight")


def test_a_missing_tensor_is_refused(tmp_path, tiny_state):
    del tiny_state["body.1.block2.bias"]
    _refused(tmp_path, tiny_state, "Missing key.*body.1.resnets.0.block2.bias")


def test_an_unknown_key_is_refused_not_dropped(tmp_path, tiny_state):
    tiny_state["body.1.down_opt.op.weight"] = torch.zeros(32, 32, 3, 3)  # TencentARC's use_conv downsampling
    _refused(tmp_path, tiny_state, "unknown key 'body.1.down_opt.op.weight'")
    diffusers = reference("full", [32, 64], 1).state_dict()
    diffusers["extra.weight"] = torch.zeros(1)
    _refused(tmp_path, diffusers, "unknown diffusers key 'extra.weight'")


def test_an_in_conv_inside_a_level_is_refused(tmp_path):
    state = original_state(reference("full", [32, 64], 2), "full")  # body.2 widens: two blocks per level
    state["body.1.in_conv.weight"] = torch.zeros(32, 32, 1, 1)  # TencentARC's unreleased sk=False
    _refused(tmp_path, state, "in_conv inside a level")
    del state["body.1.in_conv.weight"], state["body.2.in_conv.weight"]
    _refused(tmp_path, state, "cannot tell its blocks per level")


def test_a_first_conv_of_no_known_hint_width_is_refused(tmp_path, tiny_state):
    tiny_state["conv_in.weight"] = torch.zeros(32, 100, 3, 3)
    _refused(tmp_path, tiny_state, "takes \\(100,\\) channels")


def test_another_familys_adapter_is_refused_naming_both(tmp_path):
    xl = reference("full_xl", [32, 64, 128, 128], 1).state_dict()
    _refused(tmp_path, xl, "a T2I-Adapter for SDXL; the checkpoint is SD 1.x")
    sd = original_state(reference("full", [32, 64], 1), "full")
    _refused(tmp_path, sd, "a T2I-Adapter for SD 1.x; the checkpoint is SD 2.x", "sd2", UNetConfig.sd21())


def test_a_controlnet_is_not_an_adapter(tmp_path):
    with pytest.raises(UnsupportedModelError, match="not a T2I-Adapter"):
        our_layout({"input_hint_block.0.weight": torch.zeros(1)}, "cn.safetensors")
