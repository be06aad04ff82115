"""ControlNet files in the models folder (models/ControlNet, sd-webui-controlnet's folder) and which model
family each was made for, read from the file's header only. Torch-free: the app lists them without the engine.

The family comes from the same two widths checkpoint detection uses (families.Family.matches): the
cross-attention context width (any `attn2.to_k.weight`, [inner, context]) and SDXL's `label_emb` input width
(`label_emb.0.0.weight` in lllyasviel's layout, `add_embedding.linear_1.weight` in diffusers'). Our own files
may name it in `sdstudio.config` metadata, as the built-in model does. A file whose family cannot be told
(no attention, an unknown width) has family None and is offered for every model: the engine's loader refuses
it by name if it does not fit. T2I-Adapters share the folder (as in sd-webui-controlnet) and are listed with
their kind; their family comes from their first conv's pixel-unshuffle (t2i_adapter_keys.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sdstudio import paths
from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.families import FAMILIES
from sdstudio.engine.safetensors_file import read_header
from sdstudio.engine.t2i_adapter_keys import adapter_family, is_adapter

CONTROLNET_SUFFIXES = (".safetensors",)
_CONTEXT_KEY = "attn2.to_k.weight"
_ADM_KEYS = ("label_emb.0.0.weight", "add_embedding.linear_1.weight")
_CONFIG_KEY = "sdstudio.config"  # as engine/detect.py's CONFIG_KEY
CONTROLNET, ADAPTER = "ControlNet", "T2I-Adapter"


@dataclass(frozen=True)
class ControlNetFile:
    """One file of the ControlNet folder: its path, name (the stem, as A1111 lists it), the family it was made
    for (a families.py name, None = not told by its header), when the header could not be read, why, and
    its kind (CONTROLNET or ADAPTER)."""

    path: str
    name: str
    family: str | None = None
    problem: str = ""
    kind: str = CONTROLNET

    @property
    def label(self) -> str:
        """How pickers list it: the name, and the kind when it is not a ControlNet."""
        return self.name if self.kind == CONTROLNET else f"{self.name} ({self.kind})"

    def compatible(self, model_family: str | None) -> bool:
        """Usable with a model of `model_family` as far as the header tells (unknown on either side: yes)."""
        unknown = self.family is None or model_family is None
        return not self.problem and (unknown or self.family == model_family)

    def why_not(self, model_family: str | None) -> str:
        """One line saying why the file is not offered for `model_family`, "" when it is."""
        if self.problem:
            return self.problem
        if self.compatible(model_family):
            return ""
        return f"made for {_label(self.family)}; the model is {_label(model_family)}"


def _label(name: str | None) -> str:
    return next((f.label for f in FAMILIES if f.name == name), name or "unknown")


def family_from_header(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> str | None:
    """The family a ControlNet with these tensor shapes (any key prefix) and metadata was made for; None
    when they do not tell."""
    raw = metadata.get(_CONFIG_KEY)
    if raw:
        try:
            config = json.loads(raw)
        except ValueError:
            config = None
        named = config.get("family") if isinstance(config, dict) else None
        if isinstance(named, str) and any(f.name == named for f in FAMILIES):
            return named
    context = next((shape[1] for key, shape in sorted(shapes.items())
                    if key.endswith(_CONTEXT_KEY) and len(shape) == 2), None)
    if context is None:
        return None
    adm = next((shape[1] for key, shape in shapes.items()
                if any(key.endswith(k) for k in _ADM_KEYS) and len(shape) == 2), None)
    return next((f.name for f in FAMILIES if f.matches(context, adm)), None)


def read_controlnet_file(path: Path) -> ControlNetFile:
    """The entry for one file, from its header; an unreadable file is an entry with its `problem`."""
    try:
        header = read_header(path)
    except (SDStudioError, ValueError) as exc:
        return ControlNetFile(str(path), path.stem, problem=str(exc))
    except OSError as exc:
        return ControlNetFile(str(path), path.stem, problem=f"{path.name}: {exc.strerror or exc}")
    shapes = {name: t.shape for name, t in header.tensors.items()}
    if is_adapter(shapes):
        named = family_from_header({}, header.metadata)
        return ControlNetFile(str(path), path.stem, named or adapter_family(shapes), kind=ADAPTER)
    return ControlNetFile(str(path), path.stem, family_from_header(shapes, header.metadata))


def _files_under(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in CONTROLNET_SUFFIXES and p.is_file())


def controlnet_files(folder: Path | None = None) -> list[ControlNetFile]:
    """Every ControlNet file under `folder` (subfolders included), by path; by default the user's
    models/ControlNet and then the built-in ones (paths.builtin_controlnet_dir, the built-in model's)."""
    roots = [folder] if folder is not None else [paths.controlnet_dir(), paths.builtin_controlnet_dir()]
    return [read_controlnet_file(p) for root in roots for p in _files_under(root)]


def find_controlnet(name: str) -> Path | None:
    """The file a ControlNet name (its file name or stem, as A1111 lists it) stands for in the default folders,
    the user's first; None when none has that name."""
    for root in (paths.controlnet_dir(), paths.builtin_controlnet_dir()):
        for path in _files_under(root):
            if name in (path.name, path.stem):
                return path
    return None
