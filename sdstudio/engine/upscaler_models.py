"""Model upscalers: ESRGAN / Real-ESRGAN files from A1111's upscaler folders, run in tiles with overlap.

Files live where A1111 keeps them (model_files.UPSCALER_FOLDERS under the models folder: models/ESRGAN,
models/RealESRGAN, ...), named by their stem as A1111 names them ("4x-UltraSharp"). `.safetensors` files are
read by our own reader; `.pth`/`.pt` files (the usual release format) by torch's weights-only unpickler, which
builds tensors and nothing else, as for LoRA files. The networks are ours (rrdbnet.py, which says why not
spandrel).

Tiling (`run_tiled`): the image is cut into tiles of `tile` pixels, each run with `overlap` pixels of context
on every side (clipped at the image edges) and only its centre kept, so memory is bounded by one padded tile
and, when the overlap covers the network's receptive field, the result equals the untiled run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from sdstudio import paths
from sdstudio.engine.errors import Cancelled, CheckpointError, RequestError
from sdstudio.engine.model_files import (
    UPSCALER_FOLDERS,
    UPSCALER_SUFFIXES,
    upscaler_files,
    upscaler_model_names,
)
from sdstudio.engine.rrdbnet import build_upscaler
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header
from sdstudio.engine.weights import load_tensors
from sdstudio.untrusted import printable, quoted

TILE = 192  # A1111's default ESRGAN tile (bench/upscaler_tiles.py: a 4× RRDBNet at 128² input adds 257 MiB)
OVERLAP = 16  # context on each side of a tile; multiple of 4 (the largest pixel-unshuffle)
# Wrappers around the state dict in released files (BasicSR saves the EMA weights under params_ema).
_WRAPPERS = ("params_ema", "params", "state_dict", "model")

OnTile = Callable[[int, int], None]  # (tiles done, tiles in all); may raise Cancelled


def upscaler_dirs(models_dir: Path | None = None) -> list[Path]:
    root = models_dir or paths.models_dir()
    return [root / name for name in UPSCALER_FOLDERS]


list_upscaler_files = upscaler_files  # the listing is torch-free (model_files), for the UI too


def find_upscaler_file(name: str, models_dir: Path | None = None) -> Path:
    """The file A1111 would call `name` (its stem, case-insensitive; or a path to a file)."""
    as_path = Path(name)
    if as_path.suffix.lower() in UPSCALER_SUFFIXES and as_path.is_file():
        return as_path
    files = list_upscaler_files(models_dir)
    for path in files:
        if path.stem.lower() == name.lower():
            return path
    where = ", ".join(str(d) for d in upscaler_dirs(models_dir)[:2])
    have = ", ".join(p.stem for p in files[:20]) or "none"
    raise RequestError(f"no upscaler model named {quoted(name)} in {where} (and the other A1111 upscaler "
                       f"folders); found: {printable(have, 400, multiline=False)}")


def read_upscaler_state(path: Path) -> dict[str, Tensor]:
    """The file's weights as a plain state dict (wrappers such as params_ema removed)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        obj = _read_pickle(path)
    else:
        obj = load_tensors(read_header(path))  # raises CheckpointError with the reason for a bad file
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path.name}: does not hold a dictionary of named tensors; not an upscaler model")
    return dict(obj)


