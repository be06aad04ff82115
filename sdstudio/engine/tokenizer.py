"""The CLIP BPE tokenizer (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") built offline from the files shipped in resources/tokenizer/, and the 77-token chunk layout
every Stable Diffusion text encoder reads: BOS, up to 75 prompt tokens, EOS, padding.

SD 1.x (and SDXL's first encoder, a transformers CLIPTextModel) pad with EOS; OpenCLIP encoders (SD 2.x,
SDXL's bigG) pad with token 0, as `open_clip.tokenize` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from sdstudio.engine.clip_tokenizer import CLIPTokenizer
from sdstudio.engine.clip_vocab import BOS, COMMA, EOS, OPENCLIP_PAD, VOCAB_SIZE  # noqa: F401 (re-exported)
from sdstudio.engine.prompt_grammar import CHUNK_TOKENS
from sdstudio.paths import tokenizer_dir

CONTEXT_LENGTH = CHUNK_TOKENS + 2


@lru_cache(maxsize=1)
def load_tokenizer() -> CLIPTokenizer:
    """The CLIP tokenizer from resources/tokenizer/{vocab.json, merges.txt}; never touches the network."""
    return CLIPTokenizer.from_folder(tokenizer_dir(), model_max_length=CONTEXT_LENGTH)


def tokenize(texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without BOS/EOS and without truncation (chunking is the caller's job)."""
    if not texts:
        return []
    return load_tokenizer()(list(texts), add_special_tokens=False, truncation=False)["input_ids"]


def pad_chunk(tokens: Sequence[int], pad_token: int) -> list[int]:
    """One encoder input: BOS + tokens + EOS, then `pad_token` up to 77 positions."""
    if len(tokens) > CHUNK_TOKENS:
        raise ValueError(f"a chunk holds at most {CHUNK_TOKENS} tokens, got {len(tokens)}")
    return [BOS, *tokens, EOS] + [pad_token] * (CHUNK_TOKENS - len(tokens))
