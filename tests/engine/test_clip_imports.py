"""Nothing in sdstudio imports transformers (a test-only reference since sdstudio.engine.clip_text and
clip_tokenizer: importing it was ~7 s of every cold start), and the app's start-up imports are safe from two
threads at once: the worker thread builds the engine (sdstudio.engine.api) while the token counter's loader
thread loads the tokenizer (sdstudio.engine.tokenizer). With transformers' lazy loader that start-up failed
now and then with "ImportError: cannot import name 'CLIPTokenizer' from 'transformers'"."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sdstudio"

# Each round forgets sdstudio and imports it again from two threads released together. torch is imported
# first and kept, so that the two threads' imports of sdstudio overlap (with transformers, every round
# failed).
RACE = """
import importlib, sys, threading
import torch  # noqa: F401

def forget():
    for name in [m for m in sys.modules if m.split(".")[0] == "sdstudio"]:
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
importlib.import_module("sdstudio.training.stage_diffusion")  # and training's text model, for completeness
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "tokenizers", "huggingface_hub"})
print("\\n".join(failures) or heavy or "ok")
"""


def test_engine_and_tokenizer_imported_from_two_threads_at_once():
    done = subprocess.run([sys.executable, "-c", RACE.replace("ROUNDS", "2")], cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok", done.stdout


def test_no_module_of_sdstudio_imports_transformers():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for name in names
                      if name.split(".")[0] in ("transformers", "tokenizers", "huggingface_hub")]
    assert found == []


def test_building_models_on_the_meta_device_does_not_import_torch_dynamo():
    # normal_ on the meta device runs through torch._refs, which imports torch._dynamo (seconds of a cold
    # start); the engine builds every model on the meta device before it assigns the file's weights.
    script = """
import sys, torch
from sdstudio.engine.clip_text import CLIPTextModel, CLIPTextModelWithProjection
from sdstudio.engine.text_encoder import clip_l_config, openclip_bigg_config
from sdstudio.engine.unet import UNetConfig, UNetModel
from sdstudio.engine.vae import AutoencoderKL, VAEConfig
with torch.device("meta"):
    CLIPTextModel(clip_l_config()), CLIPTextModelWithProjection(openclip_bigg_config())
    UNetModel(UNetConfig(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4),
                         num_res_blocks=2, transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1,
                         context_dim=768, num_heads=8))
    AutoencoderKL(VAEConfig())
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
