import time

import torch

from sdstudio.engine.preview import LATENT_RGB, Previewer
from sdstudio.engine.taesd import TAESD


def test_linear_preview_uses_the_models_own_map_when_it_has_one():
    latent = torch.zeros(1, 4, 8, 8)
    latent[:, 1] = 1.0
    own = [[0, 0, 0], [1, -1, -1], [0, 0, 0], [0, 0, 0]]  # channel 1 -> pure red
    assert Previewer("demo", latent_rgb=own)(latent).getpixel((0, 0)) == (255, 0, 0)
    family = Previewer("demo")(latent).getpixel((0, 0))
    assert family == tuple(int((v + 1) / 2 * 255) for v in LATENT_RGB["sd1"][1])


def test_taesd_preview_decodes_a_pooled_latent_for_large_images():
    preview = Previewer("sd1", TAESD().eval(), max_latent=16)(torch.randn(1, 4, 64, 48))
    assert preview.size == (96, 128)  # 64x48 latent pooled by 4 -> 16x12 -> 8x decoder


def test_previews_are_skipped_to_stay_within_budget():
    p = Previewer("sd1", budget=0.1)
    p.started = time.perf_counter() - 1.0
    p.spent, p.count = 0.2, 1  # already twice the budget of one second of sampling
    assert not p.due(step=3, total=10)
    assert p.due(step=9, total=10)  # the last step always gets one
