"""LoRA module names -> the loaded model's patch targets (patches.py names), for every dialect in the wild.

A LoRA file names each adapted layer ("module") in one of these dialects (docs/extensions.md, LoRA section):
- kohya sd-scripts: the module path with `.` -> `_` under `lora_unet_` / `lora_te_` / `lora_te1_` /
  `lora_te2_`; UNet paths either in LDM names (`input_blocks_7_1_...`, what our UNet is named) or in
  diffusers block names (`down_blocks_0_attentions_0_...`); text paths in transformers' CLIP names, or
  (SD 2.x, SDXL's second encoder) OpenCLIP's (`transformer_resblocks_0_attn_in_proj`, `mlp_c_fc`);
- diffusers/PEFT: the dotted diffusers path under `unet.` / `text_encoder.` / `text_encoder_2.`, including the
  pre-PEFT `attn1.processor.to_q_lora` and `to_q.lora` / `lora_linear_layer` wrappers.
Which prefix addresses which component is the family's (families.Family.lora_prefixes).

kohya names lost their dots, and a name like `ff_net_0_proj` cannot be split by rule; we do not guess: every
candidate is looked up in {stem.replace('.', '_'): stem} built from the model's own parameter names.
Diffusers block names are first rewritten to LDM names by the table below (the block arithmetic of
diffusers' `convert_ldm_unet_checkpoint`, with the model's `num_res_blocks`). OpenCLIP's fused `in_proj`
(q, k, v stacked by rows) resolves to our separate q/k/v projections, each taking a third of the rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sdstudio.engine.families import UNET, Family
from sdstudio.engine.patches import text_prefix

QKV = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class Resolved:
    """Where one LoRA module lands: the target stem (a patch target without `.weight`/`.bias`), or, for a
    fused q/k/v projection, a stem and the names under it that take equal row blocks of the delta (in
    order)."""

    stem: str
    split: tuple[str, ...] = ()

    def targets(self, param: str = "weight") -> tuple[str, ...]:
        if self.split:
            return tuple(f"{self.stem}.{name}.{param}" for name in self.split)
        return (f"{self.stem}.{param}",)


# --- diffusers UNet block names -> LDM names (underscored). `L` = blocks per level = num_res_blocks + 1. ---
# Each rule: (pattern on the underscored diffusers path, (match, L) -> candidate LDM prefixes, renames of the
# layer names inside the block). Inside attention blocks diffusers and LDM name layers alike.
RESNET_LAYERS = (("conv1", "in_layers_2"), ("conv2", "out_layers_3"), ("time_emb_proj", "emb_layers_1"),
                 ("conv_shortcut", "skip_connection"), ("norm1", "in_layers_0"), ("norm2", "out_layers_0"))

Rule = tuple[re.Pattern[str], Callable[[re.Match[str], int], tuple[str, ...]], tuple[tuple[str, str], ...]]


UNET_BLOCK_RULES: tuple[Rule, ...] = (
    (re.compile(r"down_blocks_(\d+)_(attentions)_(\d+)(_|$)"),
     lambda m, L: (f"input_blocks_{1 + L * int(m[1]) + int(m[3])}_1{m[4]}",), ()),
    (re.compile(r"down_blocks_(\d+)_(resnets)_(\d+)(_|$)"),
     lambda m, L: (f"input_blocks_{1 + L * int(m[1]) + int(m[3])}_0{m[4]}",), RESNET_LAYERS),
    (re.compile(r"down_blocks_(\d+)_downsamplers_0_conv(_|$)"),
     lambda m, L: (f"input_blocks_{L * (int(m[1]) + 1)}_0_op{m[2]}",), ()),
    (re.compile(r"mid_block_attentions_0(_|$)"), lambda m, L: (f"middle_block_1{m[1]}",), ()),
    (re.compile(r"mid_block_resnets_(\d+)(_|$)"), lambda m, L: (f"middle_block_{2 * int(m[1])}{m[2]}",),
     RESNET_LAYERS),
    (re.compile(r"up_blocks_(\d+)_(attentions)_(\d+)(_|$)"),
     lambda m, L: (f"output_blocks_{L * int(m[1]) + int(m[3])}_1{m[4]}",), ()),
    (re.compile(r"up_blocks_(\d+)_(resnets)_(\d+)(_|$)"),
     lambda m, L: (f"output_blocks_{L * int(m[1]) + int(m[3])}_0{m[4]}",), RESNET_LAYERS),
    # The upsampler follows the level's last block: at index 2 where the level has attention, else 1.
    (re.compile(r"up_blocks_(\d+)_upsamplers_0_conv(_|$)"),
     lambda m, L: tuple(f"output_blocks_{L * int(m[1]) + L - 1}_{i}_conv{m[2]}" for i in (2, 1)), ()),
    (re.compile(r"time_embedding_linear_([12])(_|$)"),
     lambda m, L: (f"time_embed_{2 * int(m[1]) - 2}{m[2]}",), ()),
    (re.compile(r"add_embedding_linear_([12])(_|$)"),
     lambda m, L: (f"label_emb_0_{2 * int(m[1]) - 2}{m[2]}",), ()),
    (re.compile(r"conv_in(_|$)"), lambda m, L: (f"input_blocks_0_0{m[1]}",), ()),
    (re.compile(r"conv_norm_out(_|$)"), lambda m, L: (f"out_0{m[1]}",), ()),
    (re.compile(r"conv_out(_|$)"), lambda m, L: (f"out_2{m[1]}",), ()),
)


def diffusers_to_ldm(path: str, blocks_per_level: int) -> tuple[str, ...]:
    """Candidate LDM names (underscored) for an underscored diffusers UNet path; () when no rule applies."""
    for pattern, prefixes, layers in UNET_BLOCK_RULES:
        m = pattern.match(path)
        if not m:
            continue
        rest = path[m.end():]
        for old, new in layers:
            if rest == old or rest.startswith(old + "_"):
                rest = new + rest[len(old):]
                break
        return tuple(p + rest for p in prefixes(m, blocks_per_level))
    return ()


# --- OpenCLIP text names -> transformers' CLIP names (underscored). ---
TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:model_)?transformer_resblocks_(\d+)_"), r"text_model_encoder_layers_\1_"),
    (re.compile(r"_attn_out_proj$"), "_self_attn_out_proj"),
    (re.compile(r"_mlp_c_fc$"), "_mlp_fc1"),
    (re.compile(r"_mlp_c_proj$"), "_mlp_fc2"),
)
FUSED_QKV = re.compile(r"^(.*_)(?:self_)?attn(?:_in_proj)?$")

# --- wrappers of the pre-PEFT diffusers formats, removed from a dotted module path. ---
WRAPPERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.processor\.to_out_lora$"), ".to_out.0"),
    (re.compile(r"\.processor\.(to_[qkv])_lora$"), r".\1"),
    (re.compile(r"\.(to_[qkv]|to_out)_lora$"), r".\1"),  # text encoders' old attn-processor names
    (re.compile(r"\.(lora_linear_layer|lora)$"), ""),
)


class LoraKeys:
    """Resolves LoRA module names against one loaded model's patch targets.

    `shapes`: the model's patchable weights {target: shape} (PatchedWeights.shapes()); `family` says which
    prefix addresses which component; `num_res_blocks` is the UNet's (diffusers' block arithmetic)."""

    def __init__(self, family: Family, shapes: Mapping[str, Sequence[int]], num_res_blocks: int):
        self.family = family
        self.shapes = shapes
        self.blocks_per_level = num_res_blocks + 1
        self._stems: dict[str, dict[str, str]] = {}
        for target in shapes:
            stem, _, _ = target.rpartition(".")
            component = UNET if target.startswith(UNET) else text_prefix(int(target.split(".")[1])) \
                if target.startswith("text.") else ""
            if component:
                self._stems.setdefault(component, {})[stem[len(component):].replace(".", "_")] = stem

    def component(self, module: str) -> tuple[str, str] | None:
        """(component target prefix, the module path under it) or None when no prefix of the family fits."""
        hits = [p for p in self.family.lora_prefixes if module.startswith(p.prefix)]
        if not hits:
            return None
        p = max(hits, key=lambda h: len(h.prefix))
        prefix = UNET if p.component == "unet" else text_prefix(p.encoder or 0)
        path = module[len(p.prefix):]
        if p.style == "diffusers":
            for pattern, new in WRAPPERS:
                path = pattern.sub(new, path)
        return prefix, path.replace(".", "_")

    def resolve(self, module: str) -> Resolved | None:
        """Where `module` lands in this model, or None when it names nothing the model has."""
        found = self.component(module)
        if found is None:
            return None
        prefix, path = found
        stems = self._stems.get(prefix, {})
        if prefix == UNET:
            candidates = (path, *diffusers_to_ldm(path, self.blocks_per_level))
        else:
            converted = path
            for pattern, new in TEXT_RULES:
                converted = pattern.sub(new, converted)
            candidates = (path, converted)
        for name in candidates:
            if name in stems:
                return Resolved(stems[name])
        if prefix != UNET:
            for name in candidates:
                m = FUSED_QKV.match(name)
                if m and all(f"{m[1]}self_attn_{q}" in stems for q in QKV):
                    stem = stems[f"{m[1]}self_attn_{QKV[0]}"].rpartition(".")[0]
                    return Resolved(stem, QKV)
        return None
