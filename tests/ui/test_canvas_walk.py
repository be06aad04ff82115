"""The walk on the canvas (it replaced the walk player dialog): frame slider and play/pause in the scrubber's
place, exports of every frame, and anything else shown on the canvas (a job, an image) ends the walk."""

import numpy as np
import pytest
from PIL import Image

from sdstudio.engine.request import GenerationRequest
from sdstudio.history.png import read_png_parameters
from sdstudio.ui.imageconv import pil_to_qimage, qimage_to_pil


def frames(n=5):
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)) for _ in range(n)]
    requests = [GenerationRequest(prompt="a", seed=3, width=32, height=24, blend_prompt="b",
                                  blend_strength=k / (n - 1)) for k in range(n)]
    return images, requests


@pytest.fixture
def panel(window):
    panel = window.canvas_panel
    panel.walk_bar.timer.setInterval(20)
    return panel


def shown(panel):
    return np.asarray(qimage_to_pil(panel.canvas.image).convert("RGB"))


def test_the_walk_plays_in_a_loop_on_the_canvas_and_the_slider_pauses_it(qtbot, panel):
    images, requests = frames()
    panel.finish_job([pil_to_qimage(images[0])], [(0, pil_to_qimage(images[0]))], 2)
    assert panel.scrubber.isVisible() and not panel.walk_bar.isVisible()
    panel.show_walk(images, requests, "sdstudio-emoji")
    bar = panel.walk_bar
    assert bar.isVisible() and not panel.scrubber.isVisible() and bar.playing
    qtbot.waitUntil(lambda: bar.slider.value() == 4, timeout=2000)
    qtbot.waitUntil(lambda: bar.slider.value() == 0, timeout=2000)  # wraps round
    bar.toggle()
    assert not bar.playing
    bar.slider.setValue(3)
    assert bar.label.text() == "Frame 4/5"
    assert np.array_equal(shown(panel), np.asarray(images[3]))
    qtbot.wait(60)
    assert bar.slider.value() == 3  # paused: stays
    bar.slider.sliderPressed.emit()
    bar.play()
    assert bar.playing
    bar.slider.sliderPressed.emit()  # grabbing the slider pauses
    assert not bar.playing


def test_a_walk_can_start_paused_at_a_frame_and_a_job_or_an_image_ends_it(panel):
    images, requests = frames()
    panel.show_walk(images, requests, frame=2, play=False)
    bar = panel.walk_bar
    assert not bar.playing and bar.slider.value() == 2
    assert np.array_equal(shown(panel), np.asarray(images[2]))
    assert panel.shown_result_index() is None  # a frame is not one of the job's images
    panel.begin_job(requests[0])
    assert not bar.active and not bar.isVisible() and not bar.playing
    panel.show_walk(images, requests)
    panel.finish_job([pil_to_qimage(images[4])], [], 0)  # e.g. a gallery entry shown
    assert not bar.active and not bar.isVisible()
    with pytest.raises(ValueError):
        panel.show_walk(images, requests[:-1])


def test_exports_from_the_canvas_hold_every_frame_and_the_pngs_their_parameters(tmp_path, panel):
    images, requests = frames()
    panel.show_walk(images, requests, "sdstudio-emoji", play=False)
    bar = panel.walk_bar
    for suffix in (".webp", ".gif"):
        with Image.open(bar.export_animation(tmp_path / f"walk{suffix}")) as anim:
            assert anim.n_frames == 5
    saved = bar.export_folder(tmp_path / "frames")
    assert len(saved) == 5
    assert len({p.name for p in saved}) == 5
    text, record = read_png_parameters(saved[2])
    assert "Blend prompt: b, Blend strength: 0.5" in text and record["request"]["blend_strength"] == 0.5
    with Image.open(saved[2]) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(images[2]))
    (tmp_path / "file").write_text("x")
    bar._report(lambda: bar.export_folder(tmp_path / "file" / "sub"))
    assert "cannot be made" in bar.status.text()
    bar._report(lambda: bar.export_animation(tmp_path / "walk.bmp"))
    assert ".webp or .gif" in bar.status.text()
    bar._report(lambda: bar.export_animation(tmp_path / "missing" / "walk.webp").name)
    assert "cannot be saved" in bar.status.text()
