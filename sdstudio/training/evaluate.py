"""Measuring the built-in model: prompt fidelity by nearest-neighbour retrieval, and generation speed.

Fidelity (issue 4): generate each name at seed 0, 20 steps, 64x64; the named emoji should be among the 5
dataset images nearest to the result, by L2 distance between 16x16 box-downsampled RGB images. Chance is
5 / N. Generation goes through the engine's public API, so this measures exactly what the app does.

Run: `python -m sdstudio.training.evaluate [--model PATH] [--cfg 5] [--count 64]`; `--control` measures the
companion ControlNet instead (evaluate_control.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from sdstudio.engine.api import Engine
from sdstudio.engine.request import GenerationRequest
from sdstudio.training.colour import colour_test_set, dominant_colour

THUMB = 16
TOP_K = 5


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 16*16*3) float: box-downsampled, the space fidelity is measured in."""
    small = [np.asarray(Image.fromarray(im).resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
             for im in images]
    return np.stack(small).reshape(len(images), -1)


def ranking(thumbs: np.ndarray, image: Image.Image) -> np.ndarray:
    """All dataset indices, nearest to `image` first."""
    query = thumbnails(np.asarray(image.convert("RGB"))[None])[0]
    distances = ((thumbs - query) ** 2).sum(axis=1)
    return np.argsort(distances, kind="stable")


def nearest(thumbs: np.ndarray, image: Image.Image, k: int = TOP_K) -> list[int]:
    """Indices of the k dataset thumbnails nearest to `image`, nearest first."""
    return ranking(thumbs, image)[:k].tolist()


def fixed_names(names: list[str], weights: np.ndarray, count: int, seed: int = 0) -> list[str]:
    """`count` names drawn at random without replacement, with the training sampling weights (so the
    skin-tone variants of one emoji together count as one emoji), with a fixed seed."""
    chosen = np.random.default_rng(seed).choice(len(names), count, replace=False, p=weights / weights.sum())
    return [names[i] for i in chosen]


@dataclass
class FidelityResult:
    hits: int
    total: int
    misses: list[str]
    seconds_per_image: float
    ranks: list[int]  # 0-based rank of each prompt's own emoji among all dataset images

    @property
    def median_rank(self) -> float:
        return float(np.median(self.ranks))

    @property
    def rate(self) -> float:
        return self.hits / self.total


def request_for(prompt: str, cfg: float, model: str = "", sampler: str = "Euler a",
                seed: int = 0) -> GenerationRequest:
    # Every setting explicit (the normal schedule included): the figures in docs/training.md stay reproducible
    # when the app's defaults change.
    return GenerationRequest(prompt=prompt, steps=20, cfg_scale=cfg, sampler=sampler, scheduler="normal",
                             seed=seed, width=64, height=64, model=model)


def fidelity(engine: Engine, dataset_images: np.ndarray, dataset_names: list[str], prompts: list[str],
             cfg: float, model: str = "", sampler: str = "Euler a") -> FidelityResult:
    """Fraction of prompts whose own emoji is among the TOP_K nearest dataset images of the generation."""
    thumbs = thumbnails(dataset_images)
    index = {name: i for i, name in enumerate(dataset_names)}
    hits, misses, ranks = 0, [], []
    start = time.perf_counter()
    for prompt in prompts:
        image = engine.generate(request_for(prompt, cfg, model, sampler)).images[0]
        rank = int(np.flatnonzero(ranking(thumbs, image) == index[prompt])[0])
        ranks.append(rank)
        if rank < TOP_K:
            hits += 1
        else:
            misses.append(prompt)
    return FidelityResult(hits, len(prompts), misses, (time.perf_counter() - start) / len(prompts), ranks)


@dataclass
class ColourResult:
    hits: dict[str, int]  # per colour
    totals: dict[str, int]
    misses: list[tuple[str, str, str]]  # (prompt, expected, got)

    @property
    def rate(self) -> float:
        return sum(self.hits.values()) / sum(self.totals.values())

    def colour_rate(self, colour: str) -> float:
        return self.hits[colour] / self.totals[colour]


def colour_fidelity(engine: Engine, cases: list[tuple[str, str]], cfg: float, model: str = "",
                    sampler: str = "Euler a") -> ColourResult:
    """How often the generation's dominant colour (colour.dominant_colour) is the named emoji's (issue 14)."""
    hits = {c: 0 for _, c in cases}
    totals = {c: 0 for _, c in cases}
    misses = []
    for prompt, expected in cases:
        got = dominant_colour(engine.generate(request_for(prompt, cfg, model, sampler)).images[0])
        totals[expected] += 1
        if got == expected:
            hits[expected] += 1
        else:
            misses.append((prompt, expected, got))
    return ColourResult(hits, totals, misses)


def _best_seconds(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def speed(engine: Engine, model: str = "") -> dict[str, float]:
    """Milliseconds per sampler step (with CFG), per preview decode and seconds per 20-step image, best
    of five; a step is the difference between a 30- and a 10-step generation, divided by 20 (the fixed
    costs, text encoding and decoding, cancel out). The preview decoder of a model file is the one exported
    beside it."""
    taesd = model.replace(".safetensors", ".taesd_decoder.safetensors") if model else ""
    request = request_for("red apple", 5.0, model).replace(taesd=taesd)
    engine.generate(request)  # load and warm up
    twenty = _best_seconds(lambda: engine.generate(request))
    ten = _best_seconds(lambda: engine.generate(request.replace(steps=10)))
    thirty = _best_seconds(lambda: engine.generate(request.replace(steps=30)))
    step = (thirty - ten) / 20
    taesd = engine.model.taesd
    if taesd is None:
        raise ValueError("this model has no preview decoder")
    latent = torch.randn(1, 4, 8, 8)
    taesd.decode(latent)
    preview = _best_seconds(lambda: taesd.decode(latent), repeats=20)
    return {"step_ms": 1000 * step, "preview_ms": 1000 * preview, "preview_share_of_step": preview / step,
            "s_per_image": twenty}


def contact_sheet(engine: Engine, prompts: list[str], cfg: float, model: str = "",
                  columns: int = 8) -> Image.Image:
    """Generations (seed 0) in a grid, shown at 2x with their prompts underneath, in prompt order."""
    cell_w, cell_h, scale = 136, 160, 2
    font = ImageFont.load_default(size=11)
    rows = (len(prompts) + columns - 1) // columns
    sheet = Image.new("RGB", (cell_w * columns, cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, prompt in enumerate(prompts):
        image = engine.generate(request_for(prompt, cfg, model)).images[0]
        x, y = cell_w * (i % columns), cell_h * (i // columns)
        sheet.paste(image.resize((64 * scale, 64 * scale), Image.Resampling.NEAREST), (x + 4, y + 4))
        for line, text in enumerate(_wrap(prompt, 22)[:2]):
            draw.text((x + 4, y + 136 + 11 * line), text, fill="black", font=font)
    return sheet


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]


def main(argv: list[str] | None = None) -> int:
    from sdstudio.training.dataset import build_dataset

    parser = argparse.ArgumentParser(prog="python -m sdstudio.training.evaluate")
    parser.add_argument("--model", default="", help="checkpoint path; default: the built-in model")
    parser.add_argument("--cfg", type=float, nargs="+", default=[5.0, 1.0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--sheet", type=Path, default=None, help="also write a contact sheet: \"red apple\" and 31 of the prompts")
    parser.add_argument("--speed", action="store_true", help="also time a step, a preview and an image")
    parser.add_argument("--colour", action="store_true",
                        help="also the colour test: dominant colour of red/green/blue/yellow emoji")
    parser.add_argument("--control", action="store_true",
                        help="measure the companion ControlNet (canny retrieval and drawn shapes) instead")
    parser.add_argument("--controlnet", default="", help="its file; default: the built-in one")
    parser.add_argument("--figures", type=Path, default=None,
                        help="with --control: write the retrieval and scribble figures into this folder")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    dataset = build_dataset()
    engine = Engine()
    prompts = fixed_names(dataset.names, dataset.weights, args.count)
    if args.control:
        return _control_report(engine, dataset, prompts, args)
    report = {}
    for cfg in args.cfg:
        result = fidelity(engine, dataset.images, dataset.names, prompts, cfg, args.model, args.sampler)
        report[f"cfg {cfg:g}"] = {"top5": result.rate, "hits": result.hits, "total": result.total,
                                  "median_rank": result.median_rank,
                                  "chance_median_rank": len(dataset.names) / 2,
                                  "s_per_image": round(result.seconds_per_image, 3), "misses": result.misses}
        if args.colour:
            colour = colour_fidelity(engine, colour_test_set(dataset.images, dataset.names), cfg, args.model,
                                     args.sampler)
            report[f"colour cfg {cfg:g}"] = {
                "rate": round(colour.rate, 4),
                "per_colour": {c: f"{colour.hits[c]}/{colour.totals[c]}" for c in colour.totals},
                "misses": [f"{p}: {e} -> {g}" for p, e, g in colour.misses]}
    if args.speed:
        report["speed"] = {k: round(v, 4) for k, v in speed(engine, args.model).items()}
    print(json.dumps(report, indent=1))
    if args.sheet:
        # Issue 14's own check ("red apple" is red) first, then the first 31 frozen names.
        contact_sheet(engine, ["red apple", *prompts[:31]], args.cfg[0], args.model).save(args.sheet)
    return 0


def _control_report(engine: Engine, dataset, cases: list[str], args: argparse.Namespace) -> int:
    from sdstudio.paths import builtin_models_dir
    from sdstudio.training import evaluate_control as ec
    from sdstudio.training.export import controlnet_path

    controlnet = args.controlnet or str(controlnet_path(builtin_models_dir()))
    found = ec.retrieval(engine, controlnet, dataset.images, dataset.names, cases, args.model)
    shapes, results = ec.scribble(engine, controlnet, args.model)
    print(json.dumps({
        "retrieval": {"rate": found.rate, "hits": found.hits, "total": len(found.ranks),
                      "median_rank": found.median_rank, "dataset": found.dataset_size,
                      "s_per_image": round(found.seconds_per_image, 3), "misses": found.misses},
        "scribble": {"mean_iou": round(shapes.mean_iou, 4),
                     "per_shape": {k: [round(v, 3) for v in vs] for k, vs in shapes.ious.items()}}}, indent=1))
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        index = {name: i for i, name in enumerate(dataset.names)}
        rows = []
        for name in cases[:8]:
            unit = ec.canny_unit(controlnet, dataset.images[index[name]])
            hint = Image.fromarray(dataset.images[index[name]])
            from sdstudio.engine.control_hint import control_map
            rows.append((hint, [control_map(unit), ec.generate(engine, unit, args.model)]))
        ec.sheet(rows).save(args.figures / "controlnet-canny.png")
        per = len(results) // len(shapes.ious)
        ec.sheet([(ec.drawn_shape(name)[0], results[k * per:(k + 1) * per])
                  for k, name in enumerate(shapes.ious)]).save(args.figures / "controlnet-scribble.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
