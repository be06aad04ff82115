import pytest

from tests.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_model(tiny_path):
    from sdstudio.engine.checkpoint import load_checkpoint

    return load_checkpoint(tiny_path)
