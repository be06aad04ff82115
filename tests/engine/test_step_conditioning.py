"""Per-step conditioning on the tiny model: prompt editing switches the UNet's context at A1111's call and not
before, alternation cycles, AND combines guided predictions, unchanged prompts give today's pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdstudio.engine import passes
from sdstudio.engine.conditioning import PromptEncoder
from sdstudio.engine.denoiser import UNetConditioning
from sdstudio.engine.errors import RequestError
from sdstudio.engine.passes import PassRunner
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest

BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=5, cfg_scale=5.0, sampler="Euler",
                         scheduler="normal", width=64, height=64, seed=11)


def pixels(result) -> list[np.ndarray]:
    return [np.asarray(image) for image in result.images]


@pytest.fixture
def spy(monkeypatch):
    """The context of every UNet call (batch of [sub-prompts...; negative])."""
    seen: list[torch.Tensor] = []
    original = PassRunner.unet_fn

    def recording(self, x, t, context, y=None, residuals=None):
        seen.append(context.detach().clone())
        return original(self, x, t, context, y, residuals)

    monkeypatch.setattr(PassRunner, "unet_fn", recording)
    return seen


def encoded(model, text: str) -> torch.Tensor:
    return model.text.prompts.encode(text, 1).context[0]


def test_editing_switches_at_a1111s_step_and_not_before(tiny_model, spy):
    generate(tiny_model, BASE.replace(prompt="[a red apple:a blue car:2]"))
    apple, car = encoded(tiny_model, "a red apple"), encoded(tiny_model, "a blue car")
    assert not torch.equal(apple, car)
    assert len(spy) == 5 and all(c.shape[0] == 2 for c in spy)
    # schedule [(2, apple), (5, car)]: model calls 0, 1, 2 use the apple (A1111's `call <= until`)
    assert [torch.equal(c[0], apple) for c in spy] == [True, True, True, False, False]
    assert all(torch.equal(c[0], car) for c in spy[3:])
    blurry = encoded(tiny_model, "blurry")
    assert all(torch.equal(c[1], blurry) for c in spy)


def test_alternation_cycles(tiny_model, spy):
    generate(tiny_model, BASE.replace(prompt="[a red apple|a blue car|a green tree]", steps=6))
    names = {"apple": "a red apple", "car": "a blue car", "tree": "a green tree"}
    which = [next(k for k, v in names.items() if torch.equal(c[0], encoded(tiny_model, v))) for c in spy]
    assert which == ["apple", "apple", "car", "tree", "apple", "car"]


def test_second_order_samplers_count_model_calls_like_a1111(tiny_model, spy):
    # Heun calls the model 2 * steps - 1 times; A1111's counter goes on past the schedule and wraps to its first
    generate(tiny_model, BASE.replace(prompt="[a red apple|a blue car]", steps=3, sampler="Heun"))
    apple, car = encoded(tiny_model, "a red apple"), encoded(tiny_model, "a blue car")
    assert [torch.equal(c[0], apple) for c in spy] == [True, True, False, True, True]
    assert torch.equal(spy[2][0], car)


def test_img2img_schedules_over_the_requests_steps_like_a1111(tiny_model, spy):
    from PIL import Image

    # strength 0.5 of 6 steps samples t_enc + 1 = 4; the fraction 0.5 is of the 6 steps (step 3), so calls 0..3
    # all get `a` (of the 4 sampled steps it would be step 2, and call 3 would get `b`)
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    generate(tiny_model, BASE.replace(prompt="[a red apple:a blue car:0.5]", steps=6, init_image=init, strength=0.5))
    apple = encoded(tiny_model, "a red apple")
    assert len(spy) == 4 and all(torch.equal(c[0], apple) for c in spy)


def test_negative_prompt_editing(tiny_model, spy):
    generate(tiny_model, BASE.replace(negative_prompt="[blurry:ugly, dark:1]"))
    blurry, ugly = encoded(tiny_model, "blurry"), encoded(tiny_model, "ugly, dark")
    assert [torch.equal(c[1], blurry) for c in spy] == [True, True, False, False, False]
    assert all(torch.equal(c[1], ugly) for c in spy[2:])


def test_each_distinct_text_is_encoded_once(tiny_model, monkeypatch):
    calls = []
    original = PromptEncoder.encode

    def counting(self, prompt, clip_skip=1):
        calls.append(prompt)
        return original(self, prompt, clip_skip)

    monkeypatch.setattr(PromptEncoder, "encode", counting)
    generate(tiny_model, BASE.replace(prompt="[a red apple|a blue car]", steps=8, batch_size=2))
    assert sorted(calls) == sorted(["a red apple", "a blue car", "blurry"])


class OldCFG:
    """CFG as the engine computed it before prompt editing: one fixed (cond, uncond) pair, per image."""

    def __init__(self, denoiser, cond, uncond, scale, extra, should_cancel, residuals, schedule=None):
        self.denoiser, self.cond, self.uncond, self.scale = denoiser, cond, uncond, scale

    def __call__(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        out = []
        for i in range(x.shape[0]):
            both = UNetConditioning(torch.cat([self.cond.context, self.uncond.context]))
            d = self.denoiser(torch.cat([x[i:i + 1]] * 2), torch.cat([sigma[i:i + 1]] * 2), both)
            c, u = d.chunk(2)
            out.append(u + self.scale * (c - u))
        return torch.cat(out)


@pytest.mark.parametrize("prompt", ["a red apple, (shiny:1.3), [dull] BREAK on a table",
                                    "[a red apple:a red apple:2]", "a red apple :1", "a red apple  \n"])
def test_unchanged_prompts_give_todays_pixels(tiny_model, monkeypatch, prompt):
    latents = []
    decode = PassRunner.decode
    monkeypatch.setattr(PassRunner, "decode", lambda self, x: latents.append(x.clone()) or decode(self, x))
    req = BASE.replace(prompt=prompt, batch_size=2)
    ours = pixels(generate(tiny_model, req))
    monkeypatch.setattr(passes, "CFGDenoiser", OldCFG)
    plain = prompt.replace("[a red apple:a red apple:2]", "a red apple").replace(" :1", "")
    before = pixels(generate(tiny_model, req.replace(prompt=plain)))
    assert all(np.array_equal(a, b) for a, b in zip(ours, before, strict=True))
    assert torch.equal(latents[0], latents[1])


def test_and_combines_guided_predictions_in_one_call_per_image(tiny_model, spy, monkeypatch):
    latents = []
    decode = PassRunner.decode
    monkeypatch.setattr(PassRunner, "decode", lambda self, x: latents.append(x.clone()) or decode(self, x))
    req = BASE.replace(prompt="a red apple :1.0 AND a blue car :0.8", steps=3)
    images = pixels(generate(tiny_model, req))
    assert len(spy) == 3 and all(c.shape[0] == 3 for c in spy)
    apple, car, blurry = (encoded(tiny_model, t) for t in ("a red apple", " a blue car", "blurry"))
    assert all(torch.equal(c[0], apple) and torch.equal(c[1], car) and torch.equal(c[2], blurry) for c in spy)
    # an independent combination, each prediction from its own UNet call: uncond + sum w_i * cfg * (c_i - u)
    class Composable:
        def __init__(self, denoiser, cond, uncond, scale, extra, should_cancel, residuals, schedule=None):
            self.denoiser, self.scale, self.now = denoiser, scale, schedule(0)

        def __call__(self, x, sigma):
            sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
            out = []
            for i in range(x.shape[0]):
                one = (x[i:i + 1], sigma[i:i + 1])
                u = self.denoiser(*one, self.now.uncond)
                total = u.clone()
                for cond, weight in self.now.conds:
                    total += weight * self.scale * (self.denoiser(*one, cond) - u)
                out.append(total)
            return torch.cat(out)

    monkeypatch.setattr(passes, "CFGDenoiser", Composable)
    ref = pixels(generate(tiny_model, req))
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(images, ref, strict=True))
    torch.testing.assert_close(latents[0], latents[1], rtol=1e-4, atol=1e-4)
    single = pixels(generate(tiny_model, BASE.replace(steps=3)))
    assert not np.array_equal(images[0], single[0])


def test_a_batch_member_equals_its_batch_of_one_run(tiny_model):
    req = BASE.replace(prompt="[a red apple|a blue car] AND a green tree :0.5", negative_prompt="[blurry::2]",
                       batch_size=2, steps=4)
    batch = pixels(generate(tiny_model, req))
    alone = pixels(generate(tiny_model, req.replace(seed=BASE.seed + 1, batch_size=1)))
    assert np.array_equal(batch[1], alone[0])
    assert not np.array_equal(batch[0], batch[1])


def test_hostile_prompt_fails_in_one_line(tiny_model):
    with pytest.raises(RequestError, match="deep"):
        generate(tiny_model, BASE.replace(prompt="(" * 10_000 + "x"))


def sdxl_stack():
    from sdstudio.engine.families import family
    from sdstudio.engine.text_loading import TextStack
    from tests.engine.test_conditioning import sdxl_prompt_encoder

    _, clip_l, bigg = sdxl_prompt_encoder()
    return TextStack([clip_l, bigg], family("sdxl"), torch.float32)


@pytest.mark.parametrize(("prompt", "negative"), [("a cat", "blurry"), ("a cat " * 40, ""), ("a cat", "dark " * 90)])
def test_sdxl_plain_prompts_give_the_pair_of_today(prompt, negative):
    from sdstudio.engine.step_conditioning import scheduled_conditioning

    stack = sdxl_stack()
    cond, uncond = stack.conditioning(prompt, negative, 1, (64, 96))
    now = scheduled_conditioning(stack, prompt, negative, 1, (64, 96), 4, torch.device("cpu")).at(2)
    ((ours, weight),) = now.conds
    assert weight == 1.0
    for a, b in ((ours, cond), (now.uncond, uncond)):
        assert torch.equal(a.context, b.context) and torch.equal(a.y, b.y)


def test_sdxl_schedules_pad_to_one_chunk_count_and_an_emptied_negative_is_zeros():
    from sdstudio.engine.step_conditioning import scheduled_conditioning

    stack = sdxl_stack()
    sched = scheduled_conditioning(stack, "[a cat:" + "a dog " * 40 + ":1]", "[ugly::2]", 1, (64, 64), 4,
                                   torch.device("cpu"))
    assert sched.texts == 4  # two prompt texts, two negative texts ("ugly" and "")
    early, late = sched.at(0), sched.at(3)
    shapes = {c.context.shape for c, _ in early.conds + late.conds} | {early.uncond.context.shape}
    assert shapes == {(1, 154, 80)}
    assert not torch.equal(early.conds[0][0].context, late.conds[0][0].context)
    assert bool(early.uncond.context.abs().sum() > 0) and torch.count_nonzero(late.uncond.context) == 0
    assert torch.count_nonzero(late.uncond.y[:, :24]) == 0  # the pooled part; the size embeddings stay
