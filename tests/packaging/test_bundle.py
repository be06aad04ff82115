"""The real bundle: build it with PyInstaller, then run it as a user would. Slow: a build takes 5-10 minutes
of CPU and about 2 GB of memory; run `flock /tmp/sdstudio-big.lock python -m pytest -m slow tests/packaging`.

Without the built-in model in sdstudio/resources/models, the bundle carries a tiny random checkpoint under its name.
"""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.util import PACKAGING, ROOT
from tests.tiny_checkpoint import write_tiny_checkpoint

pytestmark = pytest.mark.slow

MAX_BUNDLE_BYTES = 1024 * 2**20  # the trimmed bundle is about 700 MiB; an untrimmed one is well over 1 GiB
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "SDSTUDIO_HOME", "XDG_DATA_HOME",
                     "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(bundle folder, PyInstaller work folder)."""
    models = ROOT / "sdstudio" / "resources" / "models"
    if not (models / "sdstudio-emoji.safetensors").is_file():
        models = tmp_path_factory.mktemp("models")
        write_tiny_checkpoint(models / "sdstudio-emoji.safetensors")
    dist, work = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("work")
    subprocess.run([sys.executable, str(PACKAGING / "build.py"), "--models", str(models), "--dist", str(dist),
                    "--work", str(work)], check=True, timeout=3600)
    return dist / "sdstudio", work


@pytest.fixture
def user(tmp_path) -> dict[str, str]:
    """A user with an empty home, no display and nothing set up, started from an unrelated folder."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}
    return {**env, "HOME": str(home)}


def run(bundle: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    return subprocess.run([str(bundle / "sdstudio"), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_frozen_self_test_passes_from_any_folder_and_writes_nothing_in_home(built, user, tmp_path):
    done = run(built[0], "--self-test", env=user, cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(bundle:" in done.stdout and "self-test passed" in done.stdout
    assert list(Path(user["HOME"]).rglob("*")) == []


def test_frozen_generate_command_writes_an_image_with_parameters(built, user, tmp_path):
    out = tmp_path / "out"
    done = run(built[0], "generate", "--prompt", "red apple", "--steps", "2", "--out", str(out), env=user,
               cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stdout + done.stderr
    images = list(out.glob("*.png"))
    assert len(images) == 1
    params = run(built[0], "params", str(images[0]), env=user, cwd=tmp_path)
    assert "red apple" in params.stdout and "Steps: 2" in params.stdout


def test_frozen_app_without_a_display_explains_why(built, user, tmp_path):
    done = run(built[0], env=user, cwd=tmp_path)
    assert done.returncode == 3
    assert "no display found" in done.stderr


def test_frozen_window_becomes_visible(built, user, tmp_path):
    env = {**user, "QT_QPA_PLATFORM": "offscreen", "SDSTUDIO_HOME": str(tmp_path / "data")}
    done = run(built[0], "--measure-startup", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "window visible after" in done.stdout
    print(done.stdout)


def test_bundle_is_trimmed_and_keeps_numpys_libraries_intact(built):
    bundle, work = built
    internal = bundle / "_internal"
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < MAX_BUNDLE_BYTES, f"bundle grew to {size / 2**20:.0f} MiB"
    for unwanted in ("diffusers", "torch/include", "torch/test", "PySide6/Qt/translations", "accelerate"):
        assert not (internal / unwanted).exists(), unwanted
    assert not list(internal.rglob("_tkinter*")) and not list(internal.rglob("libQt6WebEngine*"))
    assert not [p for p in internal.rglob("*") if p.is_symlink() and not p.exists()], "dangling links"
    from PyInstaller.archive.readers import ZlibArchiveReader

    modules = set(ZlibArchiveReader(str(work / "sdstudio" / "PYZ-00.pyz")).toc)
    assert "sdstudio.engine.clip_text" in modules and "sdstudio.engine.api" in modules
    left_out = ("diffusers", "tkinter", "sdstudio.training", "transformers", "tokenizers", "accelerate")
    assert not [m for m in modules if m.startswith(left_out)]
    import numpy

    installed = Path(numpy.__file__).parent.parent / "numpy.libs"
    for lib in installed.iterdir():
        assert filecmp.cmp(lib, internal / "numpy.libs" / lib.name, shallow=False), f"{lib.name} was modified"
    for name in ("resources/models/sdstudio-emoji.safetensors", "resources/tokenizer/merges.txt",
                 "resources/icons/sdstudio-256.png", "resources/sdstudio.desktop.in"):
        assert (internal / name).is_file(), name
    assert (bundle / "install-linux.sh").is_file() and (bundle / "uninstall-linux.sh").is_file()
