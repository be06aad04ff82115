"""The walk player: slider and play/pause over the frames, exports that hold every frame."""

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.png import read_png_parameters
from sdstudio.ui.walk_player import WalkPlayer


def frames(n=5):
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    requests = [GenerationRequest(prompt="a", seed=3, width=32, height=32, blend_prompt="b",
                                  blend_strength=k / (n - 1)) for k in range(n)]
    return images, requests


@pytest.fixture
def player(qtbot):
    images, requests = frames()
    widget = WalkPlayer(images, requests, "sdstudio-emoji", frame_ms=20)
    qtbot.addWidget(widget)
    widget.show()
    return widget


def test_it_plays_in_a_loop_and_the_slider_pauses_and_picks_a_frame(qtbot, player):
    assert player.playing and player.play_button.text() == "Pause"
    qtbot.waitUntil(lambda: player.slider.value() == 4, timeout=2000)
    qtbot.waitUntil(lambda: player.slider.value() == 0, timeout=2000)  # wraps round
    player.toggle()
    assert not player.playing and player.play_button.text() == "Play"
    player.slider.setValue(2)
    assert player.label.text() == "3/5"
    shown = player.view.pixmap().toImage()
    assert shown.width() == 384  # scaled up to the display box
    qtbot.wait(60)
    assert player.slider.value() == 2  # paused: stays


def test_exports_hold_every_frame_and_the_pngs_their_parameters(tmp_path, player):
    player.pause()
    for suffix in (".webp", ".gif"):
        path = player.export_animation(tmp_path / f"walk{suffix}")
        with Image.open(path) as anim:
            assert anim.n_frames == 5
    saved = player.export_folder(tmp_path / "frames")
    assert len(saved) == 5 and len(set(p.name for p in saved)) == 5
    text, ours = read_png_parameters(saved[2])
    assert "Blend prompt: b, Blend strength: 0.5" in text and ours["request"]["blend_strength"] == 0.5
    assert np.array_equal(np.asarray(Image.open(saved[3]).convert("RGB")), np.asarray(player.frames[3]))


def test_export_to_a_bad_place_is_reported_in_the_dialog_not_raised(tmp_path, player):
    player._report(lambda: player.export_animation(tmp_path / "missing" / "walk.webp").name)
    assert "cannot be saved" in player.status.text()


def test_a_player_needs_one_request_per_frame(qtbot):
    images, requests = frames(3)
    with pytest.raises(ValueError):
        WalkPlayer(images, requests[:2])
