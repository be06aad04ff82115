"""The discrete noise schedule of SD 1.x/2.x/XL and the sigma schedules samplers walk.

Sigmas follow the variance-exploding view of Karras et al. (2022), "Elucidating the Design Space of
Diffusion-Based Generative Models" (arXiv:2206.00364): x = x0 + sigma * noise with
sigma_t = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t]). The mapping between sigma and the
training timestep t interpolates in log-sigma, as k-diffusion's `DiscreteSchedule` does, so our UNet
sees the same (fractional) timesteps as in AUTOMATIC1111.

Every schedule has steps + 1 entries, decreases, and ends with 0.

What AUTOMATIC1111 calls "Automatic" depends on the sampler (sd_samplers_kdiffusion.py, v1.9+):
Euler, Euler a, Heun and LMS use the model's own `get_sigmas(n)` (t = linspace(999, 0, n)), which is
our "normal" (A1111's "Uniform" and "Normal" give the same sigmas for these models); DPM++ 2M and
DPM++ SDE default to Karras; DPM++ 2M SDE to Exponential; A1111's own DDIM walks the DDIM paper's
uniform timesteps 1, 1 + c, ... (c = 1000 // steps), a schedule we do not offer (see samplers.sample_ddim).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy
import torch
from torch import Tensor

from sdstudio.engine.errors import RequestError
from sdstudio.engine.families import family


def scaled_linear_alphas_cumprod(
    n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> Tensor:
    """LDM's "scaled linear" betas: linspace in sqrt(beta), squared; cumulative product of 1 - beta.

    Computed in float64 as LDM's `register_schedule` does; returned in float64.
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class ModelSampling:
    """Sigmas of a discrete training schedule and the sigma <-> timestep mapping.

    `family` is the model's family name (families.py), for schedules that depend on it; None where unknown.
    Like LDM checkpoints and k-diffusion, the sigma table is float32 (LDM registers alphas_cumprod as a
    float32 buffer), so our schedules equal A1111's and ComfyUI's to the last bit.
    """

    def __init__(self, alphas_cumprod: Tensor | None = None, family: str | None = None) -> None:
        # The model family (families.py) names the tables some schedules need (Align Your Steps).
        self.family = family
        if alphas_cumprod is None:
            alphas_cumprod = scaled_linear_alphas_cumprod()
        alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def t_max(self) -> int:
        return len(self.sigmas) - 1

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep of each sigma: linear interpolation of t in log-sigma, clamped to [0, t_max]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        # Index of the last table entry not above log_sigma; the table increases with t.
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.t_max - 1)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - w) * low + w * (low + 1)).view(sigma.shape)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Sigma of a (fractional) timestep: linear interpolation of log-sigma between neighbouring steps."""
        t = torch.as_tensor(t).float()
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def normal(steps: int, ms: ModelSampling) -> Tensor:
    """k-diffusion `DiscreteSchedule.get_sigmas`: t evenly spaced from t_max to 0, mapped to sigma."""
    t = torch.linspace(ms.t_max, 0, steps)
    return _append_zero(ms.t_to_sigma(t))


def karras(steps: int, ms: ModelSampling, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5 over the model's whole sigma range."""
    return karras_sigmas(steps, ms.sigma_min, ms.sigma_max, rho)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: evenly spaced in sigma^(1/rho) from sigma_max to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, ms: ModelSampling) -> Tensor:
    """Evenly spaced in log-sigma from sigma_max to sigma_min (k-diffusion `get_sigmas_exponential`)."""
    return _append_zero(torch.linspace(math.log(ms.sigma_max), math.log(ms.sigma_min), steps).exp())


def sgm_uniform(steps: int, ms: ModelSampling) -> Tensor:
    """ComfyUI's "sgm_uniform" (Stability's sgm discretisation): steps + 1 evenly spaced timesteps from
    t(sigma_max) to t(sigma_min), the last dropped, so the final nonzero sigma stays above sigma_min."""
    start = ms.sigma_to_t(torch.tensor(ms.sigma_max))
    end = ms.sigma_to_t(torch.tensor(ms.sigma_min))
    t = torch.linspace(float(start), float(end), steps + 1)[:-1]
    return _append_zero(ms.t_to_sigma(t))


def simple(steps: int, ms: ModelSampling) -> Tensor:
    """ComfyUI's "simple": every (1000 / steps)-th entry of the model's own sigma table, from the top."""
    stride = len(ms.sigmas) / steps
    return _append_zero(torch.stack([ms.sigmas[-(1 + int(i * stride))] for i in range(steps)]))


