"""One SD Studio per data folder: a second launch hands its message to the first and exits.

Two instances on one data folder would share settings and the history store; the store copes (see
history.store) but the user gains nothing from two windows. The guard is a QLocalServer (a Unix socket,
a named pipe on Windows) whose name is derived from the data folder, so instances on different
SDSTUDIO_HOME folders do not see each other. Messages are UTF-8 lines: "activate", then any file paths.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from sdstudio.engine.errors import SDStudioError

CONNECT_MS = 1000


class SingleInstanceError(SDStudioError):
    """The single-instance socket can be neither reached nor created."""


def server_name(data_folder: Path) -> str:
    digest = hashlib.sha256(str(Path(data_folder).resolve()).encode("utf-8")).hexdigest()[:16]
    return f"sdstudio-{digest}"


class SingleInstance(QObject):
    """`acquire(message)`: True when this process is the first (it then listens and emits `messageReceived`
    for each message a later launch sends); False when another one runs and got `message`."""

    messageReceived = Signal(str)

    def __init__(self, data_folder: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = server_name(data_folder)
        self._server: QLocalServer | None = None
        self._sockets: list[QLocalSocket] = []

    def acquire(self, message: str = "activate") -> bool:
        if self._send(message):
            return False
        server = QLocalServer(self)
        if not server.listen(self.name):
            # Either another launch won the race (it answers now) or a crashed instance left its socket file.
            if self._send(message):
                return False
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                raise SingleInstanceError(
                    f"cannot create the single-instance socket {self.name}: {server.errorString()}; "
                    "close other SD Studio windows and start again"
                )
        server.newConnection.connect(self._accept)
        self._server = server
        return True

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _send(self, message: str) -> bool:
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_MS):
            return False
        socket.write((message + "\n").encode("utf-8"))
        socket.waitForBytesWritten(CONNECT_MS)
        socket.disconnectFromServer()
        if socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
            socket.waitForDisconnected(CONNECT_MS)
        return True

    def _accept(self) -> None:
        while self._server is not None and (socket := self._server.nextPendingConnection()) is not None:
            buffer = bytearray()
            self._sockets.append(socket)

            def read(socket: QLocalSocket = socket, buffer: bytearray = buffer) -> None:
                buffer.extend(bytes(socket.readAll()))

            def finish(socket: QLocalSocket = socket, buffer: bytearray = buffer) -> None:
                read()
                if socket in self._sockets:
                    self._sockets.remove(socket)  # the server (its Qt parent) deletes it when it closes
                text = buffer.decode("utf-8", "replace").strip()
                if text:
                    self.messageReceived.emit(text)

            socket.readyRead.connect(read)
            socket.disconnected.connect(finish)
            if socket.state() == QLocalSocket.LocalSocketState.UnconnectedState:
                finish()
