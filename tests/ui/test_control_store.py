"""control_store: the layers' plain settings round-trip through JSON and their images through PNG files;
a missing model or file comes back as a notice, an unreadable state as one notice and no layers."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from sdstudio.ui.control_state import FILE, PAINT, ControlLayer
from sdstudio.ui.control_store import load_layers, save_layers


def _layers(tmp_path):
    model = tmp_path / "control_v11p_sd15_canny.safetensors"
    model.write_bytes(b"x")
    image = Image.new("RGB", (20, 12), (10, 200, 30))
    image.putpixel((3, 4), (255, 0, 0))
    opened = ControlLayer(model=str(model), source=FILE, image=image, image_name="photo.png",
                          preprocessor="canny", preprocessor_params=(("low", 50.0), ("high", 150.0)),
                          strength=0.7, start=0.1, end=0.8, mode="prompt", resize_mode="fill", enabled=False,
                          map_visible=False, map_opacity=0.3)
    painted = ControlLayer(model=str(model), source=PAINT, trace=True)
    pixels = np.zeros((12, 16), np.uint8)
    pixels[5, 2:9] = 255
    return [opened, painted], [None, pixels]


def test_layers_come_back_with_their_settings_image_and_painting(tmp_path):
    layers, paintings = _layers(tmp_path)
    folder = tmp_path / "store"
    text = save_layers(layers, paintings, folder)
    assert "photo.png" in text and "base64" not in text and len(text) < 2000  # images are files, not the blob
    back = load_layers(text, folder)
    assert back.notices == []
    for ours, theirs in zip(back.layers, layers, strict=True):
        for name in ("model", "source", "image_name", "preprocessor", "preprocessor_params", "strength",
                     "start", "end", "mode", "resize_mode", "enabled", "map_visible", "map_opacity", "trace"):
            assert getattr(ours, name) == getattr(theirs, name), name
    assert np.array_equal(np.asarray(back.layers[0].image), np.asarray(layers[0].image))
    assert back.paintings[0] is None and np.array_equal(back.paintings[1], paintings[1])


def test_a_missing_model_or_image_restores_the_layer_with_a_notice(tmp_path):
    layers, paintings = _layers(tmp_path)
    folder = tmp_path / "store"
    text = save_layers(layers, paintings, folder)
    (folder / "layer-0-image.png").unlink()
    (folder / "layer-1-painting.png").unlink()
    back = load_layers(text, folder, model_exists=lambda path: False)
    assert len(back.layers) == 2 and [layer.model for layer in back.layers] == ["", ""]
    assert back.layers[0].image is None and back.layers[0].strength == 0.7 and back.paintings[1] is None
    assert len(back.notices) == 4 and all("\n" not in n for n in back.notices)
    assert "control_v11p_sd15_canny.safetensors is missing" in back.notices[0]
    assert "photo.png" in back.notices[1] and "painting" in back.notices[3]


def test_saving_again_replaces_the_files_of_layers_gone(tmp_path):
    layers, paintings = _layers(tmp_path)
    folder = tmp_path / "store"
    save_layers(layers, paintings, folder)
    save_layers(layers[1:], paintings[1:], folder)
    assert sorted(p.name for p in folder.iterdir()) == ["layer-0-painting.png"]


def test_an_unreadable_state_gives_no_layers_and_one_notice(tmp_path):
    layers, paintings = _layers(tmp_path)
    good = json.loads(save_layers(layers, paintings, tmp_path))
    bad_strength = json.loads(json.dumps(good))
    bad_strength["layers"][0]["strength"] = "strong"
    bad_source = json.loads(json.dumps(good))
    bad_source["layers"][1]["source"] = "webcam"
    for text in ("{not json", "[]", json.dumps({"version": 99, "layers": []}), json.dumps(bad_strength),
                 json.dumps(bad_source), json.dumps({"version": 1, "layers": [3]})):
        back = load_layers(text, tmp_path)
        assert back.layers == [] and len(back.notices) == 1 and "could not be read" in back.notices[0], text
    assert load_layers("", tmp_path).notices == []
