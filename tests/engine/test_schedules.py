import math

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

from sdstudio.engine import names
from sdstudio.engine.errors import RequestError
from sdstudio.engine.families import AYS_SD15, AYS_SDXL
from sdstudio.engine.schedules import SCHEDULES, ModelSampling, get_sigmas, scaled_linear_alphas_cumprod
from tests.engine import kdiffusion_reference

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


@pytest.fixture(scope="module")
def kdiff_schedule(ms):
    _, external = kdiffusion_reference.load()
    return external.DiscreteSchedule(ms.sigmas.clone(), quantize=False)


def test_schedule_names_are_the_ones_the_ui_lists():
    assert tuple(SCHEDULES) == names.SCHEDULERS


def test_alphas_cumprod_match_diffusers_scaled_linear_betas():
    ours = scaled_linear_alphas_cumprod()
    ref = DDPMScheduler(num_train_timesteps=1000, **SD_BETAS).alphas_cumprod
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    torch.testing.assert_close(ours.float(), ref, rtol=1e-6, atol=0)


def test_training_sigmas_match_diffusers_and_the_known_range(ms):
    ref = EulerDiscreteScheduler(**SD_BETAS)
    ref_sigmas = ((1 - ref.alphas_cumprod) / ref.alphas_cumprod) ** 0.5
    # diffusers builds betas in float32, LDM (and we) in float64: they differ by ~1e-5 where 1 - ac is small.
    torch.testing.assert_close(ms.sigmas, ref_sigmas, rtol=2e-5, atol=0)
    assert ms.sigma_min == pytest.approx(0.0292, abs=5e-5)
    assert ms.sigma_max == pytest.approx(14.6146, abs=5e-4)


# Align Your Steps uses NVIDIA's published sigmas (14.615 ... 0.029), not the model's range: tested below.
@pytest.mark.parametrize("name", [name for name in names.SCHEDULERS if name != "align_your_steps"])
@pytest.mark.parametrize("steps", [1, 2, 7, 20])
def test_every_schedule_has_steps_plus_one_decreasing_sigmas_ending_in_zero(ms, name, steps):
    sigmas = get_sigmas(name, steps, ms)
    assert sigmas.shape == (steps + 1,)
    assert sigmas.dtype == torch.float32
    assert sigmas[-1] == 0
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    assert float(sigmas[0]) == pytest.approx(ms.sigma_max, rel=1e-5)
    assert float(sigmas[-2]) >= ms.sigma_min * (1 - 1e-5)


@pytest.mark.parametrize("name", ["karras", "exponential", "normal"])
def test_schedules_that_span_the_whole_range_end_at_sigma_min(ms, name):
    sigmas = get_sigmas(name, 12, ms)
    assert float(sigmas[0]) == pytest.approx(ms.sigma_max, rel=1e-6)
    assert float(sigmas[-2]) == pytest.approx(ms.sigma_min, rel=1e-5)


def test_sgm_uniform_drops_the_last_timestep_so_it_stops_above_sigma_min(ms, kdiff_schedule):
    sigmas = get_sigmas("sgm_uniform", 10, ms)
    # t = 999, 899.1, ..., 99.9: the last nonzero sigma is sigma(99.9), not sigma_min.
    assert float(sigmas[-2]) == pytest.approx(float(kdiff_schedule.t_to_sigma(torch.tensor(99.9))), rel=1e-5)
    assert float(sigmas[-2]) > 5 * ms.sigma_min


def test_normal_equals_k_diffusion_discrete_schedule(ms, kdiff_schedule):
    for steps in (1, 10, 25):
        torch.testing.assert_close(get_sigmas("normal", steps, ms), kdiff_schedule.get_sigmas(steps))


def test_karras_and_exponential_equal_k_diffusion(ms):
    sampling, _ = kdiffusion_reference.load()
    for steps in (3, 20):
        ref_k = sampling.get_sigmas_karras(steps, ms.sigma_min, ms.sigma_max, rho=7.0)
        ref_e = sampling.get_sigmas_exponential(steps, ms.sigma_min, ms.sigma_max)
        torch.testing.assert_close(get_sigmas("karras", steps, ms), ref_k)
        torch.testing.assert_close(get_sigmas("exponential", steps, ms), ref_e)


