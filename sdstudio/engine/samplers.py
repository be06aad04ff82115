"""Samplers in k-diffusion's shape: `sample_x(model, x, sigmas, callback=None, noise_sampler=None) -> x`.

`model(x, sigma_batch)` returns the denoised estimate (a `denoiser.CFGDenoiser`); `sigmas` is a schedule
from `schedules.get_sigmas` (decreasing, ending with 0); x starts at noise * sigmas[0] (txt2img) or
init_latent + noise * sigmas[0] (img2img). After the model call of step i, `callback(i, sigma_i, x,
denoised)` reports progress; previews decode `denoised`. (DPM fast and DPM adaptive choose their own
points between the schedule's ends, and Restart goes back up after its restarts: each reports step i of
len(sigmas) - 1 in its own way, see dpm_solver.py and samplers_extra.py.) Stochastic samplers take their
noise from `noise_sampler(sigma, sigma_next)`, normally a `SeededNoise`; deterministic ones ignore it.

The update rules follow crowsonkb/k-diffusion `k_diffusion/sampling.py` (and ComfyUI for LCM), with the
defaults AUTOMATIC1111 uses: eta = 1, s_noise = 1, no churn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sdstudio.engine.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from sdstudio.engine.errors import RequestError
from sdstudio.engine.sampler_types import Callback, Model, NoiseSampler
from sdstudio.engine.sampler_types import need_noise as _need
from sdstudio.engine.sampler_types import report as _report
from sdstudio.engine.samplers_extra import sample_plms, sample_restart
from sdstudio.engine.unipc import sample_unipc, sample_unipc_bh2


def _ancestral_step(sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) for eta = 1: step deterministically to sigma_down, then add sigma_up noise
    so the marginal is again at sigma_next (DDPM posterior variance in VE form)."""
    sigma_up = torch.minimum(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Euler steps of the probability-flow ODE dx/dsigma = (x - D(x))/sigma; Karras et al. (2022), alg. 2
    without churn."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Ancestral sampling with Euler steps (k-diffusion `sample_euler_ancestral`, eta = 1)."""
    noise_sampler = _need(noise_sampler, "Euler a")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


@torch.no_grad()
def sample_heun(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Heun's second-order method, Karras et al. (2022) alg. 2 without churn; the last step to 0 is Euler."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigmas[i + 1] * s_in)) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) arXiv:2211.01095 alg. 2, in t = -log(sigma). First order on the
    first step and on the final step to sigma = 0."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is not None and sigmas[i + 1] > 0:
            r = (t + sigmas[i - 1].log()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        else:
            denoised_d = denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2M) SDE with the midpoint correction and eta = 1 (k-diffusion `sample_dpmpp_2m_sde`)."""
    noise_sampler = _need(noise_sampler, "DPM++ 2M SDE")
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            x = sigmas[i + 1] / sigmas[i] * (-h).exp() * x - (-2 * h).expm1() * denoised
            if old_denoised is not None:
                x = x - 0.5 * (-2 * h).expm1() * (h / h_last) * (denoised - old_denoised)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-(-2 * h).expm1()).sqrt()
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++ (stochastic, 2 model calls per step): a midpoint in log-sigma (r = 1/2) and ancestral
    noise with eta = 1 (k-diffusion `sample_dpmpp_sde`). The last step to 0 is Euler."""
    noise_sampler = _need(noise_sampler, "DPM++ SDE")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        _report(callback, i, sigma, x, denoised)
        if sigma_next == 0:
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
            continue
        sigma_mid = (sigma * sigma_next) ** 0.5
        x_2 = _exp_step(x, denoised, sigma, sigma_mid, noise_sampler)
        denoised_2 = model(x_2, sigma_mid * s_in)
        x = _exp_step(x, denoised_2, sigma, sigma_next, noise_sampler)
    return x


def _exp_step(
    x: Tensor, denoised: Tensor, sigma: Tensor, sigma_to: Tensor, noise_sampler: NoiseSampler
) -> Tensor:
    """One first-order DPM-Solver++ step from sigma towards sigma_to with ancestral noise (eta = 1)."""
    sigma_down, sigma_up = _ancestral_step(sigma, sigma_to)
    x = (sigma_down / sigma) * x - (sigma_down.log() - sigma.log()).expm1() * denoised
    return x + noise_sampler(sigma, sigma_to) * sigma_up


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Deterministic DDIM (eta = 0), Song et al. (2020) arXiv:2010.02502 eq. 12, on the given schedule.

    With x = x_vp * sqrt(1 + sigma^2) the update keeps the predicted noise: x_next = D + sigma_next * eps.
    That is algebraically the Euler step, so "DDIM" here equals Euler on the same sigmas; A1111's DDIM
    also walks its own timesteps (1, 1 + c, ...) and stops at alphas_cumprod[0] instead of sigma 0.
    """
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        eps = (x - denoised) / sigmas[i]
        x = denoised + sigmas[i + 1] * eps
    return x


@torch.no_grad()
def sample_lcm(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Latent Consistency Model sampling, Luo et al. (2023) arXiv:2310.04378 alg. 1 (ComfyUI `sample_lcm`):
    jump to the denoised estimate, then re-noise it to the next sigma with fresh noise."""
    noise_sampler = _need(noise_sampler, "LCM")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(2S), Lu et al. (2022) arXiv:2211.01095 alg. 1 with r = 1/2, taken to the ancestral
    sigma_down and re-noised with eta = 1 (k-diffusion `sample_dpmpp_2s_ancestral`). The last step is Euler."""
    noise_sampler = _need(noise_sampler, "DPM++ 2S a")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = model(x, sigma * s_in)
        _report(callback, i, sigma, x, denoised)
        sigma_down, sigma_up = _ancestral_step(sigma, sigmas[i + 1])
        if sigma_down == 0:
            x = x + (x - denoised) / sigma * (sigma_down - sigma)
        else:
            h = sigma.log() - sigma_down.log()
            sigma_mid = (-(-sigma.log() + h / 2)).exp()
            x_2 = (sigma_mid / sigma) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_mid * s_in)
            x = (sigma_down / sigma) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigma, sigmas[i + 1]) * sigma_up
    return x


def _dpm2_step(model: Model, x: Tensor, d: Tensor, sigma: Tensor, sigma_to: Tensor, s_in: Tensor) -> Tensor:
    """One DPM-Solver-2 step (Lu et al. 2022, arXiv:2206.00927) in Karras et al.'s sigma form: Euler to the
    log-sigma midpoint, then the whole step with the midpoint's slope."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = (x_2 - model(x_2, sigma_mid * s_in)) / sigma_mid
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-2 steps in Karras et al. (2022) alg. 2 without churn (k-diffusion `sample_dpm_2`); the
    last step to 0 is Euler."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        d = (x - denoised) / sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            x = _dpm2_step(model, x, d, sigmas[i], sigmas[i + 1], s_in)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Ancestral sampling with DPM-Solver-2 steps to sigma_down, eta = 1 (k-diffusion
    `sample_dpm_2_ancestral`); the last step to 0 is Euler and adds no noise."""
    noise_sampler = _need(noise_sampler, "DPM2 a")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        sigma_down, sigma_up = _ancestral_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _dpm2_step(model, x, d, sigmas[i], sigma_down, s_in)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def lms_coefficients(sigmas: Sequence[float], i: int, order: int) -> list[float]:
    """Linear multistep weights of the last `order` slopes for the step sigmas[i] -> sigmas[i + 1].

    Weight j is the integral over that step of the Lagrange basis polynomial through sigmas[i - k],
    k < order, that is 1 at sigmas[i - j] (Adams-Bashforth on a non-uniform grid). The polynomial has
    degree < order, so it is integrated exactly from its coefficients (k-diffusion integrates it
    numerically with scipy's quad). Computed in float64.
    """
    if order - 1 > i:
        raise ValueError(f"LMS order {order} needs {order} earlier steps; step {i} has {i}")
    nodes = [float(sigmas[i - k]) for k in range(order)]
    a, b = float(sigmas[i]), float(sigmas[i + 1])
    weights = []
    for j in range(order):
        poly = [1.0]  # coefficients, lowest power first
        for k in range(order):
            if k == j:
                continue
            denominator = nodes[j] - nodes[k]
            shifted = [0.0] + poly  # poly * tau
            poly = [(shifted[n] - nodes[k] * (poly[n] if n < len(poly) else 0.0)) / denominator for n in range(len(shifted))]
        weights.append(sum(c * (b ** (n + 1) - a ** (n + 1)) / (n + 1) for n, c in enumerate(poly)))
    return weights


@torch.no_grad()
def sample_lms(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (order 4, lower while fewer slopes are known) on the probability-flow ODE, as
    k-diffusion's `sample_lms` (Karras et al. 2022 name it among the baseline solvers)."""
    s_in = x.new_ones([x.shape[0]])
    sigma_values = sigmas.detach().cpu().double().tolist()
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        ds = (ds + [(x - denoised) / sigmas[i]])[-order:]
        coefficients = lms_coefficients(sigma_values, i, min(i + 1, order))
        x = x + sum(c * d for c, d in zip(coefficients, reversed(ds), strict=True))
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver++(3M) SDE, eta = 1: the SDE solver of Lu et al. (2022) arXiv:2211.01095 with third-order
    multistep corrections from the last two denoised estimates (k-diffusion `sample_dpmpp_3m_sde`).
    The step to sigma = 0 returns the denoised estimate."""
    noise_sampler = _need(noise_sampler, "DPM++ 3M SDE")
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = h_1 = h_2 = None
    h = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        _report(callback, i, sigmas[i], x, denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = 2 * h
            x = (-h_eta).exp() * x - (-h_eta).expm1() * denoised
            phi_2 = (-h_eta).expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-(-2 * h).expm1()).sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


# Keyed by the display names in names.SAMPLERS; the samplers of other modules (dpm_solver, samplers_extra,
# unipc) have the same call shape.
# A1111's `discard_next_to_last_sigma` samplers: the schedule is made one step longer and its next-to-last
# sigma dropped (so the step count stays), which keeps DPM2's second-order step off a tiny final interval.
DISCARD_NEXT_TO_LAST_SIGMA = frozenset({"DPM2", "DPM2 a", "DPM++ 3M SDE"})

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "Euler": sample_euler,
    "Euler a": sample_euler_ancestral,
    "Heun": sample_heun,
    "LMS": sample_lms,
    "DPM2": sample_dpm_2,
    "DPM2 a": sample_dpm_2_ancestral,
    "DPM++ 2S a": sample_dpmpp_2s_ancestral,
    "DPM++ 2M": sample_dpmpp_2m,
    "DPM++ SDE": sample_dpmpp_sde,
    "DPM++ 2M SDE": sample_dpmpp_2m_sde,
    "DPM++ 3M SDE": sample_dpmpp_3m_sde,
    "DPM fast": sample_dpm_fast,
    "DPM adaptive": sample_dpm_adaptive,
    "Restart": sample_restart,
    "DDIM": sample_ddim,
    "PLMS": sample_plms,
    "UniPC": sample_unipc,
    "UniPC bh2": sample_unipc_bh2,
    "LCM": sample_lcm,
}


def sample(
    name: str,
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Run the sampler called `name` (one of names.SAMPLERS) from x at sigmas[0] down to sigmas[-1]."""
    if name not in SAMPLERS:
        raise RequestError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name](model, x, sigmas, callback, noise_sampler)
