import pytest
import torch

from sdstudio.engine.dpm_solver import fast_orders
from sdstudio.engine.errors import RequestError
from sdstudio.engine.noise import SeededNoise
from sdstudio.engine.samplers import sample
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from tests.engine import kdiffusion_reference
from tests.engine.test_samplers import ScriptedNoise, Trajectory, guided_toy_model, start_latent

KDIFFUSION = {"DPM fast": "sample_dpm_fast", "DPM adaptive": "sample_dpm_adaptive"}


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


@pytest.fixture(scope="module")
def kdiff_sampling():
    return kdiffusion_reference.load()[0]


class CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.model(x, sigma)


def run_reference(kdiff_sampling, name, model, x, sigmas, callback, noise):
    """k-diffusion 0.1.1 as A1111 calls it: the schedule's ends as sigma_max/sigma_min, n = steps, eta = 1."""
    extra = {"n": len(sigmas) - 1} if name == "DPM fast" else {}
    return getattr(kdiff_sampling, KDIFFUSION[name])(
        model, x, float(sigmas[-2]), float(sigmas[0]), callback=callback, disable=True, eta=1.0,
        noise_sampler=noise, **extra)


@pytest.mark.parametrize("name", list(KDIFFUSION))
@pytest.mark.parametrize(("schedule", "steps"),
                         [("karras", 8), ("normal", 9), ("exponential", 10), ("karras", 2)])
def test_equals_k_diffusion_with_a1111s_eta_and_range(ms, kdiff_sampling, name, schedule, steps):
    sigmas = get_sigmas(schedule, steps, ms)
    model = guided_toy_model(ms, seed=1)
    x = start_latent(sigmas, seed=2)
    ours, ref = Trajectory(), Trajectory()
    noise, ref_noise = ScriptedNoise(400), ScriptedNoise(400)

    out = sample(name, model, x.clone(), sigmas, ours.ours, noise)
    ref_out = run_reference(kdiff_sampling, name, model, x.clone(), sigmas, ref.kdiffusion, ref_noise)

    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert len(ours.steps) == len(ref.steps) > 0
    for (_, sigma, x_i, d), (_, ref_sigma, ref_x, ref_d) in zip(ours.steps, ref.steps, strict=True):
        assert sigma == pytest.approx(ref_sigma, rel=1e-5)
        torch.testing.assert_close(x_i, ref_x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d, ref_d, rtol=1e-5, atol=1e-5)
    assert noise.intervals == pytest.approx(ref_noise.intervals, rel=1e-5)
    if steps > 2:  # (one DPM fast step lands on sigma_min itself: no noise to add)
        other = sample(name, model, x.clone(), sigmas, None, ScriptedNoise(400, seed=9))
        assert not torch.allclose(out, other)


@pytest.mark.parametrize(("steps", "orders"), [(1, [1]), (2, [2]), (3, [2, 1]), (8, [3, 3, 2]),
                                               (10, [3, 3, 3, 1]), (12, [3, 3, 3, 2, 1])])
def test_dpm_fast_spends_exactly_the_step_count_in_model_calls(ms, steps, orders):
    assert fast_orders(steps) == orders and sum(orders) == steps
    if steps == 1:
        return
    sigmas = get_sigmas("karras", steps, ms)
    model, trajectory = CountingModel(guided_toy_model(ms)), Trajectory()
    sample("DPM fast", model, start_latent(sigmas), sigmas, trajectory.ours, ScriptedNoise(20))
    assert model.calls == steps
    # Each step reports the model calls done before it: progress counts calls, up to the last step's.
    assert [s[0] for s in trajectory.steps] == [sum(orders[:i]) for i in range(len(orders))]


def test_dpm_adaptive_ignores_the_step_count_and_reports_the_way_done(ms):
    runs = {}
    for steps in (5, 30):
        sigmas = get_sigmas("karras", steps, ms)  # the same ends for any step count
        model, trajectory = CountingModel(guided_toy_model(ms)), Trajectory()
        noise = SeededNoise([4], (4, 8, 8))
        out = sample("DPM adaptive", model, noise.draw() * sigmas[0], sigmas, trajectory.ours, noise)
        runs[steps] = out, model.calls
        reported = [s[0] for s in trajectory.steps]
        assert reported == sorted(reported) and reported[0] >= 0 and reported[-1] == steps - 1
        assert model.calls == 3 * len(reported) > steps  # three calls per attempt, more than 5 in all
        sigmas_seen = [s[1] for s in trajectory.steps]
        assert sigmas_seen[-1] == pytest.approx(float(sigmas[-2]), rel=1e-4)  # ends at the last nonzero sigma
    torch.testing.assert_close(runs[5][0], runs[30][0], rtol=0, atol=0)
    assert runs[5][1] == runs[30][1]


@pytest.mark.parametrize("name", list(KDIFFUSION))
def test_a_one_step_schedule_is_refused_not_run_to_noise(ms, name):
    sigmas = get_sigmas("karras", 1, ms)  # [sigma_max, 0]: no range to integrate over
    with pytest.raises(RequestError, match="at least 2 steps"):
        sample(name, guided_toy_model(ms), start_latent(sigmas), sigmas, None, ScriptedNoise(4))


@pytest.mark.parametrize("name", list(KDIFFUSION))
def test_img2img_tail_integrates_between_its_own_ends(ms, kdiff_sampling, name):
    """A1111's img2img passes the tail's first and last nonzero sigma, and n = the tail's length."""
    sigmas = get_sigmas("karras", 12, ms)[6:]
    model = guided_toy_model(ms)
    x = start_latent(sigmas, seed=8)
    out = sample(name, model, x.clone(), sigmas, None, ScriptedNoise(400))
    ref = run_reference(kdiff_sampling, name, model, x.clone(), sigmas, None, ScriptedNoise(400))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
