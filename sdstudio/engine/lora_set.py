"""From a prompt's `<lora:…>` tags to the weight patches of one generation (the engine's LoRA wiring).

Torch is imported only when patches are built, so the CLI checks a job's LoRAs before torch loads. Two steps,
so that everything that needs no model is checked before a model is loaded:
1. `resolve_loras(request, extra_dirs)`: parse the tags (extra_networks.py), find each file (network_files:
   by stem, alias or, for a re-run, the hash the image recorded) and say what the infotext will carry. Bad tags
   raise RequestError, missing files NetworkFileError; both before any load.
2. `LoraFiles.patch_set(resolved, model)`: read the files (kept per path, size and mtime, so a changed weight
   re-reads nothing) and build one PatchSet with lora_file.lora_patch_set: `<lora:a> <lora:b>` is
   `PatchSet(a + b)`; each tag is its own use, so the same LoRA twice adds up, as two loaded networks do in A1111.

The engine applies the set on top of its own (`Engine.set_patches`); the model is patched only when the
combined set changed (patches.py), and a prompt without tags gives NO_PATCHES, which puts the weights back.
Nothing is applied partly: any problem with any file stops the job before sampling with one line naming it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sdstudio.engine.errors import NetworkFileError
from sdstudio.engine.extra_networks import LoraUse, hash_name, parse_prompt
from sdstudio.engine.network_files import find_lora, lora_short_hash
from sdstudio.engine.request import GenerationRequest
from sdstudio.untrusted import quoted

# LoRA files kept read beyond the ones in use, so switching back and forth re-reads nothing; bounded in number
# and in bytes (an SDXL LoRA can hold hundreds of MB of tensors in host memory).
KEPT_FILES = 4
KEPT_BYTES = 1 << 30


@dataclass(frozen=True)
class ResolvedLora:
    use: LoraUse
    path: Path
    short_hash: str  # A1111's, for "Lora hashes"


@dataclass(frozen=True)
class ResolvedLoras:
    """A request's LoRAs found on disk: the prompt to encode (tags removed), each use with its file, and the
    (name, hash) pairs for the result's `lora_hashes` (A1111 writes each name once)."""

    prompt: str
    loras: tuple[ResolvedLora, ...] = ()

    @property
    def hashes(self) -> tuple[tuple[str, str], ...]:
        pairs: dict[str, str] = {}
        for lora in self.loras:
            pairs.setdefault(hash_name(lora.use.name), lora.short_hash)
        return tuple(pairs.items())


def resolve_loras(request: GenerationRequest, extra_dirs: Iterable[str | Path] = ()) -> ResolvedLoras:
    """The request's LoRAs, found under the data folder's models/Lora and `extra_dirs`. A re-run's
    `request.lora_hashes` make the files prove their hash (a renamed file is found by it). Only the positive
    prompt holds tags, as in A1111; the negative prompt is encoded as written."""
    parsed = parse_prompt(request.prompt)
    recorded = dict(request.lora_hashes)
    folders = list(extra_dirs)
    found = []
    for use in parsed.loras:
        if use.dyn is not None:
            raise NetworkFileError(f"the tag of LoRA {quoted(use.name, 80)} asks for DYN {use.dyn} (A1111's "
                                   "dyn_dim, for DyLoRA files), which SD Studio does not apply yet; remove it")
        path = find_lora(use.name, recorded.get(hash_name(use.name), ""), folders)
        found.append(ResolvedLora(use, path, lora_short_hash(path)))
    return ResolvedLoras(parsed.prompt, tuple(found))


class LoraFiles:
    """LoRA files as read (lora_file.LoraFile), kept per (path, size, mtime): the ones of the last request
    and, of those used before, the most recent ones up to `kept` files and `kept_bytes` of tensors."""

    def __init__(self, kept: int = KEPT_FILES, kept_bytes: int = KEPT_BYTES):
        self.kept, self.kept_bytes = kept, kept_bytes
        self._files: OrderedDict[tuple[str, int, int], object] = OrderedDict()

    def read(self, path: Path):
        from sdstudio.engine.lora_file import read_lora  # torch: imported when a LoRA is used

        try:
            st = os.stat(path)
        except OSError as exc:
            raise NetworkFileError(f"LoRA {path}: cannot be read ({exc.strerror or exc})") from None
        key = (str(path), st.st_size, st.st_mtime_ns)
        lora = self._files.get(key)
        if lora is None:
            lora = read_lora(path)
            for old in [k for k in self._files if k[0] == key[0]]:  # the file changed on disk: drop the old
                del self._files[old]
            self._files[key] = lora
        self._files.move_to_end(key)
        return lora

    def patch_set(self, resolved: ResolvedLoras, model):
        """The patches.PatchSet of every use in `resolved` on `model` (checkpoint.LoadedModel); NO_PATCHES
        for none. NetworkFileError (from lora_file) for a file of another family or with keys that match
        nothing."""
        from sdstudio.engine.patches import NO_PATCHES, PatchSet

        if not resolved.loras:
            return NO_PATCHES
        from sdstudio.engine.lora_file import lora_patch_set

        patches = []
        in_use = []
        for lora in resolved.loras:
            read = self.read(lora.path)
            in_use.append(read)
            patches.extend(lora_patch_set(read, model, te=lora.use.te, unet=lora.use.unet).patches)
        self._trim({id(r) for r in in_use})
        return PatchSet(tuple(patches))

    def _trim(self, in_use: set[int]) -> None:
        """Drop the least recently used files not in use beyond the limits (in-use files are the newest)."""
        idle = [key for key, lora in self._files.items() if id(lora) not in in_use]
        sizes = {key: sum(t.numel() * t.element_size() for t in self._files[key].tensors.values()) for key in idle}
        while idle and (len(idle) > self.kept or sum(sizes[k] for k in idle) > self.kept_bytes):
            del self._files[idle.pop(0)]

    def __len__(self) -> int:
        return len(self._files)
