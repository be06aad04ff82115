"""Seconds per LoRA training step (issue 19): the built-in model by default, at --resolution px, batch
--batch, rank --rank, on 8 synthetic images (coloured shapes), after --warmup steps that are not counted; also
the process's CPU seconds per step (all threads; less sensitive to other jobs than wall time) and its peak
resident memory. A few steps only: the CPU is shared, so figures are rough.

    nice -n 15 python bench/lora_train_speed.py --steps 4 --warmup 1
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from sdstudio.engine.checkpoint import load_checkpoint
from sdstudio.engine.model_files import builtin_model_path
from sdstudio.training.lora_data import load_examples
from sdstudio.training.lora_train import LoraSettings, train_lora


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default=str(builtin_model_path()))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--text-encoder", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    (folder / "images").mkdir()
    for i in range(8):
        image = Image.new("RGB", (args.resolution, args.resolution), "white")
        r = args.resolution
        box = (r // 8 + i, r // 8, 7 * r // 8, 7 * r // 8 - i)
        ImageDraw.Draw(image).ellipse(box, fill=(200, 30 * i, 40))
        image.save(folder / "images" / f"{i}.png")
    model = load_checkpoint(args.base, dtype=torch.float32)
    examples = load_examples(folder / "images", "sks", "symbol")
    settings = LoraSettings(images=str(folder / "images"), trigger="sks", class_word="symbol",
                            steps=args.warmup + args.steps, rank=args.rank, alpha=float(args.rank),
                            resolution=args.resolution, batch_size=args.batch, text_encoder=args.text_encoder,
                            gradient_checkpointing=args.gradient_checkpointing)
    times: list[float] = []
    cpu: list[float] = []
    last = [time.perf_counter(), time.process_time()]

    def on_step(step: int, total: int, loss: float) -> None:
        now, used = time.perf_counter(), time.process_time()
        if step > args.warmup:
            times.append(now - last[0])
            cpu.append(used - last[1])
        last[:] = [now, used]

    train_lora(model, examples, settings, folder / "state", save_every_s=1e9, on_step=on_step)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{model.description.name}: {args.resolution} px, batch {args.batch}, rank {args.rank}, "
          f"text encoder {args.text_encoder}, checkpointing {args.gradient_checkpointing}, "
          f"{torch.get_num_threads()} threads: {sum(times) / len(times):.2f} s/step (mean of {len(times)}, "
          f"min {min(times):.2f}); CPU {sum(cpu) / len(cpu):.2f} s/step; peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
