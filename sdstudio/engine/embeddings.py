"""Textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word"): learned token vectors that
replace a prompt word's token embeddings before the text transformer.

File layouts read (AUTOMATIC1111 `modules/textual_inversion/textual_inversion.py` create_embedding_from_data,
diffusers `load_textual_inversion`, kohya sd-scripts):

- A1111 `.pt`: a dict whose `string_to_param` holds one tensor [n, 768] (SD 1.x) or [n, 1024] (SD 2.x), next
  to `string_to_token`, `name`, `step` and other plain values;
- diffusers `learned_embeds.bin` / `.safetensors`: one entry {token: [768]} (one vector);
- single-tensor files: one key of any name (kohya's `emb_params`), shape [n, d] or [d];
- SDXL: `clip_l` [n, 768] for the first text encoder and `clip_g` [n, 1280] for the second.

`.pt`/`.bin` files are opened with `torch.load(weights_only=True)` only: a pickle that needs anything beyond
tensors and plain containers is refused, never unpickled. Vectors are checked (floating point, finite, 1 to
75 of them, one width per text encoder) and kept on the CPU in float32.

The hash written to infotext ("TI hashes") is A1111's: the first 12 hex digits of the SHA-256 of the whole
file (modules/hashes.py sha256; network_files.embedding_short_hash, cached per path, size and mtime).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdstudio.engine.embedding_files import EmbeddingIndex, library_index, not_found
from sdstudio.engine.errors import CheckpointError, NetworkFileError
from sdstudio.engine.network_files import embedding_dirs, embedding_short_hash
from sdstudio.engine.prompt_grammar import CHUNK_TOKENS, EmbeddingLookup
from sdstudio.engine.safetensors_file import read_header
from sdstudio.engine.weights import load_tensors
from sdstudio.untrusted import printable, quoted

# 75 vectors of 768 + 1280 floats in fp64 are 1.2 MB; an A1111 .pt with its extras a few KB more.
MAX_FILE_BYTES = 16 << 20
# Text-encoder widths of the released families, to name them in messages.
_FAMILY_WIDTHS = {(768,): "SD 1.x", (1024,): "SD 2.x", (768, 1280): "SDXL"}


def describe_widths(widths: Sequence[int]) -> str:
    """'768 (SD 1.x)', '768 + 1280 (SDXL)'."""
    text = " + ".join(str(w) for w in widths)
    family = _FAMILY_WIDTHS.get(tuple(widths))
    return f"{text} ({family})" if family else text


@dataclass(frozen=True)
class Embedding:
    """One embedding file: `vectors` holds one [n, width] float32 tensor per text encoder, in the model's
    encoder order (SDXL: clip_l, clip_g); `name` is the file stem, `short_hash` A1111's 12-hex hash."""

    name: str
    path: Path
    vectors: tuple[Tensor, ...]
    short_hash: str

    @property
    def count(self) -> int:
        return self.vectors[0].shape[0]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(v.shape[1] for v in self.vectors)

    def vectors_for(self, widths: Sequence[int]) -> tuple[Tensor, ...]:
        """The vectors for text encoders of these widths; NetworkFileError naming both when they differ."""
        if self.widths != tuple(widths):
            raise NetworkFileError(
                f"embedding {quoted(self.name)} is made for text encoders of width "
                f"{describe_widths(self.widths)}; the loaded model's are {describe_widths(widths)}: use an "
                "embedding made for this model")
        return self.vectors


def _refuse(path: Path, why: str) -> NetworkFileError:
    return NetworkFileError(f"embedding {quoted(path.name)}: {why}")


def _read_data(path: Path) -> object:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:  # checked before reading: a prompt word must not load a misplaced checkpoint
        raise _refuse(path, f"is {size / 2**20:.0f} MB, far more than an embedding (a checkpoint or LoRA in the "
                            "embeddings folder?)")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_tensors(read_header(path))
        except CheckpointError as exc:
            raise _refuse(path, str(exc).split(": ", 1)[-1]) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, zip errors)
        first = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                          multiline=False)[:160]
        raise _refuse(path, "cannot be read as a weights-only PyTorch file (SD Studio never unpickles more "
                            f"than tensors; convert it to .safetensors): {first}") from None