def test_karras_and_exponential_match_diffusers(ms):
    karras = EulerDiscreteScheduler(**SD_BETAS, use_karras_sigmas=True)
    karras.set_timesteps(15)
    expo = EulerDiscreteScheduler(**SD_BETAS, use_exponential_sigmas=True)
    expo.set_timesteps(15)
    torch.testing.assert_close(get_sigmas("karras", 15, ms), karras.sigmas.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(get_sigmas("exponential", 15, ms), expo.sigmas.float(), rtol=1e-5, atol=1e-6)


def test_sgm_uniform_equals_a1111_formula_on_k_diffusion_schedule(ms, kdiff_schedule):
    ks = kdiff_schedule
    start, end = ks.sigma_to_t(ks.sigma_max), ks.sigma_to_t(ks.sigma_min)
    ref = [ks.t_to_sigma(t) for t in torch.linspace(float(start), float(end), 9 + 1)[:-1]] + [0.0]
    torch.testing.assert_close(get_sigmas("sgm_uniform", 9, ms), torch.tensor(ref))


def test_sigma_to_t_interpolates_in_log_sigma_like_k_diffusion(ms, kdiff_schedule):
    g = torch.Generator().manual_seed(0)
    sigmas = torch.exp(torch.empty(50).uniform_(math.log(ms.sigma_min), math.log(ms.sigma_max), generator=g))
    torch.testing.assert_close(ms.sigma_to_t(sigmas), kdiff_schedule.sigma_to_t(sigmas))
    t = torch.empty(50).uniform_(0, 999, generator=g)
    torch.testing.assert_close(ms.t_to_sigma(t), kdiff_schedule.t_to_sigma(t))


def test_sigma_to_t_inverts_t_to_sigma(ms):
    t = torch.cat([torch.arange(0, 1000, 37).float(), torch.tensor([0.25, 10.5, 500.75, 998.9, 999.0])])
    torch.testing.assert_close(ms.sigma_to_t(ms.t_to_sigma(t)), t, rtol=0, atol=2e-3)
    torch.testing.assert_close(ms.t_to_sigma(ms.sigma_to_t(ms.sigmas)), ms.sigmas, rtol=1e-5, atol=0)


def test_integer_timesteps_map_to_the_training_sigmas(ms):
    t = torch.tensor([0, 1, 250, 999])
    torch.testing.assert_close(ms.t_to_sigma(t), ms.sigmas[t])
    torch.testing.assert_close(ms.sigma_to_t(ms.sigmas[t]), t.float(), rtol=0, atol=1e-3)


def test_unknown_schedule_and_too_few_steps_are_request_errors(ms):
    with pytest.raises(RequestError, match="karras"):
        get_sigmas("Karras", 20, ms)
    with pytest.raises(RequestError, match="at least 1"):
        get_sigmas("normal", 0, ms)


# ComfyUI's schedulers (comfy/samplers.py), re-derived here from their published formulas with numpy/scipy.
def comfyui_simple(sigmas, steps):
    stride = len(sigmas) / steps
    return [float(sigmas[-(1 + int(x * stride))]) for x in range(steps)] + [0.0]


def comfyui_beta(sigmas, steps, alpha=0.6, beta=0.6):
    import numpy as np
    from scipy import stats

    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * (len(sigmas) - 1))
    out, last = [], -1
    for t in ts:
        if t != last:
            out.append(float(sigmas[int(t)]))
        last = t
    return out + [0.0]


def comfyui_kl_optimal(steps, sigma_min, sigma_max):
    idx = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    out = idx.new_zeros(steps + 1)
    out[:-1] = (idx * math.atan(sigma_min) + (1 - idx) * math.atan(sigma_max)).tan_()
    return out


@pytest.mark.parametrize("steps", [1, 3, 20, 37, 150, 500])
def test_simple_equals_comfyui(ms, steps):
    assert get_sigmas("simple", steps, ms).tolist() == pytest.approx(comfyui_simple(ms.sigmas, steps), rel=0)


