"""CLIP's text transformer (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", section 2.4) in plain torch, so that running the engine never imports transformers.

Parameter names, outputs and numerics follow transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`
(5.x layout: CLIPTextModel holds `embeddings`, `encoder`, `final_layer_norm` at its top level; the projection
model nests one under `text_model.` next to `text_projection`), so checkpoints, LoRA names and the text
encoder's state-dict keys are unchanged. tests/engine/test_clip_text.py checks equality against transformers
with random weights in the SD 1.x, SD 2.x and SDXL shapes.

Each layer is pre-norm: x + attn(ln1(x)), then x + mlp(ln2(x)); attention is causal (a token sees itself
and the tokens before it). The pooled output is the final-normed hidden state at the end-of-text token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class CLIPTextConfig:
    """The text tower's shape; field names and defaults as transformers' CLIPTextConfig (ViT-B/32)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"the hidden size ({self.hidden_size}) is not a multiple of the number of "
                             f"attention heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.hidden_act!r}; "
                             f"choose one of: {', '.join(ACTIVATIONS)}")


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU (Hendrycks & Gimpel 2016, section 2)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}  # gelu: the exact erf form, as OpenCLIP


@dataclass
class CLIPTextOutput:
    """What transformers' BaseModelOutputWithPooling / CLIPTextModelOutput carry for the text tower.

    hidden_states: the embeddings, then each layer's output (num_hidden_layers + 1 tensors, the last one
    before the final layer norm), when asked for; text_embeds: the projected pooled output (WithProjection).
    """

    last_hidden_state: Tensor
    pooler_output: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    text_embeds: Tensor | None = None


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        # Given `_weight`, nn.Embedding skips its N(0, 1) init: init_weights sets the real one, and on the
        # meta device (how the engine builds models) normal_ would import torch._dynamo, seconds of a cold start.
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size,
                                            _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.position_embedding = nn.Embedding(
            config.max_position_embeddings, config.hidden_size,
            _weight=torch.empty(config.max_position_embeddings, config.hidden_size))
        positions = torch.arange(config.max_position_embeddings).unsqueeze(0)
        self.register_buffer("position_ids", positions, persistent=False)

    def forward(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[-1]
        if length > self.position_embedding.num_embeddings:
            limit = self.position_embedding.num_embeddings
            raise ValueError(f"a CLIP text input holds at most {limit} tokens, got {length}")
        return self.token_embedding(input_ids) + self.position_embedding(self.position_ids[:, :length])


class CLIPAttention(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.dropout = config.attention_dropout
        width = config.hidden_size
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=length > 1, scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.activation_fn = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))


class CLIPTextModel(nn.Module):
    """The text tower: token ids [B, L] -> CLIPTextOutput."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if not any(p.is_meta for p in self.parameters()):
            init_weights(self, config)

    def forward(self, input_ids: Tensor, output_hidden_states: bool = False) -> CLIPTextOutput:
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        x = self.embeddings(input_ids)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        last = self.final_layer_norm(x)
        rows = torch.arange(last.shape[0], device=last.device)
        ids = input_ids.to(dtype=torch.int, device=last.device)
        if self.config.eos_token_id == 2:
            # Configs written before transformers PR #24773 say eos 2; those models pool at the highest id,
            # which is the end-of-text token of OpenAI's vocabulary (49407).
            position = ids.argmax(dim=-1)
        else:
            # The first end-of-text token: padding may repeat it (SD 1.x pads with it).
            position = (ids == self.config.eos_token_id).int().argmax(dim=-1)
        return CLIPTextOutput(last, last[rows, position], tuple(states) if output_hidden_states else None)


class CLIPTextModelWithProjection(nn.Module):
    """The text tower plus CLIP's bias-free projection of the pooled output into the joint embedding space."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextModel(config)
        self.text_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        if not self.text_projection.weight.is_meta:
            std = config.hidden_size ** -0.5 * config.initializer_factor
            nn.init.normal_(self.text_projection.weight, std=std)

    def forward(self, input_ids: Tensor, output_hidden_states: bool = False) -> CLIPTextOutput:
        out = self.text_model(input_ids, output_hidden_states=output_hidden_states)
        out.text_embeds = self.text_projection(out.pooler_output)
        return out


@torch.no_grad()
def init_weights(model: CLIPTextModel, config: CLIPTextConfig) -> None:
    """transformers' CLIP initialisation (the distributions, not its random stream): embeddings N(0, 0.02),
    attention in-projections N(0, w^-1/2 (2 layers)^-1/2), out-projection N(0, w^-1/2), fc1 N(0, (2w)^-1/2),
    fc2 like the in-projections; biases 0, layer norms 1 and 0. Training starts from these."""
    factor = config.initializer_factor
    width = config.hidden_size
    in_std = width ** -0.5 * (2 * config.num_hidden_layers) ** -0.5 * factor
    for embedding in (model.embeddings.token_embedding, model.embeddings.position_embedding):
        nn.init.normal_(embedding.weight, std=0.02 * factor)
    for layer in model.encoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for linear, std in ((attn.q_proj, in_std), (attn.k_proj, in_std), (attn.v_proj, in_std),
                            (attn.out_proj, width ** -0.5 * factor), (mlp.fc1, (2 * width) ** -0.5 * factor),
                            (mlp.fc2, in_std)):
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)
    for norm in model.modules():
        if isinstance(norm, nn.LayerNorm):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

