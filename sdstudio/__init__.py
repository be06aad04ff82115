"""SD Studio: local Stable Diffusion on the desktop."""

import os

# OpenMP threads that spin while waiting make torch 50-80x slower whenever another process holds a core
# (measured: a demo-model UNet call took 5.8 s instead of 0.12 s on a busy 2-core machine). A desktop always
# has other processes, so threads sleep while they wait. Takes effect only before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
