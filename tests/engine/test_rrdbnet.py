"""Our ESRGAN networks against reference modules built from the published structures (esrgan_files.py)."""

import pytest
import torch

from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.rrdbnet import RRDBNet, SRVGGNetCompact, build_upscaler, from_old_layout
from tests.engine.esrgan_files import basicsr_state, compact, old_esrgan, old_state, unshuffled_esrgan


def _image(h=13, w=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_old_layout_matches_the_original_sequential(scale):
    ref = old_esrgan(scale=scale, blocks=2, seed=scale)
    net = build_upscaler(old_state(ref), "x.pth")
    assert isinstance(net, RRDBNet) and net.scale == scale
    x = _image()
    with torch.no_grad():
        want, got = ref(x), net(x)
    assert got.shape == (1, 3, 13 * scale, 11 * scale)
    assert want.abs().mean() > 0.05  # textured: a wiring mistake cannot hide in near-zero outputs
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_basicsr_layout_is_the_same_network():
    ref = old_esrgan(scale=4, blocks=3, seed=7)
    a, b = build_upscaler(old_state(ref), "old.pth"), build_upscaler(basicsr_state(ref), "new.pth")
    assert from_old_layout(old_state(ref), "old.pth").keys() == basicsr_state(ref).keys()
    x = _image(9, 16)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


@pytest.mark.parametrize("unshuffle, scale", [(2, 2), (4, 1)])
def test_real_esrgan_pixel_unshuffle(unshuffle, scale):
    forward, state = unshuffled_esrgan(unshuffle, seed=unshuffle)
    net = build_upscaler(state, "RealESRGAN_x2plus.pth")
    assert net.scale == scale
    x = _image(16, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(x), forward(x), atol=1e-5, rtol=1e-5)
    assert net(x).shape[-2:] == (16 * scale, 12 * scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_compact_matches_reference(scale):
    forward, state = compact(convs=4, scale=scale, seed=scale)
    net = build_upscaler(state, "realesr-general-x4v3.pth")
    assert isinstance(net, SRVGGNetCompact) and net.scale == scale
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(net(x), forward(x), atol=1e-5, rtol=1e-5)


def _messages(state):
    with pytest.raises(CheckpointError) as info:
        build_upscaler(state, "bad.pth")
    return str(info.value)


def test_hostile_states_are_refused_with_a_reason():
    good = old_state(old_esrgan(scale=4, seed=3))
    assert "no floating-point" in _messages({})
    assert "no floating-point" in _messages({"model.0.weight": torch.zeros(3, dtype=torch.int64)})
    assert "SwinIR" in _messages({"layers.0.residual_group.blocks.0.norm1.weight": torch.ones(4),
                                  "conv_first.weight": torch.ones(4, 3, 3, 3)})
    assert "not an upscaler model" in _messages({"model.diffusion_model.x": torch.ones(1)})
    assert "not part of an ESRGAN" in _messages({**good, "model.1.sub.0.extra": torch.ones(1)})
    gapped = {k: v for k, v in good.items() if not k.startswith("model.6.")}
    assert "indices" in _messages(gapped)
    missing = {k: v for k, v in good.items() if not k.startswith("model.1.sub.1.RDB2.conv3")}
    assert "missing" in _messages(missing)
    wrong = dict(good, **{"model.10.weight": torch.ones(3, 8, 5, 5)})
    assert "shape" in _messages(wrong)
    odd_first = basicsr_state(old_esrgan(seed=4))
    odd_first["conv_first.weight"] = torch.ones(8, 7, 3, 3)
    assert "channels" in _messages(odd_first)
    _, compact_state = compact(convs=2)
    compact_state["body.8.weight"] = torch.ones(5, 8, 3, 3)  # 5 channels: no whole scale
    assert "compact" in _messages(compact_state)


@pytest.mark.slow
def test_full_size_esrgan_x4_matches_the_original_sequential():
    """The shape every 4x ESRGAN / RealESRGAN_x4plus file has: 23 blocks, 64 features, growth 32."""
    ref = old_esrgan(nf=64, gc=32, blocks=23, scale=4, seed=11)
    with torch.no_grad():
        for p in ref.parameters():
            p.div_(1.5)  # the helper's textured scaling compounds over 23 blocks; back to torch's init
    state = old_state(ref)
    assert sum(v.numel() for v in state.values()) == 16_697_987  # RRDB_ESRGAN_x4's parameter count
    net = build_upscaler(state, "RRDB_ESRGAN_x4.pth")
    x = _image(24, 20)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-4, rtol=1e-4)
