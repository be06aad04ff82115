"""The LoRA / embedding catalog the prompt's browser lists: one entry per file, from its safetensors header only.

A header (8-byte length + JSON, see engine/safetensors_file.py, whose checked reader and limits are used here)
gives the tensor names and shapes and the `__metadata__` strings, enough for the model family
(engine/lora_family.py), kohya's `ss_output_name` alias and the trigger words of `ss_tag_frequency`; no tensor
data is read and torch is never imported. Entries are cached by (path, size, mtime) in memory and in a JSON
file under the data folder, so a second scan, also after a restart, only lists and stats the files. A file whose
header cannot be read is listed with the reason instead of stopping the scan. Pickled files (.pt / .ckpt / .bin)
are listed without being opened: reading them means unpickling, which the engine does only on use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sdstudio import paths
from sdstudio.engine import network_files
from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.families import FAMILIES
from sdstudio.engine.lora_family import lora_family
from sdstudio.engine.safetensors_file import read_header, strict_json

LORA, EMBEDDING = "lora", "embedding"
# A1111's preview images beside a network file, in the order it looks for them.
PREVIEW_SUFFIXES = (".preview.png", ".png", ".preview.jpg", ".jpg", ".preview.jpeg", ".jpeg",
                    ".preview.webp", ".webp")
MAX_TRIGGERS = 20
# Bump when an entry's fields or their meaning change: older cache files are then ignored.
CACHE_VERSION = 1
# Embedding tensors by text-encoder width; SDXL embeddings name both encoders (clip_l, clip_g).
_EMBEDDING_WIDTHS = {f.text_encoders[0].width: f.name for f in FAMILIES
                     if len(f.text_encoders) == 1 and f.text_encoders[0].width}


@dataclass(frozen=True)
class NetworkEntry:
    """One file of the browser. `name` is the file stem, what `<lora:NAME:1>` or the prompt word uses; `family`
    is None when the file does not tell; `problem` is why the header could not be read ("" when it could)."""

    kind: str
    path: str
    name: str
    alias: str = ""
    family: str | None = None
    triggers: tuple[str, ...] = ()
    vectors: int = 0  # embeddings: how many token slots it takes (0 = not known)
    problem: str = ""
    preview: str = ""  # the preview image beside it, "" when there is none (found at every scan)

    def compatible(self, model_family: str | None) -> bool:
        """False only when both families are known and differ."""
        return self.family is None or model_family is None or self.family == model_family

    def matches(self, text: str) -> bool:
        """The search box: every word of `text` in the name, alias or folder path, any case."""
        haystack = f"{self.name} {self.alias} {self.path}".lower()
        return all(word in haystack for word in text.lower().split())


def default_cache_path() -> Path:
    return paths.home() / "network_catalog.json"


def trigger_words(metadata: Mapping[str, str], limit: int = MAX_TRIGGERS) -> tuple[str, ...]:
    """kohya's `ss_tag_frequency` ({dataset folder: {tag: count}}, as a JSON string), summed over folders, most
    frequent first (ties by name); () when absent or not of that shape."""
    raw = metadata.get("ss_tag_frequency")
    if not raw:
        return ()
    try:
        data = strict_json(raw)
    except ValueError:
        return ()
    counts: dict[str, int] = {}
    for tags in data.values() if isinstance(data, dict) else ():
        for tag, count in tags.items() if isinstance(tags, dict) else ():
            if isinstance(count, int) and not isinstance(count, bool) and tag.strip():
                counts[tag.strip()] = counts.get(tag.strip(), 0) + count
    return tuple(sorted(counts, key=lambda t: (-counts[t], t))[:limit])


def embedding_family(shapes: Mapping[str, Sequence[int]]) -> tuple[str | None, int]:
    """(family, vectors) of an embedding file from its tensor shapes: SDXL files hold `clip_l` and `clip_g`;
    others one (vectors, width) tensor (A1111 `string_to_param.*`, kohya `emb_params`, or a bare tensor)."""
    if "clip_g" in shapes and "clip_l" in shapes:
        return "sdxl", int(shapes["clip_g"][0]) if len(shapes["clip_g"]) == 2 else 0
    if len(shapes) != 1:
        return None, 0
    shape = tuple(next(iter(shapes.values())))
    if len(shape) == 1:
        return _EMBEDDING_WIDTHS.get(shape[0]), 1
    if len(shape) == 2:
        return _EMBEDDING_WIDTHS.get(shape[1]), int(shape[0])
    return None, 0


def read_entry(path: Path, kind: str) -> NetworkEntry:
    """The entry for one file, from its header; unreadable files become entries with a `problem`."""
    base = NetworkEntry(kind=kind, path=str(path), name=path.stem)
    if path.suffix.lower() != ".safetensors":
        return base  # a pickle: not opened here (see the module docstring)
    try:
        header = read_header(path)
    except (SDStudioError, ValueError) as exc:
        return NetworkEntry(kind=kind, path=str(path), name=path.stem, problem=str(exc))
    except OSError as exc:
        return NetworkEntry(kind=kind, path=str(path), name=path.stem, problem=exc.strerror or str(exc))
    shapes = {name: t.shape for name, t in header.tensors.items()}
    meta = header.metadata
    if kind == EMBEDDING:
        family, vectors = embedding_family(shapes)
        return NetworkEntry(kind=kind, path=str(path), name=path.stem, family=family, vectors=vectors)
    alias = meta.get("ss_output_name", "")
    return NetworkEntry(kind=kind, path=str(path), name=path.stem, alias=alias if alias != path.stem else "",
                        family=lora_family(shapes, meta), triggers=trigger_words(meta))


def find_preview(path: Path, names_in_folder: set[str]) -> str:
    """A1111's preview image for `path` among the file names of its folder."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    for suffix in PREVIEW_SUFFIXES:
        if stem + suffix in names_in_folder:
            return str(path.with_name(stem + suffix))
    return ""


