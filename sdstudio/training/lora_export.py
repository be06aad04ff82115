"""Writing a trained LoRA as kohya sd-scripts writes it: `.safetensors` with `<name>.lora_down.weight`,
`.lora_up.weight` and `.alpha` per module (lora_names.py) and the `ss_*` metadata of its train_network.py,
which A1111's and ComfyUI's LoRA browsers show and which say what model the LoRA is for
(`ss_base_model_version`: "sd_v1", "sd_v2_512", "sd_v2_768_v", "sdxl_base_v1-0"). Every metadata value is a
string (the safetensors format); JSON where kohya writes JSON (`ss_tag_frequency`, `ss_dataset_dirs`,
`ss_network_args`).

Our built-in model's family ("demo") has no kohya name: its files say "sdstudio_demo", which no reader maps to
another family, so engine/lora_family.py leaves it to the tensor shapes and the model it is applied to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from safetensors.torch import save_file

from sdstudio.engine.errors import RequestError
from sdstudio.engine.model_files import file_sha256
from sdstudio.training.lora_data import Example, tag_frequency
from sdstudio.training.lora_network import LoraNetwork
from sdstudio.training.lora_train import LoraSettings


def base_model_version(family: str, prediction: str) -> str:
    if family == "sd1":
        return "sd_v1"
    if family == "sd2":
        return "sd_v2_768_v" if prediction == "v" else "sd_v2_512"
    if family == "sdxl":
        return "sdxl_base_v1-0"
    return "sdstudio_" + family


def lora_metadata(model, settings: LoraSettings, examples: list[Example], name: str, started_at: float,
                  resolution: tuple[int, int]) -> dict[str, str]:
    desc = model.description
    dataset = Path(settings.images).name or "images"
    meta: dict[str, object] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": settings.rank,
        "ss_network_alpha": settings.alpha,
        "ss_network_args": json.dumps({"conv_dim": settings.rank, "conv_alpha": settings.alpha})
        if settings.conv else None,
        "ss_base_model_version": base_model_version(desc.family, desc.prediction),
        "ss_v2": desc.family == "sd2",
        "ss_v_parameterization": desc.prediction == "v",
        "ss_sd_model_name": Path(desc.path).name if desc.path else desc.name,
        "ss_new_sd_model_hash": file_sha256(desc.path) if desc.path and Path(desc.path).is_file() else None,
        "ss_output_name": name,
        "ss_training_started_at": int(started_at),
        "ss_training_finished_at": int(time.time()),
        "ss_steps": settings.steps,
        "ss_max_train_steps": settings.steps,
        "ss_epoch": 1,
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_num_train_images": len(examples),
        "ss_num_reg_images": 0,
        "ss_batch_size_per_device": settings.batch_size,
        "ss_tag_frequency": json.dumps({dataset: tag_frequency(examples)}),
        "ss_dataset_dirs": json.dumps({dataset: {"n_repeats": 1, "img_count": len(examples)}}),
        "ss_learning_rate": settings.lr,
        "ss_unet_lr": settings.lr,
        "ss_text_encoder_lr": settings.lr if settings.text_encoder else None,
        "ss_network_train_unet_only": not settings.text_encoder,
        "ss_lr_scheduler": "cosine_with_warmup_to_0.1",
        "ss_lr_warmup_steps": settings.warmup,
        "ss_optimizer": "torch.optim.AdamW(weight_decay=0.01)",
        "ss_max_grad_norm": 1.0,
        "ss_min_snr_gamma": settings.min_snr_gamma,
        "ss_gradient_checkpointing": settings.gradient_checkpointing,
        "ss_mixed_precision": "no",
        "ss_seed": settings.seed,
        "ss_random_crop": settings.random_crop,
        "ss_flip_aug": settings.flip,
        "ss_clip_skip": None,
        "ss_training_comment": f"trigger: {settings.trigger}; trained by SD Studio",
    }
    return {k: str(v) for k, v in meta.items() if v is not None}


def export_lora(network: LoraNetwork, path: Path, metadata: dict[str, str]) -> Path:
    """Write the file atomically; an existing file is never replaced."""
    if path.exists():
        raise RequestError(f"{path} exists; choose another --out name (nothing was overwritten)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(network.tensors(), str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
