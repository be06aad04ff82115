"""Full-size single-file checkpoints with random weights, for the slow reference tests and the benches.

The files have the real configurations and the original LDM key layout of released checkpoints:
`model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE), and the text side as the original trainers
saved it: SD 1.x `cond_stage_model.transformer.text_model.*` (transformers CLIP names, with the
`position_ids` buffer real files carry), SD 2.x `cond_stage_model.model.*` and SDXL
`conditioner.embedders.1.model.*` in OpenCLIP names (stacked `attn.in_proj_*`, `text_projection` stored
(width, proj), `logit_scale`), SDXL's CLIP-L under `conditioner.embedders.0.transformer.text_model.*`.

Text-tower shapes are written here from the published configurations (OpenAI CLIP ViT-L/14, OpenCLIP
ViT-H/14 and ViT-bigG/14) rather than taken from sdstudio, so a wrong config on our side fails to load.
Tensors are generated and written one at a time (SDXL is ~7 GB in fp16), never two copies in memory.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import struct
import tempfile
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.engine.vae import AutoencoderKL, VAEConfig

FAMILIES = ("sd15", "sd15_inpaint", "sd21", "sdxl")
Shape = tuple[int, ...]

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L_SD1 = "cond_stage_model.transformer.text_model."
OPENCLIP_SD2 = "cond_stage_model.model."
CLIP_L_SDXL = "conditioner.embedders.0.transformer.text_model."
OPENCLIP_SDXL = "conditioner.embedders.1.model."

# (width, layers, mlp width, projection) of the OpenCLIP text towers (open_clip model configs).
OPENCLIP_H = (1024, 24, 4096, 1024)
OPENCLIP_BIGG = (1280, 32, 5120, 1280)
CONTEXT_LENGTH = 77
VOCAB = 49408
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}
# Released 768-v SD 2.x files carry no marker; shapes cannot tell (see detect.py), so we state it.
METADATA = {"sd21": {"modelspec.prediction_type": "v"}}


def _meta_shapes(module: torch.nn.Module, prefix: str) -> dict[str, Shape]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def unet_config(family: str) -> UNetConfig:
    return {"sd15": UNetConfig.sd15(), "sd15_inpaint": UNetConfig.sd15(in_channels=9),
            "sd21": UNetConfig.sd21(), "sdxl": UNetConfig.sdxl()}[family]


def clip_l_shapes(prefix: str) -> dict[str, Shape]:
    """OpenAI CLIP ViT-L/14 text tower in transformers names (without the `text_model.` of the file)."""
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=CONTEXT_LENGTH)
    with torch.device("meta"):
        model = CLIPTextModel(config)
    shapes = {k.removeprefix("text_model."): tuple(v.shape) for k, v in model.state_dict().items()}
    shapes["embeddings.position_ids"] = (1, CONTEXT_LENGTH)
    return {prefix + k: s for k, s in shapes.items()}


def openclip_shapes(prefix: str, width: int, layers: int, mlp: int, proj: int) -> dict[str, Shape]:
    """An OpenCLIP text tower (open_clip `TextTransformer`) in its own names."""
    shapes: dict[str, Shape] = {
        "token_embedding.weight": (VOCAB, width),
        "positional_embedding": (CONTEXT_LENGTH, width),
        "ln_final.weight": (width,),
        "ln_final.bias": (width,),
        "text_projection": (width, proj),
        "logit_scale": (),
    }
    for i in range(layers):
        block = f"transformer.resblocks.{i}."
        shapes |= {
            block + "ln_1.weight": (width,), block + "ln_1.bias": (width,),
            block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
            block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
            block + "ln_2.weight": (width,), block + "ln_2.bias": (width,),
            block + "mlp.c_fc.weight": (mlp, width), block + "mlp.c_fc.bias": (mlp,),
            block + "mlp.c_proj.weight": (width, mlp), block + "mlp.c_proj.bias": (width,),
        }
    return {prefix + k: s for k, s in shapes.items()}


def layout(family: str) -> dict[str, Shape]:
    """Every tensor name and shape of a released checkpoint of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    shapes = _meta_shapes(UNetModel(unet_config(family), device="meta"), UNET)
    shapes |= _meta_shapes(AutoencoderKL(VAEConfig(), device="meta"), VAE)
    if family in ("sd15", "sd15_inpaint"):
        shapes |= clip_l_shapes(CLIP_L_SD1)
    elif family == "sd21":
        shapes |= openclip_shapes(OPENCLIP_SD2, *OPENCLIP_H)
    else:
        shapes |= clip_l_shapes(CLIP_L_SDXL) | openclip_shapes(OPENCLIP_SDXL, *OPENCLIP_BIGG)
    return shapes


