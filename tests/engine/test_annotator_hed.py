"""HED soft edges with a ControlNetHED.pth-shaped file (random weights): the preprocessor becomes available when
the file is in models/annotators, its map equals a functional re-statement of the network written here, and
wrong or hostile files are refused by name."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sdstudio import paths
from sdstudio.engine import annotator_hed, preprocessor_maps, preprocessors
from sdstudio.engine.errors import RequestError

# ControlNetHED.pth: block n has `convs` 3x3 convs then a 1x1 `projection` to one channel.
BLOCKS = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))


@functools.cache
def _hed_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {"norm": torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1)}
    for n, (cin, cout, convs) in enumerate(BLOCKS, start=1):
        for i in range(convs):
            c = cin if i == 0 else cout
            state[f"block{n}.convs.{i}.weight"] = torch.randn(cout, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
            state[f"block{n}.convs.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
        state[f"block{n}.projection.weight"] = torch.randn(1, cout, 1, 1, generator=g) * (1.0 / cout) ** 0.5
        state[f"block{n}.projection.bias"] = torch.zeros(1)
    return state


def hed_state(seed=0) -> dict[str, torch.Tensor]:
    return dict(_hed_state(seed))


def reference_edges(rgb: np.ndarray, state: dict[str, torch.Tensor]) -> np.ndarray:
    """The network re-stated with functional ops, on the image padded (edge pixels) to a multiple of 64."""
    h, w = rgb.shape[:2]
    big = np.pad(rgb, ((0, (64 - h % 64) % 64), (0, (64 - w % 64) % 64), (0, 0)), mode="edge")
    x = torch.tensor(big, dtype=torch.float32).permute(2, 0, 1)[None] - state["norm"]
    sides = []
    for n, (_, _, convs) in enumerate(BLOCKS, start=1):
        if n > 1:
            x = F.max_pool2d(x, 2)
        for i in range(convs):
            x = F.relu(F.conv2d(x, state[f"block{n}.convs.{i}.weight"], state[f"block{n}.convs.{i}.bias"], padding=1))
        side = F.conv2d(x, state[f"block{n}.projection.weight"], state[f"block{n}.projection.bias"])
        sides.append(F.interpolate(side, size=big.shape[:2], mode="bilinear", align_corners=False)[0, 0].double())
    edge = torch.sigmoid(torch.stack(sides).mean(0)).numpy()[:h, :w]
    return (edge * 255).clip(0, 255).astype(np.uint8)


def photo(w=80, h=72) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 3, y * 3, np.full_like(x, 90)], -1).astype(np.float64)
    a[(x - 30) ** 2 + (y - 30) ** 2 < 15**2] = (240, 20, 20)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.fixture
def hed_file(home):
    folder = paths.annotators_dir()
    folder.mkdir(parents=True)
    state = hed_state()
    torch.save(state, folder / "ControlNetHED.pth")
    return state


def test_softedge_hed_runs_with_the_users_file_and_equals_the_reference(hed_file):
    assert preprocessors.availability("softedge_hed") == ""
    out = preprocessors.run("softedge_hed", photo(), {"resolution": 72})
    assert out.size == (80, 72) and out.mode == "RGB"
    ours = np.asarray(out)[..., 0]
    expected = reference_edges(np.asarray(photo()), hed_file)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    assert ours.std() > 1  # the random network still draws something, not a flat map


def test_hedsafe_and_scribble_hed(hed_file):
    safe = np.asarray(preprocessors.run("softedge_hedsafe", photo(), {"resolution": 72}))
    assert set(np.unique(safe)) <= {0, 127, 255}
    scribble = np.asarray(preprocessors.run("scribble_hed", photo(), {"resolution": 72}))
    assert set(np.unique(scribble)) <= {0, 255}


def test_thin_lines_keeps_peaks_above_the_level():
    soft = np.zeros((40, 40), np.uint8)
    soft[17:24, 5:35] = np.array([60, 150, 230, 255, 230, 150, 60], np.uint8)[:, None]
    soft[30:33, 30:33] = 100  # a faint blob: a peak, but under the level
    thin = annotator_hed.thin_lines(soft, 127, 1.0)
    assert (thin[20, 8:32] == 255).all()  # the ridge row
    assert thin[:15].max() == 0 and thin[26:].max() == 0
    # Off the ridge a pixel stays only where it is a maximum along some direction: along a straight, even line
    # every pixel is (sd-webui-controlnet's rule), so only rows still above the level after the blur remain.
    blurred = preprocessor_maps.gaussian_blur(soft.astype(np.float32), 1.0)
    assert not thin[blurred <= 127].any()


def test_a_file_of_another_network_is_refused_by_name(home):
    folder = paths.annotators_dir()
    folder.mkdir(parents=True)
    state = hed_state()
    del state["block5.projection.weight"]
    torch.save(state, folder / "ControlNetHED.pth")
    with pytest.raises(RequestError, match="ControlNetHED.pth: not a ControlNetHED.pth"):
        preprocessors.run("softedge_hed", photo())


class _Boom:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_pickle_that_runs_code_is_refused(home, capsys):
    folder = paths.annotators_dir()
    folder.mkdir(parents=True)
    (folder / "ControlNetHED.pth").write_bytes(pickle.dumps({"norm": _Boom()}))
    with pytest.raises(RequestError, match="refused"):
        preprocessors.run("softedge_hed", photo())
    assert "pickled code ran" not in capsys.readouterr().out
