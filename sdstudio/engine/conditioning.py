"""Prompt -> cross-attention context (and SDXL's pooled vector), the way AUTOMATIC1111 builds it
(`modules/sd_hijack_clip.py`, `modules/sd_emphasis.py` "Original", `modules/sd_models_xl.py`).

1. Parse the emphasis syntax, tokenise and split into chunks of 75 tokens (prompt_grammar, shared with the
   UI's token counter): BREAK closes a chunk, a full chunk is cut after a comma within the last 20 tokens.
2. Each chunk becomes BOS + tokens + EOS + padding (77) and is encoded on its own; every token's output is
   multiplied by its weight, then the chunk is rescaled so its mean equals the unweighted mean (in float32).
3. Chunks are concatenated along the token axis: context [1, 77 * chunks, width]. SDXL concatenates its two
   encoders on the feature axis (768 + 1280 = 2048) and takes the pooled vector from bigG's first chunk.

Textual-inversion embeddings (embeddings.py, with `embeddings` set to an EmbeddingLibrary): a word naming one
takes one token slot per vector (prompt_grammar), and its vectors replace those slots' token embeddings in
each encoder (SDXL: clip_l's in the first, clip_g's in the second; TextEncoder.forward `inserts`). Without
an embedding in the prompt the encoders are called exactly as before.

For classifier-free guidance `encode_pair` pads the shorter of prompt and negative with encodings of the
empty prompt (A1111's "pad_cond_uncond"), so both run in one UNet batch. SDXL encodes an empty negative
prompt as zeros (A1111 `force_zero_negative_prompt`, diffusers `force_zeros_for_empty_prompt`).

Blending two prompts (`lerp_embeddings`; step_conditioning applies it to a request's blend prompt) is the
straight line between two points of CLIP's text space, what ComfyUI's ConditioningAverage node computes:
out = to * s + from * (1 - s) token by token, the pooled vector too. Here t = 0 is the prompt and t = 1 the other (ComfyUI's
`conditioning_to_strength` is t with "to" = the other). Where ComfyUI cuts or zero-pads "from" to the length of
"to", losing the end of a longer prompt, the shorter one is padded with empty-prompt chunks to the longer one's
chunk count, the padding above, so neither loses tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sdstudio.engine.clip_tokenizer import CLIPTokenizer
from sdstudio.engine.prompt_grammar import A1111_COMMA_BACKTRACK, Chunk, chunk_prompt
from sdstudio.engine.text_encoder import TextEncoder
from sdstudio.engine.tokenizer import CONTEXT_LENGTH, load_tokenizer, pad_chunk
from sdstudio.engine.unet import timestep_embedding

if TYPE_CHECKING:
    from sdstudio.engine.embeddings import Embedding, EmbeddingLibrary

SIZE_EMBED_DIM = 256  # sgm ConcatTimestepEmbedderND(outdim=256) for each SDXL size number


@dataclass(frozen=True)
class PromptEmbedding:
    """One prompt through the text encoders: context [1, 77 * chunks, width] (float32); pooled [1, proj] for
    SDXL, else None. What the UNet gets is built from it (denoiser.UNetConditioning)."""

    context: Tensor
    pooled: Tensor | None = None

    @property
    def chunks(self) -> int:
        return self.context.shape[1] // CONTEXT_LENGTH


def apply_emphasis(hidden: Tensor, weights: Tensor) -> Tensor:
    """A1111 "Original" emphasis on one chunk: hidden [77, D] * weights [77], then restore the mean.

    A chunk without weights is returned as is: rescaling by mean / mean would be a no-op, or NaN for an
    output whose mean is 0 (an untrained final layer norm).
    """
    hidden = hidden.float()
    if bool((weights == 1).all()):
        return hidden
    original_mean = hidden.mean()
    weighted = hidden * weights.to(hidden.device, torch.float32)[:, None]
    new_mean = weighted.mean()
    return weighted if new_mean == 0 else weighted * (original_mean / new_mean)


class PromptEncoder:
    """Turns prompts into PromptEmbedding with a family's 1 (SD 1.x / 2.x) or 2 (SDXL) text encoders.

    Results are cached by (prompt, clip_skip, patch_key, embeddings' state), so a new seed does not
    re-encode; `patch_key` identifies the weight patches on the encoders (set by LoadedModel.apply_patches),
    so a patched encoder is never served an unpatched encoding, and the state of the embedding library (its
    files' paths, sizes and mtimes) changes when an embedding a prompt may name is added or rewritten.
    Build a new PromptEncoder when the encoders themselves change. Cached tensors are shared: callers must
    not modify them in place.
    """

    def __init__(
        self,
        encoders: Sequence[TextEncoder],
        *,
        tokenizer: CLIPTokenizer | None = None,
        zero_empty_negative: bool = False,
        comma_backtrack: int = A1111_COMMA_BACKTRACK,
        cache_size: int = 32,
    ):
        if not encoders:
            raise ValueError("a PromptEncoder needs at least one text encoder")
        self.encoders = list(encoders)
        self.tokenizer = tokenizer or load_tokenizer()
        self.zero_empty_negative = zero_empty_negative
        self.comma_backtrack = comma_backtrack
        self.cache_size = cache_size
        self.patch_key: tuple = ()
        self.embeddings: EmbeddingLibrary | None = None  # set by the engine; None: no embeddings
        self._cache: OrderedDict[tuple[str, int, tuple, tuple], PromptEmbedding] = OrderedDict()

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(encoder.width for encoder in self.encoders)

    def encode(self, prompt: str, clip_skip: int = 1) -> PromptEmbedding:
        key = (prompt, clip_skip, self.patch_key, () if self.embeddings is None else self.embeddings.state)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = self._encode(prompt, clip_skip)
        self._cache[key] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def encode_pair(
        self, prompt: str, negative: str, clip_skip: int = 1
    ) -> tuple[PromptEmbedding, PromptEmbedding]:
        """(cond, uncond) with the same number of chunks."""
        cond = self.encode(prompt, clip_skip)
        if self.zero_empty_negative and not negative.strip():
            pooled = None if cond.pooled is None else torch.zeros_like(cond.pooled)
            return cond, PromptEmbedding(torch.zeros_like(cond.context), pooled)
        uncond = self.encode(negative, clip_skip)
        if cond.chunks == uncond.chunks:
            return cond, uncond
        empty = self.encode("", clip_skip)
        return pad_chunks(cond, uncond.chunks, empty), pad_chunks(uncond, cond.chunks, empty)

    def chunk_prompt(self, prompt: str) -> list[Chunk]:
        return self.layout(prompt)[0]

    def layout(self, prompt: str) -> tuple[list[Chunk], dict[str, Embedding]]:
        """The prompt's chunks and the embeddings they use, by name."""
        if self.embeddings is None:
            return chunk_prompt(prompt, self._tokenize, self.comma_backtrack), {}
        found: dict[str, Embedding] = {}
        lookup = self.embeddings.lookup(self.widths, found)
        return chunk_prompt(prompt, self._tokenize, self.comma_backtrack, lookup), found

    def embeddings_used(self, *prompts: str) -> tuple[tuple[str, str], ...]:
        """(name, A1111 short hash) of each embedding the prompts use, in order of first use; raises what
        encoding them would (a missing or mismatched embedding) before any work is done."""
        used: dict[str, str] = {}
        for prompt in prompts:
            for name, embedding in self.layout(prompt)[1].items():
                used.setdefault(name, embedding.short_hash)
        return tuple(used.items())

    def _tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]

    @torch.no_grad()
    def _encode(self, prompt: str, clip_skip: int) -> PromptEmbedding:
        chunks, found = self.layout(prompt)
        # BOS, EOS and padding keep weight 1
        weights = torch.ones(len(chunks), CONTEXT_LENGTH)
        for row, chunk in zip(weights, chunks, strict=True):
            row[1 : 1 + len(chunk.weights)] = torch.tensor(chunk.weights)
        contexts, pooled = [], None
        for index, encoder in enumerate(self.encoders):
            padded = [pad_chunk(chunk.tokens, encoder.pad_token) for chunk in chunks]
            tokens = torch.tensor(padded, device=encoder.device)
            # +1: BOS comes first in every chunk
            inserts = [(row, 1 + slot.start, found[slot.name].vectors_for(self.widths)[index])
                       for row, chunk in enumerate(chunks) for slot in chunk.embeddings]
            # without inserts the encoder is called exactly as before embeddings existed
            args = (tokens, clip_skip, inserts) if inserts else (tokens, clip_skip)
            hidden, pooled_out = encoder(*args)
            contexts.append(torch.cat([apply_emphasis(h, w) for h, w in zip(hidden, weights, strict=True)]))
            if pooled_out is not None:
                pooled = pooled_out[:1].float()
        return PromptEmbedding(torch.cat(contexts, dim=-1)[None], pooled)


def pad_chunks(cond: PromptEmbedding, chunks: int, empty: PromptEmbedding) -> PromptEmbedding:
    """`cond` with encodings of the empty prompt appended up to `chunks` chunks (A1111's padding)."""
    missing = chunks - cond.chunks
    if missing <= 0:
        return cond
    context = torch.cat([cond.context, *[empty.context] * missing], dim=1)
    return PromptEmbedding(context, cond.pooled)


def lerp_embeddings(t: float, a: PromptEmbedding, b: PromptEmbedding, empty: PromptEmbedding) -> PromptEmbedding:
    """(1 - t) * a + t * b per token (ComfyUI's ConditioningAverage with strength t towards b), both padded
    to a common chunk count with `empty` first; SDXL's pooled vector is blended the same way."""
    if a.context.shape[-1] != b.context.shape[-1] or (a.pooled is None) != (b.pooled is None):
        raise ValueError("cannot blend conditionings of different text encoders")
    chunks = max(a.chunks, b.chunks)
    a, b = pad_chunks(a, chunks, empty), pad_chunks(b, chunks, empty)
    pooled = None if a.pooled is None else (1 - t) * a.pooled + t * b.pooled
    return PromptEmbedding((1 - t) * a.context + t * b.context, pooled)


def sdxl_y(
    pooled: Tensor,
    original_size: tuple[int, int],
    crop: tuple[int, int],
    target_size: tuple[int, int],
) -> Tensor:
    """SDXL's `y` vector (Podell et al. 2023, "SDXL", section 2.2): pooled bigG text [B, 1280] followed by
    256-dim embeddings of original (h, w), crop (top, left) and target (h, w): [B, 2816].
    """
    numbers = torch.tensor([*original_size, *crop, *target_size], dtype=torch.float32, device=pooled.device)
    sizes = timestep_embedding(numbers, SIZE_EMBED_DIM).reshape(1, -1).to(pooled.dtype)
    return torch.cat([pooled, sizes.expand(pooled.shape[0], -1)], dim=1)
