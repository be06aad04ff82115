"""transformers' CLIP tokenizer and text models as references (test-only: nothing in sdstudio imports
transformers): the tokenizer over the shipped vocabulary, and a transformers copy of an engine CLIP model for
diffusers' loaders, which need transformers' classes."""

from __future__ import annotations

import json
from functools import lru_cache

import transformers

from sdstudio.engine import clip_text
from sdstudio.engine.tokenizer import CONTEXT_LENGTH
from sdstudio.paths import tokenizer_dir


def new_reference_tokenizer() -> transformers.CLIPTokenizer:
    folder = tokenizer_dir()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line]
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CONTEXT_LENGTH)


@lru_cache(maxsize=1)
def reference_tokenizer() -> transformers.CLIPTokenizer:
    return new_reference_tokenizer()


def reference_copy(model: clip_text.CLIPTextModel | clip_text.CLIPTextModelWithProjection):
    """The transformers model with the same config and weights (the state-dict names are the same)."""
    config = transformers.CLIPTextConfig(**vars(model.config))
    projection = isinstance(model, clip_text.CLIPTextModelWithProjection)
    ref = (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(config)
    ref.load_state_dict(model.state_dict())
    return ref.eval()
