import math

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from sdstudio.engine import names
from sdstudio.engine.denoiser import CFGDenoiser, Denoiser
from sdstudio.engine.errors import RequestError
from sdstudio.engine.noise import SeededNoise
from sdstudio.engine.samplers import SAMPLERS, sample
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from tests.engine import kdiffusion_reference
from tests.engine.toy_unet import ToyUNet, toy_conditioning

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
STOCHASTIC = ("Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ 2M SDE", "DPM++ SDE", "DPM++ 3M SDE", "DPM fast",
              "DPM adaptive", "Restart", "LCM")
# DPM fast and DPM adaptive choose their own points between the schedule's ends (test_dpm_solver.py).
WALK_THE_SCHEDULE = tuple(name for name in names.SAMPLERS if name not in ("DPM fast", "DPM adaptive"))
# Our name -> k-diffusion function (LCM is ComfyUI's addition, checked against diffusers below).
KDIFFUSION = {
    "Euler": "sample_euler",
    "Euler a": "sample_euler_ancestral",
    "Heun": "sample_heun",
    "DPM++ 2M": "sample_dpmpp_2m",
    "DPM++ 2M SDE": "sample_dpmpp_2m_sde",
    "DPM++ SDE": "sample_dpmpp_sde",
    "DDIM": "sample_euler",
    "LMS": "sample_lms",
    "DPM2": "sample_dpm_2",
    "DPM2 a": "sample_dpm_2_ancestral",
    "DPM++ 2S a": "sample_dpmpp_2s_ancestral",
    "DPM++ 3M SDE": "sample_dpmpp_3m_sde",
}


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


@pytest.fixture(scope="module")
def kdiff_sampling():
    return kdiffusion_reference.load()[0]


def guided_toy_model(ms, scale=4.0, seed=0):
    """model(x, sigma) -> denoised: a random tiny eps-UNet with classifier-free guidance."""
    return CFGDenoiser(Denoiser(ToyUNet(seed=seed), ms), toy_conditioning(1), toy_conditioning(2), scale)


def start_latent(sigmas, seed=0, batch=1):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * sigmas[0]


class ScriptedNoise:
    """Hands out a fixed list of noise tensors in order and records the intervals asked for."""

    def __init__(self, count, seed=123, shape=(1, 4, 8, 8)):
        g = torch.Generator().manual_seed(seed)
        self.noises = [torch.randn(shape, generator=g) for _ in range(count)]
        self.intervals = []

    def __call__(self, sigma, sigma_next):
        self.intervals.append((float(sigma), float(sigma_next)))
        return self.noises[len(self.intervals) - 1]


class Trajectory:
    """Callback that keeps every step's report, in both our and k-diffusion's callback shapes."""

    def __init__(self):
        self.steps = []

    def ours(self, i, sigma, x, denoised):
        self.steps.append((i, sigma, x.clone(), denoised.clone()))

    def kdiffusion(self, info):
        self.steps.append((info["i"], float(info["sigma"]), info["x"].clone(), info["denoised"].clone()))


def assert_same_trajectory(ours, ref, tol):
    assert [s[0] for s in ours.steps] == [s[0] for s in ref.steps]
    for (_, sigma, x, d), (_, ref_sigma, ref_x, ref_d) in zip(ours.steps, ref.steps, strict=True):
        assert sigma == pytest.approx(ref_sigma, rel=1e-6)
        torch.testing.assert_close(x, ref_x, rtol=tol, atol=tol)
        torch.testing.assert_close(d, ref_d, rtol=tol, atol=tol)


def test_sampler_table_covers_exactly_the_names_the_ui_lists():
    assert tuple(SAMPLERS) == names.SAMPLERS


