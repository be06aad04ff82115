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
