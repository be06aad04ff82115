"""`python -m sdstudio serve`: the A1111-compatible API server (sdstudio/server/) on HOST:PORT.

Local by default. Binding to any other address opens the engine (and the history's images) to the network,
so it needs --api-auth USER:PASS (HTTP basic, as A1111's flag) or an explicit --insecure; otherwise the
command refuses before anything loads. Starlette + uvicorn (the `server` extra) are imported only here.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from sdstudio.engine.errors import SDStudioError
from sdstudio.engine.names import DEVICE_CHOICES

LOOPBACK_NAMES = ("localhost",)


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="serve the engine over AUTOMATIC1111's web API (/sdapi/v1/...)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=7860, help="default: 7860, as A1111")
    s.add_argument("--api-auth", metavar="USER:PASS",
                   help="require HTTP basic authentication (as A1111's flag)")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-local --host without --api-auth (anyone who can reach it can use it)")
    s.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to run (default: auto)")
    s.set_defaults(func=cmd_serve)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise SDStudioError("--api-auth must be USER:PASS, both non-empty")
    return user, password


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_exposure(host: str, auth: tuple[str, str] | None, insecure: bool) -> None:
    if not is_loopback(host) and auth is None and not insecure:
        raise SDStudioError(f"--host {host} is reachable from other machines: add --api-auth USER:PASS (or "
                            "--insecure to serve without a password)")


def cmd_serve(args: argparse.Namespace) -> int:
    auth = parse_auth(args.api_auth)
    check_exposure(args.host, auth, args.insecure)
    if not 0 < args.port < 65536:
        raise SDStudioError(f"--port {args.port} is out of range: use 1..65535")
    try:
        import uvicorn
    except ImportError:
        raise SDStudioError("serve needs starlette and uvicorn: pip install 'sdstudio[server]'") from None
    from sdstudio.engine.api import Engine
    from sdstudio.generate_cli import open_history
    from sdstudio.server.app import Server, create_app

    store = open_history()
    server = Server(Engine(device=args.device), store, auth)
    print(f"SD Studio API on http://{args.host}:{args.port}/sdapi/v1 (A1111-compatible)", file=sys.stderr)
    try:
        uvicorn.run(create_app(server), host=args.host, port=args.port, log_level="info")
    finally:
        server.jobs.close()
        store.close()
    return 0
