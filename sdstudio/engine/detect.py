"""What a checkpoint is, read from tensor shapes (never from the file name), without torch.

Detection is table-driven: a few facts are read from shapes (UNet input channels, cross-attention context
width, SDXL's `label_emb` width, which text-encoder prefixes exist) and matched against the table in
families.py; known architectures we do not run are matched against UNSUPPORTED and named in the error. What shapes cannot tell
(v-prediction, our own demo model's settings) comes from an explicit override, safetensors metadata, or a
sidecar `.yaml` next to the checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdstudio.engine import families
from sdstudio.engine.errors import CheckpointError, UnsupportedModelError
from sdstudio.engine.families import (  # noqa: F401 (importers read the prefixes here)
    INPAINT_IN_CHANNELS,
    SD1_TEXT,
    SD2_TEXT,
    SDXL_TEXT_G,
    SDXL_TEXT_L,
    UNET,
    VAE,
    Family,
)
from sdstudio.engine.safetensors_file import SafetensorsHeader, strict_json
from sdstudio.untrusted import quoted

CONFIG_KEY = "sdstudio.config"

# (test on the key set, what it is). Checked before the families so a wrong file is named, not misread.
UNSUPPORTED: tuple[tuple[str, str], ...] = (
    (r"^(model\.diffusion_model\.)?joint_blocks\.", "Stable Diffusion 3 (MMDiT)"),
    (r"^(model\.diffusion_model\.)?double_blocks\.", "FLUX"),
    (r"^(model\.diffusion_model\.)?(blocks\.\d+\.cross_attn|transformer_blocks\.\d+\.attn2)", "a DiT/video model"),
    (r"^lora_(unet|te)_|\.lora_(up|down)\.|lora_A\.weight$", "a LoRA (load it as a LoRA, not as a checkpoint)"),
    (r"^(down_blocks|up_blocks|mid_block)\.", ("a diffusers-format component file (SD Studio loads single-file "
                                               "checkpoints; convert it or use the original .safetensors)")),
    (r"^(emb_params|string_to_param|clip_l|clip_g)$", "a textual-inversion embedding"),
    (r"^model\.diffusion_model\.(input_hint_block|zero_convs)", "a ControlNet"),
)


@dataclass(frozen=True)
class ModelDescription:
    """What was detected in a checkpoint: torch-free, shown by `inspect` and the UI."""

    name: str
    path: str
    family: str
    family_label: str
    inpainting: bool
    prediction: str
    prediction_source: str
    dtype: str
    params: dict[str, int]
    default_size: int
    scale_factor: float
    vae_downscale: int
    context_dim: int
    unet_in_channels: int
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    config: dict = field(default_factory=dict, compare=False)
    placement: str = ""  # where the loaded model runs, e.g. "cuda: UNet fp16, ..., VAE fp32"; set by the loader

    def summary(self) -> str:
        kind = self.family_label + (" inpainting" if self.inpainting else "")
        pred = "v-prediction" if self.prediction == "v" else "eps-prediction"
        total = sum(self.params.values()) / 1e6
        # The file's precision and the one it runs in differ (an fp16 file runs in fp32 on a CPU): say which.
        where = f", runs on {self.placement}" if self.placement else ""
        return f"{kind}, {pred}, {total:.0f}M parameters ({self.dtype} file){where}"

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "config"}
        d["missing"], d["notes"] = list(self.missing), list(self.notes)
        return d


def _width(header: SafetensorsHeader, key: str, shape: tuple[int, ...], rank: int) -> int:
    """Dimension 1 (input width) of a weight that must have `rank` dimensions; a wrong rank is a broken file."""
    if len(shape) != rank or not shape[1]:
        raise CheckpointError(f"{header.path.name}: tensor {quoted(key)} has shape {shape}, where a "
                              f"{rank}-D weight was expected; the file is damaged or not a Stable Diffusion model")
    return shape[1]


def _dtype_label(header: SafetensorsHeader) -> str:
    by = {k: v for k, v in header.dtypes().items() if k in ("F16", "F32", "BF16", "F64")}
    if not by:
        return "unknown"
    names = {"F16": "fp16", "F32": "fp32", "BF16": "bf16", "F64": "fp64"}
    major = max(by, key=by.get)
    return names[major] if by[major] >= 0.99 * sum(by.values()) else f"mixed (mostly {names[major]})"


def _params(header: SafetensorsHeader, prefixes: dict[str, tuple[str, ...]]) -> dict[str, int]:
    out = {}
    for comp, pres in prefixes.items():
        n = sum(t.numel for k, t in header.tensors.items() if k.startswith(pres))
        if n:
            out[comp] = n
    return out


def _runs() -> str:
    labels = [f.label for f in families.FAMILIES if f.context_dim is not None]
    return ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else "".join(labels)


def check_unsupported(keys) -> None:
    for pattern, what in UNSUPPORTED:
        rx = re.compile(pattern)
        if any(rx.search(k) for k in keys):
            raise UnsupportedModelError(f"this file is {what}; SD Studio runs {_runs()} base "
                                        "checkpoints (and their inpainting variants)")


def _unet_shapes(header: SafetensorsHeader) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The first family UNet prefix that holds a UNet, and its shapes (("", {}) if none does)."""
    for prefix in dict.fromkeys(f.unet_prefix for f in families.FAMILIES):
        shapes = header.shapes(prefix)
        if "input_blocks.0.0.weight" in shapes:
            return prefix, shapes
    return "", {}


