"""crowsonkb/k-diffusion's `sampling` and `external` modules as an independent reference.

The k-diffusion package's __init__ imports its training stack (torchvision, scikit-image, wandb, ...), so
we load just these two files from the installed package under a private name, with a stand-in for the
one helper they use from `k_diffusion.utils`. They need torchsde, torchdiffeq, scipy and tqdm.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_NAME = "_kdiffusion_reference"


def _append_dims(x, target_dims):
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def load() -> tuple[types.ModuleType, types.ModuleType]:
    """(k_diffusion.sampling, k_diffusion.external) from the installed k-diffusion package."""
    if _NAME not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("k-diffusion is not installed: pip install --no-deps k-diffusion")
        package = types.ModuleType(_NAME)
        package.__path__ = list(spec.submodule_search_locations)
        utils = types.ModuleType(f"{_NAME}.utils")
        utils.append_dims = _append_dims
        package.utils = utils
        sys.modules[_NAME] = package
        sys.modules[utils.__name__] = utils
    return importlib.import_module(f"{_NAME}.sampling"), importlib.import_module(f"{_NAME}.external")
