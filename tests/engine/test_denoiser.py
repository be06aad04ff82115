import pytest
import torch
from diffusers import EulerDiscreteScheduler

from sdstudio.engine.denoiser import CFGDenoiser, Denoiser, UNetConditioning
from sdstudio.engine.errors import Cancelled
from sdstudio.engine.schedules import ModelSampling
from tests.engine import kdiffusion_reference
from tests.engine.toy_unet import ToyUNet, toy_conditioning

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@pytest.fixture(scope="module")
def ms():
    return ModelSampling()


def latents(seed: int, batch: int = 1, channels: int = 4) -> torch.Tensor:
    return torch.randn(batch, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("prediction", "diffusers_name"), [("eps", "epsilon"), ("v", "v_prediction")])
def test_denoised_estimate_matches_diffusers_euler_scheduler(ms, prediction, diffusers_name):
    unet = ToyUNet()
    cond = toy_conditioning(1)
    for k in range(4):
        sched = EulerDiscreteScheduler(
            **SD_BETAS, prediction_type=diffusers_name, timestep_spacing="trailing"
        )
        sched.set_timesteps(4)
        sched.set_begin_index(k)
        t, sigma = sched.timesteps[k], sched.sigmas[k]
        x = latents(k) * sigma
        ref_in = sched.scale_model_input(x, t)
        ref_out = unet(ref_in, t.reshape(1).float(), cond.context)
        ref = sched.step(ref_out, t, x).pred_original_sample

        ours = Denoiser(unet, ms, prediction)(x, sigma.reshape(1), cond)
        call = unet.calls[-1]
        torch.testing.assert_close(call["x"], ref_in, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(call["t"], t.reshape(1).float(), rtol=0, atol=2e-3)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_equals_k_diffusion_discrete_ddpm_wrappers(ms, prediction):
    _, external = kdiffusion_reference.load()
    ac = 1 / (ms.sigmas**2 + 1)
    unet = ToyUNet()
    cls = external.DiscreteEpsDDPMDenoiser if prediction == "eps" else external.DiscreteVDDPMDenoiser
    ref = cls(lambda x, t, cond: unet(x, t, cond.context), ac, quantize=False)
    cond = toy_conditioning(2, batch=3)
    sigma = torch.tensor([14.6, 1.234, 0.05])
    x = latents(3, batch=3) * sigma[:, None, None, None]
    ours = Denoiser(unet, ms, prediction)(x, sigma, cond)
    torch.testing.assert_close(ours, ref(x, sigma, cond=cond), rtol=1e-6, atol=1e-6)
    # Fractional timesteps reach the UNet, as in A1111 (not rounded as diffusers and ComfyUI do).
    assert not torch.equal(unet.calls[-1]["t"], unet.calls[-1]["t"].round())


def test_eps_and_v_parameterisations_recover_a_known_clean_latent(ms):
    """A UNet that returns the true eps / v makes D(x, sigma) equal the clean latent."""
    x0, noise, sigma = latents(4), latents(5), torch.tensor([3.0])
    x = x0 + sigma * noise
    alpha, sigma_vp = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5
    v = alpha * noise - sigma_vp * x0  # Salimans & Ho (2022), eq. in VP variables
    cond = toy_conditioning(0)
    eps_d = Denoiser(lambda x, t, c, y=None: noise, ms, "eps")(x, sigma, cond)
    v_d = Denoiser(lambda x, t, c, y=None: v, ms, "v")(x, sigma, cond)
    torch.testing.assert_close(eps_d, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v_d, x0, rtol=1e-5, atol=1e-5)


def test_inpainting_unet_gets_scaled_latent_and_unscaled_extra_channels(ms):
    unet = ToyUNet(in_channels=9)
    extra = latents(6, channels=5)
    x, sigma = latents(7) * 2.0, torch.tensor([2.0])
    out = Denoiser(unet, ms)(x, sigma, toy_conditioning(0), extra_channels=extra)
    seen = unet.calls[-1]["x"]
    assert out.shape == x.shape and seen.shape == (1, 9, 8, 8)
    torch.testing.assert_close(seen[:, :4], x / (sigma**2 + 1) ** 0.5)
    torch.testing.assert_close(seen[:, 4:], extra)


def test_unknown_prediction_type_is_refused(ms):
    with pytest.raises(ValueError, match="prediction"):
        Denoiser(ToyUNet(), ms, "x0")


def test_cfg_runs_prompt_and_negative_prompt_together_one_image_per_call(ms):
    unet = ToyUNet(adm=6)
    denoiser = Denoiser(unet, ms)
    cond, uncond = toy_conditioning(1, adm=6), toy_conditioning(2, adm=6)
    x, sigma = latents(8, batch=2) * 5.0, torch.tensor([5.0, 5.0])

    guided = CFGDenoiser(denoiser, cond, uncond, 7.5)(x, sigma)

    assert len(unet.calls) == 2
    for i, call in enumerate(unet.calls):
        assert call["x"].shape[0] == 2 and call["context"].shape[0] == 2 and call["y"].shape == (2, 6)
        torch.testing.assert_close(call["x"], (x[i : i + 1] / (5.0**2 + 1) ** 0.5).expand(2, -1, -1, -1))
        torch.testing.assert_close(call["context"], torch.cat([cond.context, uncond.context]))
        torch.testing.assert_close(call["y"], torch.cat([cond.y, uncond.y]))
    d_cond = denoiser(x, sigma, cond.repeat_to(2))
    d_uncond = denoiser(x, sigma, uncond.repeat_to(2))
    torch.testing.assert_close(guided, d_uncond + 7.5 * (d_cond - d_uncond), rtol=1e-5, atol=1e-5)


def test_cfg_scale_one_skips_the_negative_prompt(ms):
    unet = ToyUNet()
    denoiser = Denoiser(unet, ms)
    cond = toy_conditioning(1)
    x, sigma = latents(9, batch=3), torch.tensor([1.5])
    out = CFGDenoiser(denoiser, cond, toy_conditioning(2), 1.0)(x, sigma)
    assert [call["x"].shape[0] for call in unet.calls] == [1, 1, 1]
    torch.testing.assert_close(out, denoiser(x, sigma, cond.repeat_to(3)))


def test_each_image_of_a_guided_batch_equals_its_batch_of_one_exactly(ms):
    unet = ToyUNet(in_channels=9)
    cfg = CFGDenoiser(
        Denoiser(unet, ms), toy_conditioning(1), toy_conditioning(2), 6.0, latents(3, channels=5)
    )
    x, sigma = latents(10, batch=3) * 4.0, torch.tensor([4.0, 4.0, 4.0])
    batch = cfg(x, sigma)
    for i in range(3):
        assert torch.equal(batch[i : i + 1], cfg(x[i : i + 1], sigma[i : i + 1]))


def test_cancel_is_checked_before_every_unet_call(ms):
    unet = ToyUNet()
    requests = []

    def should_cancel():
        requests.append(len(unet.calls))
        return len(requests) > 2

    cfg = CFGDenoiser(Denoiser(unet, ms), toy_conditioning(1), toy_conditioning(2), 5.0, None, should_cancel)
    x, sigma = latents(11), torch.tensor([2.0])
    cfg(x, sigma)
    cfg(x, sigma)
    with pytest.raises(Cancelled):
        cfg(x, sigma)
    assert requests == [0, 1, 2]
    assert len(unet.calls) == 2


def test_conditioning_for_one_prompt_repeats_over_the_batch_but_never_guesses():
    cond = toy_conditioning(0, adm=3)
    many = cond.repeat_to(4)
    assert many.context.shape[0] == 4 and many.y.shape == (4, 3)
    torch.testing.assert_close(many.context[3], cond.context[0])
    with pytest.raises(ValueError, match="2 prompts for a batch of 3"):
        toy_conditioning(0, batch=2).repeat_to(3)


def test_cfg_refuses_prompt_and_negative_of_different_lengths(ms):
    cond, uncond = toy_conditioning(1, tokens=5), toy_conditioning(2, tokens=7)
    cfg = CFGDenoiser(Denoiser(ToyUNet(), ms), cond, uncond, 5.0)
    with pytest.raises(ValueError, match="shapes"):
        cfg(latents(0), torch.tensor([1.0]))


def test_conditioning_is_a_plain_frozen_dataclass():
    cond = UNetConditioning(torch.zeros(1, 2, 3))
    assert cond.y is None
    with pytest.raises(AttributeError):
        cond.context = torch.ones(1)


def test_composable_guidance_is_a1111s_combine_denoised_in_one_call_per_image(ms):
    from sdstudio.engine.step_conditioning import StepConditioning

    unet = ToyUNet(adm=6)
    denoiser = Denoiser(unet, ms)
    c1, c2, c3, u = (toy_conditioning(k, adm=6) for k in (1, 2, 3, 4))
    now = StepConditioning(((c1, 1.0), (c2, 0.8), (c3, -0.3)), u)
    cfg = CFGDenoiser(denoiser, c1, u, 6.0, schedule=lambda call: now)
    x, sigma = latents(12, batch=2) * 3.0, torch.tensor([3.0, 3.0])
    out = cfg(x, sigma)
    assert [call["context"].shape[0] for call in unet.calls] == [4, 4]
    torch.testing.assert_close(unet.calls[1]["context"], torch.cat([c1.context, c2.context, c3.context, u.context]))
    d = {k: denoiser(x, sigma, c.repeat_to(2)) for k, c in {"c1": c1, "c2": c2, "c3": c3, "u": u}.items()}
    ref = d["u"] + 6.0 * (1.0 * (d["c1"] - d["u"]) + 0.8 * (d["c2"] - d["u"]) - 0.3 * (d["c3"] - d["u"]))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for i in range(2):
        assert torch.equal(out[i : i + 1], cfg(x[i : i + 1], sigma[i : i + 1]))


def test_one_sub_prompt_of_weight_one_is_the_plain_guidance_bit_for_bit(ms):
    from sdstudio.engine.step_conditioning import StepConditioning

    cond, uncond = toy_conditioning(1), toy_conditioning(2)
    x, sigma = latents(13, batch=2) * 2.0, torch.tensor([2.0, 2.0])
    now = StepConditioning(((cond, 1.0),), uncond)
    for scale in (7.5, 1.0):
        plain = CFGDenoiser(Denoiser(ToyUNet(), ms), cond, uncond, scale)(x, sigma)
        scheduled = CFGDenoiser(Denoiser(ToyUNet(), ms), cond, uncond, scale, schedule=lambda call: now)(x, sigma)
        assert torch.equal(plain, scheduled)


def test_the_schedule_is_asked_with_a1111s_model_call_counter(ms):
    from sdstudio.engine.step_conditioning import StepConditioning

    asked = []
    conds = [toy_conditioning(k) for k in range(3)]

    def schedule(call):
        asked.append(call)
        return StepConditioning(((conds[call % 3], 1.0),), conds[0])

    unet = ToyUNet()
    cfg = CFGDenoiser(Denoiser(unet, ms), conds[0], conds[0], 5.0, schedule=schedule)
    x = latents(14, batch=2)
    for _ in range(4):
        cfg(x, torch.tensor([1.0]))
    assert asked == [0, 1, 2, 3]
    # the batch's two images of call 2 both got sub-prompt 2
    assert all(torch.equal(c["context"][0], conds[2].context[0]) for c in unet.calls[4:6])


def test_composable_prompts_with_controlnet_are_refused_in_one_line(ms):
    from sdstudio.engine.errors import GenerationError
    from sdstudio.engine.step_conditioning import StepConditioning

    c = toy_conditioning(1)
    now = StepConditioning(((c, 1.0), (c, 0.5)), c)
    cfg = CFGDenoiser(Denoiser(ToyUNet(), ms), c, c, 5.0, residuals=lambda *a: None, schedule=lambda call: now)
    with pytest.raises(GenerationError, match="AND"):
        cfg(latents(1), torch.tensor([1.0]))


def test_many_sub_prompts_split_into_calls_of_at_most_guided_batch_rows(ms):
    from sdstudio.engine.denoiser import GUIDED_BATCH
    from sdstudio.engine.step_conditioning import StepConditioning

    unet = ToyUNet()
    denoiser = Denoiser(unet, ms)
    subs = [(toy_conditioning(k), 0.1 * k) for k in range(1, 11)]
    u = toy_conditioning(99)
    cfg = CFGDenoiser(denoiser, subs[0][0], u, 4.0, schedule=lambda call: StepConditioning(tuple(subs), u))
    x, sigma = latents(15, batch=2), torch.tensor([2.0, 2.0])
    out = cfg(x, sigma)
    assert [c["x"].shape[0] for c in unet.calls] == [GUIDED_BATCH, 11 - GUIDED_BATCH] * 2
    d_u = denoiser(x, sigma, u.repeat_to(2))
    ref = d_u + sum(4.0 * w * (denoiser(x, sigma, c.repeat_to(2)) - d_u) for c, w in subs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[1:], cfg(x[1:], sigma[1:]))