def detect(header: SafetensorsHeader, prediction: str = "") -> ModelDescription:
    """Describe a full single-file checkpoint; raise CheckpointError / UnsupportedModelError naming what was seen."""
    keys = header.tensors.keys()
    check_unsupported(keys)
    unet_prefix, unet = _unet_shapes(header)
    if not unet:
        raise _not_a_checkpoint(header)
    config = _read_config(header)
    in_ch = _width(header, unet_prefix + "input_blocks.0.0.weight", unet["input_blocks.0.0.weight"], 4)
    ctx_key = next((k for k in unet if re.search(r"attn2\.to_k\.weight$", k)), None)
    context_dim = _width(header, unet_prefix + ctx_key, unet[ctx_key], 2) if ctx_key else 0
    adm_shape = unet.get("label_emb.0.0.weight")
    adm = _width(header, unet_prefix + "label_emb.0.0.weight", adm_shape, 2) if adm_shape is not None else None
    family = _match_family(header, config, context_dim, adm, in_ch)
    if family.in_channels and in_ch not in family.in_channels:
        raise UnsupportedModelError(
            f"UNet with {in_ch} input channels (instruct-pix2pix / upscaler?) is not supported; "
            "SD Studio runs 4-channel models and 9-channel inpainting models")
    parts = (("VAE", (family.vae_prefix,)), ("text encoder", family.text_prefixes))
    missing = tuple(name for name, pres in parts if not all(header.has_prefix(p) for p in pres))
    pred, source = _prediction(header, family, in_ch, config, prediction)
    down_levels = {m.group(1) for k in header.shapes(family.vae_prefix + "encoder.down.")
                   for m in [re.match(r"(\d+)\.", k)] if m}
    vae_downscale = 2 ** (len(down_levels) - 1) if down_levels else 8
    notes = (family.prediction_note,) if family.prediction_note and source == "default" else ()
    try:
        # Checks every metadata value, so that a bad one stops detection rather than a generation later.
        settings = family.configured(config)
    except CheckpointError as exc:
        raise CheckpointError(f"{header.path.name}: {exc}") from None
    return ModelDescription(
        name=header.path.stem, path=str(header.path), family=family.name, family_label=family.label,
        inpainting=in_ch == INPAINT_IN_CHANNELS, prediction=pred, prediction_source=source,
        dtype=_dtype_label(header),
        params=_params(header, {"unet": (family.unet_prefix,), "vae": (family.vae_prefix,),
                                "text": family.text_prefixes}),
        default_size=settings.default_size, scale_factor=settings.scale_factor,
        vae_downscale=vae_downscale, context_dim=context_dim, unet_in_channels=in_ch, missing=missing,
        notes=notes, config=config)


