import pytest

from sdstudio import errorlog
from sdstudio.engine.errors import GenerationError, RequestError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path))
    return tmp_path


def raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


def chained():
    try:
        try:
            {}["missing key"]
        except KeyError as exc:
            raise GenerationError("generation failed: a tensor went missing") from exc
    except GenerationError as outer:
        return outer


def test_log_lands_in_the_data_folder_with_a_timestamped_traceback(home):
    path = errorlog.log_exception(raised(ValueError("bad value")), "generating job 3")
    assert path == home / "logs" / "sdstudio.log"
    text = path.read_text()
    assert text.startswith("--- 20") and "generating job 3" in text
    assert "Traceback (most recent call last)" in text and "ValueError: bad value" in text


def test_entries_are_appended(home):
    errorlog.log_exception(raised(ValueError("first")))
    path = errorlog.log_exception(raised(ValueError("second")))
    text = path.read_text()
    assert text.index("first") < text.index("second")


def test_the_log_is_capped_by_rotating(home, monkeypatch):
    monkeypatch.setattr(errorlog, "MAX_BYTES", 500)
    for i in range(20):
        path = errorlog.log_exception(raised(ValueError(f"<entry {i}>")))
    assert path.stat().st_size <= 500
    old = path.with_name("sdstudio.log.1")
    assert old.is_file() and old.stat().st_size <= 500
    assert "<entry 19>" in path.read_text() and "<entry 0>" not in path.read_text() + old.read_text()


def test_user_message_keeps_plain_errors_short_and_unlogged(home):
    assert errorlog.user_message(raised(RequestError("steps must be at least 1"))) == "steps must be at least 1"
    assert not (home / "logs").exists()


def test_user_message_logs_the_cause_of_a_chained_error(home):
    message = errorlog.user_message(chained())
    assert message.startswith("generation failed: a tensor went missing") and "Traceback" not in message
    assert f"details in {home / 'logs' / 'sdstudio.log'}" in message
    text = (home / "logs" / "sdstudio.log").read_text()
    assert "KeyError: 'missing key'" in text and "direct cause" in text


def test_user_message_names_an_unexpected_error_in_one_line(home):
    message = errorlog.user_message(raised(ZeroDivisionError("division by zero")))
    assert "\n" not in message and "ZeroDivisionError" in message and "details in" in message
    assert "ZeroDivisionError: division by zero" in (home / "logs" / "sdstudio.log").read_text()


def test_cli_prints_one_line_for_an_unexpected_error_and_logs_the_traceback(home, monkeypatch, capsys):
    from sdstudio import cli

    def crash(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_inspect", crash)
    assert cli.main(["inspect", "x.safetensors"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Unexpected error (ZeroDivisionError")
    assert "Traceback" not in err and str(home / "logs" / "sdstudio.log") in err
    assert "ZeroDivisionError: division by zero" in (home / "logs" / "sdstudio.log").read_text()


def test_cli_keeps_user_errors_short_and_their_exit_code(home, monkeypatch, capsys):
    from sdstudio import cli

    def refuse(args):
        raise RequestError("steps must be at least 1")

    monkeypatch.setattr(cli, "cmd_inspect", refuse)
    assert cli.main(["inspect", "x.safetensors"]) == 2
    assert capsys.readouterr().err == "error: steps must be at least 1\n"