def _read_pickle(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ... with long texts
        text = str(exc).strip()
        first = printable(text.splitlines()[0] if text else type(exc).__name__, 160, multiline=False)
        raise CheckpointError(f"{path.name}: refused: not a plain weights-only PyTorch file (it would need more "
                              f"than tensors to load, or is damaged: {first})") from None


@dataclass
class UpscalerModel:
    """A loaded upscaler network and what it does."""

    name: str
    path: Path
    net: nn.Module
    scale: int

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> UpscalerModel:
        self.net.to(device=device, dtype=dtype)
        return self


def load_upscaler(path: str | os.PathLike) -> UpscalerModel:
    """Load an upscaler file (CPU, fp32). A file that is not an ESRGAN/Real-ESRGAN model is refused by name."""
    path = Path(path)
    net = build_upscaler(read_upscaler_state(path), path.name)
    scale = float(net.scale)  # type: ignore[arg-type]
    if scale != int(scale) or scale < 1:
        raise CheckpointError(f"{path.name}: upscales by {scale:g}; only whole factors are supported")
    return UpscalerModel(path.stem, path, net, int(scale))


def _multiple(net: nn.Module) -> int:
    return int(getattr(net, "unshuffle", 1))


@torch.no_grad()
def run_tiled(model: UpscalerModel, x: Tensor, tile: int = TILE, overlap: int = OVERLAP,
              on_tile: OnTile | None = None) -> Tensor:
    """(1, 3, H, W) in [0, 1] on the CPU -> (1, 3, H·s, W·s) on the CPU, float32, unclamped. Each tile runs on
    the model's device and dtype; tile <= 0 runs the whole image at once."""
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise RequestError(f"an upscaler takes one RGB image; got a tensor of shape {tuple(x.shape)}")
    param = next(model.net.parameters())
    s, m = model.scale, _multiple(model.net)
    h, w = x.shape[-2:]
    # Pixel-unshuffle needs sides that are multiples of its factor: pad by edge replication, crop after.
    ph, pw = -h % m, -w % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hp, wp = x.shape[-2:]
    if tile <= 0:
        tile = max(hp, wp)
    tile = max(m, tile // m * m)
    overlap = -(-max(overlap, 0) // m) * m
    out = torch.empty(1, 3, hp * s, wp * s)
    boxes = [(y, xx) for y in range(0, hp, tile) for xx in range(0, wp, tile)]
    for done, (y0, x0) in enumerate(boxes, 1):
        y1, x1 = min(y0 + tile, hp), min(x0 + tile, wp)
        ey0, ex0 = max(0, y0 - overlap), max(0, x0 - overlap)
        ey1, ex1 = min(hp, y1 + overlap), min(wp, x1 + overlap)
        part = model.net(x[:, :, ey0:ey1, ex0:ex1].to(param.device, param.dtype)).float().cpu()
        out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = part[:, :, (y0 - ey0) * s:(y1 - ey0) * s,
                                                       (x0 - ex0) * s:(x1 - ex0) * s]
        if on_tile is not None:
            on_tile(done, len(boxes))
    return out[:, :, :h * s, :w * s]


def upscale_pil(model: UpscalerModel, image: Image.Image, tile: int = TILE, overlap: int = OVERLAP,
                on_tile: OnTile | None = None) -> Image.Image:
    """One application of the model: the RGB image times the model's scale (alpha is not upscaled: dropped)."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()
    y = run_tiled(model, x, tile, overlap, on_tile)
    # Rounded, not truncated: an upscaler's output is a picture to look at, not latents to reproduce bytes of.
    b = (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(b, "RGB")


class ModelUpscalers:
    """The upscaler registry's source of model files (engine/upscale.py's UpscalerSource): names are the
    files' stems, found afresh on each call (a file dropped in the folder shows up without a restart); the
    last model used stays loaded."""

    def __init__(self, models_dir: Path | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, tile: int = TILE, overlap: int = OVERLAP) -> None:
        self.models_dir, self.device, self.dtype = models_dir, torch.device(device), dtype
        self.tile, self.overlap = tile, overlap
        self._cached: tuple[tuple, UpscalerModel] | None = None

    def names(self) -> list[str]:
        return upscaler_model_names(self.models_dir)

    def model(self, name: str) -> UpscalerModel:
        path = find_upscaler_file(name, self.models_dir)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(self.device), self.dtype)
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # free the old one first: two big models need not fit at once
            self._cached = (key, load_upscaler(path).to(self.device, self.dtype))
        return self._cached[1]

    def step(self, name: str) -> Callable[[Image.Image, float], Image.Image]:
        """A1111's do_upscale for a model: the image times the model's own factor (the asked one is ignored;
        the registry's upscale_image repeats and resizes to reach the target)."""
        def run(image: Image.Image, _scale: float) -> Image.Image:
            return upscale_pil(self.model(name), image, self.tile, self.overlap)

        return run

    def has(self, name: str) -> bool:
        """A model file by name (case-insensitive, as found) or a path to an upscaler file."""
        as_path = Path(name)
        if as_path.suffix.lower() in UPSCALER_SUFFIXES and as_path.is_file():
            return True
        return any(n.lower() == name.lower() for n in self.names())

    def get(self, name: str):
        if not self.has(name):
            return None
        from sdstudio.engine.upscale import PixelUpscaler

        return PixelUpscaler(name, self.step(name))


def cancel_check(is_cancelled: Callable[[], bool]) -> OnTile:
    """An on_tile callback that stops between tiles once `is_cancelled()` is true."""
    def check(_done: int, _total: int) -> None:
        if is_cancelled():
            raise Cancelled("upscale cancelled")

    return check


_SOURCE: ModelUpscalers | None = None


def register_model_upscalers(device: str | torch.device | None = None) -> ModelUpscalers:
    """The one source of model upscalers (files in the data folder's upscaler folders), registered with the
    upscaler registry on first use; later calls move where it runs (the engine's device; fp32, as A1111's
    ESRGAN runs unless told otherwise); device None leaves it where it is (the CPU at first)."""
    global _SOURCE
    from sdstudio.engine.upscale import register_source

    if _SOURCE is None:
        _SOURCE = ModelUpscalers()
        register_source(_SOURCE)
    if device is not None and _SOURCE.device != torch.device(device):
        _SOURCE.device, _SOURCE._cached = torch.device(device), None
    return _SOURCE
