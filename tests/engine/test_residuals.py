"""Skip and middle residuals (ControlNet semantics): in the UNet against diffusers, and through the CFG split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdstudio.engine.denoiser import CFGDenoiser, Denoiser, UNetConditioning
from sdstudio.engine.pipeline import generate
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.residuals import Residuals
from sdstudio.engine.schedules import ModelSampling
from tests.engine.test_unet import TIME_DIM, inputs, run_ours
from tests.engine.test_unet import tiny_model as tiny_unet
from tests.engine.toy_unet import toy_conditioning
from tests.engine.unet_reference import diffusers_twin, sdxl_y


def skip_shapes(unet, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y=None) -> list[tuple[int, ...]]:
    """The shape of every input block's output, seen by hooks on one forward pass."""
    shapes = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
             for b in [*unet.input_blocks, unet.middle_block]]
    with torch.no_grad():
        unet(x, t, context, y)
    for hook in hooks:
        hook.remove()
    return shapes


def random_residuals(shapes: list[tuple[int, ...]], seed: int, scale: float = 1.0) -> Residuals:
    g = torch.Generator().manual_seed(seed)
    tensors = [scale * torch.randn(s, generator=g) for s in shapes]
    return Residuals(tuple(tensors[:-1]), tensors[-1])


def our_args(name: str) -> tuple:
    args = inputs(tiny_unet(name).config)
    y = None if "text_embeds" not in args else sdxl_y(args["text_embeds"], args["time_ids"], TIME_DIM)
    return args, y


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_zero_residuals_leave_the_output_exactly_unchanged(name):
    model = tiny_unet(name)
    args, y = our_args(name)
    shapes = skip_shapes(model, args["x"], args["timesteps"], args["context"], y)
    zeros = Residuals(tuple(torch.zeros(s) for s in shapes[:-1]), torch.zeros(shapes[-1]))
    with torch.no_grad():
        out = model(args["x"], args["timesteps"], args["context"], y, residuals=zeros)
    assert torch.equal(out, run_ours(model, args))


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd1-inpaint"])
def test_random_residuals_match_diffusers_controlnet_inputs(name):
    model = tiny_unet(name)
    twin = diffusers_twin(model, TIME_DIM)
    args, y = our_args(name)
    shapes = skip_shapes(model, args["x"], args["timesteps"], args["context"], y)
    res = random_residuals(shapes, seed=3)
    kwargs = {}
    if y is not None:
        kwargs["added_cond_kwargs"] = {"text_embeds": args["text_embeds"], "time_ids": args["time_ids"]}
    with torch.no_grad():
        ours = model(args["x"], args["timesteps"], args["context"], y, residuals=res)
        expected = twin(args["x"], args["timesteps"], args["context"], down_block_additional_residuals=res.skips,
                        mid_block_additional_residual=res.middle, **kwargs).sample
        plain = run_ours(model, args)
    assert (ours - expected).abs().max() <= 1e-4 * expected.std()
    assert (ours - plain).abs().max() > 1e-2 * expected.std()  # the residuals did something


def test_middle_residual_alone_and_wrong_skip_count():
    model = tiny_unet("sd1")
    args, _ = our_args("sd1")
    shapes = skip_shapes(model, args["x"], args["timesteps"], args["context"])
    wrong = Residuals(tuple(torch.zeros(s) for s in shapes[:2]), torch.ones(shapes[-1]))
    with pytest.raises(ValueError, match="2 skip residuals for a UNet with"):
        model(args["x"], args["timesteps"], args["context"], residuals=wrong)
    middle_only = Residuals((), torch.ones(shapes[-1]))  # no skips at all: none added (T2I-Adapter's case)
    zero_skips = Residuals(tuple(torch.zeros(s) for s in shapes[:-1]), torch.ones(shapes[-1]))
    with torch.no_grad():
        out = model(args["x"], args["timesteps"], args["context"], residuals=zero_skips)
        alone = model(args["x"], args["timesteps"], args["context"], residuals=middle_only)
    assert not torch.allclose(out, run_ours(model, args)) and torch.equal(alone, out)


def test_encoder_residuals_of_the_wrong_shape_or_block_are_refused():
    model = tiny_unet("sd1")
    args, _ = our_args("sd1")
    shapes = skip_shapes(model, args["x"], args["timesteps"], args["context"])
    x, t, context = args["x"], args["timesteps"], args["context"]
    with pytest.raises(ValueError, match="encoder residual of shape .* for input block 1"):
        model(x, t, context, residuals=Residuals((), None, ((1, torch.ones(shapes[3])),)))
    with pytest.raises(ValueError, match="encoder residuals for input blocks \\[9\\]"):
        model(x, t, context, residuals=Residuals((), None, ((9, torch.ones(shapes[1])),)))


def test_residuals_refuse_tensors_of_different_batch_and_add_up():
    with pytest.raises(ValueError, match="batch size"):
        Residuals((torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 2, 2)))
    a = Residuals((torch.ones(1, 2, 4, 4),), torch.ones(1, 2, 2, 2))
    b = Residuals((2 * torch.ones(1, 2, 4, 4),), None)
    total = a + b
    assert torch.equal(total.skips[0], 3 * torch.ones(1, 2, 4, 4)) and torch.equal(total.middle, a.middle)