@pytest.mark.parametrize("steps", [1, 2, 9, 20, 50, 138])
def test_beta_equals_comfyui_with_scipy_quantiles(ms, steps):
    assert get_sigmas("beta", steps, ms).tolist() == pytest.approx(comfyui_beta(ms.sigmas, steps), rel=0)


def test_beta_refuses_a_step_count_where_comfyui_would_run_fewer_steps(ms):
    assert len(comfyui_beta(ms.sigmas, 139)) < 140  # ComfyUI silently drops a repeated timestep here
    with pytest.raises(RequestError, match="fewer steps"):
        get_sigmas("beta", 139, ms)


@pytest.mark.parametrize("a", [0.6, 0.3, 2.5])
def test_beta_quantile_and_cdf_equal_scipy_including_the_singular_ends(a):
    from scipy import stats

    from sdstudio.engine.schedules import beta_cdf, beta_quantile

    for p in (1e-9, 1e-4, 0.02, 0.25, 0.5, 0.6, 0.93, 0.9999, 1 - 1e-9):
        assert beta_cdf(p, a, 0.6) == pytest.approx(stats.beta.cdf(p, a, 0.6), rel=1e-7, abs=1e-12)
        assert beta_quantile(p, a, 0.6) == pytest.approx(stats.beta.ppf(p, a, 0.6), rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("steps", [2, 10, 33])
def test_kl_optimal_equals_comfyui(ms, steps):
    ref = comfyui_kl_optimal(steps, ms.sigma_min, ms.sigma_max)
    torch.testing.assert_close(get_sigmas("kl_optimal", steps, ms), ref)
    assert math.isnan(float(comfyui_kl_optimal(1, ms.sigma_min, ms.sigma_max)[0]))  # ComfyUI's one-step case
    assert get_sigmas("kl_optimal", 1, ms).tolist() == pytest.approx([ms.sigma_max, 0.0], rel=1e-6)


AYS = {"sd1": AYS_SD15, "sd2": AYS_SD15, "demo": AYS_SD15, "sdxl": AYS_SDXL}


@pytest.mark.parametrize("family", list(AYS))
def test_align_your_steps_gives_nvidias_table_at_its_own_length(family):
    """NVIDIA's "10-step" lists hold 11 sigmas; A1111 uses them as they are when asked for 11 steps."""
    sigmas = get_sigmas("align_your_steps", 11, ModelSampling(family=family))
    assert sigmas.dtype == torch.float32
    assert sigmas.tolist() == torch.tensor([*AYS[family], 0.0]).tolist()


def test_the_tables_are_nvidias_published_ones():
    assert AYS_SD15 == (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
    assert AYS_SDXL == (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def loglinear_reference(table, n):
    """n sigmas at evenly spaced positions over the table, each geometric between the two entries around it."""
    out = []
    for j in range(n):
        position = j / (n - 1) * (len(table) - 1)
        k = min(int(position), len(table) - 2)
        f = position - k
        out.append(table[k] ** (1 - f) * table[k + 1] ** f)
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("steps", [2, 3, 10, 12, 20, 47])
def test_align_your_steps_interpolates_in_log_sigma_for_other_step_counts(family, steps):
    sigmas = get_sigmas("align_your_steps", steps, ModelSampling(family=family))
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    assert float(sigmas[0]) == pytest.approx(14.615, rel=1e-6)
    assert float(sigmas[-2]) == pytest.approx(0.029, rel=1e-6)
    assert sigmas[:-1].tolist() == pytest.approx(loglinear_reference(AYS[family], steps), rel=1e-6)


def test_align_your_steps_depends_on_the_family_and_needs_it():
    sd1 = get_sigmas("align_your_steps", 20, ModelSampling(family="sd1"))
    sdxl = get_sigmas("align_your_steps", 20, ModelSampling(family="sdxl"))
    assert not torch.allclose(sd1, sdxl)
    with pytest.raises(RequestError, match="model family"):
        get_sigmas("align_your_steps", 20, ModelSampling())
    with pytest.raises(RequestError, match="at least 2 steps"):
        get_sigmas("align_your_steps", 1, ModelSampling(family="sd1"))
