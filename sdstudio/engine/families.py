"""Everything SD Studio knows about a model family, one declarative entry each (after the `supported_models`
table of ComfyUI): how a checkpoint of it is recognised, where its parts live in the single-file layout of
the original LDM/sgm repositories, how its UNet splits attention heads, how its text encoders read a prompt,
its conditioning rules, its latent scale and preview colours, its native sizes and its LoRA key prefixes.

Adding a family is adding one `Family` to FAMILIES. Detection, loading, conditioning, previews and the UI
all ask the family. This module imports neither torch nor transformers: the UI reads size presets here.

Sources: SD 1.x `v1-inference.yaml`, SD 2.x `v2-inference(-v).yaml`, SDXL `sd_xl_base.yaml` (Podell et
al. 2023); latent->RGB factors as published in ComfyUI's `comfy/latent_formats.py`; size presets are
the resolutions each family was trained at (SDXL's aspect buckets, Podell et al. 2023, appendix I).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sdstudio.engine.clip_vocab import EOS, OPENCLIP_PAD
from sdstudio.engine.errors import CheckpointError, UnsupportedModelError
from sdstudio.untrusted import quoted

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT_L = "conditioner.embedders.0.transformer."
SDXL_TEXT_G = "conditioner.embedders.1.model."
INPAINT_IN_CHANNELS = 9  # 4 noisy latent + 4 masked-image latent + 1 mask


@dataclass(frozen=True)
class HeadLayout:
    """LDM's split of attention into heads, which no tensor shape shows (q/k/v are square): a fixed number
    of heads (`num_heads`, SD 1.x) or heads of a fixed width (`num_head_channels`, SD 2.x, SDXL)."""

    num_heads: int = -1
    num_head_channels: int = -1

    def __post_init__(self) -> None:
        if (self.num_heads > 0) == (self.num_head_channels > 0):
            raise ValueError("a HeadLayout sets exactly one of num_heads and num_head_channels")


@dataclass(frozen=True)
class EncoderSpec:
    """One text encoder of a family: where its weights live and how it reads a prompt.

    `openclip`: the weights use OpenCLIP names (converted on load); `pad`: the token after EOS; `layer`:
    which hidden state conditions the UNet ("last", "penultimate", or "penultimate_no_norm" = without the
    final layer norm, as SDXL); `projection`: it also yields a projected pooled embedding (SDXL's bigG).
    `width`, `hidden_act` and `num_heads` are None where the file (or its metadata) decides.
    """

    prefix: str
    openclip: bool
    pad: int
    layer: str
    projection: bool = False
    width: int | None = None
    hidden_act: str | None = None
    num_heads: int | None = None


@dataclass(frozen=True)
class LoraPrefix:
    """A LoRA key prefix and the part of the model its keys address: component "unet", or "text" with the
    index of the text encoder (in Family.text_encoders order). `style` is "kohya" (sd-scripts names,
    underscores for dots) or "diffusers" (diffusers/PEFT module paths)."""

    prefix: str
    style: str
    component: str
    encoder: int | None = None


def _kohya_and_diffusers(text_encoders: int) -> tuple[LoraPrefix, ...]:
    if text_encoders == 1:
        kohya_te = (LoraPrefix("lora_te_", "kohya", "text", 0),)
    else:
        kohya_te = tuple(LoraPrefix(f"lora_te{i + 1}_", "kohya", "text", i) for i in range(text_encoders))
    diffusers_te = tuple(
        LoraPrefix("text_encoder." if i == 0 else f"text_encoder_{i + 1}.", "diffusers", "text", i)
        for i in range(text_encoders))
    return (LoraPrefix("lora_unet_", "kohya", "unet"), *kohya_te, LoraPrefix("unet.", "diffusers", "unet"),
            *diffusers_te)


# NVIDIA's published Align Your Steps noise levels (Sabour et al. 2024, arXiv:2404.14507, and the project's
# "how to" page), the 11 sigmas of their 10-interval schedule, for SD 1.5 and for SDXL. A1111 uses the SD 1.5
# list for every model that is not SDXL.
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


@dataclass(frozen=True)
class Family:
    """One model family. Detection matches `context_dim` (width of `attn2.to_k`) and `adm_in_channels`
    (width of SDXL's `label_emb`, None = absent); a family with context_dim None is never matched from
    shapes, only named by a checkpoint's `sdstudio.config` metadata (our own demo model)."""

    name: str
    label: str
    context_dim: int | None
    adm_in_channels: int | None
    text_encoders: tuple[EncoderSpec, ...]
    unet_heads: HeadLayout
    scale_factor: float
    latent_rgb: tuple[tuple[float, float, float], ...]  # rows: latent channels; columns: R, G, B
    default_size: int
    size_presets: tuple[tuple[int, int], ...]  # width x height; the first is the native size
    lora_prefixes: tuple[LoraPrefix, ...]
    in_channels: tuple[int, ...] = (4, INPAINT_IN_CHANNELS)  # () = any (metadata-described models)
    zero_empty_negative: bool = False  # an empty negative prompt conditions with zeros, not with ""
    unet_prefix: str = UNET
    vae_prefix: str = VAE
    default_prediction: str = "eps"
    prediction_note: str = ""  # shown when nothing in the file said what the model predicts
    v_bias_probe: tuple[str, float] | None = None  # (UNet key, std of it above which the model predicts v)
    ays_sigmas: tuple[float, ...] = AYS_SD15  # the Align Your Steps table (schedules.align_your_steps)
    # madebyollin's tiny decoder for this latent space, looked for in models/VAE-approx as A1111 does
    # (model_files.approx_decoder): the live preview's and the fast path's "draft decode" decoder.
    taesd_decoder: str = "taesd_decoder"

    @property
    def text_prefixes(self) -> tuple[str, ...]:
        return tuple(e.prefix for e in self.text_encoders)

    @property
    def needs_y(self) -> bool:
        """The UNet takes SDXL's `y` vector (pooled text + size embeddings), `adm_in_channels` wide."""
        return self.adm_in_channels is not None

    def matches(self, context_dim: int, adm_in_channels: int | None) -> bool:
        return self.context_dim is not None and (self.context_dim, self.adm_in_channels) == (
            context_dim, adm_in_channels)

    def lora_target(self, key: str) -> LoraPrefix:
        """The prefix (and so the component) a LoRA key addresses; the longest prefix wins."""
        hits = [p for p in self.lora_prefixes if key.startswith(p.prefix)]
        if not hits:
            known = ", ".join(p.prefix for p in self.lora_prefixes)
            raise UnsupportedModelError(f"LoRA key {quoted(key)} addresses no part of an {self.label} model "
                                        f"(its keys start with one of {known}); "
                                        f"use a LoRA made for {self.label}")
        return max(hits, key=lambda p: len(p.prefix))

    def configured(self, config: Mapping) -> Family:
        """This family as a checkpoint's `sdstudio.config` metadata sets it (how our own exports describe
        what shapes cannot show: scale factor, default size, head layout, text encoder, preview colours).
        Every value is checked for type and range: a NaN scale factor would otherwise decode to black."""
        if not config:
            return self
        changes: dict = {}
        if "default_size" in config:
            size = config["default_size"]
            if not (_is_int(size) and 8 <= size <= MAX_DEFAULT_SIZE and size % 8 == 0):
                raise _bad("default_size", size, f"a multiple of 8 from 8 to {MAX_DEFAULT_SIZE}")
            changes["default_size"] = size
        if "scale_factor" in config:
            scale = config["scale_factor"]
            if not (_is_number(scale) and SCALE_FACTOR_RANGE[0] <= scale <= SCALE_FACTOR_RANGE[1]):
                raise _bad("scale_factor", scale, "a number from {} to {}".format(*SCALE_FACTOR_RANGE))
            changes["scale_factor"] = float(scale)
        if "latent_rgb" in config:
            rgb = config["latent_rgb"]
            if not (isinstance(rgb, list) and len(rgb) == 4 and all(
                    isinstance(row, list) and len(row) == 3 and all(_is_number(v) and abs(v) <= 100 for v in row)
                    for row in rgb)):
                raise _bad("latent_rgb", rgb, "4 rows of 3 finite numbers")
            changes["latent_rgb"] = tuple(tuple(float(v) for v in row) for row in rgb)
        unet = _section(config, "unet")
        if "num_heads" in unet:
            changes["unet_heads"] = HeadLayout(num_heads=_heads(unet, "num_heads", "unet.num_heads"))
        elif "num_head_channels" in unet:
            changes["unet_heads"] = HeadLayout(
                num_head_channels=_heads(unet, "num_head_channels", "unet.num_head_channels"))
        text = _section(config, "text")
        if text:
            changes["text_encoders"] = tuple(_configured_encoder(e, text) for e in self.text_encoders)
        return replace(self, **changes)


MAX_DEFAULT_SIZE = 4096
SCALE_FACTOR_RANGE = (1e-3, 10.0)  # published VAEs use 0.13 to 1.5
TEXT_LAYERS = ("last", "penultimate", "penultimate_no_norm")
TEXT_ACTIVATIONS = ("quick_gelu", "gelu")
_PADS = {"eos": EOS, "0": OPENCLIP_PAD, 0: OPENCLIP_PAD}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _bad(name: str, value: object, wanted: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + " ..."
    return CheckpointError(f"metadata sdstudio.config sets {name} to {shown}, not {wanted}; re-export the model")


def _section(config: Mapping, name: str) -> Mapping:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise _bad(name, section, "a JSON object")
    return section


def _heads(section: Mapping, key: str, name: str) -> int:
    value = section[key]
    if not (_is_int(value) and 1 <= value <= 4096):
        raise _bad(name, value, "a positive integer")
    return value


def _configured_encoder(spec: EncoderSpec, text: Mapping) -> EncoderSpec:
    pad = text.get("pad")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, (str, int)) or pad not in _PADS):
        raise _bad("text pad", pad, "'eos' or 0")
    layer = text.get("layer", spec.layer)
    if layer not in TEXT_LAYERS:
        raise _bad("text layer", layer, "one of " + ", ".join(TEXT_LAYERS))
    act = text.get("hidden_act", spec.hidden_act)
    if act is not None and act not in TEXT_ACTIVATIONS:
        raise _bad("text hidden_act", act, "one of " + ", ".join(TEXT_ACTIVATIONS))
    heads = _heads(text, "num_attention_heads", "text num_attention_heads") if "num_attention_heads" in text \
        else spec.num_heads
    return replace(spec, pad=spec.pad if pad is None else _PADS[pad], layer=layer, hidden_act=act, num_heads=heads)


_SD1_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
            (-0.2120, -0.2616, -0.7177))
