"""Cost of one ControlNet unit per sampler step against a plain step: SD 1.5 configuration, 512x512 (64x64
latents), random weights (fan-in scaled, tests/engine/full_size.py), one image with CFG, i.e. the UNet call on
[prompt; negative prompt] that CFGDenoiser makes.

Three rows, run in alternation for `--repeats` rounds after a warm-up round (min and mean reported):
- plain: the UNet alone;
- Balanced: the unit's ControlNet on both rows, then the UNet with its residuals (the ControlSource, as a job
  runs it, hint prepared once);
- "ControlNet is more important": the ControlNet on the prompt row only.
Full-size and slow on a CPU (the UNet step alone is 20-40 s on a shared 2-core VM), so run it under the lock:

    flock /tmp/sdstudio-big.lock python bench/controlnet_step.py [--repeats 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdstudio.engine.control_hint import Hint  # noqa: E402
from sdstudio.engine.control_job import ControlSource  # noqa: E402
from sdstudio.engine.controlnet import ControlNet, ControlNetConfig  # noqa: E402
from sdstudio.engine.controlnet_file import LoadedControlNet  # noqa: E402
from sdstudio.engine.denoiser import UNetConditioning  # noqa: E402
from sdstudio.engine.request import ControlUnit  # noqa: E402
from sdstudio.engine.schedules import ModelSampling, get_sigmas  # noqa: E402
from sdstudio.engine.unet import UNetConfig, UNetModel  # noqa: E402
from tests.engine.full_size import random_tensor  # noqa: E402


def randomised(module: torch.nn.Module, seed: int, device: str, dtype: torch.dtype) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    module.load_state_dict({k: random_tensor(k, tuple(v.shape), g) for k, v in module.state_dict().items()})
    return module.to(device, dtype).eval()


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    device, dtype = args.device, torch.float32 if args.device == "cpu" else torch.float16
    config = UNetConfig.sd15()
    with torch.device("meta"):
        unet, net = UNetModel(config), ControlNet(ControlNetConfig(config))
    unet = randomised(unet.to_empty(device="cpu"), 0, device, dtype)
    net = randomised(net.to_empty(device="cpu"), 1, device, dtype)
    latent = args.size // 8
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, latent, latent, generator=g).to(device)
    cond = UNetConditioning(torch.randn(2, 77, 768, generator=g).to(device))
    ms = ModelSampling()
    sigmas = get_sigmas("karras", 20, ms)
    t = ms.sigma_to_t(sigmas[:1]).expand(2).to(device)
    image = Image.effect_noise((args.size, args.size), 64).convert("RGB")
    loaded = LoadedControlNet("bench.safetensors", net, "sd1", "00000000")

    def source(mode: str) -> ControlSource:
        unit = ControlUnit("bench.safetensors", image=image, mode=mode)
        job = SimpleNamespace(units=(unit,), nets=[loaded], hints=[Hint(unit)])
        return ControlSource(job, args.size, args.size, sigmas)

    @torch.no_grad()
    def step(residual_source=None) -> None:
        residuals = None if residual_source is None else residual_source(x, t, cond)
        unet(x.to(dtype), t, cond.context.to(dtype), residuals=None if residuals is None else
             residuals.to(torch.device(device), dtype))

    balanced, control = source("Balanced"), source("ControlNet is more important")
    rows = {"plain UNet step": step, "+ 1 unit, Balanced": lambda: step(balanced),
            "+ 1 unit, ControlNet more important": lambda: step(control)}
    runs: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(args.repeats + 1):  # rows alternate, so a change in machine load hits all of them
        for name, fn in rows.items():
            seconds = timed(fn, device)
            if round_:
                runs[name].append(seconds)
    plain = min(runs["plain UNet step"])
    print(f"torch {torch.__version__}, {device} {dtype}, {torch.get_num_threads()} threads, {args.size}x{args.size}, "
          f"UNet batch 2 (CFG), {args.repeats} alternating rounds after a warm-up round")
    print("| step | min s | mean s | min vs plain |\n|---|---|---|---|")
    for name, seconds in runs.items():
        print(f"| {name} | {min(seconds):.2f} | {statistics.mean(seconds):.2f} | {min(seconds) / plain:.2f}x |")


if __name__ == "__main__":
    main()
