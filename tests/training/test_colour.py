import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio.training import colour


def test_lab_of_known_colours():
    lab = colour.srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 0]]))
    assert lab[0] == pytest.approx([100, 0, 0], abs=0.01)
    assert lab[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert lab[2] == pytest.approx([87.73, -86.18, 83.18], abs=0.05)
    assert lab[3] == pytest.approx([0, 0, 0], abs=0.01)


def test_delta_e_is_zero_for_equal_images_and_grows_with_hue_error():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert colour.mean_delta_e(images, images) == 0
    swapped = images[..., [1, 0, 2]]  # red and green exchanged
    assert colour.mean_delta_e(images, swapped) > 20


def _emoji(rgb, background=(255, 255, 255)):
    image = np.full((64, 64, 3), background, dtype=np.uint8)
    image[16:48, 16:48] = rgb
    return image


@pytest.mark.parametrize(("rgb", "name"), [((220, 20, 30), "red"), ((240, 140, 20), "orange"),
                                           ((250, 220, 30), "yellow"), ((30, 180, 60), "green"),
                                           ((30, 80, 230), "blue"), ((150, 40, 200), "purple"),
                                           ((40, 200, 200), "cyan"), ((128, 128, 128), "none")])
def test_dominant_colour_bins(rgb, name):
    assert colour.dominant_colour(_emoji(rgb)) == name
    assert colour.dominant_colour(Image.fromarray(_emoji(rgb))) == name


def test_dominant_colour_ignores_the_white_background():
    image = _emoji((30, 180, 60))
    image[:4] = (250, 250, 250)
    assert colour.dominant_colour(image) == "green"


def test_colour_test_set_takes_clear_cases_and_skips_skin_tones():
    images = np.stack([_emoji((220, 20, 30)), _emoji((30, 180, 60)), _emoji((128, 128, 128)),
                       _emoji((250, 220, 30)), _emoji((250, 220, 30))])
    names = ["apple", "leaf", "rock", "thumbs up: medium skin tone", "sun"]
    assert colour.colour_test_set(images, names) == [("apple", "red"), ("leaf", "green"), ("sun", "yellow")]


def _images_and_patch_colours(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    patches = torch.rand(n, 3, 4, 4, generator=generator) * 2 - 1
    texture = 0.05 * torch.randn(n, 3, 32, 32, generator=generator)
    return F.interpolate(patches, scale_factor=8, mode="nearest") + texture, patches


def test_probe_finds_colour_that_the_latent_carries():
    images, patches = _images_and_patch_colours()
    latents = torch.cat([colour.opponent(patches), patches.mean(1, keepdim=True) * 0.5,
                         torch.zeros_like(patches[:, :1])], 1)
    result = colour.colour_probe(latents, images, steps=400)
    assert result.r2_red_green > 0.95 and result.r2_blue_yellow > 0.95


def test_probe_scores_a_latent_blind_to_red_green_low():
    images, patches = _images_and_patch_colours()
    brightness = patches.mean(1, keepdim=True)
    blue_yellow = colour.opponent(patches)[:, 1:]
    latents = torch.cat([brightness, blue_yellow, torch.zeros_like(brightness), torch.zeros_like(brightness)], 1)
    result = colour.colour_probe(latents, images, steps=400)
    assert result.r2_blue_yellow > 0.9
    assert result.r2_red_green < 0.5
