"""`serve`'s refusals, said before anything loads: a non-local host without --api-auth or --insecure, a
malformed --api-auth."""

from __future__ import annotations

import pytest

from sdstudio.cli import main
from sdstudio.engine.errors import SDStudioError
from sdstudio.serve_cli import check_exposure, is_loopback, parse_auth


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                         ("127.5.0.1", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                         ("::", False), ("myhost.example", False)])
def test_loopback(host, local):
    assert is_loopback(host) is local


def test_a_public_host_needs_auth_or_insecure():
    with pytest.raises(SDStudioError, match="--api-auth"):
        check_exposure("0.0.0.0", None, insecure=False)
    check_exposure("0.0.0.0", ("a", "b"), insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    check_exposure("127.0.0.1", None, insecure=False)


def test_the_command_refuses_in_one_line(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "7861"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--api-auth USER:PASS" in err
    assert main(["serve", "--api-auth", "nopassword"]) == 2
    assert "USER:PASS" in capsys.readouterr().err


def test_parse_auth():
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss")  # the password may hold colons
    assert parse_auth(None) is None
    with pytest.raises(SDStudioError):
        parse_auth(":x")
