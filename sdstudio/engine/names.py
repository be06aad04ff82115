"""Sampler and schedule names as AUTOMATIC1111 shows them, the legacy combined names, and device names.

No torch here: the UI lists these and history parses them.
"""

from __future__ import annotations

from sdstudio.untrusted import quoted

SAMPLERS = (
    "Euler", "Euler a", "Heun", "LMS", "DPM2", "DPM2 a", "DPM++ 2S a",
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "DDIM", "LCM",
)
SCHEDULERS = ("normal", "karras", "exponential", "sgm_uniform")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # what devices.resolve_device accepts

# A1111 writes "Schedule type: Karras"; ComfyUI says "karras". Keys are lower-cased.
_SCHEDULER_ALIASES = {
    "normal": "normal",
    "uniform": "normal",  # A1111's "Uniform" gives the same sigmas for these models
    "automatic": "normal",
    "karras": "karras",
    "exponential": "exponential",
    "sgm uniform": "sgm_uniform",
    "sgm_uniform": "sgm_uniform",
}
_SAMPLER_ALIASES = {name.lower(): name for name in SAMPLERS} | {
    "euler_a": "Euler a",
    "euler_ancestral": "Euler a",
    "euler ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_sde": "DPM++ SDE",
}
SCHEDULER_LABELS = {"normal": "Normal", "karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform"}


def canonical_scheduler(name: str) -> str:
    """'Karras' / 'karras' / 'SGM Uniform' -> our schedule name; ValueError names the choices."""
    key = name.strip().lower()
    if key not in _SCHEDULER_ALIASES:
        raise ValueError(f"unknown schedule {quoted(name)}; choose one of: {', '.join(SCHEDULERS)}")
    return _SCHEDULER_ALIASES[key]


def canonical_sampler(name: str) -> tuple[str, str | None]:
    """Return (sampler, schedule or None). Legacy A1111 names carry the schedule: 'DPM++ 2M Karras'."""
    key = name.strip().lower()
    if key in _SAMPLER_ALIASES:
        return _SAMPLER_ALIASES[key], None
    for suffix, schedule in ((" karras", "karras"), (" exponential", "exponential")):
        if key.endswith(suffix) and key[: -len(suffix)] in _SAMPLER_ALIASES:
            return _SAMPLER_ALIASES[key[: -len(suffix)]], schedule
    raise ValueError(f"unknown sampler {quoted(name)}; choose one of: {', '.join(SAMPLERS)}")
