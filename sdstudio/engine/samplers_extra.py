"""Two more samplers A1111 offers, in the shape of samplers.py: PLMS and Restart.

PLMS: Liu et al. (2022), "Pseudo Numerical Methods for Diffusion Models on Manifolds" (arXiv:2202.09778),
as CompVis latent-diffusion's `PLMSSampler` that A1111 runs: DDIM steps (the "transfer part") with the
noise estimate replaced by an Adams-Bashforth combination of the last four (pseudo linear multistep, with
the fixed weights of equal steps), started by one pseudo improved Euler step (two model calls) and
orders 2 and 3. On our VE latents a DDIM step with noise estimate e is x + (sigma_next - sigma) * e.

Restart: Xu et al. (2023), "Restart Sampling for Improving Generative Processes" (arXiv:2306.14878), with
A1111's automatic restart plan (sd_samplers_extra.py `restart_sampler`): from 20 steps on, the schedule is
replaced by a Karras schedule between its own ends that leaves 9 steps (2 x steps // 4 from 36 on) for the
restart: after the step nearest sigma 0.1, noise takes x back up to the sigma nearest 2, and Heun steps
on a Karras schedule of that interval come down again (once, or twice from 36 steps). Below 20 steps it is
Heun. Every ODE step is a Heun step (Euler to 0), and each step is reported: steps = len(sigmas) - 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdstudio.engine.sampler_types import Callback, Model, NoiseSampler, need_noise, report
from sdstudio.engine.schedules import karras_sigmas

# A1111's automatic restart plan: from RESTART_FROM_STEPS steps, restart at the sigma nearest
# RESTART_MIN_SIGMA up to the one nearest RESTART_MAX_SIGMA, with 9 steps once, or with steps // 4
# steps twice from RESTART_TWICE_FROM_STEPS steps.
RESTART_FROM_STEPS, RESTART_TWICE_FROM_STEPS = 20, 36
RESTART_MIN_SIGMA, RESTART_MAX_SIGMA = 0.1, 2.0


def _nearest(sigmas: Tensor, value: float) -> int:
    """Index of the sigma nearest value (the first of a tie, as torch.argmin)."""
    return int(torch.argmin((sigmas - value).abs(), dim=0))


def restart_plan(sigmas: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The (sigma_from, sigma_to) of every Heun step Restart takes, in order; a step whose sigma_from is
    above the previous step's sigma_to starts with restart noise."""
    steps = len(sigmas) - 1
    restart_steps = restart_times = 0
    if steps >= RESTART_FROM_STEPS:
        restart_steps, restart_times = (steps // 4, 2) if steps >= RESTART_TWICE_FROM_STEPS else (9, 1)
        sigmas = karras_sigmas(steps - restart_steps * restart_times, float(sigmas[-2]), float(sigmas[0])).to(
            sigmas.device)
    low = _nearest(sigmas, RESTART_MIN_SIGMA) if restart_times else -1
    plan: list[tuple[Tensor, Tensor]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        high = _nearest(sigmas, RESTART_MAX_SIGMA)
        if i + 1 == low and high < low:
            # restart_steps + 1 sigmas from sigmas[high] down to sigmas[low]: restart_steps Heun steps.
            way_down = karras_sigmas(restart_steps + 1, float(sigmas[low]), float(sigmas[high]))[:-1].to(
                sigmas.device)
            plan += list(zip(way_down[:-1], way_down[1:], strict=True)) * restart_times
    return plan


@torch.no_grad()
def sample_restart(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """Restart sampling (A1111's automatic plan, s_noise = 1): Heun steps down `restart_plan(sigmas)`, and
    before each restart x + sqrt(sigma_high^2 - sigma_low^2) * noise, the noise from
    `noise_sampler(sigma_low, sigma_high)` (an upward interval: a fresh draw, A1111's next random draw)."""
    noise_sampler = need_noise(noise_sampler, "Restart")
    s_in = x.new_ones([x.shape[0]])
    last = None
    for i, (sigma, sigma_next) in enumerate(restart_plan(sigmas)):
        if last is not None and last < sigma:
            x = x + noise_sampler(last, sigma) * (sigma**2 - last**2) ** 0.5
        denoised = model(x, sigma * s_in)
        report(callback, i, sigma, x, denoised)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - model(x_2, sigma_next * s_in)) / sigma_next
            x = x + (d + d_2) / 2 * dt
        last = sigma_next
    return x


# Adams-Bashforth weights for equal steps, newest slope first (orders 2, 3, 4).
PLMS_WEIGHTS = {2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def sample_plms(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """PLMS on the given schedule (A1111 walks the DDIM timesteps; choose any schedule here). The first step
    averages the noise estimates at both of its ends (one extra model call) unless it ends at sigma 0."""
    s_in = x.new_ones([x.shape[0]])
    old_eps: list[Tensor] = []  # newest last, at most 3
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        report(callback, i, sigma, x, denoised)
        eps = (x - denoised) / sigma
        if not old_eps:
            eps_prime = eps
            if sigma_next > 0:
                x_euler = x + (sigma_next - sigma) * eps
                eps_next = (x_euler - model(x_euler, sigma_next * s_in)) / sigma_next
                eps_prime = (eps + eps_next) / 2
        else:
            history = [eps, *reversed(old_eps)]
            eps_prime = sum(w * e for w, e in zip(PLMS_WEIGHTS[len(history)], history, strict=True))
        x = x + (sigma_next - sigma) * eps_prime
        old_eps = (old_eps + [eps])[-3:]
    return x
