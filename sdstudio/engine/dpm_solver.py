"""DPM-Solver with fixed orders ("DPM fast") and with adaptive step size ("DPM adaptive"), Lu et al. (2022),
"DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling" (arXiv:2206.00927), sections 3.3
and 4 and appendix (DPM-Solver-2/3 with r1 = 1/2, and r1 = 1/3, r2 = 2/3), in the form of k-diffusion's
`sample_dpm_fast` / `sample_dpm_adaptive` that AUTOMATIC1111 runs.

Time is t = -log(sigma) and the model is used as a noise predictor eps = (x - D(x, sigma)) / sigma. Both
solvers integrate from the schedule's first sigma to its last nonzero one (A1111: the model's sigma range
in txt2img, the schedule's tail in img2img, which are the same for the normal/Karras/exponential schedules);
in between they choose their own points, so only the schedule's two ends matter, and the result is left
at the last nonzero sigma, not denoised to 0, as in A1111. A1111 runs both with eta = 1 (its "Eta for
ancestral samplers"): each step lands below its target and fresh noise brings it back up.

"DPM fast" splits `n` = steps model calls into n // 3 + 1 equal steps in t of order 3 (the last ones of
order 2 and 1), so progress is reported as model calls done. "DPM adaptive" ignores the step count: it
takes DPM-Solver-23 steps (order 3 with an embedded order 2 error estimate) and sizes them with a
step-size controller until it reaches the end; its progress is the share of the way in log-sigma.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sdstudio.engine.errors import RequestError
from sdstudio.engine.sampler_types import Callback, Model, NoiseSampler, need_noise, report


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t(sigma: Tensor) -> Tensor:
    return -sigma.log()


class _Solver:
    """The model as an eps predictor of t, with each evaluation of one step cached under a name."""

    def __init__(self, model: Model, x: Tensor) -> None:
        self.model = model
        self.s_in = x.new_ones([x.shape[0]])

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = _sigma(t)
            cache[key] = (x - self.model(x, sigma * self.s_in)) / sigma
        return cache[key]

    def order1(self, cache: dict[str, Tensor], x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """DPM-Solver-1 (the DDIM step), paper eq. 3.7."""
        return x - _sigma(t_next) * (t_next - t).expm1() * self.eps(cache, "eps", x, t)

    def order2(
        self, cache: dict[str, Tensor], x: Tensor, t: Tensor, t_next: Tensor, r1: float = 0.5
    ) -> Tensor:
        """DPM-Solver-2, paper algorithm 1: one intermediate point at t + r1 * h."""
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_1 - eps)

    def order3(self, cache: dict[str, Tensor], x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """DPM-Solver-3, paper algorithm 2 with r1 = 1/3, r2 = 2/3."""
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_1 - eps))
        eps_2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - _sigma(t_next) * h.expm1() * eps
                - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_2 - eps))


def _range(sigmas: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """(t_start, t_end): -log of the schedule's first and last nonzero sigma."""
    nonzero = sigmas[sigmas > 0]
    if len(nonzero) < 2 or not bool(nonzero[-1] < nonzero[0]):
        raise RequestError(f"{name} integrates between the schedule's first and last nonzero sigma: "
                           "use at least 2 steps (or a higher denoising strength).")
    return _t(nonzero[0].float().cpu()), _t(nonzero[-1].float().cpu())