def random_tensor(name: str, shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """Weights that keep activations near unit scale through full-depth networks.

    Matrices and kernels get fan-in scaling (std 1/sqrt(fan_in)), so attention logits are O(1) and
    far from uniform; norm scales are 1 + N(0, 0.1) and biases N(0, 0.1), so a swapped weight/bias or
    a norm loaded into the wrong place changes the output; embeddings N(0, 0.02) as in trained CLIP.
    """
    if name.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
    if name.endswith("logit_scale"):
        return torch.tensor(math.log(1 / 0.07))
    if name.endswith(("token_embedding.weight", "position_embedding.weight", "positional_embedding")):
        return torch.randn(shape, generator=generator) * 0.02
    if len(shape) == 1 and name.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 0.1 * torch.randn(shape, generator=generator)
    fan_in = shape[0] if name.endswith("text_projection") else math.prod(shape[1:])
    return torch.randn(shape, generator=generator) * fan_in**-0.5


def _file_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    return torch.int64 if name.endswith("position_ids") else dtype


def write_full_checkpoint(path: str | Path, family: str, dtype: torch.dtype = torch.float16,
                          seed: int = 0) -> Path:
    """Write a random-weight single-file checkpoint of `family` (one of FAMILIES) in `dtype` (fp16/fp32).

    Deterministic in (family, dtype, seed). Tensors are stored like safetensors' own writer orders them
    (larger item size first, then by name) and written through a `.part` file, renamed when complete.
    """
    if dtype not in (torch.float16, torch.float32):
        raise ValueError("full-size checkpoints are written in float16 or float32")
    path = Path(path)
    shapes = layout(family)
    order = sorted(shapes, key=lambda k: (-_file_dtype(k, dtype).itemsize, k))
    header: dict = {"__metadata__": {"format": "pt", **METADATA.get(family, {})}}
    offset = 0
    for name in order:
        file_dtype = _file_dtype(name, dtype)
        size = math.prod(shapes[name]) * file_dtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[file_dtype], "shape": list(shapes[name]),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(seed)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name in order:
            tensor = random_tensor(name, shapes[name], generator).to(_file_dtype(name, dtype)).contiguous()
            f.write(memoryview(tensor.reshape(-1).numpy()).cast("B"))
    part.replace(path)
    return path


# The dtype each family's test file is written in: both fp32 and fp16 files go through the loader.
FILE_DTYPES = {"sd15": torch.float32, "sd15_inpaint": torch.float16, "sd21": torch.float32,
               "sdxl": torch.float16}
_CACHE_DIR: Path | None = None


def cached_checkpoint(family: str, seed: int = 0) -> Path:
    """The checkpoint of `family` in FILE_DTYPES, written once per process into a temporary folder that is
    removed at exit (the slow tests of several modules share it)."""
    global _CACHE_DIR
    dtype = FILE_DTYPES[family]
    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="sdstudio-fullsize-"))
        atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    path = _CACHE_DIR / f"{family}-{str(dtype).removeprefix('torch.')}-{seed}.safetensors"
    if not path.exists():
        write_full_checkpoint(path, family, dtype, seed)
    return path
