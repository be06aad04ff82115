"""A job's conditioning per sampler step: prompt editing, alternation and composable `AND` (prompt_schedule)
turned into UNet conditionings, each distinct text encoded once per job.

As A1111 (`get_multicond_learned_conditioning`): the prompt is split at AND into weighted sub-prompts, each
scheduled on its own; the negative prompt is scheduled but not split. All encodings are padded to the
largest chunk count with encodings of the empty prompt (A1111's pad_cond_uncond; A1111 pads sub-prompts
among themselves by repeating their last vector instead, a difference only when sub-prompts of one step
differ in chunk count), so every UNet call can batch them. A prompt without any of this syntax gives exactly
the (cond, uncond) pair of PromptEncoder.encode_pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdstudio.engine.conditioning import PromptEmbedding, lerp_embeddings, pad_chunks
from sdstudio.engine.denoiser import UNetConditioning
from sdstudio.engine.prompt_schedule import entry_for, schedule, split_and
from sdstudio.engine.walk import blend_text


@dataclass(frozen=True)
class StepConditioning:
    """What one model call uses: the sub-prompts' conditionings with their weights, and the negative's."""

    conds: tuple[tuple[UNetConditioning, float], ...]
    uncond: UNetConditioning


class ScheduledConditioning:
    """`at(call)` -> StepConditioning for model call `call` (0-based, A1111's CFGDenoiser step counter)."""

    def __init__(self, subs: list[tuple[list[tuple[int, str]], float]], negative: list[tuple[int, str]],
                 table: dict[tuple[bool, str], UNetConditioning]) -> None:
        self.subs, self.negative, self.table = subs, negative, table
        self._made: dict[tuple[int, ...], StepConditioning] = {}

    @property
    def texts(self) -> int:
        """How many distinct texts were encoded."""
        return len(self.table)

    def at(self, call: int) -> StepConditioning:
        picks = tuple(entry_for(entries, call) for entries, _ in self.subs) + (entry_for(self.negative, call),)
        made = self._made.get(picks)
        if made is None:
            conds = tuple((self.table[False, entries[k][1]], weight)
                          for (entries, weight), k in zip(self.subs, picks, strict=False))
            made = StepConditioning(conds, self.table[True, self.negative[picks[-1]][1]])
            self._made[picks] = made
        return made

    def __call__(self, call: int) -> StepConditioning:
        return self.at(call)


def scheduled_conditioning(text_stack, prompt: str, negative: str, clip_skip: int, size: tuple[int, int],
                           steps: int, device: torch.device,
                           blend: tuple[str, float] | None = None, first: int | None = None) -> ScheduledConditioning:
    """Parse, encode (once per distinct text) and pad; `text_stack` is text_loading.TextStack, `size` (h, w).

    `blend` (other prompt, t), t > 0: every positive text's encoding is moved by t towards the other
    prompt's (conditioning.lerp_embeddings), a prompt walk's frame (walk.py); the other prompt must be plain
    text (no editing, alternation or AND), one point to move towards. `first`: the first pass's steps when
    this is a hires pass (A1111 counts its edits on from the first pass, prompt_schedule.when_step)."""
    encoder = text_stack.prompts
    subs = [(schedule(sub.text, steps, first), sub.weight) for sub in split_and(prompt)]
    negatives = schedule(negative, steps, first)
    encoded: dict[tuple[bool, str], PromptEmbedding] = {}
    for entries, _ in subs:
        for _, text in entries:
            if (False, text) not in encoded:
                encoded[False, text] = encoder.encode(text, clip_skip)
    if blend is not None and blend[1] != 0:
        other = encoder.encode(blend_text(blend[0], steps), clip_skip)
        empty = encoder.encode("", clip_skip)
        for key in [key for key in encoded if not key[0]]:
            encoded[key] = lerp_embeddings(blend[1], encoded[key], other, empty)
    zero_negative = []
    for _, text in negatives:
        if (True, text) in encoded:
            continue
        if encoder.zero_empty_negative and not text.strip():
            zero_negative.append(text)  # SDXL: zeros shaped like the prompt's (after padding)
        else:
            encoded[True, text] = encoder.encode(text, clip_skip)
    chunks = max(e.chunks for e in encoded.values())
    if any(e.chunks != chunks for e in encoded.values()):
        empty = encoder.encode("", clip_skip)
        encoded = {key: pad_chunks(e, chunks, empty) for key, e in encoded.items()}
    if zero_negative:
        first = next(e for (neg, _), e in encoded.items() if not neg)
        zeros = PromptEmbedding(torch.zeros_like(first.context),
                                None if first.pooled is None else torch.zeros_like(first.pooled))
        encoded.update({(True, text): zeros for text in zero_negative})
    table = {key: text_stack.unet_conditioning(e, size).to(device) for key, e in encoded.items()}
    return ScheduledConditioning(subs, negatives, table)