def _ancestral_target(t: Tensor, t_next: Tensor, t_end: Tensor) -> tuple[Tensor, Tensor]:
    """(t to step to, noise to add) for eta = 1: the ancestral step's sigma_down (not beyond the end) and the
    noise that brings the marginal back to sigma(t_next)."""
    sigma, sigma_next = _sigma(t), _sigma(t_next)
    sigma_up = torch.minimum(sigma_next, (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    t_down = torch.minimum(t_end, _t((sigma_next**2 - sigma_up**2) ** 0.5))
    return t_down, (sigma_next**2 - _sigma(t_down) ** 2) ** 0.5


def fast_orders(n: int) -> list[int]:
    """The order of each step for n model calls: n // 3 + 1 steps, order 3 but for the last one or two."""
    m = n // 3 + 1
    return [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]


@torch.no_grad()
def sample_dpm_fast(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-fast (paper section 4, "DPM-Solver-fast"): len(sigmas) - 1 model calls in steps equally
    spaced in t, eta = 1. Step i reports as model call `sum(orders[:i])` so progress counts model calls."""
    noise_sampler = need_noise(noise_sampler, "DPM fast")
    t_start, t_end = _range(sigmas, "DPM fast")
    solver = _Solver(model, x)
    orders = fast_orders(len(sigmas) - 1)
    ts = torch.linspace(float(t_start), float(t_end), len(orders) + 1).to(x.device)
    t_end = t_end.to(x.device)
    calls = 0
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, sigma_up = _ancestral_target(t, t_next, t_end)
        cache: dict[str, Tensor] = {}
        denoised = x - _sigma(t) * solver.eps(cache, "eps", x, t)
        report(callback, calls, _sigma(t), x, denoised)
        step = (solver.order1, solver.order2, solver.order3)[order - 1]
        x = step(cache, x, t, t_down)
        x = x + sigma_up * noise_sampler(_sigma(t), _sigma(t_next))
        calls += order
    return x


# k-diffusion's defaults for `sample_dpm_adaptive`, which A1111 keeps: tolerances on the latent's scale,
# the first step in t, and the accept threshold of the step-size controller.
ADAPTIVE_RTOL, ADAPTIVE_ATOL, ADAPTIVE_H_INIT, ADAPTIVE_ACCEPT_SAFETY = 0.05, 0.0078, 0.05, 0.81
# With eta = 1 the error of a step shrinks like h^1.5, not h^3: the controller's exponent is 1 / 1.5.
ADAPTIVE_CONTROLLER_ORDER = 1.5


def _step_factor(error: float) -> float:
    """The integral controller (Söderlind 2003) k-diffusion uses with its defaults (no P or D part): scale
    h by (1 / error)^(1 / order), softened by 1 + atan(f - 1) so that one step never changes it wildly."""
    factor = (1 / (error + 1e-8)) ** (1 / ADAPTIVE_CONTROLLER_ORDER)
    return 1 + math.atan(factor - 1)


@torch.no_grad()
def sample_dpm_adaptive(
    model: Model,
    x: Tensor,
    sigmas: Tensor,
    callback: Callback | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> Tensor:
    """DPM-Solver-23 with adaptive step size (paper algorithm 4 with k-diffusion's error norm), eta = 1.

    The step count is ignored; every attempt (also a rejected one) reports after it is made, as step
    `int(steps * share of the way in t)` of the schedule's `steps`, so the progress bar is honest about
    the way left, not about the calls left (which nobody knows in advance). The step sizes are chosen for
    the whole batch (one error norm over all images, as k-diffusion and A1111), so an image of a batch
    differs from the same seed run alone.
    """
    noise_sampler = need_noise(noise_sampler, "DPM adaptive")
    t_start, t_end = (t.to(x.device) for t in _range(sigmas, "DPM adaptive"))
    steps = len(sigmas) - 1
    solver = _Solver(model, x)
    atol, rtol = torch.tensor(ADAPTIVE_ATOL), torch.tensor(ADAPTIVE_RTOL)
    h, s, x_prev = ADAPTIVE_H_INIT, t_start, x
    while s < t_end - 1e-5:
        t = torch.minimum(t_end, s + h)
        t_down, sigma_up = _ancestral_target(s, t, t_end)
        cache: dict[str, Tensor] = {}
        denoised = x - _sigma(s) * solver.eps(cache, "eps", x, s)
        x_low = solver.order2(cache, x, s, t_down, r1=1 / 3)
        x_high = solver.order3(cache, x, s, t_down)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        factor = _step_factor(error)
        h *= factor
        if factor >= ADAPTIVE_ACCEPT_SAFETY:
            x_prev = x_low
            x = x_high + sigma_up * noise_sampler(_sigma(s), _sigma(t))
            s = t
        share = float((s - t_start) / (t_end - t_start))
        report(callback, min(steps - 1, int(steps * share)), _sigma(s), x, denoised)
    return x
