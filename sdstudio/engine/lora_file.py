"""LoRA files: reading them without trusting them, and turning them into weight patches for a loaded model.

A file holds, per adapted layer ("module", named in one of the dialects lora_keys.py resolves), a few tensors
told apart by suffix. Plain LoRA (Hu et al. 2021): `down` [r, in] (conv: [r, in, kh, kw]), `up` [out, r]
(conv: [out, r, 1, 1]), optional `alpha`; ΔW = alpha / r · up @ down, r = down.shape[0], no alpha ⇒ alpha = r.
LoCon with Tucker `mid` [r, r, kh, kw] (LyCORIS): down and up are 1x1, ΔW[o,i] = up ∘ mid ∘ down. PEFT names
down `lora_A` and up `lora_B`. LoHa / LoKr / full-difference modules are LyCORIS's (lycoris.py).

ΔW is computed in float32 when the patch is applied (WeightPatch.delta), never when the file is read, so a
file costs its own size in memory, not the model's. Deltas shaped for a 1x1 conv as a linear layer (or the
reverse) are reshaped by the patcher (same number of elements); a 4-channel conv_in LoRA on a 9-channel
inpainting UNet gets zero deltas for the mask and masked-image channels (what A1111 and ComfyUI do).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdstudio.engine.errors import CheckpointError, NetworkFileError
from sdstudio.engine.families import INPAINT_IN_CHANNELS, UNET, family
from sdstudio.engine.lora_family import lora_family
from sdstudio.engine.lora_keys import LoraKeys, Resolved
from sdstudio.engine.lycoris import LYCORIS_SUFFIXES, lycoris_deltas
from sdstudio.engine.model_files import file_sha256
from sdstudio.engine.network_files import lora_short_hash
from sdstudio.engine.patches import TEXT_PREFIX, PatchSet, WeightPatch
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header
from sdstudio.engine.weights import load_tensors
from sdstudio.untrusted import printable, quoted

# Tensor-name suffix -> the part of a plain LoRA module it is (LyCORIS's: lycoris.LYCORIS_SUFFIXES).
PLAIN_SUFFIXES: dict[str, str] = {
    "lora_down.weight": "down", "lora_up.weight": "up", "lora_mid.weight": "mid", "alpha": "alpha",
    "lora_A.weight": "down", "lora_B.weight": "up",  # PEFT
    "down.weight": "down", "up.weight": "up",  # old diffusers attention processors, `lora.down`
}
CONV_IN = UNET + "input_blocks.0.0.weight"
SHOWN_UNMATCHED = 5


@dataclass(frozen=True)
class LoraFile:
    """A LoRA/LyCORIS file as read: tensors on the CPU in their stored dtype, nothing computed yet.
    `sha256_short`: A1111's hash for infotext (the file's `sshs_model_hash`, else the first 12 hex of the
    sha256 of the safetensors data section, or of a whole pickle); `sha256`: of the whole file, the identity
    of the patches made from it."""

    path: Path
    name: str
    alias: str
    family: str | None
    metadata: dict[str, str]
    tensors: dict[str, Tensor]
    sha256_short: str
    sha256: str = ""

    def modules(self) -> dict[str, dict[str, Tensor]]:
        """{module name: {part: tensor}}; keys with no known suffix are not here (see split_key)."""
        out: dict[str, dict[str, Tensor]] = {}
        for key, tensor in self.tensors.items():
            split = split_key(key)
            if split:
                out.setdefault(split[0], {})[split[1]] = tensor
        return out


def split_key(key: str) -> tuple[str, str] | None:
    """(module, part) of a tensor name, or None when its suffix is of no LoRA format we read."""
    for suffix, part in PLAIN_SUFFIXES.items():
        if key.endswith("." + suffix):
            return key[:-len(suffix) - 1], part
    module, _, suffix = key.rpartition(".")
    if module and suffix in LYCORIS_SUFFIXES:
        return module, suffix
    return None


def _fail(path: Path, what: str) -> NetworkFileError:
    return NetworkFileError(f"LoRA {quoted(path.name)}: {what}")


def read_lora(path: str | Path) -> LoraFile:
    """Read a LoRA file (.safetensors, or a weights-only .pt/.ckpt); NetworkFileError on anything wrong."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        tensors, metadata = _read_pickle(path), {}
    else:
        try:
            header = read_header(path)
            tensors = load_tensors(header)
        except CheckpointError as exc:
            raise NetworkFileError(f"LoRA file {exc}") from None
        except OSError as exc:
            raise _fail(path, f"cannot be read ({exc.strerror})") from None
        metadata = dict(header.metadata)
    if not tensors:
        raise _fail(path, "the file holds no tensors")
    if not any(split_key(k) for k in tensors):
        sample = ", ".join(quoted(k, 80) for k in sorted(tensors)[:3])
        raise _fail(path, f"not a LoRA: none of its {len(tensors)} tensors has a LoRA/LyCORIS name "
                          f"(e.g. {sample})")
    short = lora_short_hash(path, metadata)  # A1111's rule, kept in one place
    whole = file_sha256(path)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    return LoraFile(path=path, name=path.stem, alias=metadata.get("ss_output_name", ""),
                    family=lora_family(shapes, metadata), metadata=metadata, tensors=tensors,
                    sha256_short=short, sha256=whole)


