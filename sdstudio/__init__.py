"""SD Studio: local Stable Diffusion on the desktop."""

__version__ = "0.1.0"
