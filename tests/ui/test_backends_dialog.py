import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidgetItem

from sdstudio.engine.errors import RequestError
from sdstudio.remote.servers import Server
from sdstudio.ui.backends_dialog import BackendsDialog


@pytest.fixture
def dialog(qtbot):
    d = BackendsDialog(True, [Server("box", "http://box:7860", "ann", "pw"),
                              Server("off", "http://o", enabled=False)])
    qtbot.addWidget(d)
    return d


def test_it_shows_and_returns_the_servers_as_given(dialog):
    assert dialog.table.item(0, 3).text() == "ann:pw"
    assert dialog.table.item(1, 0).checkState() == Qt.CheckState.Unchecked
    assert dialog.values() == (True, [Server("box", "http://box:7860", "ann", "pw"),
                                      Server("off", "http://o", enabled=False)])


def test_a_row_that_cannot_work_keeps_the_dialog_open_saying_which(dialog):
    dialog.add_row(Server("", "http://127.0.0.1:7860"))
    dialog.accept()
    assert dialog.result() == 0  # not accepted
    assert dialog.problem.text() == "row 3: a server needs a name other than 'This computer'"
    dialog.table.setItem(2, 1, QTableWidgetItem("box"))
    with pytest.raises(RequestError, match="row 3: another server is already called 'box'"):
        dialog.values()


def test_jobs_need_somewhere_to_run(dialog):
    dialog.local.setChecked(False)
    dialog.table.item(0, 0).setCheckState(Qt.CheckState.Unchecked)
    with pytest.raises(RequestError, match="turn on This computer or at least one server"):
        dialog.values()