def _tensors(path: Path, data: object) -> tuple[Tensor, ...]:
    """The file's vectors per text encoder, before checks (A1111's order of recognition)."""
    if isinstance(data, Tensor):
        return (data,)
    if not isinstance(data, dict):
        raise _refuse(path, f"holds a {type(data).__name__}, not an embedding dictionary")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            count = len(params) if isinstance(params, dict) else 0
            raise _refuse(path, f"its string_to_param holds {count} entries; an embedding file holds one")
        return (next(iter(params.values())),)
    if "clip_l" in data and "clip_g" in data:
        return data["clip_l"], data["clip_g"]
    if len(data) != 1:
        keys = ", ".join(quoted(k, 40) for k in list(data)[:4])
        raise _refuse(path, f"holds {len(data)} entries ({keys}); an embedding file holds one tensor, "
                            "string_to_param, or clip_l + clip_g")
    return (next(iter(data.values())),)


def _checked(path: Path, tensors: tuple[object, ...]) -> tuple[Tensor, ...]:
    out = []
    for tensor in tensors:
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            raise _refuse(path, "its vectors are not a floating-point tensor")
        vectors = tensor.detach().to("cpu", torch.float32)
        if vectors.dim() == 1:
            vectors = vectors[None]
        if vectors.dim() != 2 or vectors.shape[1] == 0:
            shape = list(tensor.shape)
            raise _refuse(path, f"its vectors have shape {shape}; expected [n, width] or [width]")
        if not 0 < vectors.shape[0] <= CHUNK_TOKENS:
            count = vectors.shape[0]
            raise _refuse(path, f"it has {count} vectors; a prompt chunk holds 1 to {CHUNK_TOKENS}")
        if not bool(torch.isfinite(vectors).all()):
            raise _refuse(path, "its vectors contain NaN or infinite values (a broken training run?)")
        out.append(vectors.contiguous())
    if len({v.shape[0] for v in out}) != 1:
        raise _refuse(path, "its clip_l and clip_g hold different numbers of vectors "
                            f"({out[0].shape[0]} and {out[1].shape[0]})")
    return tuple(out)


def read_embedding(path: str | os.PathLike) -> Embedding:
    """Read and check one embedding file; NetworkFileError (one line) on anything wrong."""
    path = Path(path)
    vectors = _checked(path, _tensors(path, _read_data(path)))
    return Embedding(path.stem, path, vectors, embedding_short_hash(path))


class EmbeddingLibrary:
    """The embeddings in $SDSTUDIO_HOME/embeddings and the `folders` given (extra folders, e.g. an A1111 or
    ComfyUI install's), found by name (embedding_files.EmbeddingIndex) and read on first use, cached per
    path, size and mtime. `refresh()` re-lists the folders; `state` is the listing's cache key."""

    def __init__(self, folders: Iterable[str | os.PathLike] = (), cache_size: int = 64):
        self.extra = tuple(str(f) for f in folders)
        self.cache_size = cache_size
        self._index: EmbeddingIndex | None = None
        self._loaded: OrderedDict[tuple[str, int, int], Embedding] = OrderedDict()

    @property
    def folders(self) -> list[Path]:
        return embedding_dirs(self.extra)

    @property
    def index(self) -> EmbeddingIndex:
        return self._index if self._index is not None else self.refresh()

    @property
    def state(self) -> tuple:
        return self.index.state

    def refresh(self) -> EmbeddingIndex:
        self._index = library_index(self.extra)
        return self._index

    def names(self) -> list[str]:
        return [p.stem for p in self.index.files]

    def find(self, text: str, explicit: bool = False) -> Embedding | None:
        """The embedding `text` names (embedding_files naming rules), read; None when none does, except for
        an explicit (`embedding:NAME`) reference, which raises NetworkFileError naming the folders."""
        path = self.index.resolve(text, explicit)
        if path is None:
            if explicit:
                raise not_found(text, self.index.folders)
            return None
        return self.load(path)

    def load(self, path: Path) -> Embedding:
        try:
            st = path.stat()
        except OSError as exc:
            raise _refuse(path, f"cannot be read ({exc.strerror or exc})") from None
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._loaded:
            self._loaded[key] = read_embedding(path)
            if len(self._loaded) > self.cache_size:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    def lookup(self, widths: Sequence[int], found: dict[str, Embedding]) -> EmbeddingLookup:
        """The prompt grammar's lookup for a model with text encoders of `widths`: each embedding a prompt
        uses is checked against them (NetworkFileError naming both) and recorded in `found` by name."""

        def lookup(text: str, explicit: bool) -> tuple[str, int] | None:
            embedding = self.find(text, explicit)
            if embedding is None:
                return None
            embedding.vectors_for(widths)
            other = found.setdefault(embedding.name, embedding)
            if other.path != embedding.path:
                raise NetworkFileError(f"the prompt names two embeddings called {quoted(embedding.name)} "
                                       f"({other.path} and {embedding.path}); rename one")
            return embedding.name, embedding.count

        return lookup
