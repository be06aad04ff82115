"""A job's ControlNet units as one `ResidualSource` per pass (residuals.py): each unit's ControlNet is run on
the UNet's input of every call, weighted and summed over the units.

The rules are sd-webui-controlnet's (scripts/hook.py, scripts/controlnet.py), which A1111 users' infotexts
describe:
- strength scales every residual; a unit runs while start <= step / steps <= end, steps being the pass's
  and step A1111's step counter (ControlSource; A1111's guidance start/end, compared as fractions);
- "Balanced": the residuals as they are, on both halves of the CFG batch;
- "My prompt is more important" (soft injection): residual k of the list (input blocks in order, the middle
  last) times 0.825^(12 - k). The exponent counts from the first input block, as A1111's code does, so on
  SD 1.x/2.x (12 skips + middle) the middle keeps weight 1 and the first conv 0.825^12 = 0.099, while on
  SDXL (9 skips + middle) the ladder stops at 0.825^3 for the middle;
- "ControlNet is more important": the same ladder (A1111 sets soft injection for every mode but Balanced)
  and the residuals on the prompt half only (zeros for the negative prompt, A1111's cfg injection), so the
  ControlNet is run on the prompt row alone.
The ControlNet gets the UNet input without inpainting channels, so 9-channel inpainting UNets feed it their
first 4 (latent) channels (Denoiser passes exactly that).

A unit's model may be a T2I-Adapter (Mou et al. 2023, arXiv:2302.08453) instead: its features depend on the
hint alone, so they are made once per pass size and added on the UNet's encoder path, scaled by strength,
within start/end like a ControlNet's; "ControlNet is more important" puts them on the prompt half only. The
soft-injection ladder is ControlNet's (13 residuals) and is refused for an adapter rather than guessed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor

from sdstudio.engine.checkpoint import LoadedModel
from sdstudio.engine.control_hint import Hint
from sdstudio.engine.controlnet_file import LoadedControlNet, TargetModel, load_controlnet
from sdstudio.engine.denoiser import UNetConditioning
from sdstudio.engine.devices import module_device, module_dtype
from sdstudio.engine.errors import GenerationError, RequestError
from sdstudio.engine.families import family
from sdstudio.engine.request import CONTROL_MODES, ControlUnit, GenerationRequest
from sdstudio.engine.residuals import Residuals
from sdstudio.engine.safetensors_file import PICKLE_SUFFIXES, read_header
from sdstudio.engine.t2i_adapter_file import LoadedAdapter, load_adapter
from sdstudio.engine.t2i_adapter_keys import is_adapter
from sdstudio.engine.weights import load_state_dict_file

BALANCED, PROMPT_MORE, CONTROL_MORE = CONTROL_MODES
SOFT_BASE = 0.825  # A1111's soft-injection ladder: weight * SOFT_BASE ** (SOFT_TOP - k)
SOFT_TOP = 12


def unit_scales(strength: float, mode: str, count: int) -> list[float]:
    """The weight of each of the `count` residuals (skips in order, the middle last)."""
    if mode == BALANCED:
        return [strength] * count
    return [strength * SOFT_BASE ** float(SOFT_TOP - k) for k in range(count)]


def check_unit(unit: ControlUnit) -> None:
    if unit.mode not in CONTROL_MODES:
        raise RequestError(f"unknown ControlNet control mode {unit.mode!r}; one of {', '.join(CONTROL_MODES)}")
    if not 0 <= unit.start <= unit.end <= 1:
        raise RequestError(f"ControlNet start/end must satisfy 0 <= start <= end <= 1, got {unit.start}/{unit.end}")
    if not unit.strength >= 0:
        raise RequestError(f"ControlNet strength must be >= 0, got {unit.strength}")


ControlModel = LoadedControlNet | LoadedAdapter


def load_control_model(path: str, target: TargetModel, device: torch.device, dtype: torch.dtype,
                       allow_pickle: bool = False) -> ControlModel:
    """A ControlNet or a T2I-Adapter, whichever the file holds (told by its tensor names)."""
    keys: list[str] = []
    if os.path.isfile(path):
        if os.path.splitext(path)[1].lower() in PICKLE_SUFFIXES:
            keys = list(load_state_dict_file(path, allow_pickle=allow_pickle)[0])
        else:
            keys = list(read_header(path).tensors)
    load = load_adapter if is_adapter(keys) else load_controlnet
    return load(path, target, device, dtype, allow_pickle)


class ControlNetCache:
    """The ControlNets of the last job, kept loaded for the next (loading one costs seconds); a job that
    names other files drops the rest first, so at most one job's set is in memory."""

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        self._nets: dict[tuple, ControlModel] = {}

    def load(self, paths: list[str], model: LoadedModel) -> list[ControlModel]:
        device, dtype = module_device(model.unet), module_dtype(model.unet)
        fam = family(model.description.family)  # a metadata-described one takes its heads from the UNet
        keys = [(p, _stamp(p), fam.name, model.unet.config, str(device), dtype) for p in paths]
        self._nets = {k: v for k, v in self._nets.items() if k in keys}
        for key in keys:
            if key not in self._nets:
                self._nets[key] = load_control_model(key[0], TargetModel.of(fam, model.unet), device, dtype,
                                                     self.allow_pickle)
        return [self._nets[k] for k in keys]


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime): a file replaced under the same name is loaded again."""
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return st.st_size, st.st_mtime_ns


class ControlJob:
    """A request's units, their ControlNets and hints, prepared once for the whole job."""

    def __init__(self, model: LoadedModel, req: GenerationRequest, cache: ControlNetCache | None = None) -> None:
        for unit in req.control_units:
            check_unit(unit)
        self.nets = (cache or ControlNetCache()).load([u.model for u in req.control_units], model)
        self.units = tuple(u.replace(model_hash=net.hash) for u, net in zip(req.control_units, self.nets,
                                                                           strict=True))
        for unit, net in zip(self.units, self.nets, strict=True):
            if isinstance(net, LoadedAdapter) and unit.mode == PROMPT_MORE:
                raise RequestError(f"{net.name} is a T2I-Adapter: control mode \"{PROMPT_MORE}\" is "
                                   f"ControlNet's soft-injection ladder; use \"{BALANCED}\" or "
                                   f"\"{CONTROL_MORE}\"")
        self.hints = [Hint(unit) for unit in self.units]
        self._features: dict[tuple[int, int, int], Residuals] = {}

    def features(self, index: int, width: int, height: int) -> Residuals:
        """Unit `index`'s adapter features at a pass size (batch 1), made once."""
        key = (index, width, height)
        if key not in self._features:
            net = self.nets[index]
            assert isinstance(net, LoadedAdapter)
            self._features[key] = net.residuals(self.hints[index].at(width, height))
        return self._features[key]

    def source(self, width: int, height: int, sigmas: Tensor) -> ControlSource:
        """The residual source of one pass at width x height pixels, down `sigmas`."""
        return ControlSource(self, width, height, sigmas)


