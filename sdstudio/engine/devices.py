"""Where a model's tensors live and in what precision: the one place that names devices.

A loaded model keeps each component (UNet, text encoders, VAE, tiny VAE) on its own device and dtype;
code that runs a component asks the module itself (`module_device`, `module_dtype`) and moves inputs to it
and outputs back at the edges. Random noise is always drawn on the CPU (see samplers.SeededNoise), so a seed
means the same image on every device.
"""

from __future__ import annotations

import torch
from torch import nn

from sdstudio.engine.errors import SDStudioError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; naming a device that is not there is an error."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise SDStudioError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SDStudioError("device 'cuda' was asked for, but this torch build sees no CUDA GPU "
                            f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if kind == "mps" and not _mps_available():
        raise SDStudioError("device 'mps' was asked for, but Apple's Metal backend is not available here")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter (float32 when there is none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
