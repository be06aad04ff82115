"""Quality of the built-in model's companion ControlNet (issue 16, "Out of the box"), through the engine.

Retrieval: for the fidelity test's 64 frozen emoji (test_builtin_model.NAMES), the canny map of the emoji with an
empty prompt gives an image nearer (16x16 L2) to that emoji than to 95 % of the dataset in at least 60 % of the
cases. Scribble: shapes drawn by code (2 px white strokes) give images whose foreground covers the drawn shape's
area with a mean IoU of at least 0.5. evaluate_control.py has the definitions.
"""

import numpy as np
import pytest

from sdstudio.engine.model_files import builtin_model_path
from sdstudio.paths import builtin_models_dir
from sdstudio.training.dataset import build_dataset
from sdstudio.training.evaluate_control import drawn_shape, iou, retrieval, scribble
from sdstudio.training.export import controlnet_path
from tests.training.test_builtin_model import NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controlnet():
    path = controlnet_path(builtin_models_dir())
    assert path.is_file(), f"the built-in ControlNet is missing: {path}"
    return str(path)


def test_the_drawn_shapes_are_outlines_of_their_areas():
    for name in ("circle", "square", "triangle", "star", "diamond"):
        stroke, area = drawn_shape(name)
        lines = np.asarray(stroke)[..., 0] > 127
        assert 0.05 < area.mean() < 0.5 and lines.mean() < 0.15
        assert iou(lines, area) < 0.4  # the stroke alone is far from the area: the model must fill it in


def test_canny_maps_of_dataset_emoji_give_back_those_emoji(builtin_engine, controlnet):
    dataset = build_dataset()
    found = retrieval(builtin_engine, controlnet, dataset.images, dataset.names, NAMES, str(builtin_model_path()))
    assert found.rate >= 0.6, (found.rate, found.misses)
    assert found.median_rank < 0.05 * found.dataset_size


def test_drawn_shapes_are_followed(builtin_engine, controlnet):
    result, _ = scribble(builtin_engine, controlnet, str(builtin_model_path()))
    assert result.mean_iou >= 0.5, result.ious