def _read_pickle(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... with long texts
        first = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 160,
                          multiline=False)
        raise _fail(path, f"refused: not a plain weights-only pickle (it would need more than tensors to "
                          f"load, or is damaged: {first}); use the .safetensors version") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                            for k, v in obj.items()):
        raise _fail(path, "does not hold a plain dictionary of named tensors")
    return dict(obj)


def lora_patch_set(lora: LoraFile, model, te: float = 1.0, unet: float = 1.0) -> PatchSet:
    """The weight patches `lora` makes on `model` (a checkpoint.LoadedModel) at text-encoder strength `te` and
    UNet strength `unet`. Refuses a LoRA of another family, and one with keys that match nothing here."""
    fam = family(model.description.family)
    if lora.family is not None and lora.family != fam.name:
        raise _fail(lora.path, f"made for {family(lora.family).label}, but the loaded model is {fam.label}; "
                               f"use a LoRA made for {fam.label}")
    shapes = model.weights.shapes()
    keys = LoraKeys(fam, shapes, model.unet.config.num_res_blocks)
    source = f"lora:{lora.sha256 or lora.sha256_short}"
    patches: list[WeightPatch] = []
    keys_of: dict[str, list[str]] = {}
    for key in lora.tensors:
        split = split_key(key)
        if split:
            keys_of.setdefault(split[0], []).append(key)
    applied: set[str] = set()
    for module, parts in lora.modules().items():
        resolved = keys.resolve(module)
        if resolved is None:
            continue
        for target, delta in module_deltas(lora.path, module, parts, resolved, shapes).items():
            strength = te if target.startswith(TEXT_PREFIX) else unet
            if strength:  # a zero strength changes nothing: skip computing its ΔW (A1111 does too)
                patches.append(WeightPatch(target, delta, strength, source))
        applied.update(keys_of[module])
    missed = [k for k in lora.tensors if k not in applied]
    if missed:
        shown = ", ".join(printable(k, 120, multiline=False) for k in missed[:SHOWN_UNMATCHED])
        more = ", …" if len(missed) > SHOWN_UNMATCHED else ""
        raise _fail(lora.path, f"{len(missed)} of {len(lora.tensors)} keys were not applied: {shown}{more} "
                               f"(the loaded model is {fam.label}; the LoRA may be for another model)")
    return PatchSet(tuple(patches))


Delta = Callable[[Tensor], Tensor]


