"""A `train lora` run killed with SIGKILL mid-way (a real subprocess, its state saved every step with
--save-every 0, killed at whatever point of a step or a save it has reached once 3 steps are saved) and then
continued with --resume ends with the same LoRA file tensors, bit for bit, as an uninterrupted run of the same
settings and seed (another subprocess through the same CLI entry point, both at one thread). Random crops, flips and the text
encoder are on, so every kind of random draw is covered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from sdstudio import paths
from tests.tiny_checkpoint import write_tiny_checkpoint

STEPS = 10
ROOT = Path(__file__).resolve().parents[2]


def _args(base: Path, images: Path, out: Path) -> list[str]:
    return ["train", "lora", "--base", str(base), "--images", str(images), "--trigger", "sks",
            "--class", "star",
            "--steps", str(STEPS), "--resolution", "32", "--batch", "2", "--rank", "2", "--lr", "1e-2",
            "--random-crop", "--flip", "--text-encoder", "--save-every", "0", "--seed", "11",
            "--threads", "1", "--out", str(out)]


def _saved_step(state: Path) -> int:
    try:
        return int(torch.load(state, weights_only=True)["step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def test_sigkill_then_resume_equals_an_uninterrupted_run(home, tmp_path):
    base = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(48, 32), (40, 40), (32, 48)]):
        Image.new("RGB", size, (30 * i, 200, 90)).save(images / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDSTUDIO_HOME": os.environ["SDSTUDIO_HOME"]}
    killed_out = tmp_path / "killed.safetensors"
    command = [sys.executable, "-m", "sdstudio", *_args(base, images, killed_out)]
    state = paths.home() / "training" / "lora" / "killed"
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and _saved_step(state / "state.pt") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 3 <= _saved_step(state / "state.pt") < STEPS and not killed_out.exists()

    resumed = subprocess.run([*command, "--resume", str(state)], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"step {STEPS}/{STEPS}" in resumed.stderr

    # The reference runs as a subprocess too: float sums depend on torch's thread count, which tests in this
    # process may have changed (the bit-for-bit claim holds at one thread count, pinned by --threads 1).
    whole_out = tmp_path / "whole.safetensors"
    whole_run = subprocess.run([sys.executable, "-m", "sdstudio", *_args(base, images, whole_out)], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert whole_run.returncode == 0, whole_run.stderr[-2000:]
    killed, whole = load_file(str(killed_out)), load_file(str(whole_out))
    assert killed.keys() == whole.keys()
    assert all(torch.equal(killed[k], whole[k]) for k in whole)
    assert any(float(whole[k].abs().max()) > 0 for k in whole if k.endswith("lora_up.weight"))
