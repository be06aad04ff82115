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

import torch
from torch import Tensor

from sdstudio.engine.errors import RequestError


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

    Like LDM checkpoints and k-diffusion, the sigma table is float32 (LDM registers alphas_cumprod as a
    float32 buffer), so our schedules equal A1111's and ComfyUI's to the last bit.
    """

    def __init__(self, alphas_cumprod: Tensor | None = None) -> None:
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
    """Karras et al. (2022) eq. 5: evenly spaced in sigma^(1/rho) from sigma_max to sigma_min."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = ms.sigma_min ** (1 / rho)
    max_inv_rho = ms.sigma_max ** (1 / rho)
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


SCHEDULES: dict[str, Callable[[int, ModelSampling], Tensor]] = {
    "normal": normal,
    "karras": karras,
    "exponential": exponential,
    "sgm_uniform": sgm_uniform,
}


def get_sigmas(name: str, steps: int, ms: ModelSampling) -> Tensor:
    """The float32 sigma schedule `name` over `steps` steps: steps + 1 values, decreasing, last is 0."""
    if name not in SCHEDULES:
        raise RequestError(f"Unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}.")
    if steps < 1:
        raise RequestError(f"Steps must be at least 1 (got {steps}).")
    return SCHEDULES[name](steps, ms)
