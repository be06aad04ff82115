import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never touch a real user's data (settings, logs, models, history): tests that need a known home
# set their own with monkeypatch.
os.environ["SDSTUDIO_HOME"] = tempfile.mkdtemp(prefix="sdstudio-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sdstudio/__init__.py


import pytest  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data folder (settings, logs, models, outputs) for one test."""
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    """A tiny random-weight checkpoint in the original single-file layout (see tests/tiny_checkpoint.py)."""
    from tests.tiny_checkpoint import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    from sdstudio.engine.checkpoint import load_checkpoint

    return load_checkpoint(tiny_path)


@pytest.fixture(scope="module")
def builtin_engine():
    """An Engine on one torch thread, for a module of tests that generate with the built-in model."""
    import torch

    from sdstudio.engine.api import Engine

    threads = torch.get_num_threads()
    # One thread: on this 2-core machine shared with other jobs, a second thread mostly waits.
    torch.set_num_threads(1)
    yield Engine()
    torch.set_num_threads(threads)