class NetworkCatalog:
    """Scans the LoRA and embedding folders; keeps every file's entry keyed by (size, mtime) between scans."""

    def __init__(self, cache_path: Path | None = None):
        self.cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
        self._cache: dict[str, tuple[int, int, NetworkEntry]] | None = None
        self.cache_problem = ""  # why the cache file was not used, for the log ("" when it was or is new)
        self.read_count = 0  # headers read by the last scan (the rest came from the cache)

    def scan(self, lora_extra: Iterable[str | Path] = (), embedding_extra: Iterable[str | Path] = ()
             ) -> list[NetworkEntry]:
        """Every LoRA then every embedding file, each kind in folder order (network_files.list_files)."""
        cache = self._load_cache()
        self.read_count = 0
        entries: list[NetworkEntry] = []
        seen: dict[str, tuple[int, int, NetworkEntry]] = {}
        folder_names: dict[Path, set[str]] = {}
        for kind, folders, suffixes in (
            (LORA, network_files.lora_dirs(lora_extra), network_files.LORA_SUFFIXES),
            (EMBEDDING, network_files.embedding_dirs(embedding_extra), network_files.EMBEDDING_SUFFIXES),
        ):
            for path in network_files.list_files(folders, suffixes):
                entry = self._entry(path, kind, cache, seen)
                if entry is None:
                    continue
                names = folder_names.get(path.parent)
                if names is None:
                    names = folder_names[path.parent] = set(os.listdir(path.parent))
                preview = find_preview(path, names)
                entries.append(replace(entry, preview=preview))
        changed = seen.keys() != cache.keys() or self.read_count > 0
        self._cache = seen
        if changed:
            self._save_cache()
        return entries

    def _entry(self, path: Path, kind: str, cache: Mapping[str, tuple[int, int, NetworkEntry]],
               seen: dict[str, tuple[int, int, NetworkEntry]]) -> NetworkEntry | None:
        try:
            st = path.stat()
        except OSError:
            return None  # removed between listing and now
        key = f"{kind}:{path}"
        hit = cache.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            entry = hit[2]
        else:
            entry = read_entry(path, kind)
            self.read_count += 1
        seen[key] = (st.st_size, st.st_mtime_ns, entry)
        return entry

    # --- the cache file ----------------------------------------------------------------------------
    def _load_cache(self) -> dict[str, tuple[int, int, NetworkEntry]]:
        if self._cache is not None:
            return self._cache
        self._cache = {}
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._cache
        except (OSError, ValueError) as exc:
            self.cache_problem = f"{self.cache_path.name} unreadable, rescanning: {exc}"
            return self._cache
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            self.cache_problem = f"{self.cache_path.name} is from another version, rescanning"
            return self._cache
        for key, row in (data.get("files") or {}).items():
            try:
                size, mtime, fields = row
                fields = dict(fields, triggers=tuple(fields["triggers"]), preview="")
                self._cache[key] = (int(size), int(mtime), NetworkEntry(**fields))
            except (TypeError, ValueError, KeyError):
                continue  # one damaged row costs one header read, nothing else
        return self._cache

    def _save_cache(self) -> None:
        files = {key: [size, mtime, {k: v for k, v in asdict(entry).items() if k != "preview"}]
                 for key, (size, mtime, entry) in (self._cache or {}).items()}
        data = json.dumps({"version": CACHE_VERSION, "files": files}, ensure_ascii=False)
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.cache_path)  # a crash mid-write leaves the old cache, never half a file
        except OSError as exc:
            self.cache_problem = f"could not write {self.cache_path}: {exc}"
