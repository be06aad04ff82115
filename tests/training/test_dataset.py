"""The emoji dataset: single-glyph rendering of sequences, CLDR captions, weights, determinism."""

import numpy as np
import pytest
from PIL import ImageFont

from sdstudio.training.dataset import (
    BITMAP_SIZE,
    FONT_PATH,
    IMAGE_SIZE,
    build_dataset,
    read_emoji_test,
    render_emoji,
    sampling_weights,
    skin_tone_base,
)


@pytest.fixture(scope="module")
def font():
    return ImageFont.truetype(str(FONT_PATH), BITMAP_SIZE, layout_engine=ImageFont.Layout.RAQM)


def ink_box(image) -> tuple[int, int]:
    """Width and height of the non-white part of an image."""
    ink = np.abs(np.asarray(image).astype(int) - 255).sum(axis=2) > 30
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def test_names_are_cldr_short_names_including_flags_zwj_and_keycaps():
    names = {entry.name for entry in read_emoji_test()}
    for name in ("cat face", "red apple", "flag: Japan", "family: man, woman, girl", "keycap: 1",
                 "rainbow flag", "thumbs up: medium skin tone"):
        assert name in names
    assert len(names) > 3500


@pytest.mark.parametrize("text", ["\U0001F468\u200D\U0001F469\u200D\U0001F467",  # family ZWJ sequence
                                  "\U0001F1EF\U0001F1F5",  # flag: Japan (regional indicators)
                                  "\U0001F3F3\uFE0F\u200D\U0001F308",  # rainbow flag
                                  "1\uFE0F\u20E3"])  # keycap: 1
def test_sequences_shape_into_one_glyph(font, text):
    image = render_emoji(font, text)
    assert image is not None and image.size == (IMAGE_SIZE, IMAGE_SIZE)
    # One glyph fills the box; several glyphs side by side would be scaled down to a flat strip.
    width, height = ink_box(image)
    assert width > 40 and height > 36


def test_unshaped_sequence_is_rejected(font):
    # Two unrelated emoji without a joiner stay two glyphs: not a single dataset image.
    assert render_emoji(font, "\U0001F431\U0001F34E") is None


def test_background_is_white_and_glyph_centred(font):
    image = np.asarray(render_emoji(font, "\U0001F34E"))
    assert (image[0, :] == 255).all() and (image[:, 0] == 255).all()
    assert (image[28:36, 28:36] != 255).any()


def test_skin_tone_variants_share_the_weight_of_one_emoji():
    names = ["thumbs up", "thumbs up: light skin tone", "thumbs up: medium-light skin tone",
             "thumbs up: medium skin tone", "thumbs up: medium-dark skin tone", "thumbs up: dark skin tone",
             "kiss: light skin tone, dark skin tone", "kiss: dark skin tone, light skin tone", "red apple"]
    weights = sampling_weights(names)
    assert weights[0] == 1.0 and weights[-1] == 1.0
    assert weights[1:6].sum() == pytest.approx(1.0)
    assert weights[6:8].sum() == pytest.approx(1.0)
    assert skin_tone_base("thumbs up: medium-light skin tone") == "thumbs up"


def test_build_is_deterministic_and_records_font_and_licence():
    first, second = build_dataset(limit=6), build_dataset(limit=6)
    assert first.images.shape == (6, IMAGE_SIZE, IMAGE_SIZE, 3) and first.images.dtype == np.uint8
    assert np.array_equal(first.images, second.images) and first.names == second.names
    assert first.names[0] == "grinning face"
    assert first.info["font_license"].endswith("(OFL-1.1)")
    assert first.info["font_version"][0].isdigit()


def test_save_and_load_round_trip(tmp_path):
    data = build_dataset(limit=3)
    data.save(tmp_path / "d.npz")
    loaded = type(data).load(tmp_path / "d.npz")
    assert np.array_equal(loaded.images, data.images)
    assert loaded.names == data.names and loaded.info == data.info
    assert np.array_equal(loaded.weights, data.weights)
