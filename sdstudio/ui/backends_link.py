"""Connects Settings → Backends to the worker, the status bar's badge and the model picker.

The worker gets the saved backends at start and after each change; the badge says where each running job
runs; when the target backend (the first enabled) is a server, the model picker lists that server's models,
fetched off the GUI thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from sdstudio.engine.errors import SDStudioError
from sdstudio.remote.backend import RemoteBackend
from sdstudio.remote.servers import Server
from sdstudio.ui.backends_dialog import BackendsDialog
from sdstudio.ui.settings import load_backends, save_backends
from sdstudio.ui.status import BackendBadge

if TYPE_CHECKING:
    from sdstudio.ui.main_window import MainWindow


class BackendsLink(QObject):
    modelsListed = Signal(str, list)  # server name, its checkpoint titles
    listFailed = Signal(str)

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window
        self.badge = BackendBadge()
        window.statusBar().addPermanentWidget(self.badge)
        w = window.worker
        w.jobRouted.connect(self.badge.routed)
        w.jobFinished.connect(lambda out: self.badge.ended(out.job_id))
        w.jobFailed.connect(lambda job, _message: self.badge.ended(job))
        w.jobCancelled.connect(self.badge.ended)
        self.modelsListed.connect(self._show_models)
        self.listFailed.connect(window.canvas_panel.banner.show_error)
        local, servers = load_backends(window.settings)
        w.set_backends(servers, local)

    def open_dialog(self) -> None:
        dialog = BackendsDialog(*load_backends(self.window.settings), parent=self.window)
        if dialog.exec() == BackendsDialog.DialogCode.Accepted:
            self.apply(*dialog.values())

    def apply(self, local: bool, servers: list[Server]) -> None:
        """Save the backends, hand them to the worker, list the target's models and load the current one."""
        save_backends(self.window.settings, local, servers)
        before = self.window.worker.target
        self.window.worker.set_backends(servers, local)
        self.window.refresh_models()
        if self.window.worker.target != before:
            self.window.choose_model("")  # a model of one backend means nothing on another

    def refresh_models(self) -> bool:
        """When the target is a server, list its models (in the background); False for this computer."""
        server = self.window.worker.target_backend()
        if server is None:
            return False
        threading.Thread(target=self._list, args=(server,), daemon=True, name="remote-models").start()
        return True

    def _list(self, server: Server) -> None:
        try:
            self.modelsListed.emit(server.name, RemoteBackend(server).list_models())
        except SDStudioError as exc:
            self.listFailed.emit(f"Cannot list the models of {server.name}: {exc}")

    def _show_models(self, name: str, titles: list[str]) -> None:
        if self.window.worker.target != name:
            return  # the target changed while the list was on its way
        self.window.panel.set_models([(f"{name}: its current model", "")] + [(t, t) for t in titles])
