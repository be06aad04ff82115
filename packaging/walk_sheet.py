"""The README's walk contact sheet (docs/screenshots/walk.png): latent walks on the built-in model, one row per
walk, each frame shown at 2x with its t. Runs on the CPU in under a minute:

    python packaging/walk_sheet.py [--out docs/screenshots/walk.png] [--frames 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from sdstudio.engine.api import Engine
from sdstudio.engine.model_files import builtin_model_path
from sdstudio.engine.request import GenerationRequest
from sdstudio.engine.walk import WalkRequest, run_walk

# (start prompt, start seed, end prompt, end seed, what moves)
WALKS = (
    ("red apple", 0, "grinning face", 0, "prompt"),
    ("flag: Japan", 1, "large blue circle", 7, "both"),
    ("grinning face", 3, "grinning face", 11, "noise"),
)
SCALE, PAD, LABEL_H, TITLE_H = 2, 4, 14, 16


def request(prompt: str, seed: int) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, seed=seed, steps=20, cfg_scale=5.0, sampler="Euler a",
                             scheduler="normal", width=64, height=64, model=str(builtin_model_path()))


def sheet(engine: Engine, frames: int) -> Image.Image:
    cell = 64 * SCALE + PAD
    row_h = TITLE_H + cell + LABEL_H
    out = Image.new("RGB", (PAD + cell * frames, row_h * len(WALKS)), "white")
    draw, font = ImageDraw.Draw(out), ImageFont.load_default(size=11)
    for row, (a, seed_a, b, seed_b, what) in enumerate(WALKS):
        walk = WalkRequest(request(a, seed_a), request(b, seed_b), frames=frames, what=what)
        result = run_walk(engine, walk)
        y = row * row_h
        draw.text((PAD, y + 2), f"{what}: \"{a}\" seed {seed_a}  ->  \"{b}\" seed {seed_b}", fill="black",
                  font=font)
        for k, (image, t) in enumerate(zip(result.images, result.ts, strict=True)):
            x = PAD + k * cell
            out.paste(image.resize((64 * SCALE, 64 * SCALE), Image.Resampling.NEAREST), (x, y + TITLE_H))
            draw.text((x, y + TITLE_H + 64 * SCALE + 1), f"t = {t:.2f}", fill="black", font=font)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/screenshots/walk.png")
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    sheet(Engine(device="cpu"), args.frames).save(Path(args.out))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
