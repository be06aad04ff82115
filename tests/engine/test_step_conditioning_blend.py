"""step_conditioning with a blend prompt (a prompt walk's frame): each positive text moved towards it."""

import pytest
import torch

from sdstudio.engine.conditioning import PromptEncoder, lerp_embeddings
from sdstudio.engine.denoiser import UNetConditioning
from sdstudio.engine.errors import RequestError
from sdstudio.engine.step_conditioning import scheduled_conditioning
from tests.engine.test_conditioning import tiny_encoder


class Stack:
    def __init__(self):
        self.prompts = PromptEncoder([tiny_encoder()])

    def unet_conditioning(self, embedding, size):
        return UNetConditioning(embedding.context)


def run(stack, prompt, blend=None, negative="blurry", steps=10):
    return scheduled_conditioning(stack, prompt, negative, 1, (64, 64), steps, torch.device("cpu"), blend)


def test_blend_zero_is_the_plain_conditioning_and_t_lerps_towards_the_other_prompt():
    stack = Stack()
    plain = run(stack, "a red cat").at(0)
    zero = run(stack, "a red cat", ("a dog " * 60, 0.0)).at(0)
    assert torch.equal(plain.conds[0][0].context, zero.conds[0][0].context)
    blended = run(stack, "a red cat", ("a dog " * 60, 0.3)).at(0)
    enc = stack.prompts
    expected = lerp_embeddings(0.3, enc.encode("a red cat"), enc.encode("a dog " * 60), enc.encode(""))
    assert torch.equal(blended.conds[0][0].context, expected.context)
    assert blended.uncond.context.shape == expected.context.shape  # the negative padded to 2 chunks too
    assert not torch.equal(blended.uncond.context[:, :77], blended.conds[0][0].context[:, :77])


def test_each_scheduled_text_moves_towards_the_blend_and_prompts_are_encoded_once():
    stack = Stack()
    calls = []
    real = stack.prompts._encode
    stack.prompts._encode = lambda prompt, clip_skip: calls.append(prompt) or real(prompt, clip_skip)
    for t in (0.25, 0.5, 0.75):
        conditioning = run(stack, "[a red cat:a green cat:5]", ("a dog", t))
        enc = stack.prompts
        for call, text in ((0, "a red cat"), (9, "a green cat")):
            expected = lerp_embeddings(t, enc.encode(text), enc.encode("a dog"), enc.encode(""))
            assert torch.equal(conditioning.at(call).conds[0][0].context, expected.context)
    assert sorted(calls) == sorted(["a red cat", "a green cat", "a dog", "", "blurry"])


@pytest.mark.parametrize("other", ["[a:b:3]", "[a|b]", "a AND b"])
def test_a_blend_prompt_that_changes_over_steps_or_holds_and_is_refused(other):
    with pytest.raises(RequestError, match="cannot use prompt editing, alternation or AND"):
        run(Stack(), "a cat", (other, 0.5))


def test_sdxl_blend_moves_the_pooled_part_of_y_too_and_an_empty_negative_stays_zeros():
    from sdstudio.engine.conditioning import sdxl_y
    from tests.engine.test_step_conditioning import sdxl_stack

    stack = sdxl_stack()
    enc = stack.prompts
    blended = scheduled_conditioning(stack, "a cat", "", 1, (64, 64), 4, torch.device("cpu"),
                                     ("a dog " * 40, 0.25)).at(0)
    expected = lerp_embeddings(0.25, enc.encode("a cat"), enc.encode("a dog " * 40), enc.encode(""))
    cond = blended.conds[0][0]
    assert torch.equal(cond.context, expected.context) and cond.context.shape[1] == 154
    assert torch.equal(cond.y, sdxl_y(expected.pooled, (64, 64), (0, 0), (64, 64)))
    ends = [enc.encode(p).pooled for p in ("a cat", "a dog " * 40)]
    assert not torch.equal(expected.pooled, ends[0]) and not torch.equal(expected.pooled, ends[1])
    assert torch.count_nonzero(blended.uncond.context) == 0 and blended.uncond.context.shape == cond.context.shape
