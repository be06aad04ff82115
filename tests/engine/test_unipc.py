"""UniPC against diffusers' UniPCMultistepScheduler (order 3, lower_order_final, predict_x0) on the same
sigmas: the toy eps model runs in diffusers' VP variables, ours in VE ones (x_vp = x / sqrt(1 + sigma^2)).

diffusers' bh1 step to a final sigma of 0 divides by B(h) = -inf and returns NaN, so bh1 is compared with
final_sigmas_type="sigma_min" (every step), and its last step to 0 against its order-1 limit x = D."""

import pytest
import torch
from diffusers import UniPCMultistepScheduler

from sdstudio.engine.denoiser import CFGDenoiser, Denoiser
from sdstudio.engine.samplers import sample
from sdstudio.engine.schedules import ModelSampling, get_sigmas
from sdstudio.engine.unipc import unipc_coefficients
from tests.engine.test_samplers import SD_BETAS, GaussianData, Trajectory, guided_toy_model, start_latent
from tests.engine.toy_unet import ToyUNet, toy_conditioning

SAMPLER = {"bh1": "UniPC", "bh2": "UniPC bh2"}
# diffusers' UniPC scheduler warns about numpy 2's __array__ protocol when it builds its sigma table.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


def diffusers_run(variant, final, steps, x, unet, cond, uncond, scale):
    """(final x in VE variables, the VE x of every model call, sigmas) from diffusers' UniPC."""
    sched = UniPCMultistepScheduler(**SD_BETAS, solver_order=3, solver_type=variant, lower_order_final=True,
                                    final_sigmas_type=final, timestep_spacing="leading", steps_offset=1)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.clone()
    x_vp, inputs = x / (1 + sigmas[0] ** 2) ** 0.5, []
    for i, t in enumerate(sched.timesteps):
        inputs.append(x_vp * (1 + sigmas[i] ** 2) ** 0.5)
        tt = t.reshape(1).float()
        eps_c, eps_u = unet(x_vp, tt, cond.context), unet(x_vp, tt, uncond.context)
        x_vp = sched.step(eps_u + scale * (eps_c - eps_u), t, x_vp).prev_sample
    return x_vp * (1 + sigmas[-1] ** 2) ** 0.5, inputs, sigmas


@pytest.mark.parametrize(("variant", "final"), [("bh1", "sigma_min"), ("bh2", "zero"), ("bh2", "sigma_min")])
@pytest.mark.parametrize("steps", [2, 3, 5, 12])
def test_unipc_matches_diffusers(ms, variant, final, steps):
    unet, cond, uncond, scale = ToyUNet(seed=3), toy_conditioning(1), toy_conditioning(2), 5.0
    x = start_latent(torch.tensor([14.6146]), seed=steps)
    ref, ref_inputs, sigmas = diffusers_run(variant, final, steps, x, unet, cond, uncond, scale)
    model = CFGDenoiser(Denoiser(unet, ms), cond, uncond, scale)
    trajectory = Trajectory()
    ours = sample(SAMPLER[variant], model, x.clone(), sigmas, trajectory.ours)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref, rtol=5e-5, atol=5e-5)
    # One model call per step, at the uncorrected prediction, as diffusers calls the model.
    assert [s[0] for s in trajectory.steps] == list(range(steps))
    for (_, _, x_i, _), ref_x in zip(trajectory.steps, ref_inputs, strict=True):
        torch.testing.assert_close(x_i, ref_x, rtol=5e-5, atol=5e-5)


def test_bh1_to_sigma_zero_follows_diffusers_until_the_last_step_which_returns_the_denoised(ms):
    unet, cond, uncond, scale = ToyUNet(seed=3), toy_conditioning(1), toy_conditioning(2), 5.0
    x = start_latent(torch.tensor([14.6146]), seed=1)
    _, ref_inputs, sigmas = diffusers_run("bh1", "sigma_min", 8, x, unet, cond, uncond, scale)
    zero_end = torch.cat([sigmas[:-1], torch.zeros(1)])
    model = CFGDenoiser(Denoiser(unet, ms), cond, uncond, scale)
    trajectory = Trajectory()
    ours = sample("UniPC", model, x.clone(), zero_end, trajectory.ours)
    for (_, _, x_i, _), ref_x in zip(trajectory.steps, ref_inputs, strict=True):
        torch.testing.assert_close(x_i, ref_x, rtol=5e-5, atol=5e-5)
    torch.testing.assert_close(ours, trajectory.steps[-1][3], rtol=0, atol=0)


def test_variants_differ_and_coefficients_meet_the_order_conditions():
    rks, h = [-0.8, -1.9], 0.6
    rhos_p, rhos_c, b_h = unipc_coefficients(rks, h, "bh1")
    assert b_h == -h and len(rhos_p) == 2 and len(rhos_c) == 3
    assert unipc_coefficients(rks, h, "bh2")[0] != pytest.approx(rhos_p)
    # Order 2 uses rho = 1/2 for the predictor (the paper's simplification) and solves for the corrector.
    assert unipc_coefficients([-1.0], h, "bh1")[0] == [0.5]
    assert unipc_coefficients([], h, "bh2")[1] == [0.5]


def test_unipc_converges_fast_on_the_exact_gaussian_flow(ms):
    data = GaussianData()

    def error(name, steps):
        sigmas = get_sigmas("karras", steps, ms).double()
        x = start_latent(sigmas, seed=3).double()
        return (sample(name, data, x, sigmas) - data.ode_end(x, sigmas[0])).abs().max().item()

    for name in ("UniPC", "UniPC bh2"):
        coarse, fine = error(name, 10), error(name, 20)
        assert fine < 0.02 and coarse / fine > 3  # at least second order
        assert fine < error("DPM++ 2M", 20)


@pytest.mark.parametrize("name", ["UniPC", "UniPC bh2"])
def test_unipc_is_deterministic_and_every_step_is_one_model_call(ms, name):
    sigmas = get_sigmas("karras", 7, ms)
    calls = []
    model = guided_toy_model(ms)

    def counted(x, sigma):
        calls.append(float(sigma[0]))
        return model(x, sigma)

    out = sample(name, counted, start_latent(sigmas), sigmas)
    assert calls == pytest.approx(sigmas[:-1].tolist())
    assert torch.equal(out, sample(name, model, start_latent(sigmas), sigmas))