class ControlSource:
    """A ResidualSource: (UNet input x without extra channels, t, conditioning) -> the units' summed residuals,
    or None when no unit is active. Calls hold one image: [prompt] or [prompt; negative prompt] (CFGDenoiser;
    AND prompts are refused with residuals).

    The step a call belongs to is A1111's `state.sampling_step`: 0 until the sampler reports its first step,
    then the index of the last step it reported (`following` wraps the pass's step callback to see them). So
    the first call of step i counts as step i - 1 and a second call within a step (Heun, DPM++ 2S) as i, and
    a unit with end 0.5 over 20 steps still steers step 10, as in A1111."""

    def __init__(self, job: ControlJob, width: int, height: int, sigmas: Tensor) -> None:
        self.job = job
        self.size = (width, height)
        self.steps = len(sigmas) - 1
        self.sampling_step = 0

    def following(self, on_step: Callable[[int, float, Tensor, Tensor], None]) -> Callable:
        """The sampler's step callback, also telling this source which step was reported last."""

        def callback(i: int, sigma: float, x: Tensor, denoised: Tensor) -> None:
            self.sampling_step = i
            on_step(i, sigma, x, denoised)

        return callback

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, cond: UNetConditioning) -> Residuals | None:
        rows = x.shape[0]
        if rows > 2:
            raise GenerationError("ControlNet residuals for more than [prompt; negative prompt] in one UNet call")
        fraction = self.sampling_step / max(self.steps, 1)
        total: Residuals | None = None
        job = self.job
        for k, (unit, net, hint) in enumerate(zip(job.units, job.nets, job.hints, strict=True)):
            if not unit.start <= fraction <= unit.end or unit.strength == 0:
                continue
            prompt_only = unit.mode == CONTROL_MORE and rows == 2
            n = 1 if prompt_only else rows
            if isinstance(net, LoadedAdapter):
                found = self.job.features(k, *self.size).to(x.device, torch.float32).scaled(unit.strength)
                weighted = found if prompt_only else found.repeated(n)
            else:
                found = _run(net, x[:n], hint.at(*self.size), t[:n], cond.rows(0, n))
                weighted = _scaled(found, unit_scales(unit.strength, unit.mode, len(found.tensors())))
            if prompt_only:
                weighted = weighted.guided(on_uncond=False)
            total = weighted if total is None else total + weighted
        return total


def _run(net: LoadedControlNet, x: Tensor, hint: Tensor, t: Tensor, cond: UNetConditioning) -> Residuals:
    module = net.net
    device, dtype = module_device(module), module_dtype(module)
    y = None if cond.y is None else cond.y.to(device, dtype)
    out = module(x.to(device, dtype), hint.to(device, dtype), t.to(device), cond.context.to(device, dtype), y)
    return out.to(x.device, torch.float32)


def _scaled(found: Residuals, scales: list[float]) -> Residuals:
    tensors = [r * s for r, s in zip(found.tensors(), scales, strict=True)]
    return Residuals(tuple(tensors[:-1]), tensors[-1])
