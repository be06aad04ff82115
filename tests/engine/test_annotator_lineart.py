"""lineart_realistic / lineart_coarse with sk_model.pth / sk_model2.pth-shaped files (random weights): available
once the file is in models/annotators, equal to a functional re-statement of the generator written here, and
a file of another network refused by name."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio import paths
from sdstudio.engine import preprocessors
from sdstudio.engine.errors import RequestError


@functools.cache
def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def conv(cout, cin, k, transposed=False):
        shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        return torch.randn(*shape, generator=g) * (2.0 / (cin * k * k)) ** 0.5, torch.randn(cout, generator=g) * 0.1

    layers = {"model0.1": conv(64, 3, 7), "model1.0": conv(128, 64, 3), "model1.3": conv(256, 128, 3),
              "model3.0": conv(128, 256, 3, True), "model3.3": conv(64, 128, 3, True), "model4.1": conv(1, 64, 7)}
    for n in range(3):
        layers[f"model2.{n}.conv_block.1"] = conv(256, 256, 3)
        layers[f"model2.{n}.conv_block.5"] = conv(256, 256, 3)
    return {f"{name}.{part}": t for name, (w, b) in layers.items() for part, t in (("weight", w), ("bias", b))}


def reference_lines(rgb: np.ndarray, s: dict[str, torch.Tensor]) -> np.ndarray:
    h, w = rgb.shape[:2]
    big = np.pad(rgb, ((0, (64 - h % 64) % 64), (0, (64 - w % 64) % 64), (0, 0)), mode="edge")
    x = torch.tensor(big, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0

    def conv(x, name, pad=0, stride=1, reflect=0):
        if reflect:
            x = F.pad(x, (reflect,) * 4, mode="reflect")
        return F.conv2d(x, s[f"{name}.weight"], s[f"{name}.bias"], stride=stride, padding=pad)

    def norm_relu(x):
        return F.relu(F.instance_norm(x))

    x = norm_relu(conv(x, "model0.1", reflect=3))
    x = norm_relu(conv(x, "model1.0", pad=1, stride=2))
    x = norm_relu(conv(x, "model1.3", pad=1, stride=2))
    for n in range(3):
        y = norm_relu(conv(x, f"model2.{n}.conv_block.1", reflect=1))
        x = x + F.instance_norm(conv(y, f"model2.{n}.conv_block.5", reflect=1))
    for name in ("model3.0", "model3.3"):
        x = norm_relu(F.conv_transpose2d(x, s[f"{name}.weight"], s[f"{name}.bias"], stride=2, padding=1,
                                         output_padding=1))
    drawing = torch.sigmoid(conv(x, "model4.1", reflect=3))[0, 0].numpy()
    return 255 - (drawing * 255).clip(0, 255).astype(np.uint8)[:h, :w]


def photo(w=70, h=66) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 3, y * 3, np.full_like(x, 90)], -1).astype(np.float64)
    a[(x - 30) ** 2 + (y - 30) ** 2 < 15**2] = (240, 20, 20)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize(("name", "file", "seed"), [("lineart_realistic", "sk_model.pth", 0),
                                                   ("lineart_coarse", "sk_model2.pth", 1)])
def test_lineart_runs_with_the_users_file_and_equals_the_reference(home, name, file, seed):
    assert preprocessors.availability(name).startswith(f"unavailable: no annotator file in {paths.annotators_dir()}")
    paths.annotators_dir().mkdir(parents=True)
    torch.save(_state(seed), paths.annotators_dir() / file)
    assert preprocessors.availability(name) == ""
    out = preprocessors.run(name, photo(), {"resolution": 66})
    assert out.size == (70, 66) and out.mode == "RGB"
    ours = np.asarray(out)[..., 0].astype(int)
    assert np.abs(ours - reference_lines(np.asarray(photo()), _state(seed))).max() <= 1
    assert ours.std() > 1


def test_a_hed_file_under_the_lineart_name_is_refused(home):
    paths.annotators_dir().mkdir(parents=True)
    torch.save({"norm": torch.zeros(1, 3, 1, 1)}, paths.annotators_dir() / "sk_model.pth")
    with pytest.raises(RequestError, match="sk_model.pth: not a line-art annotator"):
        preprocessors.run("lineart_realistic", photo())
