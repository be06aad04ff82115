"""Full-size UNets equal diffusers' UNet2DConditionModel on random weights (fp32, CPU).

Slow: SDXL alone holds ~10 GB of weights. Run one at a time under the shared lock:
    flock /tmp/sdstudio-big.lock pytest -m slow -s tests/engine/test_unet_equivalence.py
Each case prints max |diff|, output std, their ratio and the time taken.
"""

from __future__ import annotations

import gc
import time

import pytest
import torch

from sdstudio.engine.unet import UNetConfig, UNetModel
from tests.engine.unet_reference import diffusers_twin, randomize_, run_both

FAMILIES = {
    "sd15": UNetConfig.sd15(),
    "sd21": UNetConfig.sd21(),
    "sd15-inpaint": UNetConfig.sd15(9),
    "sdxl": UNetConfig.sdxl(),
}
LATENT = 16  # divisible by 8, so every level of SD 1.x/2.x (three downsamples) keeps whole pixels
BATCH = 2


def family_inputs(config: UNetConfig) -> dict:
    gen = torch.Generator().manual_seed(7)
    args = {
        "x": torch.randn(BATCH, config.in_channels, LATENT, LATENT, generator=gen),
        "timesteps": torch.tensor([981.0, 12.25]),
        "context": torch.randn(BATCH, 77, config.context_dim, generator=gen),
    }
    if config.adm_in_channels is not None:
        args["text_embeds"] = torch.randn(BATCH, 1280, generator=gen)
        args["time_ids"] = torch.tensor(
            [[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0], [768.0, 1344.0, 32.0, 0.0, 832.0, 1216.0]]
        )
    return args


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_full_size_unet_matches_diffusers(name):
    config = FAMILIES[name]
    start = time.perf_counter()
    ours = UNetModel(config, device="meta").to_empty(device="cpu").eval()
    randomize_(ours, seed=0)
    theirs = diffusers_twin(ours)  # shares every tensor with `ours`: one copy of the weights in memory
    built = time.perf_counter()
    out, expected = run_both(ours, theirs, **family_inputs(config))
    ran = time.perf_counter()
    max_diff, std = (out - expected).abs().max().item(), expected.std().item()
    print(
        f"\n{name}: max|diff| {max_diff:.3e}  output std {std:.3e}  relative {max_diff / std:.3e}  "
        f"build+init {built - start:.1f}s  forward both {ran - built:.1f}s  threads {torch.get_num_threads()}"
    )
    del ours, theirs
    gc.collect()
    assert out.shape == (BATCH, 4, LATENT, LATENT)
    assert std > 0.1
    assert max_diff <= 1e-4 * std