def _not_a_checkpoint(header: SafetensorsHeader) -> CheckpointError:
    keys = list(header.tensors)
    if not keys:
        return CheckpointError(f"{header.path.name}: the file holds no tensors")
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return CheckpointError(f"{header.path.name}: this is a standalone VAE, not a full checkpoint; "
                               "choose it as the VAE of a checkpoint")
    if "1.weight" in keys and "3.conv.0.weight" in keys:
        return CheckpointError(f"{header.path.name}: this is a TAESD preview decoder/encoder, not a checkpoint")
    sample = ", ".join(quoted(key) for key in sorted(keys)[:3])
    prefixes = "' or '".join(dict.fromkeys(f.unet_prefix for f in families.FAMILIES))
    return UnsupportedModelError(f"{header.path.name}: unknown architecture: no UNet under '{prefixes}' "
                                 f"({len(keys)} tensors, e.g. {sample})")


def _read_config(header: SafetensorsHeader) -> dict:
    raw = header.metadata.get(CONFIG_KEY)
    if not raw:
        return {}
    try:
        config = strict_json(raw)
    except ValueError as exc:
        raise CheckpointError(f"{header.path.name}: metadata {CONFIG_KEY} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{header.path.name}: metadata {CONFIG_KEY} is not a JSON object")
    if "family" in config and not isinstance(config["family"], str):
        raise CheckpointError(f"{header.path.name}: metadata {CONFIG_KEY} names its family with "
                              f"{quoted(config['family'])}, not a name; re-export the model")
    if config.get("prediction", "eps") not in ("eps", "v"):
        raise CheckpointError(f"{header.path.name}: metadata {CONFIG_KEY} sets prediction to "
                              f"{quoted(config['prediction'])}, not 'eps' or 'v'; re-export the model")
    return config


def _match_family(header, config: dict, context_dim: int, adm: int | None, in_ch: int) -> Family:
    if "family" in config:
        try:
            return families.family(config["family"])
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{header.path.name}: metadata {CONFIG_KEY}: {exc}") from None
    if adm == 2560:
        raise UnsupportedModelError(f"{header.path.name}: SDXL refiner (adm 2560) is not supported; "
                                    "use an SDXL base checkpoint")
    for fam in families.FAMILIES:
        if fam.matches(context_dim, adm):
            return fam
    known = ", ".join(f"{f.label} ({f.context_dim}" + (f" + adm {f.adm_in_channels})" if f.needs_y else ")")
                      for f in families.FAMILIES if f.context_dim is not None)
    raise UnsupportedModelError(
        f"{header.path.name}: unknown architecture: UNet with {in_ch} input channels, cross-attention context "
        f"{context_dim}, adm {adm} matches none of {known}")


def _prediction(header, family: Family, in_ch: int, config: dict, override: str) -> tuple[str, str]:
    if override:
        if override not in ("eps", "v"):
            raise CheckpointError(f"prediction must be 'eps' or 'v', not {override!r}")
        return override, "override"
    if config.get("prediction") in ("eps", "v"):
        return config["prediction"], "metadata"
    spec = header.metadata.get("modelspec.prediction_type", "").lower()
    if spec in ("v", "v_prediction", "v-prediction"):
        return "v", "metadata"
    if spec in ("epsilon", "eps"):
        return "eps", "metadata"
    yaml_pred = _sidecar_yaml_prediction(header.path)
    if yaml_pred:
        return yaml_pred, "yaml"
    if "v_pred" in header.tensors:
        return "v", "v_pred key"
    probe = family.v_bias_probe
    if probe and in_ch != INPAINT_IN_CHANNELS and _std(header, family.unet_prefix + probe[0]) > probe[1]:
        return "v", "weights heuristic"
    return family.default_prediction, "default"


def _sidecar_yaml_prediction(path: Path) -> str:
    yaml = path.with_suffix(".yaml")
    if not yaml.is_file():
        return ""
    m = re.search(r"^\s*parameterization:\s*['\"]?(\w+)", yaml.read_text(errors="replace"), re.MULTILINE)
    if not m:
        return "eps"
    return "v" if m.group(1) == "v" else "eps"


def _std(header: SafetensorsHeader, key: str) -> float:
    entry = header.tensors.get(key)
    if entry is None or entry.dtype not in ("F16", "F32"):
        return 0.0
    if hasattr(header, "state"):  # a weights-only pickle, already memory-mapped
        return float(header.state[key].double().std(unbiased=False))
    with open(header.path, "rb") as f:
        f.seek(entry.begin)
        data = np.frombuffer(f.read(entry.end - entry.begin), dtype=np.float16 if entry.dtype == "F16" else np.float32)
    return float(np.std(data.astype(np.float64))) if data.size else 0.0
