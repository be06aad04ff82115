"""CLIP text encoders (Radford et al. 2021) through transformers' CLIPTextModel, and the layer each Stable
Diffusion family reads.

Which hidden state each family conditions on, from the original sources:

- SD 1.x, CompVis `ldm/modules/encoders/modules.py` FrozenCLIPEmbedder(layer="last"): `last_hidden_state`,
  i.e. final_layer_norm(output of layer 12). A1111 `sd_hijack_clip.py` clip skip n > 1:
  `final_layer_norm(hidden_states[-n])`. Mode "last".
- SD 2.x, Stability `stablediffusion` FrozenOpenCLIPEmbedder(layer="penultimate"): runs every resblock but the
  last, then applies `ln_final`. Mode "penultimate" (normed). diffusers agrees: its converted SD 2 text
  encoders have 23 layers and use `last_hidden_state`, which includes the final layer norm.
- SDXL, Stability `generative-models` `sgm/modules/encoders/modules.py`: CLIP-L is FrozenCLIPEmbedder(layer=
  "hidden", layer_idx=11) -> `hidden_states[11]` with no final layer norm; bigG is FrozenOpenCLIPEmbedder2(
  layer="penultimate", legacy=False) -> the penultimate resblock output with no `ln_final`, and pooled =
  `ln_final(last)[EOS] @ text_projection`. Mode "penultimate_no_norm" for both. diffusers' SDXL pipeline
  reads `hidden_states[-2]` of both, also without the final layer norm.

Clip skip n (A1111 numbering, 1 = no skip) moves n - 1 layers further back from the family's layer, for
every family (ComfyUI does the same; A1111 ignores clip skip for SD 2.x and SDXL). The pooled output always
comes from the last layer, as in sgm.

OpenCLIP checkpoints (SD 2.x `cond_stage_model.model.*`, SDXL `conditioner.embedders.1.model.*`) are mapped
to transformers names by `openclip_to_transformers`, the one place where keys are renamed. A TextEncoder's
own parameters are named like the checkpoint's transformers layout: `text_model.*` (and
`text_projection.weight`), so SD 1.x / SDXL CLIP-L weights load without renaming.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from sdstudio.engine.clip_text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from sdstudio.engine.errors import CheckpointError, RequestError
from sdstudio.engine.tokenizer import BOS, CONTEXT_LENGTH, EOS, VOCAB_SIZE
from sdstudio.untrusted import printable, quoted

# layer mode -> (layers back from the last at clip skip 1, apply the final layer norm)
LAYER_MODES = {
    "last": (0, True),
    "penultimate": (1, True),
    "penultimate_no_norm": (1, False),
}
# (row, position, vectors [n, width]): token embeddings replaced before the transformer (TextEncoder.forward)
Insert = tuple[int, int, Tensor]
# Every released CLIP text tower uses 64-dimensional attention heads; shapes cannot tell the head count.
HEAD_DIM = 64


def _config(hidden: int, layers: int, heads: int, intermediate: int, act: str, proj: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=CONTEXT_LENGTH,
        hidden_act=act,
        projection_dim=proj,
        layer_norm_eps=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )


def clip_l_config() -> CLIPTextConfig:
    """OpenAI CLIP ViT-L/14 text tower (SD 1.x, SDXL's first encoder)."""
    return _config(768, 12, 12, 3072, "quick_gelu", 768)


def openclip_h_config() -> CLIPTextConfig:
    """OpenCLIP ViT-H/14 text tower (SD 2.x)."""
    return _config(1024, 24, 16, 4096, "gelu", 1024)


def openclip_bigg_config() -> CLIPTextConfig:
    """OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder)."""
    return _config(1280, 32, 20, 5120, "gelu", 1280)


def _shape(shapes: Mapping[str, Sequence[int]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"text encoder weights are incomplete: '{key}' is missing")
    return tuple(shapes[key])


def text_config_from_shapes(
    shapes: Mapping[str, Sequence[int]],
    openclip: bool,
    hidden_act: str | None = None,
    num_heads: int | None = None,
) -> CLIPTextConfig:
    """A CLIPTextConfig read from tensor shapes, keys relative to the text tower.

    `openclip=True`: OpenCLIP names (`token_embedding.weight`, `transformer.resblocks.N.*`, ...);
    otherwise transformers names (`text_model.embeddings.token_embedding.weight`, ...). Heads are not
    visible in shapes: `num_heads` defaults to hidden / 64 (true of every released CLIP, at least one head
    for tiny models). The activation defaults to OpenCLIP's gelu or OpenAI CLIP's quick_gelu.
    """
    if openclip:
        vocab, hidden = _shape(shapes, "token_embedding.weight")
        positions = _shape(shapes, "positional_embedding")[0]
        intermediate = _shape(shapes, "transformer.resblocks.0.mlp.c_fc.weight")[0]
        block = re.compile(r"transformer\.resblocks\.(\d+)\.")
        projection_key, projection_axis = "text_projection", 1
    else:
        vocab, hidden = _shape(shapes, "text_model.embeddings.token_embedding.weight")
        positions = _shape(shapes, "text_model.embeddings.position_embedding.weight")[0]
        intermediate = _shape(shapes, "text_model.encoder.layers.0.mlp.fc1.weight")[0]
        block = re.compile(r"text_model\.encoder\.layers\.(\d+)\.")
        projection_key, projection_axis = "text_projection.weight", 0
    projection = shapes[projection_key][projection_axis] if projection_key in shapes else hidden
    layers = 1 + max(int(m.group(1)) for key in shapes if (m := block.match(key)))
    heads = num_heads or max(1, hidden // HEAD_DIM)
    if hidden % heads:
        raise CheckpointError(f"text encoder width {hidden} does not split into {heads} attention heads")
    act = hidden_act or ("gelu" if openclip else "quick_gelu")
    config = _config(hidden, layers, heads, intermediate, act, projection)
    config.vocab_size = vocab
    config.max_position_embeddings = positions
    return config


_OPENCLIP_NAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_OPENCLIP_BLOCK_NAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_OPENCLIP_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)")
_OPENCLIP_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")
# Keys of the CLIP training objective or of the image tower; a text encoder does not use them.
_OPENCLIP_UNUSED = re.compile(r"logit_scale|logit_bias|attn_mask|position_ids|visual\..*")


def openclip_to_transformers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """OpenCLIP text-tower weights -> TextEncoder names. Returns views of the inputs, never copies.

    `attn.in_proj_*` stacks q, k, v along dim 0 (nn.MultiheadAttention); OpenCLIP applies the projection
    as `x @ text_projection` with shape (width, proj), nn.Linear stores its transpose.
    """
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if key in _OPENCLIP_NAMES:
            out[_OPENCLIP_NAMES[key]] = tensor
        elif key == "text_projection":
            out["text_projection.weight"] = tensor.t()
        elif m := _OPENCLIP_IN_PROJ.fullmatch(key):
            prefix = f"text_model.encoder.layers.{m.group(1)}.self_attn"
            for name, part in zip("qkv", tensor.chunk(3, dim=0), strict=True):
                out[f"{prefix}.{name}_proj.{m.group(2)}"] = part
        elif (m := _OPENCLIP_BLOCK.fullmatch(key)) and m.group(2) in _OPENCLIP_BLOCK_NAMES:
            name = _OPENCLIP_BLOCK_NAMES[m.group(2)]
            out[f"text_model.encoder.layers.{m.group(1)}.{name}.{m.group(3)}"] = tensor
        elif not _OPENCLIP_UNUSED.fullmatch(key):
            raise CheckpointError(f"unexpected key {quoted(key)} in an OpenCLIP text encoder")
    return out


class TextEncoder(nn.Module):
    """A CLIP text tower plus what a family reads from it: its padding token and its layer mode."""

    def __init__(self, model: CLIPTextModel | CLIPTextModelWithProjection, pad_token: int, layer_mode: str):
        super().__init__()
        if layer_mode not in LAYER_MODES:
            raise ValueError(f"unknown layer mode {layer_mode!r}; choose one of: {', '.join(LAYER_MODES)}")
        if isinstance(model, CLIPTextModelWithProjection):
            self.text_model = model.text_model
            self.text_projection: nn.Linear | None = model.text_projection
        else:
            self.text_model = model
            self.text_projection = None
        self.pad_token = pad_token
        self.layer_mode = layer_mode

    @property
    def width(self) -> int:
        return self.text_model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.text_model.embeddings.token_embedding.weight.device

    @property
    def num_layers(self) -> int:
        return self.text_model.config.num_hidden_layers

    def forward(self, tokens: Tensor, clip_skip: int = 1,
                inserts: Sequence[Insert] = ()) -> tuple[Tensor, Tensor | None]:
        """tokens [B, 77] -> (hidden [B, 77, width], pooled-and-projected [B, proj] or None).

        `inserts` (row, position, vectors [n, width]) replace the token embeddings of positions
        position .. position + n - 1 of that row (textual-inversion vectors), before the position embeddings
        are added, as A1111's EmbeddingsWithFixes and diffusers' added tokens do; the weights are untouched.
        """
        back, final_norm = LAYER_MODES[self.layer_mode]
        depth = clip_skip + back
        if clip_skip < 1 or depth > self.num_layers:
            raise RequestError(f"clip skip must be between 1 and {self.num_layers - back} for this model")
        if not inserts:
            out = self.text_model(input_ids=tokens, output_hidden_states=True)
        else:
            # transformers' CLIP takes input_ids only (it pools at the first EOS id), so the vectors go in
            # through a hook on the token embedding's output for this one call.
            def replace(_module: nn.Module, _args: object, embedded: Tensor) -> Tensor:
                embedded = embedded.clone()
                for row, position, vectors in inserts:
                    embedded[row, position:position + vectors.shape[0]] = vectors.to(embedded)
                return embedded

            hook = self.text_model.embeddings.token_embedding.register_forward_hook(replace)
            try:
                out = self.text_model(input_ids=tokens, output_hidden_states=True)
            finally:
                hook.remove()
        hidden = out.hidden_states[-depth]
        if final_norm:
            hidden = self.text_model.final_layer_norm(hidden)
        pooled = None if self.text_projection is None else self.text_projection(out.pooler_output)
        return hidden, pooled


def build_text_encoder(
    config: CLIPTextConfig,
    state_dict: Mapping[str, Tensor],
    *,
    pad_token: int,
    layer_mode: str,
    projection: bool,
) -> TextEncoder:
    """A TextEncoder built on the meta device and given `state_dict` (TextEncoder names) without copies.

    `position_ids` buffers are ignored; `text_projection.weight` is dropped when `projection` is False.
    """
    weights = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    if not projection:
        weights.pop("text_projection.weight", None)
    with torch.device("meta"):
        model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
        encoder = TextEncoder(model, pad_token, layer_mode)
    expected = encoder.state_dict().keys()
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        first = f"'{missing[0]}' is missing" if missing else f"{quoted(unexpected[0])} is not part of it"
        raise CheckpointError(
            f"the text encoder weights do not match a CLIP text model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected): {first}"
        )
    try:
        encoder.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        reason = printable(str(exc).splitlines()[-1].strip(), multiline=False)
        raise CheckpointError(f"the text encoder weights do not match their model: {reason}") from None
    embeddings = encoder.text_model.embeddings
    device = embeddings.token_embedding.weight.device
    positions = torch.arange(config.max_position_embeddings, device=device).unsqueeze(0)
    embeddings.register_buffer("position_ids", positions, persistent=False)
    return encoder.eval()