@pytest.mark.parametrize("name", list(KDIFFUSION))
@pytest.mark.parametrize("schedule", ["karras", "normal"])
def test_sampler_follows_k_diffusion_step_for_step(ms, kdiff_sampling, name, schedule):
    sigmas = get_sigmas(schedule, 8, ms)
    model = guided_toy_model(ms)
    x = start_latent(sigmas)
    ours, ref = Trajectory(), Trajectory()
    noise, ref_noise = ScriptedNoise(40), ScriptedNoise(40)

    out = sample(name, model, x.clone(), sigmas, ours.ours, noise)
    ref_fn = getattr(kdiff_sampling, KDIFFUSION[name])
    extra = {"noise_sampler": ref_noise} if name in STOCHASTIC else {}
    ref_out = ref_fn(model, x.clone(), sigmas, callback=ref.kdiffusion, disable=True, **extra)

    assert len(ours.steps) == 8
    assert_same_trajectory(ours, ref, tol=2e-5)
    torch.testing.assert_close(out, ref_out, rtol=2e-5, atol=2e-5)
    assert len(noise.intervals) == len(ref_noise.intervals)
    for got, want in zip(noise.intervals, ref_noise.intervals, strict=True):
        assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["Euler", "Heun", "LMS", "DPM2", "DPM++ 2M", "DDIM", "PLMS", "UniPC",
                                  "UniPC bh2"])
def test_deterministic_samplers_draw_no_noise(ms, name):
    sigmas = get_sigmas("karras", 5, ms)
    noise = ScriptedNoise(0)
    sample(name, guided_toy_model(ms), start_latent(sigmas), sigmas, None, noise)
    assert noise.intervals == []


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_refuse_to_run_without_a_noise_sampler(ms, name):
    sigmas = get_sigmas("normal", 3, ms)
    with pytest.raises(ValueError, match="noise_sampler"):
        sample(name, guided_toy_model(ms), start_latent(sigmas), sigmas)


def test_unknown_sampler_is_a_request_error(ms):
    sigmas = get_sigmas("normal", 3, ms)
    with pytest.raises(RequestError, match="Euler a"):
        sample("DEIS", guided_toy_model(ms), start_latent(sigmas), sigmas)


def test_ddim_update_is_the_euler_step_and_matches_diffusers_ddim(ms):
    """diffusers' DDIMScheduler (eta 0) on its own timesteps, in VP variables, is our DDIM on the same
    sigmas: x_vp = x / sqrt(1 + sigma^2), and the final alpha of 1 is sigma 0."""
    unet, cond, uncond, scale = ToyUNet(), toy_conditioning(1), toy_conditioning(2), 4.0
    sched = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sched.set_timesteps(10)
    sigmas = torch.cat([ms.sigmas[sched.timesteps], torch.zeros(1)])
    x = start_latent(sigmas, seed=5)

    x_vp = x / (1 + sigmas[0] ** 2) ** 0.5
    for t in sched.timesteps:
        tt = t.reshape(1).float()
        eps_c, eps_u = unet(x_vp, tt, cond.context), unet(x_vp, tt, uncond.context)
        x_vp = sched.step(eps_u + scale * (eps_c - eps_u), t, x_vp, eta=0.0).prev_sample

    model = CFGDenoiser(Denoiser(unet, ms), cond, uncond, scale)
    ours = sample("DDIM", model, x.clone(), sigmas)
    torch.testing.assert_close(ours, x_vp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours, sample("Euler", model, x.clone(), sigmas), rtol=1e-5, atol=1e-5)


def test_lcm_matches_diffusers_lcm_scheduler_with_the_same_noise(ms):
    """diffusers' LCMScheduler adds its boundary-condition scalings (c_skip ~ 1e-6 at these timesteps),
    which ComfyUI's and our LCM leave out; otherwise both jump to the denoised estimate and re-noise."""
    unet, cond = ToyUNet(), toy_conditioning(1)
    sched = LCMScheduler(**SD_BETAS)
    sched.set_timesteps(4)
    sigmas = torch.cat([ms.sigmas[sched.timesteps], torch.zeros(1)])
    x = start_latent(sigmas, seed=6)

    x_vp, generator = x / (1 + sigmas[0] ** 2) ** 0.5, torch.Generator().manual_seed(77)
    for t in sched.timesteps:
        eps = unet(x_vp, t.reshape(1).float(), cond.context)
        x_vp, ref = sched.step(eps, t, x_vp, generator=generator, return_dict=False)

    draws = torch.Generator().manual_seed(77)
    noise = ScriptedNoise(0)
    noise.noises = [torch.randn(1, 4, 8, 8, generator=draws) for _ in range(3)]
    model = CFGDenoiser(Denoiser(unet, ms), cond, cond, 1.0)
    ours = sample("LCM", model, x.clone(), sigmas, None, noise)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert len(noise.intervals) == 3


