"""The diffusion loss shared by the built-in model's training and LoRA training: a predictor that returns the
true target (the noise for eps models, v = sqrt(ac)·eps - sqrt(1 - ac)·z0 for v models) has zero loss, and
the same predictor scored as the other parameterisation does not."""

from __future__ import annotations

import torch

from sdstudio.engine.schedules import scaled_linear_alphas_cumprod
from sdstudio.training.stage_diffusion import denoising_loss, prediction_target

AC = scaled_linear_alphas_cumprod().float()


def _oracle(z0: torch.Tensor, kind: str):
    def predict(zt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ac = AC[t].view(-1, 1, 1, 1)
        eps = (zt - ac.sqrt() * z0) / (1 - ac).sqrt()
        return prediction_target(z0, eps, ac, kind)
    return predict


def test_true_targets_have_zero_loss_and_the_wrong_one_does_not():
    z0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for kind, other in (("eps", "v"), ("v", "eps")):
        right = denoising_loss(_oracle(z0, kind), z0, AC, 5.0, torch.Generator().manual_seed(1), kind)
        wrong = denoising_loss(_oracle(z0, other), z0, AC, 5.0, torch.Generator().manual_seed(1), kind)
        assert float(right) < 1e-8, kind
        assert float(wrong) > 1e-3, kind


def test_v_target_is_salimans_and_hos():
    z0, eps = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 3.0)
    ac = torch.full((1, 1, 1, 1), 0.36)
    assert torch.allclose(prediction_target(z0, eps, ac, "v"), torch.tensor(0.6 * 3 - 0.8 * 2))
    assert torch.equal(prediction_target(z0, eps, ac, "eps"), eps)
