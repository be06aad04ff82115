"""Caption-preserving augmentation: shifts and scales on white, colours untouched."""

import torch

from sdstudio.training.augment import shift_scale, to_tensor


def test_to_tensor_maps_uint8_to_unit_range():
    x = to_tensor(torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert torch.allclose(x.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]), atol=1e-6)


def test_white_stays_white_and_uncovered_borders_are_white():
    x = torch.ones(4, 3, 16, 16)
    x[:, :, 6:10, 6:10] = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)  # a red square
    out = shift_scale(x, torch.Generator().manual_seed(0), max_shift=0.1, scale_range=(0.8, 0.8))
    assert torch.allclose(out[:, :, 0, :], torch.ones_like(out[:, :, 0, :]))
    assert torch.allclose(out[:, :, :, -1], torch.ones_like(out[:, :, :, -1]))
    # Colour is kept: the reddest pixel is still red, never another hue.
    red = out[:, 0] - out[:, 1]
    assert red.amax() > 1.5


def test_no_shift_no_scale_is_identity():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = shift_scale(x, torch.Generator().manual_seed(0), max_shift=0.0, scale_range=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_same_seed_same_augmentation():
    x = torch.rand(3, 3, 8, 8)
    a = shift_scale(x, torch.Generator().manual_seed(3))
    b = shift_scale(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
