"""End to end with the real engine on a tiny checkpoint: generate -> history entry -> gallery -> re-run gives
the same pixels, for txt2img and inpainting (init image and mask come back from the store). Every mode is
also checked against a deterministic stand-in engine in tests/history/test_store.py."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdstudio.engine.api import Engine
from sdstudio.engine.request import GenerationRequest
from sdstudio.history.store import HistoryStore
from sdstudio.ui.gallery import GalleryWidget


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_rerun_from_the_gallery_reproduces_every_mode(qtbot, tiny_path, tmp_path) -> None:
    engine = Engine()
    store = HistoryStore(tmp_path / "outputs")
    gallery = GalleryWidget(store)
    qtbot.addWidget(gallery)
    base = GenerationRequest(prompt="an apple", negative_prompt="pear", steps=2, width=64, height=64,
                             sampler="Euler a", seed=11, model=str(tiny_path))
    [txt2img] = store.add_result(engine.generate(base))
    init = Image.open(txt2img.file).convert("RGB")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    [inpaint] = store.add_result(engine.generate(base.replace(
        init_image=init, mask=mask, strength=0.6, seed=13, sampler="DPM++ 2M", scheduler="karras",
        parent_id=txt2img.id,
    )))
    for entry in (txt2img, inpaint):
        gallery.add_entry(entry)
    assert [e.mode for e in (txt2img, inpaint)] == ["txt2img", "inpaint"]

    for entry in (txt2img, inpaint):
        gallery.select_entry(entry.id)
        with qtbot.waitSignal(gallery.rerunRequested) as asked:
            gallery.act_rerun.trigger()
        entry_id, new_seed = asked.args
        # Records name the model, not its path: it is found again in the models folder.
        request = store.request_for(store.get(entry_id), models_dir=tiny_path.parent)
        assert not new_seed and request.mode == entry.mode and request.model_hash == entry.model_hash != ""
        again = engine.generate(request).images[0]
        with Image.open(entry.file) as saved:
            assert np.array_equal(pixels(again), pixels(saved)), f"{entry.mode} re-run differs"
    gallery.select_entry(inpaint.id)
    gallery.act_parent.trigger()
    assert gallery.current_entry().id == txt2img.id
    store.close()
