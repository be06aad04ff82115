import pytest
import torch
from diffusers import PNDMScheduler

from sdstudio.engine.denoiser import CFGDenoiser, Denoiser
from sdstudio.engine.noise import SeededNoise
from sdstudio.engine.samplers import sample
from sdstudio.engine.samplers_extra import PLMS_WEIGHTS, restart_plan
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from tests.engine import kdiffusion_reference
from tests.engine.test_samplers import SD_BETAS, ScriptedNoise, Trajectory, guided_toy_model, start_latent
from tests.engine.toy_unet import ToyUNet, toy_conditioning


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


@pytest.fixture(scope="module")
def kdiff_sampling():
    return kdiffusion_reference.load()[0]


def restart_reference(kd, model, x, sigmas, noise):
    """Restart as A1111 describes its automatic plan (sd_samplers_extra.py docstring and defaults), built from
    k-diffusion's own pieces: below 20 steps plain Heun. From 20 steps, a Karras schedule of steps - k * j
    steps between the schedule's ends (k = 9 steps once; from 36 steps k = steps // 4, twice); Heun down to
    the sigma nearest 0.1; then j times: add noise up to the sigma nearest 2 and come down by k Heun steps
    on a Karras schedule between the two; then Heun to the end."""
    steps = len(sigmas) - 1
    if steps < 20:
        return kd.sample_heun(model, x, sigmas, disable=True)
    k, j = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = kd.get_sigmas_karras(steps - k * j, float(sigmas[-2]), float(sigmas[0]))
    low = int((main - 0.1).abs().argmin())
    high = int((main - 2.0).abs().argmin())
    x = kd.sample_heun(model, x, main[: low + 1], disable=True)
    way_down = kd.get_sigmas_karras(k + 1, float(main[low]), float(main[high]))[:-1]
    for _ in range(j):
        x = x + noise(main[low], main[high]) * (main[high] ** 2 - main[low] ** 2) ** 0.5
        x = kd.sample_heun(model, x, way_down, disable=True)
    return kd.sample_heun(model, x, main[low:], disable=True)


@pytest.mark.parametrize(("steps", "schedule"),
                         [(12, "karras"), (20, "karras"), (24, "normal"), (40, "exponential")])
def test_restart_equals_its_reference_step_for_step(ms, kdiff_sampling, steps, schedule):
    sigmas = get_sigmas(schedule, steps, ms)
    model = guided_toy_model(ms)
    x = start_latent(sigmas, seed=4)
    noise, ref_noise = ScriptedNoise(4), ScriptedNoise(4)
    trajectory = Trajectory()
    out = sample("Restart", model, x.clone(), sigmas, trajectory.ours, noise)
    ref = restart_reference(kdiff_sampling, model, x.clone(), sigmas, ref_noise)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # One report per Heun step, as many as the request's steps; noise only going up, once per restart.
    assert [s[0] for s in trajectory.steps] == list(range(steps))
    assert len(noise.intervals) == {12: 0, 20: 1, 24: 1, 40: 2}[steps]
    assert all(low < high for low, high in noise.intervals)
    assert noise.intervals == pytest.approx(ref_noise.intervals, rel=1e-6)


def test_restart_plan_matches_a1111s_numbers_at_20_and_40_steps(ms):
    plan = restart_plan(get_sigmas("karras", 20, ms))
    ups = [i for i in range(1, len(plan)) if plan[i][0] > plan[i - 1][1]]
    assert len(plan) == 20 and len(ups) == 1
    assert float(plan[ups[0]][0]) == pytest.approx(2.0, rel=0.25)  # nearest 2 in an 11-step schedule
    assert float(plan[ups[0] - 1][1]) == pytest.approx(0.1, rel=0.5)
    assert float(plan[-1][1]) == 0
    plan = restart_plan(get_sigmas("karras", 40, ms))
    ups = [i for i in range(1, len(plan)) if plan[i][0] > plan[i - 1][1]]
    assert len(plan) == 40 and len(ups) == 2 and ups[1] - ups[0] == 40 // 4


def test_restart_noise_is_seeded_each_restart_fresh_and_batch_independent(ms):
    sigmas = get_sigmas("karras", 40, ms)
    model = guided_toy_model(ms)

    def run(seeds):
        noise = SeededNoise(seeds, (4, 8, 8))
        return sample("Restart", model, noise.draw() * sigmas[0], sigmas, None, noise)

    assert torch.equal(run([7]), run([7]))
    assert not torch.allclose(run([7]), run([8]))
    torch.testing.assert_close(run([6, 7])[1:], run([7]), rtol=1e-5, atol=1e-5)

    # The two restarts of 40 steps take the generator's next two draws (A1111's randn_like), not one twice.
    noise = SeededNoise([7], (4, 8, 8))
    first = noise.draw()
    g = torch.Generator().manual_seed(7)
    torch.randn(4, 8, 8, generator=g)
    draws = [noise(torch.tensor(0.1), torch.tensor(2.0)) for _ in range(2)]
    for draw in draws:
        torch.testing.assert_close(draw[0], torch.randn(4, 8, 8, generator=g), rtol=0, atol=0)
    assert first.shape == draws[0].shape and not torch.equal(draws[0], draws[1])


def test_plms_matches_diffusers_pndm_without_runge_kutta_steps(ms):
    """diffusers' PNDMScheduler(skip_prk_steps=True) is CompVis' PLMS: a pseudo improved Euler first step,
    then Adams-Bashforth orders 2, 3, 4 on eps with DDIM transfers; in VP variables on its own timesteps."""
    unet, cond, uncond, scale = ToyUNet(), toy_conditioning(1), toy_conditioning(2), 4.0
    sched = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, set_alpha_to_one=True, timestep_spacing="leading")
    sched.set_timesteps(12)
    timesteps = [int(t) for t in sched.timesteps]
    distinct = list(dict.fromkeys(timesteps))  # the second timestep is repeated for the improved Euler step
    sigmas = torch.cat([ms.sigmas[torch.tensor(distinct)], torch.zeros(1)])
    x = start_latent(sigmas, seed=5)

    x_vp = x / (1 + sigmas[0] ** 2) ** 0.5
    for t in sched.timesteps:
        tt = t.reshape(1).float()
        eps_c, eps_u = unet(x_vp, tt, cond.context), unet(x_vp, tt, uncond.context)
        x_vp = sched.step(eps_u + scale * (eps_c - eps_u), t, x_vp).prev_sample

    model = CFGDenoiser(Denoiser(unet, ms), cond, uncond, scale)
    trajectory = Trajectory()
    ours = sample("PLMS", model, x.clone(), sigmas, trajectory.ours)
    torch.testing.assert_close(ours, x_vp, rtol=1e-4, atol=1e-4)
    assert len(trajectory.steps) == 12
    assert not torch.allclose(ours, sample("Euler", model, x.clone(), sigmas), rtol=1e-3, atol=1e-3)


def test_plms_weights_are_adams_bashforth_and_one_step_is_euler(ms):
    for order, weights in PLMS_WEIGHTS.items():
        assert len(weights) == order and sum(weights) == pytest.approx(1.0)
    sigmas = get_sigmas("karras", 1, ms)
    model = guided_toy_model(ms)
    x = start_latent(sigmas)
    euler = sample("Euler", model, x.clone(), sigmas)
    torch.testing.assert_close(sample("PLMS", model, x.clone(), sigmas), euler)
