"""Sampler and schedule names as AUTOMATIC1111 shows them, the legacy combined names, ComfyUI's names,
the names of samplers and schedules other tools have and we lack (with our nearest), and device names.

No torch here: the UI lists these and history parses them.
"""

from __future__ import annotations

from sdstudio.untrusted import quoted

SAMPLERS = (
    "Euler", "Euler a", "Heun", "LMS", "DPM2", "DPM2 a", "DPM++ 2S a",
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "PLMS", "UniPC", "UniPC bh2", "LCM",
)
SCHEDULERS = (
    "normal", "karras", "exponential", "sgm_uniform", "simple", "beta", "kl_optimal", "align_your_steps",
)
# What a user should know before choosing these samplers (the UI shows it as the item's tooltip).
SAMPLER_NOTES = {
    "DPM fast": "DPM-Solver with orders 3, 2, 1: Steps counts model calls; only the schedule's first and "
                "last noise levels matter, and it stops at the last one (a little noise left), as in A1111.",
    "DPM adaptive": "Ignores Steps: it picks its own step sizes until its error estimate is small, often with "
                    "many more model calls than other samplers; progress shows how much noise is gone. Only "
                    "the schedule's ends matter.",
    "Restart": "Heun steps. From 20 steps it uses a Karras schedule between the chosen schedule's ends, and "
               "part of the steps go back up to a higher noise level once (twice from 36 steps) and come "
               "down again.",
    "PLMS": "Pseudo linear multistep: 4th-order steps on the noise estimate; the first step costs two "
            "model calls.",
    "UniPC": "Predictor-corrector multistep solver (order 3, variant bh1, as A1111's defaults): good in "
             "10–20 steps.",
    "UniPC bh2": "UniPC with the bh2 variant (ComfyUI's uni_pc_bh2), often better than bh1 below 10 steps.",
}
# Hires fix / upscale upscalers (engine/upscale.py), A1111's names: latent ones -> (interpolate mode, antialias)
# as A1111's shared.latent_upscale_modes; pixel ones built in. Model upscalers (files) are listed at run time.
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = ("Lanczos", "Nearest")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # what devices.resolve_device accepts

# A1111 writes "Schedule type: Karras"; ComfyUI says "karras". Keys are lower-cased.
_SCHEDULER_ALIASES = {name: name for name in SCHEDULERS} | {
    "uniform": "normal",  # A1111's "Uniform" gives the same sigmas for these models
    "automatic": "normal",
    "sgm uniform": "sgm_uniform",
    "kl optimal": "kl_optimal",
    "align your steps": "align_your_steps",  # A1111's label
    "ays": "align_your_steps",
}
SCHEDULER_LABELS = {
    "normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
    "simple": "Simple", "beta": "Beta", "kl_optimal": "KL Optimal", "align_your_steps": "Align Your Steps",
}
_SAMPLER_ALIASES = {name.lower(): name for name in SAMPLERS} | {
    # ComfyUI's KSampler names; its "_gpu" variants run the same steps with noise drawn on the GPU.
    "euler_a": "Euler a",
    "euler_ancestral": "Euler a",
    "euler ancestral": "Euler a",
    "lms": "LMS",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC bh2",
}

# Samplers A1111 (as it writes them) and ComfyUI (KSampler names) have and SD Studio lacks -> the one of ours
# whose steps are most alike: same family (multistep, ancestral, Heun-like) and same determinism. Reading
# such an image names the nearest; it is used only when the user chooses it. Keys are lower-cased.
NEAREST_SAMPLER = {
    "deis": "DPM++ 2M",  # multistep exponential integrators like DPM-Solver++(2M)
    "res_multistep": "DPM++ 2M",
    "ipndm": "LMS",  # pseudo linear multistep (improved PNDM): Adams-Bashforth on eps
    "ipndm_v": "LMS",
    "heunpp2": "Heun",  # Heun-type second-order steps
    "ddpm": "Euler a",
    "euler cfg++": "Euler",
    "euler_cfg_pp": "Euler",
    "euler a cfg++": "Euler a",
    "euler_ancestral_cfg_pp": "Euler a",
    "dpm++ 2m cfg++": "DPM++ 2M",
    "dpmpp_2m_cfg_pp": "DPM++ 2M",
    "dpmpp_2s_ancestral_cfg_pp": "DPM++ 2S a",
    "ddim cfg++": "DDIM",
    "dpm++ 2m sde heun": "DPM++ 2M SDE",  # the Heun-type correction instead of the midpoint
    "er_sde": "DPM++ 2M SDE",
    "sa_solver": "DPM++ 2M SDE",
    "seeds_2": "DPM++ SDE",
    "seeds_3": "DPM++ SDE",
}
# Schedules the same tools have and we lack -> our nearest, as for samplers.
NEAREST_SCHEDULER = {
    "ddim": "normal",  # A1111's label for DDIM's uniform timesteps
    "ddim_uniform": "normal",
    "linear_quadratic": "normal",
    "polyexponential": "exponential",
    "align your steps gits": "karras",
    "align your steps 11": "align_your_steps",  # Forge's AYS tables for other step counts
    "align your steps 32": "align_your_steps",
    "ays+": "align_your_steps",
    "ays_30": "align_your_steps",
    "ays_30+": "align_your_steps",
    "gits": "karras",
    "turbo": "sgm_uniform",
}
# Legacy A1111 names carry the schedule as a suffix: "DPM++ 2M Karras", "DPM++ 3M SDE Exponential".
_SCHEDULE_SUFFIXES = ((" karras", "karras"), (" exponential", "exponential"))


class NotOffered(ValueError):
    """A sampler or schedule another tool has and SD Studio lacks; `nearest` is ours that comes closest
    (for a sampler: (sampler, schedule or None), the schedule being one a legacy name carried)."""

    def __init__(self, message: str, nearest: object) -> None:
        super().__init__(message)
        self.nearest = nearest


def canonical_scheduler(name: str) -> str:
    """'Karras' / 'karras' / 'SGM Uniform' -> our schedule name; NotOffered names the nearest for a schedule
    other tools have, ValueError lists the choices for one nobody has."""
    key = name.strip().lower()
    if key in _SCHEDULER_ALIASES:
        return _SCHEDULER_ALIASES[key]
    if key in NEAREST_SCHEDULER:
        nearest = NEAREST_SCHEDULER[key]
        raise NotOffered(
            f"schedule {quoted(name)} is not in SD Studio; the nearest is {quoted(SCHEDULER_LABELS[nearest])}",
            nearest,
        )
    raise ValueError(f"unknown schedule {quoted(name)}; choose one of: {', '.join(SCHEDULERS)}")


def canonical_sampler(name: str) -> tuple[str, str | None]:
    """Return (sampler, schedule or None). Legacy A1111 names carry the schedule: 'DPM++ 2M Karras'.

    NotOffered names the nearest for a sampler other tools have; ValueError lists the choices otherwise."""
    key = name.strip().lower()
    for suffix, schedule in ((None, None),) + _SCHEDULE_SUFFIXES:
        base = key if suffix is None else key[: -len(suffix)] if key.endswith(suffix) else None
        if base in _SAMPLER_ALIASES:
            return _SAMPLER_ALIASES[base], schedule
        if base in NEAREST_SAMPLER:
            nearest = NEAREST_SAMPLER[base]
            raise NotOffered(f"sampler {quoted(name)} is not in SD Studio; the nearest is {quoted(nearest)}", (nearest, schedule))
    raise ValueError(f"unknown sampler {quoted(name)}; choose one of: {', '.join(SAMPLERS)}")
