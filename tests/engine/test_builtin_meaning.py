"""The engine's modes checked for meaning, not shapes, on the shipped built-in model (issue 4).

References are the emoji themselves, drawn from the same font the model was trained on; distances are
RMS over 16x16 box-downsampled RGB, the space the fidelity measurement uses. Every generation is 64x64,
20 steps: well under a second each, so these run in the default test run.
"""

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.images import prepare_mask
from sdstudio.engine.model_files import builtin_model_path
from sdstudio.engine.request import GenerationRequest
from sdstudio.training.colour import dominant_colour
from sdstudio.training.dataset import open_font, render_emoji
from sdstudio.training.evaluate import thumbnails

JAPAN, FACE, BLUE, APPLE = "\U0001f1ef\U0001f1f5", "\U0001f600", "\U0001f535", "\U0001f34e"


@pytest.fixture(scope="module")
def emoji():
    font = open_font()
    return lambda text: render_emoji(font, text)


def base(**changes) -> GenerationRequest:
    request = GenerationRequest(steps=20, cfg_scale=5.0, sampler="Euler a", scheduler="normal", seed=0, width=64, height=64,
                                model=str(builtin_model_path()))
    return request.replace(**changes)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def distance(a: Image.Image, b: Image.Image) -> float:
    small = thumbnails(np.stack([np.asarray(im.convert("RGB")) for im in (a, b)]))
    return float(np.sqrt(((small[0] - small[1]) ** 2).mean()))


def test_different_prompts_at_one_seed_give_clearly_different_images(builtin_engine):
    a = builtin_engine.generate(base(prompt="red apple")).images[0]
    b = builtin_engine.generate(base(prompt="flag: Japan")).images[0]
    assert distance(a, b) > 40


def test_red_apple_is_a_red_apple(builtin_engine, emoji):
    image = builtin_engine.generate(base(prompt="red apple")).images[0]
    centre = pixels(image)[20:44, 20:44].reshape(-1, 3).mean(axis=0)
    r, g, b = centre
    assert r > 150 and r > g + 60 and r > b + 60, centre  # red-dominant
    assert dominant_colour(image) == "red"  # not orange (generation 1's apple was; issue 14)
    assert distance(image, emoji(APPLE)) < distance(image, emoji(JAPAN)) < distance(image, emoji(BLUE))


def test_img2img_keeps_the_image_at_low_strength_and_follows_the_prompt_at_high(builtin_engine, emoji):
    # Without guidance (CFG 1). Strength 0.3 starts at sigma ~1.4 on unit-variance latents: noise as large
    # as the signal. On SD's 64x64 latent that still leaves the composition; on this model's 8x8 latent it
    # leaves little, and with CFG 3 or more guidance towards the memorised emoji wins (measured: at CFG 3
    # the 0.3 result is already nearer the prompt's emoji than its init image).
    init, target = emoji(JAPAN), emoji(FACE)
    low = builtin_engine.generate(base(prompt="grinning face", init_image=init, strength=0.3, cfg_scale=1.0)).images[0]
    high = builtin_engine.generate(base(prompt="grinning face", init_image=init, strength=0.9, cfg_scale=1.0)).images[0]
    assert distance(low, init) < distance(low, target), "strength 0.3 should stay near its init image"
    assert distance(high, target) < distance(high, init), "strength 0.9 should follow the prompt"
    assert distance(low, init) < distance(high, init)


def test_inpainting_changes_only_the_mask_and_paints_what_the_prompt_says(builtin_engine, emoji):
    init = emoji(BLUE)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 56, 56))
    request = base(prompt="grinning face", init_image=init, mask=mask, mask_blur=2, strength=1.0)
    out = pixels(builtin_engine.generate(request).images[0])
    untouched = np.asarray(prepare_mask(mask, (64, 64), request.mask_blur)) == 0
    assert untouched.mean() > 0.15  # the 8-pixel frame, less the blur
    assert np.array_equal(out[untouched], pixels(init)[untouched])
    inside = out[22:42, 22:42].reshape(-1, 3).mean(axis=0)
    face = pixels(emoji(FACE))[22:42, 22:42].reshape(-1, 3).mean(axis=0)
    blue = pixels(init)[22:42, 22:42].reshape(-1, 3).mean(axis=0)
    assert np.abs(inside - face).sum() < np.abs(inside - blue).sum(), (inside, face, blue)
    # A warm face where the circle was blue.
    assert inside[0] > blue[0] + 100 and inside[2] < blue[2] - 50, (inside, blue)


def test_a_prompt_walk_runs_from_one_endpoint_to_the_other_moving_steadily_away(builtin_engine):
    from sdstudio.engine.walk import WalkRequest, run_walk

    start, end = base(prompt="red apple"), base(prompt="grinning face")
    result = run_walk(builtin_engine, WalkRequest(start, end, frames=9, what="prompt"))
    first, last = (builtin_engine.generate(r).images[0] for r in (start, end))
    assert np.array_equal(pixels(result.images[0]), pixels(first))
    assert np.array_equal(pixels(result.images[-1]), pixels(last))
    away = [distance(image, first) for image in result.images]
    steps = list(zip(away[:-1], away[1:], strict=True))
    growing = sum(b > a for a, b in steps)
    assert growing >= 0.8 * len(steps), [round(d, 1) for d in away]
    assert away[-1] > 40 and away[len(away) // 2] > 5, [round(d, 1) for d in away]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_and_b_lands_nearer_both_than_an_unrelated_emoji_does(builtin_engine, seed):
    # Composable prompts (prompt_schedule's AND). The third emoji must be unrelated to both: a blue circle
    # beside a warm face and a red apple. (Measured: with "flag: Japan" as the third beside "red apple AND
    # large blue circle" the flag, red and white like the apple, is as near the apple as the AND image.)
    def image(prompt):
        return builtin_engine.generate(base(prompt=prompt, seed=seed)).images[0]

    a, b, unrelated = image("grinning face"), image("red apple"), image("large blue circle")
    both = image("grinning face AND red apple")
    assert distance(both, a) < distance(unrelated, a)
    assert distance(both, b) < distance(unrelated, b)
    assert min(distance(both, a), distance(both, b)) > 5  # a new image, not one of the two
