"""The wheel carries the package data sdstudio.paths points at, and an installed copy finds it.

Built from a copy of the checkout (so setuptools' build/ and egg-info stay out of it) without build isolation
(offline, with the setuptools already installed). About 5 s on the shared 2-core machine, so default.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.packaging.util import ROOT

RESOURCES = "sdstudio/resources"
EXPECTED = [
    f"{RESOURCES}/tokenizer/vocab.json", f"{RESOURCES}/tokenizer/merges.txt", f"{RESOURCES}/tokenizer/SOURCE.md",
    f"{RESOURCES}/models/sdstudio-emoji.safetensors", f"{RESOURCES}/models/sdstudio-emoji.taesd_decoder.safetensors",
    f"{RESOURCES}/icons/sdstudio.svg", *(f"{RESOURCES}/icons/sdstudio-{size}.png" for size in (16, 256, 512)),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "sdstudio", source / "sdstudio", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (built,) = out.glob("sdstudio-*.whl")
    return built


def test_the_wheel_holds_the_tokenizer_the_builtin_model_its_decoder_and_the_icons(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in EXPECTED:
            assert name in names, f"{name} is missing from the wheel: see [tool.setuptools.package-data]"
            assert archive.getinfo(name).file_size == (ROOT / name).stat().st_size, name


def test_an_installed_wheel_finds_its_resources(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    code = (
        "import sdstudio, sdstudio.paths as p\n"
        "print(sdstudio.__file__)\n"
        "for f in (p.tokenizer_dir() / 'vocab.json', p.tokenizer_dir() / 'merges.txt',\n"
        "          p.builtin_models_dir() / 'sdstudio-emoji.safetensors',\n"
        "          p.builtin_models_dir() / 'sdstudio-emoji.taesd_decoder.safetensors',\n"
        "          p.resources_dir() / 'icons' / 'sdstudio.svg'):\n"
        "    print(f, f.is_file())\n"
    )
    away = tmp_path / "elsewhere"  # not the checkout, whose sdstudio/ would shadow the installed one
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SDSTUDIO_HOME")}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run([sys.executable, "-c", code], cwd=away, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first, *files = done.stdout.splitlines()
    assert Path(first).is_relative_to(target), f"imported {first}, not the installed copy"
    assert len(files) == 5
    for line in files:
        path, exists = line.rsplit(" ", 1)
        assert Path(path).is_relative_to(target) and exists == "True", line
