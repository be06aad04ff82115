"""The engine: latent diffusion in pure torch. Never imports Qt.

Importing this package is cheap; submodules import torch when they need it.
"""
