"""The servers a user lists in Settings → Backends: a name, a base URL and optional HTTP basic credentials
(A1111's `--api-auth user:password`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from sdstudio.engine.errors import RequestError

LOCAL_NAME = "This computer"


@dataclass(frozen=True)
class Server:
    name: str
    url: str  # base URL, e.g. http://gpu-box:7860 (the /sdapi/v1 paths are added)
    user: str = ""
    password: str = ""
    enabled: bool = True

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


def checked_server(name: str, url: str, credentials: str = "", enabled: bool = True) -> Server:
    """A Server from what the user typed; RequestError naming the field that cannot work. `credentials` is
    "user:password" or ""."""
    name, url, credentials = name.strip(), url.strip(), credentials.strip()
    if not name or name == LOCAL_NAME:
        raise RequestError(f"a server needs a name other than {LOCAL_NAME!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError(f"server URL must look like http://host:7860, got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise RequestError("put credentials in their own field, not in the URL; the URL holds no query")
    user, colon, password = credentials.partition(":")
    if credentials and (not colon or not user):
        raise RequestError("credentials must be user:password (as A1111's --api-auth)")
    return Server(name, url, user, password, enabled)


def servers_to_json(servers: list[Server]) -> str:
    return json.dumps([asdict(s) for s in servers])


def servers_from_json(text: str) -> list[Server]:
    """The saved list; entries that are not a valid server (a hand-edited file) are left out, names unique."""
    try:
        items = json.loads(text) if text else []
    except ValueError:
        return []
    servers: list[Server] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            credentials = f"{item.get('user', '')}:{item.get('password', '')}" if item.get("user") else ""
            server = checked_server(str(item.get("name", "")), str(item.get("url", "")), credentials,
                                    item.get("enabled", True) is not False)
        except RequestError:
            continue
        if all(s.name != server.name for s in servers):
            servers.append(server)
    return servers
