"""The fast path against the default job, end to end: SD 1.5 configuration with random weights, one image.

Default job: SD Studio's defaults (Euler a, Karras, 20 steps, CFG 5: the UNet runs on prompt + negative at
every step), full VAE decode. Fast path: LCM, sgm_uniform, 4 steps, CFG 1 (no negative-prompt pass), the final
image decoded by TAESD ("draft decode"). Random weights give noise pictures, but every operation costs what it
costs with a real LCM-LoRA-patched checkpoint (a LoRA is merged into the weights, so a step costs the same).
Both jobs run in one process on one loaded model, alternating, after a one-step warm-up of each; the
seconds are GenerationResult.seconds (prompt encoding, sampling and decoding; not the load). The VAE and
TAESD decodes are also timed alone, since at four steps the decode is a large share.

Full size is slow on a small CPU (an SD 1.5 UNet step with CFG takes 18-40 s on the 2-core test machine): check
the script quickly with small settings, run the full measurement on an idle machine:

    python bench/fast_path.py --size 128 --steps 2 --fast-steps 1          # a quick check (about a minute)
    flock /tmp/sdstudio-big.lock python bench/fast_path.py                  # 512x512, 20 vs 4 steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdstudio.engine.checkpoint import load_checkpoint  # noqa: E402
from sdstudio.engine.pipeline import generate  # noqa: E402
from sdstudio.engine.request import GenerationRequest  # noqa: E402
from sdstudio.engine.taesd import TAESD  # noqa: E402
from tests.engine.full_size import write_full_checkpoint  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, sharp focus"
NEGATIVE = "blurry, low quality"


def requests(size: int, steps: int, fast_steps: int) -> dict[str, GenerationRequest]:
    default = GenerationRequest(prompt=PROMPT, negative_prompt=NEGATIVE, width=size, height=size, seed=1,
                                steps=steps)
    fast = default.replace(sampler="LCM", scheduler="sgm_uniform", steps=fast_steps, cfg_scale=1.0,
                           draft_decode=True)
    return {f"default ({default.sampler}, {steps} steps, CFG {default.cfg_scale:g})": default,
            f"fast (LCM, {fast_steps} steps, CFG 1, draft decode)": fast}


def write_taesd(path: Path) -> Path:
    """A TAESD decoder of the published width with random weights (cost is what matters here)."""
    torch.manual_seed(0)
    decoder = TAESD().decoder
    save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(path))
    return path


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the default job (default 20)")
    parser.add_argument("--fast-steps", type=int, default=4, help="steps of the fast path (default 4)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each job, alternating (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sdstudio-fastpath-") as tmp:
        print("writing a random SD 1.5 checkpoint (fp16) and TAESD decoder…", flush=True)
        checkpoint = write_full_checkpoint(Path(tmp) / "sd15.safetensors", "sd15", torch.float16)
        taesd = write_taesd(Path(tmp) / "taesd_decoder.safetensors")
        model = load_checkpoint(checkpoint, taesd_path=taesd)
        print(f"loaded in {model.load_seconds:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} threads",
              flush=True)
        jobs = requests(args.size, args.steps, args.fast_steps)
        # Warm-up: one step of each job at the measured size, so one-time costs (first-call allocations, oneDNN
        # kernel choices per shape, the text encoder's first run) land on neither side.
        for req in jobs.values():
            generate(model, req.replace(steps=1))
        seconds: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeats):
            for name, req in jobs.items():
                result = generate(model, req)
                seconds[name].append(result.seconds)
                print(f"  {name}: {result.seconds:.2f} s", flush=True)
        latent = torch.randn(1, 4, args.size // 8, args.size // 8)
        with torch.no_grad():
            vae_s = timed(lambda: model.vae.decode(latent / model.description.scale_factor))
            taesd_s = timed(lambda: model.taesd.decode(latent))
    (default_name, default_s), (fast_name, fast_s) = ((n, statistics.mean(s)) for n, s in seconds.items())
    print(f"\nSD 1.5 configuration, random weights, {args.size}x{args.size}, fp32, one image, "
          f"mean of {args.repeats}:")
    print(f"| job | total s |\n|---|---|\n| {default_name} | {default_s:.2f} |\n| {fast_name} | {fast_s:.2f} |")
    print(f"speed-up: {default_s / fast_s:.1f}x   (decode alone: full VAE {vae_s:.2f} s, TAESD {taesd_s:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