@pytest.mark.parametrize("name", WALK_THE_SCHEDULE)
def test_every_step_reports_index_sigma_x_and_denoised(ms, name):
    sigmas = get_sigmas("karras", 6, ms)
    steps = Trajectory()
    out = sample(
        name, guided_toy_model(ms), start_latent(sigmas), sigmas, steps.ours, SeededNoise([1], (4, 8, 8))
    )
    assert [s[0] for s in steps.steps] == list(range(6))
    assert [s[1] for s in steps.steps] == pytest.approx(sigmas[:-1].tolist())
    assert all(isinstance(s[1], float) for s in steps.steps)
    assert steps.steps[0][2].shape == steps.steps[0][3].shape == out.shape
    assert torch.isfinite(out).all()


class GaussianData:
    """Exact denoiser for data x0 ~ N(mu, s0^2) per pixel: D(x, sigma) = (s0^2 x + sigma^2 mu) / (s0^2 + sigma^2).

    The probability-flow ODE then has the closed form x(0) = mu + (x_T - mu) * s0 / sqrt(s0^2 + sigma_T^2),
    and any correct sampler maps N(0, sigma_T^2) noise to samples of N(mu, s0^2)."""

    mu, s0 = 0.7, 0.5

    def __call__(self, x, sigma):
        s2 = sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2
        return (self.s0**2 * x + s2 * self.mu) / (self.s0**2 + s2)

    def ode_end(self, x_t, sigma_t):
        return self.mu + (x_t - self.mu) * self.s0 / (self.s0**2 + sigma_t**2) ** 0.5


def ode_error(name, steps, ms):
    data = GaussianData()
    sigmas = get_sigmas("karras", steps, ms).double()
    x = start_latent(sigmas, seed=3).double()
    return (sample(name, data, x, sigmas) - data.ode_end(x, sigmas[0])).abs().max().item()


@pytest.mark.parametrize(("name", "order"), [("Euler", 1), ("DDIM", 1), ("Heun", 2), ("DPM++ 2M", 2)])
def test_ode_samplers_converge_to_the_exact_flow_at_their_order(ms, name, order):
    coarse, fine = ode_error(name, 10, ms), ode_error(name, 20, ms)
    assert fine < 0.15
    # Twice the steps: error / 2 for a first-order method, / 4 for a second-order one.
    assert 2 ** (order - 0.4) < coarse / fine < 2 ** (order + 0.6)


def run_on_gaussian_data(name, steps, ms, noise_cls=None):
    data = GaussianData()
    sigmas = get_sigmas("karras", steps, ms).double()
    noise = (noise_cls or SeededNoise)(list(range(8)), (32, 32), dtype=torch.float64)
    return sample(name, data, noise.draw() * sigmas[0], sigmas, None, noise)


@pytest.mark.parametrize("name", ["Euler a", "DPM++ 2M SDE", "DPM++ SDE"])
def test_sde_samplers_draw_from_the_data_distribution(ms, name):
    out = run_on_gaussian_data(name, 200, ms)
    assert out.mean().item() == pytest.approx(GaussianData.mu, abs=0.02)
    assert out.std().item() == pytest.approx(GaussianData.s0, abs=0.025)


def test_dpmpp_sde_needs_consistent_brownian_increments(ms):
    """With independent draws for its half step and full step, DPM++ SDE under-disperses (std ~0.445 at 25
    steps); with increments of one Brownian path it is close to the data's 0.5, as with k-diffusion's tree."""

    class IndependentDraws(SeededNoise):
        def __call__(self, sigma, sigma_next):
            return self.draw()

    assert run_on_gaussian_data("DPM++ SDE", 25, ms).std().item() == pytest.approx(0.5, abs=0.015)
    assert run_on_gaussian_data("DPM++ SDE", 25, ms, IndependentDraws).std().item() < 0.47


def test_seeded_noise_first_draw_is_the_seeds_plain_cpu_randn():
    noise = SeededNoise([42, 43], (4, 8, 8))
    first = noise.draw()
    for i, seed in enumerate([42, 43]):
        g = torch.Generator("cpu").manual_seed(seed)
        torch.testing.assert_close(first[i], torch.randn(4, 8, 8, generator=g), rtol=0, atol=0)


