"""Docks the LoRA / embedding browser beside the prompt panel and wires it to the window: the prompt box it
writes into, the loaded model's family, the extra folders in the settings, the worker's engine and the
token counter."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget

from sdstudio.network_catalog import NetworkCatalog
from sdstudio.ui.network_browser import NetworkBrowser
from sdstudio.ui.settings import load_network_dirs, restore_window_layout, save_network_dirs


def dock_network_browser(window, catalog: NetworkCatalog | None = None) -> NetworkBrowser:
    """Add the browser as a dock left of the prompt panel (View menu toggle, layout remembered) and start its
    first scan; `window` is a MainWindow."""
    lora_dirs, embedding_dirs = load_network_dirs(window.settings)
    window.worker.set_network_dirs(lora_dirs, embedding_dirs)
    browser = NetworkBrowser(window.panel.prompt_edit, catalog)
    browser.set_folders(lora_dirs, embedding_dirs)
    browser.set_model_family(window.model_family or None)
    window.worker.modelLoaded.connect(lambda description: browser.set_model_family(description.family or None))

    def folders_changed(lora: list[str], embeddings: list[str]) -> None:
        save_network_dirs(window.settings, lora, embeddings)
        window.worker.set_network_dirs(lora, embeddings)

    browser.foldersChanged.connect(folders_changed)
    # The token counter counts embedding vectors: it looks in the same folders, re-listed after every scan.
    window.counter.refresh_embeddings(embedding_dirs)
    browser.scanned.connect(lambda: window.counter.refresh_embeddings(browser.embedding_dirs))
    dock = QDockWidget("LoRA / embeddings", window)
    dock.setObjectName("networksDock")
    dock.setWidget(browser)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    # Closed until asked for (the panel's "LoRA…" button, the View menu) or open in the saved layout: a third
    # column would squeeze the canvas of a small window.
    dock.hide()
    window.view_menu.addSeparator()
    window.view_menu.addAction(dock.toggleViewAction())
    restore_window_layout(window.settings, window)

    def open_browser() -> None:
        dock.show()
        dock.raise_()
        browser.search.setFocus()

    window.panel.networksRequested.connect(open_browser)
    window.network_dock = dock
    browser.rescan()
    return browser
