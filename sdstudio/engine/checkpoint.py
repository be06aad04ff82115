"""Loading a single-file checkpoint into our modules, with weights straight from the file to their device.

Modules are built on the meta device (no random initialisation, no allocation) and receive the file's
tensors with `load_state_dict(strict=True, assign=True)`: names match the checkpoint 1:1, so a missing or
extra key is a real incompatibility and is reported as such. Tensors are read one at a time (see
weights.py) and moved to their component's device and dtype (devices.choose_placements) as they are read,
so peak memory stays near the size of the loaded weights.

`progress(stage, fraction of bytes read)` is called every few MB; a callback that raises (e.g. Cancelled)
aborts the load, and nothing of the half-built model is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from sdstudio.engine import text_loading
from sdstudio.engine.detect import VAE, ModelDescription, detect
from sdstudio.engine.devices import Placement, choose_placements, placement_label
from sdstudio.engine.errors import CheckpointError
from sdstudio.engine.families import UNET, family
from sdstudio.engine.patches import NO_PATCHES, TEXT_PREFIX, PatchedWeights, PatchSet, text_prefix
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, SafetensorsHeader, read_header
from sdstudio.engine.taesd import TAESD, decoder_shape, load_taesd_state
from sdstudio.engine.unet import UNetModel, unet_config_from_shapes
from sdstudio.engine.vae import AutoencoderKL, vae_config_from_shapes
from sdstudio.engine.weights import OnBytes, load_state_dict_file, load_tensors, open_pickle_checkpoint
from sdstudio.untrusted import printable

Progress = Callable[[str, float], None]


@dataclass
class LoadedModel:
    description: ModelDescription
    unet: UNetModel
    vae: AutoencoderKL
    text: text_loading.TextStack
    taesd: TAESD | None
    placements: dict[str, Placement] = field(default_factory=lambda: choose_placements("cpu"))
    load_seconds: float = 0.0
    weights: PatchedWeights = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts: dict[str, nn.Module] = {UNET: self.unet, VAE: self.vae}
        parts.update({text_prefix(i): encoder for i, encoder in enumerate(self.text.encoders)})
        self.weights = PatchedWeights(parts)

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (each component has its own: see `placements`)."""
        return self.placements["unet"].dtype

    @property
    def patches(self) -> PatchSet:
        return self.weights.current

    def apply_patches(self, patch_set: PatchSet = NO_PATCHES) -> None:
        """Make `patch_set` the applied set (NO_PATCHES removes all, exactly); see patches.py."""
        try:
            self.weights.apply(patch_set)
        finally:
            # Prompt encodings depend on the text encoders' patches only; key their cache on exactly those.
            self.text.prompts.patch_key = self.weights.current.under(TEXT_PREFIX).key


