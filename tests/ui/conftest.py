import pytest

from sdstudio.ui.main_window import MainWindow
from sdstudio.ui.settings import open_settings
from sdstudio.ui.token_counter import LazyTokenCounter
from sdstudio.ui.worker import Worker
from tests.ui.fake_engine import FakeEngine


def show_active(qtbot, widget) -> None:
    """Show a top-level widget and make it the active window. Shortcuts and key handling follow the active
    window: offscreen a shown window is active at once, but on a real X server without a window manager
    nothing activates it, so QTest's keys reached the widgets while no shortcut (Ctrl+Enter, Esc, Ctrl+Y,
    Delete in the gallery) ever fired."""
    widget.show()
    qtbot.waitExposed(widget)
    widget.activateWindow()
    qtbot.waitActive(widget)


@pytest.fixture
def engine():
    return FakeEngine(step_seconds=0.005)


@pytest.fixture
def make_window(qtbot, home, engine):
    """Build main windows on the fake engine; each is closed (worker joined) at teardown."""
    windows = []

    def make(preview_ms: int = 20, factory=None) -> MainWindow:
        worker = Worker(factory or (lambda: engine), preview_interval_ms=preview_ms)
        window = MainWindow(worker, open_settings(), LazyTokenCounter(loader=lambda: None))
        qtbot.addWidget(window)
        worker.start()
        show_active(qtbot, window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture
def window(make_window):
    return make_window()
