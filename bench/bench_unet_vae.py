"""Speed baseline: our UNet step and VAE decode against diffusers' models holding the same weights, in the
same process on the same input (SD 1.5 configuration, 512x512, fp32, CFG batch of 2), plus the cost of a
live preview (TAESD decode and the linear latent->RGB fallback) relative to one UNet step.

Weights are random (fan-in scaled, as in tests/engine/full_size.py). The diffusers twins are built by
diffusers' own LDM converters and share our tensors (`load_state_dict(assign=True)`), so both sides read
the same memory. Times are wall-clock seconds, the mean over `--repeats` runs after one warm-up run; ours
and diffusers' runs alternate, so a change in machine load hits both. "peak +RSS" is the highest resident
memory seen during a run minus the resident memory just before it, sampled every 5 ms. Full-size and slow
(18-40 s per UNet step on a 2-core CPU), so run it under the shared lock:

    flock /tmp/sdstudio-big.lock python bench/bench_unet_vae.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL as DiffusersVAE
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    create_unet_diffusers_config_from_ldm,
    create_vae_diffusers_config_from_ldm,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdstudio.engine.preview import Previewer  # noqa: E402
from sdstudio.engine.taesd import TAESD  # noqa: E402
from sdstudio.engine.unet import UNetConfig, UNetModel  # noqa: E402
from sdstudio.engine.vae import AutoencoderKL, VAEConfig  # noqa: E402
from tests.engine.full_size import UNET, VAE, random_tensor  # noqa: E402
from tests.engine.reference_models import ORIGINAL_CONFIGS  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """The largest growth of resident memory over a `with` block, sampled every 5 ms by a thread."""

    def __enter__(self) -> PeakRSS:
        self.before, self.growth = rss_bytes(), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.growth = max(self.growth, rss_bytes() - self.before)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.growth = max(self.growth, rss_bytes() - self.before)


def timed(fn: Callable[[], object]) -> tuple[float, int]:
    with PeakRSS() as memory:
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
    return seconds, memory.growth


def measure_pair(ours: Callable[[], object], theirs: Callable[[], object],
                 repeats: int) -> tuple[tuple[list[float], int], tuple[list[float], int]]:
    """Wall times of `repeats` runs of each after one warm-up of each, alternating which goes first so a
    change in machine load hits both sides alike; and the largest RSS growth seen during any run."""
    ours(), theirs()
    results: list[tuple[list[float], int]] = [([], 0), ([], 0)]
    for i in range(repeats):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            seconds, growth = timed((ours, theirs)[side])
            results[side][0].append(seconds)
            results[side] = (results[side][0], max(results[side][1], growth))
    return results[0], results[1]


def measure(fn: Callable[[], object], repeats: int) -> tuple[list[float], int]:
    """Wall times of `repeats` runs after a warm-up, and the largest RSS growth seen during any run."""
    fn()
    runs = [timed(fn) for _ in range(repeats)]
    return [seconds for seconds, _ in runs], max(growth for _, growth in runs)


def random_module(module: torch.nn.Module, prefix: str, generator: torch.Generator) -> torch.nn.Module:
    """Fill a meta-built module with random weights (named like the checkpoint, so the init rules apply)."""
    state = {k: random_tensor(prefix + k, tuple(v.shape), generator) for k, v in module.state_dict().items()}
    module.load_state_dict(state, assign=True)
    return module.eval().requires_grad_(False)


def diffusers_twins(unet: UNetModel, vae: AutoencoderKL) -> tuple[UNet2DConditionModel, DiffusersVAE]:
    """diffusers' UNet and VAE holding the very tensors of ours, through diffusers' LDM converters."""
    checkpoint = {UNET + k: v for k, v in unet.state_dict().items()}
    checkpoint |= {VAE + k: v for k, v in vae.state_dict().items()}
    original = ORIGINAL_CONFIGS["sd15"]
    unet_config = create_unet_diffusers_config_from_ldm(original, checkpoint)
    vae_config = create_vae_diffusers_config_from_ldm(original, checkpoint)
    with torch.device("meta"):
        twin_unet, twin_vae = UNet2DConditionModel(**unet_config), DiffusersVAE(**vae_config)
    twin_unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, unet_config), strict=True, assign=True)
    twin_vae.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, vae_config), strict=True, assign=True)
    return twin_unet.eval(), twin_vae.eval()


def row(name: str, ours: tuple[list[float], int], theirs: tuple[list[float], int] | None) -> str:
    mean = statistics.mean(ours[0])
    cells = [name, f"{mean:.2f}", f"{ours[1] / 2**30:.2f}"]
    if theirs is None:
        cells += ["-", "-", "-"]
    else:
        their_mean = statistics.mean(theirs[0])
        cells += [f"{their_mean:.2f}", f"{theirs[1] / 2**30:.2f}", f"{mean / their_mean:.2f}"]
    return "| " + " | ".join(cells) + " |"


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (after a warm-up)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (a multiple of 64)")
    args = parser.parse_args()
    size, latent_side = args.size, args.size // 8
    g = torch.Generator().manual_seed(0)
    unet = random_module(UNetModel(UNetConfig.sd15(), device="meta"), UNET, g)
    vae = random_module(AutoencoderKL(VAEConfig(), device="meta"), VAE, g)
    twin_unet, twin_vae = diffusers_twins(unet, vae)
    x = torch.randn(2, 4, latent_side, latent_side, generator=g)
    t = torch.tensor([500.0, 500.0])
    context = torch.randn(2, 77, 768, generator=g)
    latent = torch.randn(1, 4, latent_side, latent_side, generator=g)
    torch.testing.assert_close(unet(x[:1, :, :8, :8], t[:1], context[:1]),
                               twin_unet(x[:1, :, :8, :8], t[:1], context[:1]).sample)
    results = {
        "unet": measure_pair(lambda: unet(x, t, context), lambda: twin_unet(x, t, context).sample,
                             args.repeats),
        "vae": measure_pair(lambda: vae.decode(latent), lambda: twin_vae.decode(latent).sample,
                            args.repeats),
    }
    taesd = TAESD().eval().requires_grad_(False)
    previews = {"TAESD": measure(lambda: Previewer("sd1", taesd)(latent), args.repeats),
                "linear": measure(lambda: Previewer("sd1", None)(latent), args.repeats)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}, repeats {args.repeats} after a warm-up\n")
    print("| fp32, SD 1.5 config | sdstudio s | sdstudio peak +RSS GiB | diffusers s "
          "| diffusers peak +RSS GiB | sdstudio / diffusers |\n|---|---|---|---|---|---|")
    print(row(f"UNet step, {size}x{size}, batch 2 (CFG)", *results["unet"]))
    print(row(f"VAE decode, {size}x{size}", *results["vae"]))
    step = statistics.mean(results["unet"][0][0])
    print(f"\n| preview of a {latent_side}x{latent_side} latent | seconds | share of one UNet step (CFG) |\n"
          "|---|---|---|")
    for name, (times, _) in previews.items():
        print(f"| {name} | {statistics.mean(times):.3f} | {statistics.mean(times) / step:.1%} |")


if __name__ == "__main__":
    main()