def beta(steps: int, ms: ModelSampling, alpha: float = 0.6, b: float = 0.6) -> Tensor:
    """ComfyUI's "beta" (Lee et al. 2024, "Beta Sampling is All You Need", arXiv:2407.12173): timesteps at
    the quantiles 1, 1 - 1/steps, ... of a Beta(0.6, 0.6) distribution, rounded to the training timesteps.

    ComfyUI drops a timestep that rounds to the one before, giving fewer steps than asked; we refuse that
    step count instead, so a request never runs fewer steps than it says.
    """
    quantiles = [beta_quantile(1 - i / steps, alpha, b) for i in range(steps)]
    timesteps = [round(q * ms.t_max) for q in quantiles]  # numpy.rint: halves to even, as round() does
    if len(set(timesteps)) < steps:
        raise RequestError(
            f"The beta schedule repeats a timestep at {steps} steps; use fewer steps or another schedule."
        )
    return _append_zero(ms.sigmas[torch.tensor(timesteps)])


def beta_quantile(p: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = p (the inverse regularized incomplete beta function, scipy's beta.ppf), by
    bisection on `beta_cdf` to float64 resolution."""
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if beta_cdf(mid, a, b) < p else (lo, mid)
    return (lo + hi) / 2


_GAUSS_NODES, _GAUSS_WEIGHTS = (torch.from_numpy(v) for v in numpy.polynomial.legendre.leggauss(64))


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by Gauss-Legendre quadrature.

    The density t^(a-1) (1-t)^(b-1) is singular at 0 and 1 for a, b < 1. Below x = 1/2 the substitution
    t = u^(1/a) (for a < 1) leaves the smooth integrand (1 - u^(1/a))^(b-1) / a on [0, x^a]; above, the symmetry
    I_x(a, b) = 1 - I_(1-x)(b, a) does the same from the other end.
    """
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > 0.5:
        return 1.0 - beta_cdf(1.0 - x, b, a)
    if a < 1:
        top = x**a
        u = (_GAUSS_NODES + 1) * (top / 2)
        integral = float((_GAUSS_WEIGHTS * (1 - u ** (1 / a)) ** (b - 1)).sum()) * (top / 2) / a
    else:  # no singularity at 0 to take out
        t = (_GAUSS_NODES + 1) * (x / 2)
        integral = float((_GAUSS_WEIGHTS * t ** (a - 1) * (1 - t) ** (b - 1)).sum()) * (x / 2)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return integral / math.exp(log_beta)


def kl_optimal(steps: int, ms: ModelSampling) -> Tensor:
    """ComfyUI's "kl_optimal" (Sabour et al. 2024, "Align Your Steps", arXiv:2404.14507, eq. for the
    KL-optimal schedule): evenly spaced in arctan(sigma) from sigma_max to sigma_min. One step is sigma_max
    alone (ComfyUI divides by steps - 1 there)."""
    ramp = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)
    return _append_zero((ramp * math.atan(ms.sigma_min) + (1 - ramp) * math.atan(ms.sigma_max)).tan())


def align_your_steps(steps: int, ms: ModelSampling) -> Tensor:
    """Align Your Steps (Sabour et al. 2024, arXiv:2404.14507) as A1111 makes it: NVIDIA's 11 published
    sigmas of the model family (families.Family.ays_sigmas) as they are at 11 steps, otherwise `steps`
    sigmas interpolated linearly in log-sigma over the table's positions, so from the table's first to its
    last; then 0. (ComfyUI's AlignYourStepsScheduler differs: it interpolates to steps + 1 sigmas and
    replaces the last, 0.029, by 0.) The table's ends (14.615, 0.029) are the published values, not the
    model's sigma range."""
    if ms.family is None:
        raise RequestError("The Align Your Steps schedule depends on the model family, which is not known "
                           "here.")
    if steps < 2:
        raise RequestError("The Align Your Steps schedule needs at least 2 steps (1 step would start at its "
                           "last noise level, 0.029).")
    table = family(ms.family).ays_sigmas
    if steps == len(table):
        return _append_zero(torch.tensor(table, dtype=torch.float32))
    # Rising log-sigma at positions 0..1, read at `steps` evenly spaced positions, in float64 (A1111's numpy).
    rising = numpy.log(numpy.array(table[::-1], dtype=numpy.float64))
    values = numpy.exp(numpy.interp(numpy.linspace(0, 1, steps), numpy.linspace(0, 1, len(table)), rising))
    return _append_zero(torch.from_numpy(values[::-1].copy()).float())


SCHEDULES: dict[str, Callable[[int, ModelSampling], Tensor]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
    "simple": simple,
    "beta": beta,
    "kl_optimal": kl_optimal,
    "align_your_steps": align_your_steps,
}


def get_sigmas(name: str, steps: int, ms: ModelSampling) -> Tensor:
    """The float32 sigma schedule `name` over `steps` steps: steps + 1 values, decreasing, last is 0."""
    if name not in SCHEDULES:
        raise RequestError(f"Unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}.")
    if steps < 1:
        raise RequestError(f"Steps must be at least 1 (got {steps}).")
    return SCHEDULES[name](steps, ms)
