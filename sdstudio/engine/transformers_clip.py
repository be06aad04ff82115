"""transformers' CLIP classes, imported here and nowhere else in the engine or training.

transformers' top-level module is lazy: `from transformers import CLIPTokenizer` imports the class's submodule
on first use. Two threads doing that at once (the app does at start-up: the worker thread builds the engine
while the token counter's loader thread loads the tokenizer) can deadlock in importlib's per-module locks,
which Python breaks by handing one thread a half-initialised module: "ImportError: cannot import name
'CLIPTokenizer' from 'transformers'", now and then. Importing every class in this one module's body makes
that body the lock: Python runs a module's body once, in one thread, and any other thread importing this
module waits for it to finish. Nothing else imports transformers here, so no second thread can be inside
transformers' lazy loader at the same time (tests/engine/test_transformers_clip.py checks both).
"""

from __future__ import annotations

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

__all__ = ["CLIPTextConfig", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"]
