"""Upscale from the gallery: a model file or Lanczos, the result saved as a child entry with A1111's
postprocessing keys; a bad model file is said in the banner."""

import torch
from PIL import Image

from sdstudio import paths
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.upscale_job import UpscaleSettings
from sdstudio.history.parameters import parse_parameters
from tests.engine.esrgan_files import old_esrgan, old_state
from tests.ui.test_walk_link import open_history


def add(store, prompt, seed):
    request = GenerationRequest(prompt=prompt, seed=seed, steps=2, width=16, height=16)
    return store.add(Image.new("RGB", (16, 12), (seed, 40, 90)), request, "sdstudio-emoji")


def test_upscale_saves_a_child_entry(qtbot, window, monkeypatch):
    folder = paths.models_dir() / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(old_state(old_esrgan(scale=2, blocks=1, seed=1)), folder / "2x-Tiny.pth")
    link = open_history(window, monkeypatch)
    up, gallery = window.upscale_link, link.gallery
    parent = add(link.store, "red apple", 5)
    gallery.refresh()
    gallery.select_entry(parent.id)
    texts = [a.text() for a in gallery.context_menu().actions() if not a.isSeparator()]
    assert "Upscale…" in texts
    from sdstudio.ui.upscale_link import upscaler_choices

    assert upscaler_choices()[:2] == ["Lanczos", "Nearest"] and "2x-Tiny" in upscaler_choices()
    with qtbot.waitSignal(up.saved, timeout=10000) as saved:
        up.upscale(parent.id, UpscaleSettings("2x-Tiny", 3.0))
    child = saved.args[0]
    assert child.parent_id == parent.id and [c.id for c in link.store.children(parent.id)] == [child.id]
    with Image.open(child.file) as im:
        assert im.size == (48, 36)
    params = parse_parameters(link.store.parameters_text(child))
    assert params["Postprocess upscaler"] == "2x-Tiny" and params["Postprocess upscale by"] == "3"
    assert params["Seed"] == "5" and link.store.parameters_text(child).startswith("red apple")
    link.flush()
    link.store.close()


def test_a_bad_model_file_is_said_in_the_banner(qtbot, window, monkeypatch):
    folder = paths.models_dir() / "ESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "4x-Broken.pth").write_bytes(b"not a model")
    link = open_history(window, monkeypatch)
    up = window.upscale_link
    parent = add(link.store, "blue", 9)
    with qtbot.waitSignal(up.failed, timeout=10000):
        up.upscale(parent.id, UpscaleSettings("4x-Broken", 2.0))
    qtbot.waitUntil(lambda: "4x-Broken.pth" in window.canvas_panel.banner.text.text(), timeout=2000)
    assert link.store.children(parent.id) == []
    link.flush()
    link.store.close()


def test_hires_upscaler_choices_include_the_model_files(window):
    folder = paths.models_dir() / "RealESRGAN"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(old_state(old_esrgan(scale=2, blocks=1, seed=1)), folder / "RealESRGAN_x2plus.pth")
    window.refresh_models()
    combo = window.panel.hires.upscaler_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names[0] == "Latent" and "Lanczos" in names and names[-1] == "RealESRGAN_x2plus"


def test_sd_upscale_runs_on_the_worker_and_saves_a_child_with_its_strength(qtbot, window, engine,
                                                                            monkeypatch):
    from tests.ui.fake_engine import result_colour

    link = open_history(window, monkeypatch)
    up = window.upscale_link
    parent = add(link.store, "red apple", 5)  # 16x12, its request 16x16: the tile
    steps, notes = [], []
    window.worker.stepProgress.connect(lambda job, done, total: steps.append((job, done, total)))
    window.worker.jobNote.connect(lambda job, text: notes.append(text))
    with qtbot.waitSignal(up.saved, timeout=10000) as saved:
        job = up.upscale(parent.id, UpscaleSettings("Lanczos", 2.0, sd_strength=0.3, overlap=8))
        assert isinstance(job, int)  # queued on the worker, the GUI thread free meanwhile
    child = saved.args[0]
    assert child.parent_id == parent.id and [c.id for c in link.store.children(parent.id)] == [child.id]
    # The fake engine paints each img2img tile in its seed's colour: every pixel went through the SD pass.
    with Image.open(child.file) as im:
        assert im.size == (32, 24) and im.getcolors() == [(32 * 24, result_colour(5))]
    tiles = [r for r in engine.generated if r.init_image is not None]
    assert len(tiles) == 6  # 32x24 in 16x16 tiles overlapping by 8: 3 x 2
    assert all((r.prompt, r.seed, r.strength, r.width, r.height) == ("red apple", 5, 0.3, 16, 16)
               for r in tiles)
    params = parse_parameters(link.store.parameters_text(child))
    assert params["SD upscale strength"] == "0.3" and params["SD upscale tile"] == "16x16"
    assert params["Postprocess upscaler"] == "Lanczos" and params["SD upscale overlap"] == "8"
    assert steps == [(job, done, 12) for done in range(1, 13)]  # 2 steps a tile, counted over the 6 tiles
    assert notes[0] == "Upscaling with Lanczos…" and notes[-1] == "SD upscale: tile 6 of 6"
    assert up.job is None and window.job_status.message.text() == "Upscaled"
    link.flush()
    link.store.close()
