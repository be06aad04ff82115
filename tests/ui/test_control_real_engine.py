"""A painted control layer on the real engine (tiny checkpoint, tiny random ControlNet): the window's job
steers the image, and its request re-runs to the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from safetensors.torch import save_file

from sdstudio import paths
from sdstudio.engine.api import Engine
from sdstudio.engine.controlnet import ControlNet, ControlNetConfig
from sdstudio.ui.worker import default_engine_factory
from tests.engine.full_size import random_tensor
from tests.tiny_checkpoint import TINY_UNET, write_tiny_checkpoint
from tests.ui.test_control_dock import _choose
from tests.ui.test_main_window import set_prompt, stroke
from tests.ui.test_real_engine import choose


@pytest.fixture
def files(home):
    (home / "models").mkdir(parents=True)
    model = write_tiny_checkpoint(home / "models" / "tiny.safetensors")
    paths.controlnet_dir().mkdir(parents=True)
    g = torch.Generator().manual_seed(7)
    net = ControlNet(ControlNetConfig(TINY_UNET))
    state = {k: random_tensor(k, tuple(v.shape), g).contiguous() for k, v in net.state_dict().items()}
    control = paths.controlnet_dir() / "tiny_scribble.safetensors"
    save_file(state, str(control))
    return str(model), str(control)


def test_a_painted_layer_steers_the_real_engine_and_re_runs_to_the_same_pixels(qtbot, make_window, files):
    model, control_path = files
    window = make_window(factory=default_engine_factory)
    with qtbot.waitSignal(window.worker.modelLoaded, timeout=60_000):
        choose(window, model)
    control = window.control_layers
    control.add_layer()
    assert control.panel.model_combo.findData(control_path) > 0  # no family in its header: offered
    _choose(control.panel, control_path)
    window.canvas_panel.canvas.set_brush_radius(3)
    window.canvas_panel.canvas.hardness = 1.0
    stroke(qtbot, window.canvas_panel.canvas, [(10, 50), (32, 10), (54, 50), (10, 50)])
    set_prompt(window, "red apple", seed=5, steps=4)
    with qtbot.waitSignal(window.resultReady, timeout=60_000) as done:
        window.generate()
    steered = done.args[0]
    [unit] = steered.requests[0].control_units
    assert unit.model == control_path and unit.model_hash
    control.panel.layer_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    with qtbot.waitSignal(window.resultReady, timeout=60_000) as plain:
        window.generate()
    a = np.asarray(steered.images[0], np.int16)
    b = np.asarray(plain.args[0].images[0], np.int16)
    assert np.abs(a - b).max() > 8, "the control layer changed nothing"
    again = Engine().generate(steered.requests[0]).images[0]
    assert np.array_equal(np.asarray(again), np.asarray(steered.images[0]))

