"""Time to read a full-size LoRA file and compute its weight deltas, without a loaded model.

Builds the patch targets of a full-size SD 1.5 (or SDXL) model on the meta device (no weights), writes a
random kohya LoRA in diffusers block names (fp16, like released files) over every attention, feed-forward,
projection and ResBlock conv layer of the UNet (3x3 convs as LoCon) and every text-encoder layer linear,
then times `read_lora`, `lora_patch_set` (name resolution, shape checks; no maths) and the ΔW of every
patch in fp32 (what applying a LoRA costs on top of the weight update itself).

    python bench/lora_deltas.py [--family sd1|sdxl] [--rank 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdstudio.engine.lora_file import lora_patch_set, read_lora  # noqa: E402
from sdstudio.engine.text_encoder import clip_l_config, openclip_bigg_config  # noqa: E402
from sdstudio.engine.unet import UNetConfig, UNetModel  # noqa: E402
from tests.engine.family_shapes import clip_shapes  # noqa: E402
from tests.engine.lora_files import UNET, ldm_to_diffusers, write_lora  # noqa: E402


def targets(family: str) -> tuple[dict[str, tuple[int, ...]], int]:
    config = UNetConfig.sd15() if family == "sd1" else UNetConfig.sdxl()
    shapes = {UNET + k: tuple(v.shape) for k, v in UNetModel(config, device="meta").named_parameters()}
    texts = (clip_l_config(),) if family == "sd1" else (clip_l_config(), openclip_bigg_config())
    for i, text in enumerate(texts):
        shapes |= clip_shapes(text, f"text.{i}.")
    return shapes, config.num_res_blocks


def kohya_lora(shapes, num_res_blocks: int, rank: int, encoders: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for target, shape in shapes.items():
        if not target.endswith(".weight") or len(shape) not in (2, 4):
            continue
        path = target.removesuffix(".weight")
        if path.startswith(UNET):
            name = "lora_unet_" + ldm_to_diffusers(path[len(UNET):], num_res_blocks).replace(".", "_")
        elif ".encoder.layers." in path:
            index, rest = int(path.split(".")[1]), path.split(".", 2)[2]
            name = ("lora_te_" if encoders == 1 else f"lora_te{index + 1}_") + rest.replace(".", "_")
        else:
            continue
        kernel = shape[2:] if len(shape) == 4 else ()
        out[name + ".lora_down.weight"] = (torch.randn(rank, shape[1], *kernel, generator=g) * 0.01).half()
        out[name + ".lora_up.weight"] = (torch.randn(shape[0], rank, *((1, 1) if kernel else ()), generator=g)
                                         * 0.01).half()
        out[name + ".alpha"] = torch.tensor(rank / 2, dtype=torch.float16)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1")
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args()
    shapes, blocks = targets(args.family)
    encoders = 1 if args.family == "sd1" else 2
    model = SimpleNamespace(description=SimpleNamespace(family=args.family),
                            weights=SimpleNamespace(shapes=lambda: shapes),
                            unet=SimpleNamespace(config=SimpleNamespace(num_res_blocks=blocks)))
    with tempfile.TemporaryDirectory() as folder:
        path = write_lora(Path(folder) / "bench.safetensors", kohya_lora(shapes, blocks, args.rank, encoders))
        size = path.stat().st_size
        t0 = time.perf_counter()
        lora = read_lora(path)
        t1 = time.perf_counter()
        patch_set = lora_patch_set(lora, model, te=0.8, unet=0.8)
        t2 = time.perf_counter()
        cpu = torch.empty(0)
        elements = sum(p.delta(cpu).numel() for p in patch_set.patches)
        t3 = time.perf_counter()
    print(f"{args.family} rank {args.rank}: file {size / 2**20:.0f} MiB, {len(lora.tensors)} tensors, "
          f"{len(patch_set.patches)} patches, {elements / 1e6:.0f}M delta elements; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"read_lora {t1 - t0:.2f} s, lora_patch_set {t2 - t1:.3f} s, all deltas (fp32) {t3 - t2:.2f} s")


if __name__ == "__main__":
    main()
