"""Remote backends: A1111-compatible servers (AUTOMATIC1111, Forge, `sdstudio serve`) behind the engine's
Backend protocol, and the dispatcher that spreads the queue over them. Torch-free and Qt-free."""