_SDXL_RGB = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755),
             (-0.3112, -0.2359, -0.2076))

SD1 = Family(
    name="sd1", label="SD 1.x", context_dim=768, adm_in_channels=None,
    text_encoders=(EncoderSpec(SD1_TEXT, openclip=False, pad=EOS, layer="last", width=768),),
    unet_heads=HeadLayout(num_heads=8), scale_factor=0.18215, latent_rgb=_SD1_RGB, default_size=512,
    size_presets=((512, 512), (512, 768), (768, 512), (640, 640), (768, 768), (576, 1024), (1024, 576)),
    lora_prefixes=_kohya_and_diffusers(1),
)
SD2 = Family(
    name="sd2", label="SD 2.x", context_dim=1024, adm_in_channels=None,
    text_encoders=(EncoderSpec(SD2_TEXT, openclip=True, pad=OPENCLIP_PAD, layer="penultimate", width=1024),),
    unet_heads=HeadLayout(num_head_channels=64), scale_factor=0.18215, latent_rgb=_SD1_RGB, default_size=768,
    size_presets=((768, 768), (512, 512), (640, 960), (960, 640), (768, 1152), (1152, 768)),
    lora_prefixes=_kohya_and_diffusers(1),
    prediction_note=("SD 2.x: 768-v models predict v. Shapes cannot tell; if images come out grey or noisy, "
                     "set prediction to v (or put a .yaml with parameterization: v next to the file)"),
    # The weights heuristic ComfyUI uses: 768-v UNets have a much wider norm1 bias here.
    v_bias_probe=("output_blocks.11.1.transformer_blocks.0.norm1.bias", 0.09),
)
SDXL = Family(
    name="sdxl", label="SDXL", context_dim=2048, adm_in_channels=2816,
    text_encoders=(EncoderSpec(SDXL_TEXT_L, openclip=False, pad=EOS, layer="penultimate_no_norm", width=768),
                   EncoderSpec(SDXL_TEXT_G, openclip=True, pad=OPENCLIP_PAD, layer="penultimate_no_norm",
                               projection=True, width=1280)),
    unet_heads=HeadLayout(num_head_channels=64), scale_factor=0.13025, latent_rgb=_SDXL_RGB,
    default_size=1024,
    size_presets=((1024, 1024), (896, 1152), (1152, 896), (832, 1216), (1216, 832), (768, 1344), (1344, 768)),
    lora_prefixes=_kohya_and_diffusers(2), zero_empty_negative=True, ays_sigmas=AYS_SDXL,
    taesd_decoder="taesdxl_decoder",
)
# Our built-in model: SD 1.x's layout in miniature; its `sdstudio.config` metadata sets the rest.
DEMO = Family(
    name="demo", label="SD Studio demo", context_dim=None, adm_in_channels=None,
    text_encoders=(EncoderSpec(SD1_TEXT, openclip=False, pad=EOS, layer="last"),),
    unet_heads=HeadLayout(num_heads=8), scale_factor=1.0, latent_rgb=_SD1_RGB, default_size=64,
    size_presets=((64, 64), (32, 32), (96, 96), (128, 128), (96, 64), (64, 96)),
    lora_prefixes=_kohya_and_diffusers(1), in_channels=(),
    taesd_decoder="",  # ships its own (model_files.builtin_taesd_path)
)

FAMILIES: tuple[Family, ...] = (SD1, SD2, SDXL, DEMO)


def family(name: str) -> Family:
    """The family called `name` (a ModelDescription's `family`)."""
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise UnsupportedModelError(f"unknown model family {quoted(name)}; SD Studio knows "
                                + ", ".join(f.name for f in FAMILIES))
