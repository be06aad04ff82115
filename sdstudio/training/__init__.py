"""Training of the small built-in model (run as `python -m sdstudio.training`)."""
