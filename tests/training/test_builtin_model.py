"""Quality of the shipped built-in model (issue 4): prompt fidelity and guidance. Its speed targets are timing,
so they live in test_builtin_model_speed.py (perf).

Fidelity: each of 64 emoji names, drawn once at random with the training weights
(`evaluate.fixed_names(names, weights, 64)`, seed 0) and frozen here, is generated at seed 0, 20 steps,
DPM++ 2M, 64x64; a hit is when its own emoji is among the 5 dataset images nearest to the result
(L2 on 16x16 box-downsampled RGB). Chance is 5 / 3655 = 0.14%.
"""

import numpy as np
import pytest

from sdstudio.engine.model_files import builtin_model_path
from sdstudio.training.colour import colour_test_set, dominant_colour
from sdstudio.training.dataset import build_dataset
from sdstudio.training.evaluate import colour_fidelity, fidelity, fixed_names, request_for

pytestmark = pytest.mark.slow

NAMES = [
    "ice skate", "woman fairy: medium-light skin tone", "crying face", "saluting face", "downwards button",
    "flag: Spain", "cloud with snow", "tear-off calendar", "ferris wheel", "flag: Japan", "cinema",
    "grinning face with sweat", "Japanese \u201cacceptable\u201d button", "confused face", "man facepalming",
    "purple circle", "sunset", "man in motorized wheelchair: medium skin tone", "wing", "hot face", "bone",
    "hair pick", "nesting dolls", "jack-o-lantern", "footprints", "flag: Mayotte", "flag: Tristan da Cunha",
    "musical keyboard", "flower playing cards", "maracas", "fox", "woman: beard",
    "closed mailbox with raised flag", "hut", "women with bunny ears", "canned food", "flag: Belgium",
    "flag: Jamaica", "person in bed: dark skin tone", "motor boat", "person surfing", "waxing crescent moon",
    "woman biking: medium-dark skin tone", "tiger face", "flag: Bulgaria", "detective", "wrapped gift",
    "palm up hand", "cross mark button", "right arrow", "person wearing turban: light skin tone",
    "chequered flag", "love letter", "person biking: medium-dark skin tone", "older person: light skin tone",
    "shamrock", "atom symbol", "man guard", "alien monster", "rhinoceros", "woman mechanic",
    "crossed fingers: medium skin tone", "watch", "woman with white cane: light skin tone",
]


@pytest.fixture(scope="module")
def dataset():
    return build_dataset()


@pytest.fixture(scope="module")
def scores(builtin_engine, dataset):
    model = str(builtin_model_path())
    return {cfg: fidelity(builtin_engine, dataset.images, dataset.names, NAMES, cfg, model, "DPM++ 2M")
            for cfg in (5.0, 1.0)}


def test_the_frozen_names_are_the_seeded_draw(dataset):
    assert fixed_names(dataset.names, dataset.weights, 64) == NAMES


def test_prompt_fidelity_at_cfg_5_is_at_least_half(scores):
    assert scores[5.0].rate >= 0.5, scores[5.0].misses


def test_guidance_helps(scores):
    # Generation 1 needed guidance (CFG 1 was 25 points behind CFG 5, so this asked for 15); the second
    # generation draws most names unguided too (89 % vs 95 %), so the check is that guidance still helps:
    # more hits, and the named emoji nearer on average.
    assert scores[1.0].rate < scores[5.0].rate
    assert np.mean(scores[5.0].ranks) < np.mean(scores[1.0].ranks)


def test_generations_are_far_nearer_their_own_emoji_than_chance(scores, dataset):
    # Chance puts the named emoji at median rank N / 2; require the nearest 5 % at CFG 5.
    assert scores[5.0].median_rank < 0.05 * len(dataset.names), scores[5.0].ranks


def test_different_prompts_at_one_seed_give_different_images(builtin_engine):
    model = str(builtin_model_path())
    a = np.asarray(builtin_engine.generate(request_for("red apple", 5.0, model)).images[0], dtype=np.float32)
    b = np.asarray(builtin_engine.generate(request_for("flag: Japan", 5.0, model)).images[0], dtype=np.float32)
    assert np.abs(a - b).mean() > 20


@pytest.fixture(scope="module")
def colours(builtin_engine, dataset):
    cases = colour_test_set(dataset.images, dataset.names)
    return cases, colour_fidelity(builtin_engine, cases, 5.0, str(builtin_model_path()), "DPM++ 2M")


def test_prompt_fidelity_of_the_second_generation_is_at_least_90_percent(scores):
    # Issue 14's target for the shipped weights (generation 1 reached 92.2 %).
    assert scores[5.0].rate >= 0.9, scores[5.0].misses


def test_the_colour_test_is_big_enough_and_covers_four_colours(colours):
    cases, result = colours
    assert len(cases) >= 60
    assert set(result.totals) == {"red", "green", "blue", "yellow"}


def test_generations_have_their_emoji_dominant_colour(colours):
    _, result = colours
    assert result.rate >= 0.85, result.misses
    for colour in result.totals:
        assert result.colour_rate(colour) >= 0.7, (colour, result.misses)


def test_red_apple_is_red(builtin_engine):
    image = builtin_engine.generate(request_for("red apple", 5.0, str(builtin_model_path()))).images[0]
    assert dominant_colour(image) == "red"