def assign_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Strict, zero-copy load into a meta-built module; a mismatch becomes a CheckpointError naming keys."""
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: the {what} weights do not fit the detected architecture "
                              f"({printable(_short(str(exc)), multiline=False)})") from None
    leftover = [n for n, p in module.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: the {what} weights lack {leftover[0]}")


@contextmanager
def shapes_read(what: str, source: str) -> Iterator[None]:
    """Around the readers that take a configuration from tensor shapes: a tensor of the wrong rank or a
    missing one makes them fail with IndexError/ValueError/KeyError/TypeError; say so in one line instead."""
    try:
        yield
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        detail = _short(f"{type(exc).__name__}: {exc}", 200)
        raise CheckpointError(f"{source}: the {what} tensors do not have the shapes of any supported "
                              f"architecture ({detail}); the file is damaged or of another kind") from None


def _short(message: str, limit: int = 400) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + " ..."


def build_unet(header: SafetensorsHeader, desc: ModelDescription, dtype: torch.dtype,
               device: torch.device | str | None = None, on_bytes: OnBytes | None = None) -> UNetModel:
    fam = family(desc.family).configured(desc.config)
    with shapes_read("UNet", header.path.name):
        config = unet_config_from_shapes(header.shapes(fam.unet_prefix), fam.unet_heads)
    unet = UNetModel(config, device="meta")
    assign_weights(unet, load_tensors(header, fam.unet_prefix, dtype, device=device, on_bytes=on_bytes), "UNet",
                   header.path.name)
    return unet.eval().requires_grad_(False)


def build_vae(state: dict[str, torch.Tensor], source: str) -> AutoencoderKL:
    with shapes_read("VAE", source):
        config = vae_config_from_shapes({k: tuple(v.shape) for k, v in state.items()})
    vae = AutoencoderKL(config, device="meta")
    assign_weights(vae, state, "VAE", source)
    return vae.eval().requires_grad_(False)


def load_vae_file(path: str | Path, dtype: torch.dtype, device: torch.device | str | None = None,
                  on_bytes: OnBytes | None = None) -> AutoencoderKL:
    """A standalone VAE (keys `encoder.*`/`decoder.*`, or a checkpoint's `first_stage_model.*`)."""
    state, _ = load_state_dict_file(path, dtype=dtype, device=device, on_bytes=on_bytes)
    if any(k.startswith(VAE) for k in state):
        state = {k[len(VAE):]: v for k, v in state.items() if k.startswith(VAE)}
    state = {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    if not any(k.startswith("decoder.") for k in state):
        raise CheckpointError(f"{Path(path).name}: not a VAE (no decoder.* tensors)")
    return build_vae(state, Path(path).name)


def load_taesd_file(path: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                    on_bytes: OnBytes | None = None) -> TAESD:
    """A TAESD decoder file (madebyollin or diffusers layout), or a file with both halves."""
    state, _ = load_state_dict_file(path, dtype=dtype, device=device, on_bytes=on_bytes)
    # Every model we load has 4 latent channels, so a 16-channel (SD3/FLUX) file is refused by the strict
    # load below; the width is whatever the file was trained with.
    with shapes_read("preview decoder", Path(path).name):
        width = decoder_shape(state)[1]
    taesd = TAESD(dtype=dtype, device=device, width=width)
    if any(k.startswith(("encoder.", "decoder.")) for k in state):
        halves = {k for k in state if k.startswith(("encoder.", "decoder."))}
        if all(k.startswith("decoder.") for k in halves):
            load_taesd_state(taesd.decoder, {k[len("decoder."):]: v for k, v in state.items()})
        else:
            load_taesd_state(taesd, state)
    else:
        load_taesd_state(taesd.decoder, state)
    return taesd.eval().requires_grad_(False)


class _BytesRead:
    """Turns bytes read into progress(stage, fraction), every few MB, so a raising callback stops a load soon."""

    def __init__(self, report: Progress, total: int, every: int = 4 << 20):
        self.report, self.total, self.done, self.since, self.stage = report, max(total, 1), 0, 0, ""
        # At least ~100 reports per load, so a tiny model is as cancellable as a large one.
        self.every = max(1, min(every, self.total // 100))

    def start(self, stage: str) -> OnBytes:
        self.stage = stage
        self.report(stage, min(self.done / self.total, 1.0))
        return self

    def __call__(self, n: int) -> None:
        self.done += n
        self.since += n
        if self.since >= self.every:
            self.since = 0
            self.report(self.stage, min(self.done / self.total, 1.0))


def _bytes_to_read(header: SafetensorsHeader, desc: ModelDescription, vae_path, taesd_path) -> int:
    fam = family(desc.family)
    prefixes = (fam.unet_prefix, *fam.text_prefixes, *(() if vae_path else (fam.vae_prefix,)))
    total = sum(e.end - e.begin for k, e in header.tensors.items() if k.startswith(prefixes))
    return total + sum(Path(p).stat().st_size for p in (vae_path, taesd_path) if p)


def attach_taesd(model: LoadedModel, path: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None) -> None:
    """Give a loaded model the preview decoder in `path` (placed as load_checkpoint would place it)."""
    place = choose_placements(device, dtype)["taesd"]
    model.taesd = load_taesd_file(path, place.dtype, place.device)
    model.placements["taesd"] = place
    model.description = replace(model.description, placement=placement_label(model.placements))


def load_checkpoint(path: str | Path, *, vae_path: str | Path | None = None, taesd_path: str | Path | None = None,
                    prediction: str = "", device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                    allow_pickle: bool = False, progress: Progress | None = None) -> LoadedModel:
    """Detect, build and load every part of a single-file checkpoint (optionally replacing its VAE), each
    component straight onto its placement (devices.choose_placements(device, dtype))."""
    path = Path(path)
    places = choose_placements(device, dtype)
    t0 = time.perf_counter()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            load_state_dict_file(path)  # raises the refusal message
        header = open_pickle_checkpoint(path)
    else:
        header = read_header(path)
    desc = detect(header, prediction)
    missing = [m for m in desc.missing if not (m == "VAE" and vae_path)]
    if missing:
        raise CheckpointError(f"{path.name}: the checkpoint lacks its {' and '.join(missing)}"
                              + ("; choose a separate VAE file" if "VAE" in missing else ""))
    read = _BytesRead(progress or (lambda _stage, _fraction: None), _bytes_to_read(header, desc, vae_path, taesd_path))
    unet = build_unet(header, desc, places["unet"].dtype, places["unet"].device, read.start("UNet"))
    vae_place = places["vae"]
    if vae_path:
        vae = load_vae_file(vae_path, vae_place.dtype, vae_place.device, read.start("VAE"))
    else:
        vae = build_vae(load_tensors(header, VAE, vae_place.dtype, device=vae_place.device,
                                     on_bytes=read.start("VAE")), path.name)
    with shapes_read("text encoder", path.name):
        text = text_loading.build_text_stack(header, desc, places["text"].dtype, places["text"].device,
                                             read.start("text encoder"))
    taesd = (load_taesd_file(taesd_path, places["taesd"].dtype, places["taesd"].device, read.start("preview decoder"))
             if taesd_path else None)
    read.report("ready", 1.0)
    if taesd is None:
        del places["taesd"]
    desc = replace(desc, placement=placement_label(places))
    return LoadedModel(desc, unet, vae, text, taesd, places, time.perf_counter() - t0)