def test_one_interval_per_step_gets_the_generators_next_draws():
    """Euler a / 2M SDE / LCM noise is the generator's stream after the initial noise (A1111's ImageRNG)."""
    noise = SeededNoise([5], (4, 8, 8))
    g = torch.Generator("cpu").manual_seed(5)
    torch.testing.assert_close(noise.draw()[0], torch.randn(4, 8, 8, generator=g), rtol=0, atol=0)
    for sigma, sigma_next in [(14.6, 9.0), (9.0, 3.5), (3.5, 0.2)]:
        got = noise(torch.tensor(sigma), torch.tensor(sigma_next))
        torch.testing.assert_close(got[0], torch.randn(4, 8, 8, generator=g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sub_first", [True, False])
def test_seeded_noise_increments_belong_to_one_brownian_path(sub_first):
    """DPM++ SDE asks for (sigma, midpoint) and (sigma, sigma_next): the increments must add up like W's, in
    either order (the second order needs the Brownian bridge)."""
    a, m, b = 4.0, 2.0, 1.0
    noise = SeededNoise([9], (20000,), dtype=torch.float64)
    if sub_first:
        n_am, n_ab = noise(torch.tensor(a), torch.tensor(m)), noise(torch.tensor(a), torch.tensor(b))
    else:
        n_ab, n_am = noise(torch.tensor(a), torch.tensor(b)), noise(torch.tensor(a), torch.tensor(m))
    n_mb = noise(torch.tensor(m), torch.tensor(b))
    torch.testing.assert_close(
        math.sqrt(a - b) * n_ab, math.sqrt(a - m) * n_am + math.sqrt(m - b) * n_mb, rtol=1e-9, atol=1e-9
    )
    for n in (n_am, n_ab, n_mb):
        assert n.std().item() == pytest.approx(1.0, abs=0.03)
    correlation = torch.corrcoef(torch.stack([n_am[0], n_ab[0]]))[0, 1].item()
    assert correlation == pytest.approx(math.sqrt((a - m) / (a - b)), abs=0.03)


# DPM adaptive sizes its steps by one error norm over the whole batch, as k-diffusion and A1111 do.
@pytest.mark.parametrize("name", [name for name in STOCHASTIC if name != "DPM adaptive"])
def test_image_i_of_a_batch_equals_a_batch_of_one_at_seed_plus_i(ms, name):
    sigmas = get_sigmas("karras", 6, ms)
    model = guided_toy_model(ms)
    batch_noise = SeededNoise([100, 101, 102], (4, 8, 8))
    batch = sample(name, model, batch_noise.draw() * sigmas[0], sigmas, None, batch_noise)
    single_noise = SeededNoise([101], (4, 8, 8))
    single = sample(name, model, single_noise.draw() * sigmas[0], sigmas, None, single_noise)
    torch.testing.assert_close(batch[1:2], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])


def test_same_seed_gives_the_same_image_and_another_seed_does_not(ms):
    sigmas = get_sigmas("karras", 5, ms)
    model = guided_toy_model(ms)

    def run(seed):
        noise = SeededNoise([seed], (4, 8, 8))
        return sample("DPM++ SDE", model, noise.draw() * sigmas[0], sigmas, None, noise)

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_lms_weights_are_the_exact_integrals_of_the_lagrange_basis(order):
    from scipy import integrate

    from sdstudio.engine.samplers import lms_coefficients

    sigmas = [14.6, 9.1, 3.3, 1.7, 0.4, 0.0]  # uneven, ending at 0 as every schedule does
    i = 4
    nodes = [sigmas[i - k] for k in range(order)]

    def basis(j, tau):
        return math.prod((tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(order) if k != j)

    want = [integrate.quad(lambda tau, j=j: basis(j, tau), sigmas[i], sigmas[i + 1], epsabs=0, epsrel=1e-13)[0] for j in range(order)]
    assert lms_coefficients(sigmas, i, order) == pytest.approx(want, rel=1e-11, abs=1e-12)
    assert sum(lms_coefficients(sigmas, i, order)) == pytest.approx(sigmas[i + 1] - sigmas[i])  # exact for constant slope
