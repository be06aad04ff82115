"""Both engines the app can run on implement the Backend protocol, checked on their signatures."""

import inspect

import pytest

from sdstudio.engine.backend import Backend
from sdstudio.engine.detect import ModelDescription
from tests.ui.fake_engine import FakeEngine

METHODS = ("load_model", "generate", "describe", "list_models")
P = inspect.Parameter


def _engine_class():
    from sdstudio.engine.api import Engine

    return Engine


def assert_implements(cls) -> None:
    """Every call the protocol allows is a valid call of `cls`: same positional order, every keyword-only
    parameter accepted by name, defaults where the protocol has them, and extra parameters optional."""
    for name in METHODS:
        assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}()"
        wanted = list(inspect.signature(getattr(Backend, name)).parameters.values())[1:]
        params = inspect.signature(getattr(cls, name)).parameters
        have = list(params.values())[1:]
        positional = [p for p in wanted if p.kind == P.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in have[: len(positional)]] == [p.name for p in positional], (cls, name)
        for p in wanted:
            mine = params.get(p.name)
            assert mine is not None and mine.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY), (cls, name, p)
            if p.default is not P.empty:
                assert mine.default == p.default, (cls, name, p.name)
        for p in have:
            if p.name not in {w.name for w in wanted}:
                assert p.default is not P.empty or p.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD), (cls, name, p)


@pytest.mark.parametrize("cls", [FakeEngine, _engine_class()], ids=["fake", "Engine"])
def test_implements_the_backend_protocol(cls):
    assert_implements(cls)


def test_the_check_rejects_a_partial_engine():
    class Partial:
        def load_model(self, path="", progress=None): ...

        def generate(self, request, should_cancel=None, on_step=None): ...

    with pytest.raises(AssertionError):
        assert_implements(Partial)


def test_fake_describes_with_a_complete_model_description():
    fake = FakeEngine()
    assert isinstance(fake, Backend) and fake.describe() is None
    description = fake.load_model("")
    assert isinstance(description, ModelDescription) and fake.describe() is description
    assert description.summary() and description.default_size == 64 and fake.list_models() == []
