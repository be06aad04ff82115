"""The LoRA branches on a loaded tiny model: zero-initialised `up` leaves the model's output unchanged; with
random branches the hooked model computes what the base model with W + ΔW computes (ΔW by LoraModule.delta,
checked against the product written out here); gradient checkpointing changes no gradient; absurd ranks are
refused in one line."""

from __future__ import annotations

import math

import pytest
import torch

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.errors import RequestError
from sdstudio.training.lora_network import LoraNetwork, checkpointed, freeze, lora_targets
from tests.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("lora-net") / "tiny.safetensors")
    m = load_checkpoint(path, dtype=torch.float32)
    freeze(m)
    return m


def _randomise(network: LoraNetwork, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in network.loras.values():
            for w in (lora.down.weight, lora.up.weight):
                w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(w[0].numel()))


def _unet_out(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return model.unet(z, torch.tensor([10.0, 700.0]), context)


def test_targets_cover_attention_and_optionally_convs_and_text(model):
    plain = lora_targets(model)
    names = {t.name for t in plain}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k" in names
    assert "lora_unet_mid_block_attentions_0_proj_in" in names
    assert not any("resnets" in n or "lora_te" in n for n in names)
    full = {t.name for t in lora_targets(model, text_encoder=True, conv=True)}
    assert "lora_unet_down_blocks_0_resnets_0_conv1" in full
    assert "lora_unet_down_blocks_0_downsamplers_0_conv" in full
    assert "lora_unet_up_blocks_0_upsamplers_0_conv" in full
    assert "lora_te_text_model_encoder_layers_1_mlp_fc2" in full
    assert names < full


def test_zero_up_changes_nothing(model):
    network = LoraNetwork(lora_targets(model, conv=True), rank=4, alpha=2.0)
    before = _unet_out(model)
    with network.attached():
        assert torch.equal(_unet_out(model), before)
    assert all(float(lora.up.weight.detach().abs().max()) == 0 for lora in network.loras.values())


def test_hooked_model_equals_patched_weights(model):
    network = LoraNetwork(lora_targets(model, conv=True), rank=3, alpha=5.0)
    _randomise(network, 1)
    with network.attached():
        hooked = _unet_out(model)
    base = _unet_out(model)
    originals = {}
    with torch.no_grad():
        for name, target in network.targets.items():
            lora = network.loras[name]
            down, up = lora.down.weight.flatten(1), lora.up.weight.flatten(1)
            expected = (5.0 / 3) * (up @ down)
            assert torch.allclose(lora.delta().flatten(1), expected, atol=1e-6)
            originals[name] = target.layer.weight.clone()
            target.layer.weight += lora.delta().reshape(target.layer.weight.shape)
        patched = _unet_out(model)
        for name, target in network.targets.items():
            target.layer.weight.copy_(originals[name])
    assert float((hooked - base).abs().max()) > 1e-3  # the LoRA does change the output
    assert torch.allclose(hooked, patched, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(model):
    network = LoraNetwork(lora_targets(model), rank=2, alpha=2.0)
    _randomise(network, 2)
    grads = []
    for enabled in (False, True):
        network.zero_grad(set_to_none=True)
        g = torch.Generator().manual_seed(3)
        z, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
        with network.attached(), checkpointed(model.unet, enabled):
            model.unet(z, torch.tensor([5.0, 500.0]), context).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in network.parameters()]))
    assert "forward" not in vars(model.unet.input_blocks[1])  # the blocks are plain again
    assert torch.allclose(grads[0], grads[1], atol=1e-7, rtol=1e-5)
    assert float(grads[0].abs().max()) > 0


@pytest.mark.parametrize("rank,alpha,match", [(0, 1.0, "rank of 0"), (5000, 1.0, "rank of 5000"),
                                              (64, 1.0, "larger than the layer"), (4, -1.0, "alpha")])
def test_absurd_settings_are_refused(model, rank, alpha, match):
    with pytest.raises(RequestError, match=match):
        LoraNetwork(lora_targets(model), rank=rank, alpha=alpha)