class RecordingUNet:
    """unet(x, t, context, y=None, residuals=None): a function of x and the middle residual; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, context, y=None, residuals=None):
        self.calls.append({"x": x, "t": t, "context": context, "residuals": residuals})
        out = torch.tanh(x[:, :4]) + context.mean(dim=(1, 2))[:, None, None, None]
        return out if residuals is None else out + residuals.middle


def labelled(batch: int) -> Residuals:
    """Residuals whose value in row i is i + 1, so where each row goes is visible."""
    rows = torch.arange(1, batch + 1, dtype=torch.float32)[:, None, None, None]
    return Residuals((rows.expand(batch, 2, 8, 8).clone(),), rows.expand(batch, 4, 8, 8).clone())


def cfg(unet, residuals, on_uncond=True, scale=5.0, cond_batch=1):
    return CFGDenoiser(Denoiser(unet, ModelSampling()), toy_conditioning(1, batch=cond_batch),
                       toy_conditioning(2, batch=cond_batch), scale, residuals=residuals,
                       residuals_on_uncond=on_uncond)


@pytest.mark.parametrize("on_uncond", [True, False])
def test_fixed_residuals_of_each_image_go_to_its_call_on_one_or_both_halves(on_uncond):
    unet = RecordingUNet()
    x, sigma = torch.randn(3, 4, 8, 8), torch.tensor([2.0])
    cfg(unet, labelled(3), on_uncond)(x, sigma)
    assert len(unet.calls) == 3
    for i, call in enumerate(unet.calls):
        middle = call["residuals"].middle
        assert middle.shape == (2, 4, 8, 8)
        assert torch.all(middle[0] == i + 1)
        assert torch.all(middle[1] == (i + 1 if on_uncond else 0))
        assert torch.all(call["residuals"].skips[0][1] == (i + 1 if on_uncond else 0))


def test_residuals_for_one_image_apply_to_every_image_and_without_guidance_to_batch_one():
    unet = RecordingUNet()
    cfg(unet, labelled(1), scale=1.0)(torch.randn(2, 4, 8, 8), torch.tensor([2.0]))
    assert [c["residuals"].middle.shape[0] for c in unet.calls] == [1, 1]
    assert all(torch.all(c["residuals"].middle == 1) for c in unet.calls)


def test_residuals_for_the_wrong_batch_are_refused():
    with pytest.raises(ValueError, match="3 images, asked for image 3"):
        cfg(RecordingUNet(), labelled(3))(torch.randn(4, 4, 8, 8), torch.tensor([2.0]))


def test_guided_residuals_change_the_guided_result_as_the_formula_says():
    x, sigma, scale = torch.randn(1, 4, 8, 8), torch.tensor([2.0]), 5.0
    plain = cfg(RecordingUNet(), None, scale=scale)(x, sigma)
    both = cfg(RecordingUNet(), labelled(1), True, scale)(x, sigma)
    cond_only = cfg(RecordingUNet(), labelled(1), False, scale)(x, sigma)
    # eps-prediction: D = x - sigma * eps, and eps gains the middle residual (1 here) where applied.
    torch.testing.assert_close(both, plain - 2.0 * 1.0)
    torch.testing.assert_close(cond_only, plain - 2.0 * scale * 1.0)


@pytest.mark.parametrize("on_uncond", [True, False])
def test_a_residual_source_sees_exactly_each_call_s_batch(on_uncond):
    unet, asked = RecordingUNet(), []

    def source(x_in, t, cond: UNetConditioning):
        asked.append((x_in.clone(), t.clone(), cond.context.clone()))
        return Residuals((torch.zeros(x_in.shape[0], 2, 8, 8),), torch.full((x_in.shape[0], 4, 8, 8), 7.0))

    x = torch.randn(2, 4, 8, 8)
    cfg(unet, source, on_uncond)(x, torch.tensor([2.0]))
    assert len(asked) == 2
    for i, ((x_in, t, context), call) in enumerate(zip(asked, unet.calls, strict=True)):
        n = 2 if on_uncond else 1
        assert x_in.shape[0] == n and t.shape == (n,) and context.shape[0] == n
        torch.testing.assert_close(x_in, call["x"][:n])  # the UNet's own (scaled) input
        torch.testing.assert_close(x_in[0], x[i] / (2.0**2 + 1) ** 0.5)
        assert torch.all(call["residuals"].middle[0] == 7)
        assert torch.all(call["residuals"].middle[1] == (7 if on_uncond else 0))


BASE = GenerationRequest(prompt="a red apple", negative_prompt="blurry", steps=3, cfg_scale=5.0, sampler="Euler", scheduler="normal",
                         width=64, height=64, seed=7, batch_size=2)


def test_generate_passes_residuals_to_every_unet_call(tiny_model):
    unet = tiny_model.unet
    shapes = skip_shapes(unet, torch.zeros(1, 4, 8, 8), torch.zeros(1), torch.zeros(1, 77, unet.config.context_dim))
    zeros = Residuals(tuple(torch.zeros(s) for s in shapes[:-1]), torch.zeros(shapes[-1]))
    plain = generate(tiny_model, BASE).images
    same = generate(tiny_model, BASE, residuals=zeros).images
    pushed = generate(tiny_model, BASE, residuals=random_residuals(shapes, seed=1, scale=3.0)).images
    for a, b, c in zip(plain, same, pushed, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(c, dtype=np.int16)).max() > 0
