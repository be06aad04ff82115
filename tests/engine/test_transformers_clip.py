"""The engine's transformers imports are safe from two threads at once: the app's worker thread builds the
engine (sdstudio.engine.api) while the token counter's loader thread loads the tokenizer
(sdstudio.engine.tokenizer). Before sdstudio/engine/transformers_clip.py that start-up failed now and then
with "ImportError: cannot import name 'CLIPTokenizer' from 'transformers'"."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sdstudio"

# Each round forgets sdstudio and transformers and imports them again from two threads released together.
# torch is imported first and kept: it is most of the import time, and without it the two threads' imports
# of transformers overlap less (on the old code a fresh interpreter failed about one start in four; with
# torch loaded first, every round failed).
RACE = """
import importlib, sys, threading
import torch  # noqa: F401

def forget():
    for name in [m for m in sys.modules if m.split(".")[0] in ("sdstudio", "transformers")]:
        del sys.modules[name]

def engine_thread():
    importlib.import_module("sdstudio.engine.api").Engine  # what ui.worker.default_engine_factory imports

def tokenizer_thread():
    importlib.import_module("sdstudio.engine.tokenizer").tokenize(["a red apple"])  # ui.token_counter's loader

failures = []
for round_ in range(ROUNDS):
    forget()
    barrier = threading.Barrier(2)

    def run(job):
        barrier.wait()
        try:
            job()
        except Exception as error:
            failures.append(f"round {round_}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(job,)) for job in (engine_thread, tokenizer_thread)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print("\\n".join(failures) or "ok")
"""


def test_engine_and_tokenizer_imported_from_two_threads_at_once():
    done = subprocess.run([sys.executable, "-c", RACE.replace("ROUNDS", "2")], cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok", done.stdout


def test_only_transformers_clip_imports_transformers():
    # One place: a transformers import anywhere else in the engine or training would bypass its lock.
    found = []
    for layer in ("engine", "training"):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            if path.name == "transformers_clip.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for name in names
                          if name.split(".")[0] == "transformers"]
    assert found == []
