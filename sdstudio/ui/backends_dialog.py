"""Settings → Backends: "This computer" and a list of A1111-compatible servers (AUTOMATIC1111, Forge, our own
`sdstudio serve`), each with a name, URL, optional user:password and an on/off box."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sdstudio.engine.errors import RequestError
from sdstudio.remote.servers import LOCAL_NAME, Server, checked_server

COLUMNS = ("On", "Name", "URL", "user:password")


class BackendsDialog(QDialog):
    def __init__(self, local: bool, servers: list[Server], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Backends")
        layout = QVBoxLayout(self)
        self.local = QCheckBox(f"{LOCAL_NAME} (the engine in this app)")
        self.local.setChecked(local)
        layout.addWidget(self.local)
        layout.addWidget(QLabel("A1111-compatible servers (AUTOMATIC1111 or Forge started with --api, or "
                                "sdstudio serve). Each job goes to the next free backend; models are listed "
                                "from the first one.", wordWrap=True))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        layout.addWidget(self.table)
        for server in servers:
            self.add_row(server)
        row = QHBoxLayout()
        add, remove = QPushButton("&Add Server"), QPushButton("&Remove")
        add.clicked.connect(lambda: self.add_row(Server("", "http://127.0.0.1:7860")))
        remove.clicked.connect(lambda: self.table.removeRow(self.table.currentRow()))
        row.addWidget(add)
        row.addWidget(remove)
        row.addStretch(1)
        layout.addLayout(row)
        self.problem = QLabel(wordWrap=True)
        self.problem.setObjectName("backendsProblem")
        self.problem.hide()
        layout.addWidget(self.problem)
        standard = QDialogButtonBox.StandardButton
        buttons = QDialogButtonBox(standard.Ok | standard.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(self.fontMetrics().horizontalAdvance("M") * 50, self.sizeHint().height())

    def add_row(self, server: Server) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        on = QTableWidgetItem()
        on.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
        on.setCheckState(Qt.CheckState.Checked if server.enabled else Qt.CheckState.Unchecked)
        credentials = f"{server.user}:{server.password}" if server.user else ""
        self.table.setItem(row, 0, on)
        for column, text in ((1, server.name), (2, server.url), (3, credentials)):
            self.table.setItem(row, column, QTableWidgetItem(text))

    def values(self) -> tuple[bool, list[Server]]:
        """(this computer on, the servers); RequestError naming the row that cannot work."""
        servers: list[Server] = []
        for row in range(self.table.rowCount()):
            texts = [self.table.item(row, c).text() if self.table.item(row, c) else "" for c in (1, 2, 3)]
            enabled = self.table.item(row, 0).checkState() == Qt.CheckState.Checked
            try:
                server = checked_server(*texts, enabled=enabled)
            except RequestError as exc:
                raise RequestError(f"row {row + 1}: {exc}") from None
            if any(s.name == server.name for s in servers):
                raise RequestError(f"row {row + 1}: another server is already called {server.name!r}")
            servers.append(server)
        if not self.local.isChecked() and not any(s.enabled for s in servers):
            raise RequestError(f"turn on {LOCAL_NAME} or at least one server: jobs need somewhere to run")
        return self.local.isChecked(), servers

    def accept(self) -> None:
        try:
            self.values()
        except RequestError as exc:
            self.problem.setText(str(exc))
            self.problem.show()
            return
        super().accept()
