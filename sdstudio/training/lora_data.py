"""A fine-tuning image set: the pictures of a folder, their captions, and aspect-ratio buckets.

Captions follow kohya sd-scripts' convention: `photo.txt` beside `photo.png` holds that image's caption, used
as written; an image without one is captioned "<trigger> <class>" (DreamBooth's "sks dog", Ruiz et al. 2023).

Buckets (NovelAI's aspect-ratio bucketing, as kohya implements it): sizes whose area is at most the training
resolution squared, sides multiples of a step (bucket_step); each image goes to the bucket nearest its aspect
ratio, is scaled to cover it and cropped (centred, or at a random place with `random_crop`); a batch is drawn
from one bucket, so its images share a size. Every draw uses the step's own generator, so a resumed run draws
the same batches as an uninterrupted one."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sdstudio.engine.errors import ImageFileError, RequestError
from sdstudio.untrusted import quoted

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES = 10_000


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    image: Image.Image  # RGB


def image_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise RequestError(f"--images {folder}: no such folder")
    if not folder.is_dir():
        raise RequestError(f"--images {folder}: not a folder; give the folder that holds the images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise RequestError(f"--images {folder}: no images there ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > MAX_IMAGES:
        raise RequestError(f"--images {folder}: {len(files)} images; a LoRA takes at most {MAX_IMAGES}")
    return files


def load_examples(folder: Path, trigger: str, class_word: str = "") -> list[Example]:
    """Every image of `folder` with its caption; ImageFileError naming the first image that cannot be read."""
    default = " ".join(w for w in (trigger.strip(), class_word.strip()) if w)
    out = []
    for path in image_files(folder):
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImageFileError(f"{quoted(path.name)} in {folder} cannot be read as an image "
                                 f"({type(exc).__name__}); remove or replace it") from None
        text = path.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8", errors="replace").strip() if text.is_file() else ""
        out.append(Example(path, caption or default, image))
    return out


def tag_frequency(examples: list[Example]) -> dict[str, int]:
    """kohya's per-dataset tag counts: captions split at commas."""
    counts: Counter[str] = Counter()
    for ex in examples:
        counts.update(tag.strip() for tag in ex.caption.split(",") if tag.strip())
    return dict(counts)


def bucket_step(resolution: int, multiple: int) -> int:
    """kohya's 64-pixel bucket step, finer for small resolutions (at least the VAE's factor)."""
    step = min(64, max(multiple, resolution // 8))
    return step - step % multiple


def buckets(resolution: int, multiple: int) -> list[tuple[int, int]]:
    """(width, height) sizes of area <= resolution², sides multiples of the step and between half and twice
    the resolution (kohya's defaults for 512: min_bucket_reso 256, max_bucket_reso 1024)."""
    step = bucket_step(resolution, multiple)
    area = resolution * resolution
    low, high = max(step, (resolution // 2) // step * step), 2 * resolution
    out = set()
    for width in range(low, high + 1, step):
        height = min(high, area // width // step * step)
        if height >= low:
            out.add((width, height))
            out.add((height, width))
    return sorted(out)


def nearest_bucket(size: tuple[int, int], sizes: list[tuple[int, int]]) -> tuple[int, int]:
    ratio = math.log(size[0] / size[1])
    return min(sizes, key=lambda s: (abs(math.log(s[0] / s[1]) - ratio), -s[0] * s[1]))


class BucketedImages:
    """Examples grouped by bucket; `batch(n, generator)` gives (pixels [n, 3, h, w] in [-1, 1], captions)."""

    def __init__(self, examples: list[Example], resolution: int, multiple: int, random_crop: bool = False,
                 flip: bool = False) -> None:
        sizes = buckets(resolution, multiple)
        self.examples = examples
        self.random_crop, self.flip = random_crop, flip
        self.bucket_of = [nearest_bucket(ex.image.size, sizes) for ex in examples]
        self.members: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(self.bucket_of):
            self.members.setdefault(b, []).append(i)

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        first = int(torch.randint(len(self.examples), (1,), generator=generator))
        bucket = self.bucket_of[first]
        members = self.members[bucket]
        others = torch.randint(len(members), (n - 1,), generator=generator)
        picks = [first] + [members[int(i)] for i in others]
        pixels = [self._pixels(self.examples[i].image, bucket, generator) for i in picks]
        return torch.stack(pixels), [self.examples[i].caption for i in picks]

    def _pixels(self, image: Image.Image, bucket: tuple[int, int],
                generator: torch.Generator) -> torch.Tensor:
        bw, bh = bucket
        scale = max(bw / image.width, bh / image.height)
        w, h = max(bw, round(image.width * scale)), max(bh, round(image.height * scale))
        resized = image.resize((w, h), Image.Resampling.LANCZOS)
        # Always draw, so the generator's sequence does not depend on the options' effect.
        u = torch.rand(3, generator=generator)
        left = int(u[0] * (w - bw + 1)) if self.random_crop else (w - bw) // 2
        top = int(u[1] * (h - bh + 1)) if self.random_crop else (h - bh) // 2
        crop = resized.crop((left, top, left + bw, top + bh))
        if self.flip and u[2] < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(a).permute(2, 0, 1).contiguous()
