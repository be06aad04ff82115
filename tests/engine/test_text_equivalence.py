"""Our TextEncoder (transformers CLIP + openclip_to_transformers) against an independent OpenCLIP text tower.

The reference is written here from OpenCLIP's `TextTransformer`/`ResidualAttentionBlock`: token_embedding +
positional_embedding, pre-LN resblocks of nn.MultiheadAttention (stacked in_proj) under a causal mask and an
MLP (c_fc, activation, c_proj), ln_final, and `x[arange, tokens.argmax(-1)] @ text_projection` for pooling.
It reads the raw OpenCLIP keys, so a wrong rename, split or transpose shows up as a difference.
Full-size runs (CLIP-L, OpenCLIP-H, bigG with random weights) are marked slow; run them under the lock:
`flock /tmp/sdstudio-big.lock pytest -m slow tests/engine/test_text_equivalence.py`.
"""

import pytest
import torch
from torch import nn

from sdstudio.engine.clip_text import CLIPTextConfig
from sdstudio.engine.text_encoder import (
    _config,
    build_text_encoder,
    clip_l_config,
    openclip_bigg_config,
    openclip_h_config,
    openclip_to_transformers,
)
from sdstudio.engine.tokenizer import EOS, OPENCLIP_PAD, pad_chunk, tokenize

PROMPTS = ["a photo of a cat", "masterpiece, best quality, a castle on a hill at sunset, detailed", ""]


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class ReferenceBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp: int, act):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(width, mlp), "c_proj": nn.Linear(mlp, width)})
        self.act = act

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp["c_proj"](self.act(self.mlp["c_fc"](self.ln_2(x))))


class ReferenceOpenCLIPText(nn.Module):
    def __init__(self, width, layers, heads, mlp, proj, act, vocab=49408, context=77):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            ReferenceBlock(width, heads, mlp, act) for _ in range(layers)
        )
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, proj))

    def forward(self, tokens):
        """Returns the output of every resblock (pre ln_final) and the pooled projection."""
        n = tokens.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1)
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        outputs = []
        for block in self.transformer.resblocks:
            x = block(x, mask)
            outputs.append(x)
        pooled = self.ln_final(x)[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection
        return outputs, pooled


def random_openclip_state(width, layers, mlp, proj, seed=0, vocab=49408, context=77):
    """Random OpenCLIP-layout text weights, scaled like a trained tower so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    state = {
        "token_embedding.weight": randn(vocab, width),
        "positional_embedding": randn(context, width, std=0.01),
        "ln_final.weight": 1 + randn(width, std=0.1),
        "ln_final.bias": randn(width),
        "text_projection": randn(width, proj, std=width**-0.5),
        "logit_scale": torch.tensor(4.6052),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state |= {
            p + "ln_1.weight": 1 + randn(width, std=0.1),
            p + "ln_1.bias": randn(width),
            p + "attn.in_proj_weight": randn(3 * width, width, std=width**-0.5),
            p + "attn.in_proj_bias": randn(3 * width),
            p + "attn.out_proj.weight": randn(width, width, std=width**-0.5),
            p + "attn.out_proj.bias": randn(width),
            p + "ln_2.weight": 1 + randn(width, std=0.1),
            p + "ln_2.bias": randn(width),
            p + "mlp.c_fc.weight": randn(mlp, width, std=width**-0.5),
            p + "mlp.c_fc.bias": randn(mlp),
            p + "mlp.c_proj.weight": randn(width, mlp, std=mlp**-0.5),
            p + "mlp.c_proj.bias": randn(width),
        }
    return state


def reference_from_state(config: CLIPTextConfig, state) -> ReferenceOpenCLIPText:
    act = quick_gelu if config.hidden_act == "quick_gelu" else nn.functional.gelu
    with torch.device("meta"):
        ref = ReferenceOpenCLIPText(
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads,
            config.intermediate_size,
            config.projection_dim,
            act,
            config.vocab_size,
        )
    ref.load_state_dict({k: v for k, v in state.items() if k != "logit_scale"}, strict=True, assign=True)
    return ref.eval()


def tokens_for(pad: int) -> torch.Tensor:
    return torch.tensor([pad_chunk(ids, pad) for ids in tokenize(PROMPTS)])


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def check_equivalence(config: CLIPTextConfig, pad: int, tolerance: float = 1e-4) -> dict[str, float]:
    state = random_openclip_state(
        config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.projection_dim
    )
    ref = reference_from_state(config, state)
    errors = {}
    tokens = tokens_for(pad)
    with torch.no_grad():
        outputs, ref_pooled = ref(tokens)
        encoder = build_text_encoder(
            config, openclip_to_transformers(state), pad_token=pad, layer_mode="last", projection=True
        )
        for mode in ("last", "penultimate", "penultimate_no_norm"):
            encoder.layer_mode = mode
            for clip_skip in (1, 2):
                hidden, pooled = encoder(tokens, clip_skip)
                back = clip_skip - 1 + (0 if mode == "last" else 1)
                expected = outputs[-1 - back]
                if mode != "penultimate_no_norm":
                    expected = ref.ln_final(expected)
                errors[f"{mode}/skip{clip_skip}"] = relative_error(hidden, expected)
            errors["pooled"] = relative_error(pooled, ref_pooled)
    assert max(errors.values()) <= tolerance, errors
    return errors


def tiny_config(act: str) -> CLIPTextConfig:
    return _config(hidden=64, layers=3, heads=2, intermediate=128, act=act, proj=48)


@pytest.mark.parametrize(("act", "pad"), [("gelu", OPENCLIP_PAD), ("quick_gelu", EOS)])
def test_tiny_encoder_matches_independent_openclip_reference(act, pad):
    check_equivalence(tiny_config(act), pad, tolerance=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "config", "pad"),
    [
        ("CLIP-L", clip_l_config(), EOS),
        ("OpenCLIP-H", openclip_h_config(), OPENCLIP_PAD),
        ("OpenCLIP-bigG", openclip_bigg_config(), OPENCLIP_PAD),
    ],
)
def test_full_size_encoder_matches_independent_openclip_reference(name, config, pad):
    errors = check_equivalence(config, pad)
    print(name, {k: f"{v:.2e}" for k, v in errors.items()})