def module_deltas(path: Path, module: str, parts: Mapping[str, Tensor], resolved: Resolved,
                  shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Delta]:
    """{target: ΔW function} for one module; shapes are checked now, deltas computed when applied."""
    if any(p in LYCORIS_SUFFIXES for p in parts):
        out: dict[str, Delta] = {}
        try:
            for param, fn in lycoris_deltas(parts).items():
                targets = resolved.targets(param)
                if all(t in shapes for t in targets):  # refused now, not when applied (a missing one: _split)
                    fn.check((shapes[targets[0]][0] * len(targets), *shapes[targets[0]][1:]))
                out.update(_split(resolved, param, fn, shapes))
        except NetworkFileError as exc:
            raise _fail(path, f"module {quoted(module)}: {exc}") from None
        return out
    if "down" not in parts or "up" not in parts:
        raise _fail(path, f"module {quoted(module)} has {', '.join(sorted(parts))} but not both up and down")
    down, up, mid = parts["down"], parts["up"], parts.get("mid")
    alpha = parts.get("alpha")
    if down.ndim not in (2, 4) or up.ndim not in (2, 4) or (mid is not None and mid.ndim != 4) \
            or (alpha is not None and alpha.numel() != 1):
        shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(parts.items()))
        raise _fail(path, f"module {quoted(module)} has tensors of the wrong rank for a LoRA ({shown})")
    rank = down.shape[0]
    if up.shape[1] != rank or (mid is not None and tuple(mid.shape[:2]) != (rank, rank)):
        raise _fail(path, f"module {quoted(module)} has inconsistent ranks: down {tuple(down.shape)}, "
                          f"up {tuple(up.shape)}" + (f", mid {tuple(mid.shape)}" if mid is not None else ""))
    scale = 1.0 if alpha is None else float(alpha.float().reshape(-1)[0]) / rank
    out_dim, in_dim = up.shape[0], down.shape[1]
    kernel = tuple(down.shape[2:]) if mid is None else tuple(mid.shape[2:])
    fused = len(resolved.split)
    targets = resolved.targets()
    want = shapes[targets[0]]
    pad = 0
    if targets[0] == CONV_IN and len(want) == 4 and want[1] == INPAINT_IN_CHANNELS and in_dim < want[1]:
        pad = want[1] - in_dim
    if len(want) not in (2, 4):
        raise _fail(path, f"module {quoted(module)} is a low-rank change of {targets[0]}, which is not a "
                          f"matrix or a conv kernel {tuple(want)}")
    if len(want) == 4:  # a linear LoRA fits a 1x1 conv
        kernels = (tuple(want[2:]), ()) if tuple(want[2:]) == (1, 1) else (tuple(want[2:]),)
    else:  # and a 1x1 conv LoRA a linear layer
        kernels = ((), (1, 1))
    fits = out_dim == want[0] * max(fused, 1) and in_dim + pad == want[1] and kernel in kernels
    if not fits:
        raise _fail(path, f"module {quoted(module)} makes a {out_dim}x{in_dim}{_kernel(kernel)} change, "
                          f"but the model's {targets[0]} is {tuple(want)}; the LoRA is for another model")

    def delta(original: Tensor) -> Tensor:
        # On the weight's device: a GPU multiplies an SDXL LoRA's hundreds of products in no time.
        on = {"device": original.device, "dtype": torch.float32}
        d = _product(down.to(**on), up.to(**on), None if mid is None else mid.to(**on)) * scale
        if pad:
            d = torch.nn.functional.pad(d, (0, 0, 0, 0, 0, pad))
        return d

    return _split(resolved, "weight", delta, shapes)


def _kernel(kernel: tuple[int, ...]) -> str:
    return "" if not kernel else "x" + "x".join(map(str, kernel))


def _product(down: Tensor, up: Tensor, mid: Tensor | None) -> Tensor:
    up2 = up.flatten(1)
    if mid is not None:
        return torch.einsum("oa,abhw,bi->oihw", up2, mid, down.flatten(1))
    if down.ndim == 2:
        return up2 @ down
    return (up2 @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


def _split(resolved: Resolved, param: str, fn: Delta,
           shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Delta]:
    """One ΔW function per target: the function itself, or (fused q/k/v) a row block of it each."""
    targets = resolved.targets(param)
    missing = [t for t in targets if t not in shapes]
    if missing:  # e.g. a bias diff for a layer without a bias
        raise NetworkFileError(f"a {param} change for {missing[0]}, which this model does not have")
    if not resolved.split:
        return {targets[0]: fn}
    fused_shape = (shapes[targets[0]][0] * len(targets), *shapes[targets[0]][1:])

    def block(i: int, rows: int) -> Delta:
        def delta(original: Tensor) -> Tensor:
            fused = fn(torch.zeros(fused_shape, dtype=torch.float32, device=original.device))
            return fused.reshape(fused_shape[0], -1)[i * rows:(i + 1) * rows]
        return delta

    return {t: block(i, shapes[t][0]) for i, t in enumerate(targets)}
