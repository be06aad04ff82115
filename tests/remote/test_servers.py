import pytest

from sdstudio.engine.errors import RequestError
from sdstudio.remote.servers import LOCAL_NAME, Server, checked_server, servers_from_json, servers_to_json


def test_a_server_from_what_the_user_typed():
    server = checked_server(" GPU box ", "http://gpu:7860/", "ann:pa:ss")
    assert server == Server("GPU box", "http://gpu:7860/", "ann", "pa:ss")
    assert server.base == "http://gpu:7860"


@pytest.mark.parametrize(("name", "url", "credentials", "says"), [
    ("", "http://gpu:7860", "", "needs a name"),
    (LOCAL_NAME, "http://gpu:7860", "", "needs a name"),
    ("box", "gpu:7860", "", "must look like http://host:7860"),
    ("box", "ftp://gpu", "", "must look like"),
    ("box", "http://ann:pw@gpu:7860", "", "credentials in their own field"),
    ("box", "http://gpu:7860", "annonly", "user:password"),
])
def test_what_cannot_work_is_refused_naming_the_field(name, url, credentials, says):
    with pytest.raises(RequestError, match=says):
        checked_server(name, url, credentials)


def test_the_list_round_trips_and_a_hand_edited_bad_entry_is_left_out():
    servers = [Server("a", "http://a:7860", "u", "p"), Server("b", "https://b", enabled=False)]
    assert servers_from_json(servers_to_json(servers)) == servers
    assert servers_from_json('[{"name": "x", "url": "nope"}, 5, {"name": "a", "url": "http://a"},'
                             ' {"name": "a", "url": "http://dup"}]') == [Server("a", "http://a")]
    assert servers_from_json("{broken") == [] and servers_from_json("") == []
