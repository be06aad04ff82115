"""Where a model's tensors live and in what precision: the one place that names devices.

A loaded model keeps each component (UNet, text encoders, VAE, tiny VAE) on its own device and dtype;
code that runs a component asks the module itself (`module_device`, `module_dtype`) and moves inputs to it
and outputs back at the edges. Random noise is always drawn on the CPU (see noise.SeededNoise), so a seed
means the same image on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.job_size import physical_memory
from sdstudio.engine.names import DEVICE_CHOICES


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


def job_memory(device: torch.device) -> tuple[int | None, str]:
    """The memory a job's working tensors may use on `device` (None: unknown) and whose it is, in words, for
    job_size.fit_memory. A GPU: what is free now, plus what torch's caching allocator holds unused (free to
    this process; the loaded weights are not). The CPU (and MPS, which shares it): the machine's RAM, as the
    CLI counts before loading, since the estimate is generous and the OS can page."""
    if device.type == "cuda":
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + unused, "the GPU's free"
    return physical_memory(), "this machine's"


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


# The parts of a loaded model that can each sit on their own device and dtype.
COMPONENTS = ("unet", "text", "vae", "taesd")
COMPONENT_LABELS = {"unet": "UNet", "text": "text encoders", "vae": "VAE", "taesd": "preview decoder"}
_HALF = (torch.float16, torch.bfloat16)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


@dataclass(frozen=True)
class Placement:
    """Where one component's weights live and in what precision."""

    device: torch.device
    dtype: torch.dtype

    def label(self) -> str:
        """'cuda fp16', 'cpu fp32': what the UI shows."""
        return f"{self.device.type} {DTYPE_NAMES.get(self.dtype, str(self.dtype).removeprefix('torch.'))}"


def choose_placements(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> dict[str, Placement]:
    """Every component on `device`; the precision rule:

    - the CPU runs fp32 (CPU half-precision kernels are slow or missing, and fp32 keeps every figure);
      on CUDA and MPS the default is fp16, which halves memory and uses the tensor cores;
    - an explicit `dtype` replaces that default for the UNet, the text encoders and the preview decoder;
    - the VAE never runs in half precision: its decoder's activations exceed fp16's range (the SDXL VAE
      gives NaN, i.e. black, images; A1111 ships --no-half-vae for it), and at ~84M parameters fp32 costs
      little.
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    main = dtype or (torch.float32 if device.type == "cpu" else torch.float16)
    vae = torch.float32 if main in _HALF else main
    return {name: Placement(device, vae if name == "vae" else main) for name in COMPONENTS}


def placement_label(placements: dict[str, Placement]) -> str:
    """'cpu fp32' when every component agrees, else 'cuda: UNet fp16, ..., VAE fp32'."""
    labels = {p.label() for p in placements.values()}
    if len(labels) == 1:
        return labels.pop()
    devices = {p.device.type for p in placements.values()}
    if len(devices) == 1:
        parts = [f"{COMPONENT_LABELS[k]} {p.label().split(' ', 1)[1]}" for k, p in placements.items()]
        return f"{devices.pop()}: " + ", ".join(parts)
    return ", ".join(f"{COMPONENT_LABELS[k]} {p.label()}" for k, p in placements.items())
