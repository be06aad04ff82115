from pathlib import Path

from sdstudio.ui.single_instance import SingleInstance, server_name


def test_second_acquire_fails_and_its_message_reaches_the_first(qtbot, tmp_path: Path) -> None:
    first, second = SingleInstance(tmp_path / "data"), SingleInstance(tmp_path / "data")
    assert first.acquire()
    try:
        with qtbot.waitSignal(first.messageReceived, timeout=5000) as received:
            assert not second.acquire("activate\n/tmp/a picture.png")
        assert received.args == ["activate\n/tmp/a picture.png"]
    finally:
        first.release()


def test_other_data_folder_is_another_instance_and_release_frees_the_name(qtbot, tmp_path: Path) -> None:
    assert server_name(tmp_path / "a") != server_name(tmp_path / "b")
    first, other = SingleInstance(tmp_path / "a"), SingleInstance(tmp_path / "b")
    assert first.acquire() and other.acquire()
    first.release()
    other.release()
    again = SingleInstance(tmp_path / "a")
    assert again.acquire()  # the first one's socket is gone, not mistaken for a running instance
    again.release()
