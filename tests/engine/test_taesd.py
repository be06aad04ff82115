"""TAESD: madebyollin's layer layout, both weight layouts, and equality with diffusers' AutoencoderTiny."""
import pytest
import torch
from diffusers import AutoencoderTiny

from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.taesd import TAESD, load_taesd_state


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def reference() -> AutoencoderTiny:
    torch.manual_seed(0)
    model = AutoencoderTiny().eval()  # the TAESD configuration: 64 channels, 4 latent channels
    with torch.no_grad():  # small biases keep activations alive through ten ReLU blocks
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def loaded(reference) -> TAESD:
    taesd = TAESD().eval()
    load_taesd_state(taesd, reference.state_dict())
    return taesd


def madebyollin_halves(reference: AutoencoderTiny) -> tuple[dict, dict]:
    """Inverse of diffusers' scripts/convert_tiny_autoencoder_to_diffusers.py, which maps madebyollin's
    encoder key `N.x` to `encoder.layers.N.x` and decoder key `N.x` to `decoder.layers.(N-1).x`."""
    encoder, decoder = {}, {}
    for key, value in reference.state_dict().items():
        half, _, index, rest = key.split(".", 3)
        if half == "encoder":
            encoder[f"{index}.{rest}"] = value
        else:
            decoder[f"{int(index) + 1}.{rest}"] = value
    return encoder, decoder


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, 8, 8, generator=generator) * 2
    rgb01 = torch.rand(1, 3, 64, 64, generator=generator)
    return latent, rgb01


def assert_same_weights(taesd: torch.nn.Module, loaded: torch.nn.Module) -> None:
    expected = loaded.state_dict()
    for key, value in taesd.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_layout_matches_madebyollin_files():
    taesd = TAESD(device="meta")
    decoder_keys, encoder_keys = set(taesd.decoder.state_dict()), set(taesd.encoder.state_dict())
    # decoder: 0 clamp, 1 conv, 2 ReLU, 3-5 blocks, 6 upsample, 7 conv without bias, ..., 18 block, 19 conv
    assert {"1.weight", "1.bias", "3.conv.0.weight", "3.conv.4.bias", "7.weight", "18.conv.2.weight",
            "19.weight", "19.bias"} <= decoder_keys
    assert max(int(k.split(".")[0]) for k in decoder_keys) == 19
    assert not any(k.startswith(("0.", "2.", "6.")) for k in decoder_keys)
    assert "7.bias" not in decoder_keys
    # encoder: 0 conv, 1 block, 2 stride-2 conv without bias, ..., 14 conv to latent
    assert {"0.weight", "1.conv.0.weight", "2.weight", "14.weight", "14.bias"} <= encoder_keys
    assert "2.bias" not in encoder_keys
    assert max(int(k.split(".")[0]) for k in encoder_keys) == 14
    assert taesd.decoder.state_dict()["1.weight"].shape == (64, 4, 3, 3)
    assert taesd.encoder.state_dict()["14.weight"].shape == (4, 64, 3, 3)


def test_decoder_has_about_1_2_million_parameters():
    assert _count(TAESD().decoder) == 1_222_531


def test_latent_channels_are_configurable():
    taesd = TAESD(latent_channels=16)
    with torch.no_grad():
        assert taesd.decode(torch.zeros(1, 16, 2, 2)).shape == (1, 3, 16, 16)
        assert taesd.encode(torch.zeros(1, 3, 16, 16)).shape == (1, 16, 2, 2)
    assert _count(taesd.decoder) > _count(TAESD().decoder)


def test_diffusers_layout_loaded_into_taesd_matches_autoencoder_tiny(reference, loaded):
    latent, rgb01 = inputs()
    with torch.no_grad():
        decoded = loaded.decoder(latent)
        expected_rgb01 = (reference.decode(latent).sample + 1) / 2  # diffusers outputs [-1, 1]
        encoded = loaded.encode(rgb01)
        expected_latent = reference.encode(rgb01 * 2 - 1).latents  # diffusers reads [-1, 1]
    assert decoded.shape == (1, 3, 64, 64) and encoded.shape == (1, 4, 8, 8)
    assert expected_rgb01.std() > 1e-3 and expected_latent.std() > 1e-3
    assert (decoded - expected_rgb01).abs().max() < 1e-5
    assert (encoded - expected_latent).abs().max() < 1e-5


