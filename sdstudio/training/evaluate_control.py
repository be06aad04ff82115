"""Measuring the companion ControlNet (issue 16), through the engine's public API as the app runs it.

Retrieval: for each of 64 frozen dataset emoji (evaluate.fixed_names, seed 0: the fidelity test's names), the
canny map of the emoji (the engine's canny preprocessor at 64 px) with an empty prompt, seed 0, 20 steps; a hit
is when the result is nearer (L2 on 16x16 box-downsampled RGB, as the fidelity test) to that emoji than to 95 %
of the dataset, i.e. its rank is under 5 % of N. Chance is 5 %.

Scribble: shapes drawn by code (white strokes 2 px wide on black, the map format the ControlNet reads, fed with
preprocessor "none") with an empty prompt at several seeds; the result's foreground (pixels not near white, with
white areas enclosed by it filled, control_hints.silhouette) against the drawn shape's filled area, IoU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from sdstudio.engine.api import Engine
from sdstudio.engine.request import ControlUnit
from sdstudio.training.control_hints import HINT_SIZE, silhouette
from sdstudio.training.evaluate import ranking, request_for, thumbnails

RANK_SHARE = 0.05
STROKE = 2
SHAPES = ("circle", "square", "triangle", "star", "diamond")


def canny_unit(controlnet: str, image: np.ndarray) -> ControlUnit:
    """The unit the app makes from an emoji: the image, the canny preprocessor at the model's pixel size."""
    return ControlUnit(model=controlnet, image=Image.fromarray(image), preprocessor="canny",
                       preprocessor_params=(("resolution", HINT_SIZE),))


def generate(engine: Engine, unit: ControlUnit, model: str, seed: int = 0, prompt: str = "") -> Image.Image:
    request = request_for(prompt, 5.0, model, seed=seed).replace(control_units=(unit,))
    return engine.generate(request).images[0]


@dataclass
class RetrievalResult:
    ranks: list[int]  # 0-based rank of each case's own emoji among all dataset images
    dataset_size: int
    names: list[str]
    seconds_per_image: float

    @property
    def hits(self) -> int:
        return sum(r < RANK_SHARE * self.dataset_size for r in self.ranks)

    @property
    def rate(self) -> float:
        return self.hits / len(self.ranks)

    @property
    def median_rank(self) -> float:
        return float(np.median(self.ranks))

    @property
    def misses(self) -> list[str]:
        return [n for n, r in zip(self.names, self.ranks, strict=True) if r >= RANK_SHARE * self.dataset_size]


def retrieval(engine: Engine, controlnet: str, images: np.ndarray, names: list[str], cases: list[str],
              model: str = "") -> RetrievalResult:
    thumbs = thumbnails(images)
    index = {name: i for i, name in enumerate(names)}
    ranks = []
    start = time.perf_counter()
    for name in cases:
        found = generate(engine, canny_unit(controlnet, images[index[name]]), model)
        ranks.append(int(np.flatnonzero(ranking(thumbs, found) == index[name])[0]))
    return RetrievalResult(ranks, len(names), list(cases), (time.perf_counter() - start) / len(cases))


def _polygon(name: str) -> list[tuple[float, float]]:
    c, r = HINT_SIZE / 2, 22
    if name == "square":
        return [(c - 19, c - 19), (c + 19, c - 19), (c + 19, c + 19), (c - 19, c + 19)]
    if name == "triangle":
        return [(c + r * math.sin(a), c + 3 - r * math.cos(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    if name == "diamond":
        return [(c, c - r), (c + r, c), (c, c + r), (c - r, c)]
    if name == "star":
        return [(c + (r if k % 2 == 0 else 10) * math.sin(k * math.pi / 5),
                 c + 2 - (r if k % 2 == 0 else 10) * math.cos(k * math.pi / 5)) for k in range(10)]
    raise ValueError(f"unknown shape {name!r}; one of {', '.join(SHAPES)}")


def drawn_shape(name: str) -> tuple[Image.Image, np.ndarray]:
    """(the stroke map: white 2 px outline on black, the shape's filled area as a bool mask)."""
    stroke = Image.new("RGB", (HINT_SIZE, HINT_SIZE), "black")
    filled = Image.new("L", (HINT_SIZE, HINT_SIZE), 0)
    pen, fill = ImageDraw.Draw(stroke), ImageDraw.Draw(filled)
    if name == "circle":
        box = (10, 10, HINT_SIZE - 11, HINT_SIZE - 11)
        pen.ellipse(box, outline="white", width=STROKE)
        fill.ellipse(box, fill=255)
    else:
        points = _polygon(name)
        pen.line([*points, points[0]], fill="white", width=STROKE, joint="curve")
        fill.polygon(points, fill=255)
    return stroke, np.asarray(filled) > 127


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@dataclass
class ScribbleResult:
    ious: dict[str, list[float]] = field(default_factory=dict)  # per shape, one per seed

    @property
    def mean_iou(self) -> float:
        return float(np.mean([v for values in self.ious.values() for v in values]))


def scribble(engine: Engine, controlnet: str, model: str = "", seeds: tuple[int, ...] = (0, 1, 2, 3),
             shapes: tuple[str, ...] = SHAPES) -> tuple[ScribbleResult, list[Image.Image]]:
    """IoU of each result's foreground with the drawn shape's area, and the results (shape-major)."""
    result, images = ScribbleResult(), []
    for name in shapes:
        stroke, area = drawn_shape(name)
        unit = ControlUnit(model=controlnet, image=stroke, preprocessor="none")
        result.ious[name] = []
        for seed in seeds:
            found = generate(engine, unit, model, seed)
            images.append(found)
            result.ious[name].append(iou(silhouette(np.asarray(found.convert("RGB"))), area))
    return result, images


def sheet(rows: list[tuple[Image.Image, list[Image.Image]]], scale: int = 2) -> Image.Image:
    """A figure: each row is a hint followed by its generations, drawn at `scale` x."""
    size = HINT_SIZE * scale
    width = max(1 + len(found) for _, found in rows)
    out = Image.new("RGB", (width * (size + 4), len(rows) * (size + 4)), "white")
    for y, (hint, found) in enumerate(rows):
        for x, image in enumerate([hint, *found]):
            out.paste(image.convert("RGB").resize((size, size), Image.Resampling.NEAREST),
                      (x * (size + 4), y * (size + 4)))
    return out
