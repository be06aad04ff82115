"""A trained LoRA as a file: kohya's tensor names and the ss_* metadata, read back by our own loader and
applied by `<lora:NAME:1>` in a prompt (lora_set: found in models/Lora by name, patched into the model): the
patched weights equal base + the trained ΔW, for every adapted layer (UNet attention, convs, text encoder)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from sdstudio import paths
from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import RequestError
from sdstudio.engine.lora_file import read_lora
from sdstudio.engine.lora_set import LoraFiles, resolve_loras
from sdstudio.engine.request import GenerationRequest
from sdstudio.training.lora_data import load_examples
from sdstudio.training.lora_export import base_model_version, export_lora, lora_metadata
from sdstudio.training.lora_train import LoraSettings, train_lora
from tests.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture
def trained(home, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 32), (250, 40 * i, 10)).save(images / f"{i}.png")
    (images / "1.txt").write_text("sks star, red, shiny")
    model = load_checkpoint(write_tiny_checkpoint(tmp_path / "tiny.safetensors"), dtype=torch.float32)
    examples = load_examples(images, "sks", "star")
    settings = LoraSettings(images=str(images), trigger="sks", class_word="star", steps=2, rank=3, alpha=6.0,
                            lr=3e-2, resolution=32, batch_size=2, text_encoder=True, conv=True)
    network = train_lora(model, examples, settings, tmp_path / "state", save_every_s=1e9)
    meta = lora_metadata(model, settings, examples, "my_star", time.time() - 5, (32, 32))
    path = export_lora(network, paths.lora_dir() / "my_star.safetensors", meta)
    return model, network, path, examples


def test_file_has_kohya_names_and_metadata(trained):
    _, network, path, examples = trained
    with safe_open(str(path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_v_proj.lora_up.weight" in keys
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in keys
    assert len(keys) == 3 * len(network.loras)
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("3", "6.0")
    assert meta["ss_base_model_version"] == "sdstudio_demo"
    assert meta["ss_output_name"] == "my_star" and meta["ss_steps"] == "2"
    assert meta["ss_resolution"] == "(32, 32)" and meta["ss_num_train_images"] == str(len(examples))
    assert json.loads(meta["ss_tag_frequency"]) == {"images": {"sks star": 3, "red": 1, "shiny": 1}}
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": 3, "conv_alpha": 6.0}
    assert meta["ss_sd_model_name"] == "tiny.safetensors" and len(meta["ss_new_sd_model_hash"]) == 64
    assert 0 < int(meta["ss_training_finished_at"]) - int(meta["ss_training_started_at"]) < 3600


def test_lora_tag_applies_base_plus_trained_delta(trained):
    model, network, path, _ = trained
    assert read_lora(path).family is None  # the demo family is told by the model it is applied to
    request = GenerationRequest(prompt="<lora:my_star:1> sks star")
    resolved = resolve_loras(request)
    assert resolved.loras[0].path == path
    base = {t.weight: model.weights.parameter(t.weight).detach().clone() for t in network.targets.values()}
    model.apply_patches(LoraFiles().patch_set(resolved, model))
    try:
        assert len(model.patches.patches) == len(network.targets)
        worst, smallest = 0.0, 1.0
        for name, target in network.targets.items():
            delta = network.loras[name].delta()
            got = model.weights.parameter(target.weight).detach()
            scale = float(got.abs().max())
            # relative to |W|, as diffusers' comparison (fp32 W + ΔW cannot be exact relative to ΔW)
            error = float((got - base[target.weight] - delta.reshape(got.shape)).abs().max())
            worst = max(worst, error / scale)
            smallest = min(smallest, float(delta.abs().max()) / scale)
        assert smallest > 100 * 1e-6, "a ΔW this small could not show a wrong scale"
        assert worst <= 1e-6
    finally:
        model.apply_patches()


def test_existing_file_is_never_replaced(trained):
    _, network, path, _ = trained
    before = path.read_bytes()
    with pytest.raises(RequestError, match="exists"):
        export_lora(network, path, {})
    assert path.read_bytes() == before


def test_base_model_versions_are_kohyas():
    assert base_model_version("sd1", "eps") == "sd_v1"
    assert base_model_version("sd2", "v") == "sd_v2_768_v"
    assert base_model_version("sd2", "eps") == "sd_v2_512"
    assert base_model_version("sdxl", "eps") == "sdxl_base_v1-0"