def test_madebyollin_files_load_into_each_half(reference, loaded):
    encoder_state, decoder_state = madebyollin_halves(reference)
    taesd = TAESD()
    load_taesd_state(taesd.encoder, encoder_state)
    load_taesd_state(taesd.decoder, decoder_state)
    assert_same_weights(taesd, loaded)


def test_whole_taesd_state_dict_round_trips(loaded):
    taesd = TAESD()
    load_taesd_state(taesd, loaded.state_dict())
    assert_same_weights(taesd, loaded)


def test_diffusers_half_without_its_prefix_loads_into_that_half(reference, loaded):
    decoder_state = {k.removeprefix("decoder."): v for k, v in reference.state_dict().items()
                     if k.startswith("decoder.")}
    taesd = TAESD()
    load_taesd_state(taesd.decoder, decoder_state)
    assert_same_weights(taesd.decoder, loaded.decoder)


def test_decode_clamps_to_displayable_range(loaded):
    latent, _ = inputs()
    with torch.no_grad():
        raw = loaded.decoder(latent * 10)
        shown = loaded.decode(latent * 10)
    assert raw.min() < 0 or raw.max() > 1
    assert torch.equal(shown, raw.clamp(0, 1))


def test_decoder_soft_clamps_extreme_latents(loaded):
    signs = inputs()[0].sign()
    with torch.no_grad():
        saturated = loaded.decoder(signs * 100)
        assert torch.equal(saturated, loaded.decoder(signs * 1000))
        assert not torch.allclose(loaded.decoder(signs), loaded.decoder(signs * 2), atol=1e-3)


def test_missing_tensor_is_a_checkpoint_error(reference):
    _, decoder_state = madebyollin_halves(reference)
    del decoder_state["19.bias"]
    with pytest.raises(CheckpointError, match="19.bias"):
        load_taesd_state(TAESD().decoder, decoder_state)


def test_wrong_latent_channels_is_a_checkpoint_error(reference):
    _, decoder_state = madebyollin_halves(reference)
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_taesd_state(TAESD(latent_channels=16).decoder, decoder_state)


def test_encoder_file_into_decoder_is_a_checkpoint_error(reference):
    encoder_state, _ = madebyollin_halves(reference)
    with pytest.raises(CheckpointError):
        load_taesd_state(TAESD().decoder, encoder_state)


def test_whole_taesd_needs_both_halves(reference):
    decoder_only = {k: v for k, v in reference.state_dict().items() if k.startswith("decoder.")}
    with pytest.raises(CheckpointError, match="no 'encoder.' tensors"):
        load_taesd_state(TAESD(), decoder_only)


def test_whole_taesd_rejects_tensors_outside_the_halves(reference):
    state = {**reference.state_dict(), "vae.scale": torch.ones(())}
    with pytest.raises(CheckpointError, match="vae.scale"):
        load_taesd_state(TAESD(), state)


def test_width_is_read_from_the_file(tmp_path):
    from safetensors.torch import save_file

    from sdstudio.engine.checkpoint import load_taesd_file
    from sdstudio.engine.taesd import decoder_shape

    narrow = TAESD(width=16).decoder
    assert decoder_shape(narrow.state_dict()) == (4, 16)
    assert decoder_shape({}) == (4, 64)
    save_file(narrow.state_dict(), str(tmp_path / "narrow.safetensors"))
    loaded = load_taesd_file(tmp_path / "narrow.safetensors")
    latent = torch.randn(1, 4, 3, 5)
    with torch.no_grad():
        assert torch.equal(loaded.decoder(latent), narrow.eval()(latent))
    assert _count(narrow) < _count(TAESD().decoder) // 10
