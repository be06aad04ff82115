"""UniPC, Zhao et al. (2023), "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models" (arXiv:2302.04867): the multistep UniP predictor and UniC corrector on the data prediction
(algorithms 2 and 3 with x0-prediction), with A1111's defaults: variant B(h) = h ("bh1"; "bh2" is
B(h) = e^h - 1), order 3, lower order on the final steps.

In VE variables (x = x_vp / alpha) with lambda = -log(sigma), the step from sigma_s to sigma_t is
x_t = (sigma_t / sigma_s) x - (e^-h - 1) D_s - B(h) sum_k rho_k D1_k, with h = lambda_t - lambda_s, where
D1_k = (D_k - D_s) / r_k are divided differences of earlier denoised estimates D_k at r_k = (lambda_k -
lambda_s) / h; the rho solve the paper's order conditions R rho = b (eq. 8; rho = 1/2 for order 2).
The corrector redoes the step with the model's estimate at the predicted point as one more difference
(r = 1); that estimate also serves the next step, so each step costs one model call, and the last step is
not corrected. Orders rise 1, 2, 3 over the first steps and fall to 1 on the last (lower_order_final);
the final step to sigma 0 (lambda = inf) is the order 1 limit x = D_s.

A1111 runs UniPC on its own timesteps (uniform in the VP t of the UniPC code, ending at the model's
sigma_min, close to our "normal" schedule without its last step to 0); here it walks the chosen schedule,
like ComfyUI's uni_pc (which ends at sigma 0.001 instead of 0). So images match neither tool bit for bit;
the solver itself is tested against diffusers' UniPCMultistepScheduler on the same sigmas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sdstudio.engine.sampler_types import Callback, Model, NoiseSampler, report

UNIPC_ORDER = 3  # A1111's "UniPC order" default


def unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[list[float], list[float], float]:
    """(predictor rhos, corrector rhos, B(h)) for a step of size h in lambda with earlier points at the
    ratios rks (newest first; the corrector adds r = 1). Order = len(rks) + 1. Paper eq. 8 with
    phi_k(-h), computed in float64."""
    order = len(rks) + 1
    hh = -h  # data prediction integrates e^{-h}
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    all_r = [*rks, 1.0]
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        rows.append([r ** (i - 1) for r in all_r])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, bt = torch.tensor(rows, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if order == 1:
        rhos_p: list[float] = []
    elif order == 2:
        rhos_p = [0.5]
    else:
        rhos_p = torch.linalg.solve(R[:-1, :-1], bt[:-1]).tolist()
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(R, bt).tolist()
    return rhos_p, rhos_c, b_h


@torch.no_grad()
def sample_unipc(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    variant: str = "bh1",
    order: int = UNIPC_ORDER,
) -> Tensor:
    """Multistep UniPC (UniP-`order` + UniC), deterministic; `variant` "bh1" (A1111's default) or "bh2"."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant is bh1 or bh2, not {variant!r}")
    s_in = x.new_ones([x.shape[0]])
    steps = len(sigmas) - 1
    sigma_values = sigmas.detach().cpu().double().tolist()
    denoised = model(x, sigmas[0] * s_in)
    report(callback, 0, sigmas[0], x, denoised)
    history = [(0, denoised)]  # (index into sigmas, denoised estimate there), oldest first
    for i in range(steps):
        sigma, sigma_next = sigma_values[i], sigma_values[i + 1]
        d_s = history[-1][1]
        if sigma_next == 0:
            x = d_s  # the order 1 step with lambda_t = inf; lower_order_final makes every final step order 1
            break
        this_order = min(order, i + 1, steps - i)
        lam_s = -math.log(sigma)
        h = -math.log(sigma_next) - lam_s
        earlier = history[-this_order:-1][::-1]  # newest first
        rks = [(-math.log(sigma_values[k]) - lam_s) / h for k, _ in earlier]
        d1s = [(d_k - d_s) / r for (_, d_k), r in zip(earlier, rks, strict=True)]
        rhos_p, rhos_c, b_h = unipc_coefficients(rks, h, variant)
        x_base = (sigma_next / sigma) * x - math.expm1(-h) * d_s
        prediction = sum((rho * d for rho, d in zip(rhos_p, d1s, strict=True)), torch.zeros_like(x))
        x_pred = x_base - b_h * prediction
        if i == steps - 1:
            x = x_pred
            break
        denoised = model(x_pred, sigmas[i + 1] * s_in)
        report(callback, i + 1, sigmas[i + 1], x_pred, denoised)
        correction = sum((rho * d for rho, d in zip(rhos_c[:-1], d1s, strict=True)), torch.zeros_like(x))
        x = x_base - b_h * (correction + rhos_c[-1] * (denoised - d_s))
        history = (history + [(i + 1, denoised)])[-order:]
    return x


@torch.no_grad()
def sample_unipc_bh2(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """UniPC with B(h) = e^h - 1 (ComfyUI's uni_pc_bh2, A1111's "UniPC variant: bh2")."""
    return sample_unipc(model, x, sigmas, callback, noise_sampler, variant="bh2")
