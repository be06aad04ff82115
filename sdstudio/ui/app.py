"""Application start-up: show the window first, then start the worker (which imports torch) and the rest.

`run_app(argv)` is what `python main.py` and `sdstudio` run. Options:
  --screenshot PATH   generate once, save PATH with "-generating" added (mid-job) and PATH (after), then quit
  --measure-startup   print the time from process start to the first painted window, then quit
  --measure-first-image  generate once, print the time from process start to the finished image, then quit
A second interactive launch on the same data folder raises the first one's window and exits (single_instance).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication, QDockWidget

from sdstudio import __version__, paths
from sdstudio.ui.history_link import HistoryLink
from sdstudio.ui.main_window import MainWindow
from sdstudio.ui.screenshot import ScreenshotRun
from sdstudio.ui.settings import open_settings
from sdstudio.ui.single_instance import SingleInstance
from sdstudio.ui.theme import apply_theme
from sdstudio.ui.token_counter import LazyTokenCounter
from sdstudio.ui.worker import Worker


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="sdstudio", description="SD Studio: local Stable Diffusion")
    parser.add_argument("--screenshot", metavar="PATH", help="save PNGs of the window mid-generation and after")
    parser.add_argument("--measure-startup", action="store_true", help="print time to a visible window, quit")
    parser.add_argument("--measure-first-image", action="store_true",
                        help="print time to the first generated image, quit")
    parser.add_argument("--version", action="version", version=f"SD Studio {__version__}")
    return parser.parse_known_args(argv)  # the rest goes to Qt (-platform, -style, ...)


def start_background(window: MainWindow, counter: LazyTokenCounter) -> HistoryLink | None:
    """Everything slow, after the first paint: the engine thread, the tokenizer, the history store."""
    window.worker.start()
    window.load_model(window.state.model)
    counter.start()
    from sdstudio.ui.network_dock import dock_network_browser

    dock_network_browser(window)
    try:
        from sdstudio.history.store import HistoryStore

        store = HistoryStore.default()
    except Exception as exc:  # history is optional for generating; say why it is off
        window.canvas_panel.banner.show_error(f"History is unavailable: {exc}")
        return None
    if store.notice:  # a rebuilt index, or why history is read-only: said once
        window.canvas_panel.banner.show_error(store.notice)
    gallery = None
    try:
        from sdstudio.ui.gallery import GalleryWidget
    except ImportError:
        GalleryWidget = None
    if GalleryWidget is not None:
        gallery = GalleryWidget(store, window)
        size_gallery_dock(window, window.dock_gallery(gallery))
    # The control layers dock opens beside the prompt panel: capped too, so the canvas keeps a usable width.
    _DockSizer(window, window.control_layers.dock, CONTROL_DOCK_SHARE)
    link = HistoryLink(store, window, gallery)
    if gallery is not None:  # after the history link: a walk replaces the entry's image it shows
        from sdstudio.ui.walk_link import WalkLink

        window.walk_link = WalkLink(store, window, gallery)
        from sdstudio.ui.upscale_link import UpscaleLink

        window.upscale_link = UpscaleLink(store, window, gallery)
    return link


DOCK_SHARE = 0.3  # the history dock's widest, as a share of the window: the canvas keeps the rest
CONTROL_DOCK_SHARE = 0.25  # the control layers dock's widest


class _DockSizer(QObject):
    """Keeps a dock at most DOCK_SHARE of its window's width, so a small window shrinks the dock, not the
    canvas, and the dock's width never follows its contents."""

    def __init__(self, window, dock: QDockWidget, share: float = DOCK_SHARE) -> None:
        super().__init__(window)
        self.window, self.dock, self.share = window, dock, share
        window.installEventFilter(self)
        self.fit()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False

    def fit(self) -> None:
        old_cap = self.dock.maximumWidth()
        cap = max(self.dock.minimumSizeHint().width(), int(self.window.width() * self.share))
        self.dock.setMaximumWidth(cap)
        if cap > old_cap and self.dock.width() >= old_cap - 1:  # it was squeezed: grow back as room comes
            wanted = min(self.dock.widget().sizeHint().width(), cap)
            self.window.resizeDocks([self.dock], [wanted], Qt.Orientation.Horizontal)


def size_gallery_dock(window, dock: QDockWidget) -> None:
    """Width limits for the history dock, and its preferred width unless a saved layout says otherwise."""
    _DockSizer(window, dock)
    if window.settings.value("window/state") is None:
        wanted = min(dock.widget().sizeHint().width(), dock.maximumWidth())
        window.resizeDocks([dock], [wanted], Qt.Orientation.Horizontal)


def _process_age_seconds() -> float:
    """Seconds since this process started (Linux: /proc), else since this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def run_app(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--self-test" in argv:  # headless check of the installation, before any window (sdstudio/selftest.py)
        from sdstudio.selftest import run

        return run(argv)
    args, qt_args = parse_args(argv)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("SD Studio")
    app.setOrganizationName("SDStudio")
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("sdstudio")
    guard = None
    # automated runs do not hand over to a running window
    if not (args.screenshot or args.measure_startup or args.measure_first_image):
        guard = SingleInstance(paths.home())
        files = [arg for arg in qt_args if not arg.startswith("-") and Path(arg).is_file()]
        if not guard.acquire("\n".join(["activate", *files])):
            print("SD Studio is already running; its window was brought to the front", flush=True)
            return 0
    settings = open_settings()
    apply_theme(app, str(settings.value("appearance/theme", "system")))
    counter = LazyTokenCounter()
    window = MainWindow(Worker(), settings, counter)
    window.show()
    if guard is not None:
        guard.messageReceived.connect(lambda _message: bring_to_front(window))
    links: list[HistoryLink | None] = []
    if args.measure_startup:
        def report() -> None:
            print(f"window visible after {_process_age_seconds() * 1000:.0f} ms "
                  f"(torch imported: {'torch' in sys.modules})", flush=True)
            window.close()

        QTimer.singleShot(0, report)
        return app.exec()
    QTimer.singleShot(0, lambda: links.append(start_background(window, counter)))
    if args.screenshot:
        run = ScreenshotRun(window, Path(args.screenshot))
        run.done.connect(app.exit)
        QTimer.singleShot(0, run.start)
    elif args.measure_first_image:
        from sdstudio.ui.first_image import FirstImageRun

        first = FirstImageRun(window, _process_age_seconds)
        first.done.connect(app.exit)
        QTimer.singleShot(0, first.start)
    code = app.exec()
    shut_down(window, links)
    if guard is not None:
        guard.release()
    return code


def bring_to_front(window: MainWindow) -> None:
    """What a second launch asks of the first: show the window, un-minimised, on top."""
    if window.isMinimized():
        window.showNormal()
    else:
        window.show()
    window.raise_()
    window.activateWindow()


def shut_down(window: MainWindow, links: list[HistoryLink | None]) -> None:
    """Close the window (saves settings, stops the engine thread; also when --screenshot ended the loop), then
    finish pending history saves and close the history store."""
    window.close()
    for link in links:
        if link is not None:
            link.flush()
            link.store.close()
