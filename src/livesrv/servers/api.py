"""The HTTP API on ``http_api.listen`` (SRS shapes: every answer has code, server, service, pid)."""

from __future__ import annotations

import json
import os
from typing import Any

from livesrv import __version__
from livesrv.servers.http import Request, Response

SERVICE_ID = os.urandom(4).hex()
SERVER_ID = "vid-" + os.urandom(4).hex()


def _version_parts() -> dict[str, Any]:
    major, minor, revision = (int(x) for x in (__version__.split(".") + ["0", "0"])[:3])
    return {"major": major, "minor": minor, "revision": revision, "version": __version__}


def json_response(data: dict[str, Any], status: int = 200, cors: bool = True) -> Response:
    body = {"code": data.pop("code", 0), "server": SERVER_ID, "service": SERVICE_ID, "pid": str(os.getpid())}
    body.update(data)
    headers = [("Access-Control-Allow-Origin", "*")] if cors else []
    return Response(status, json.dumps(body).encode(), "application/json", headers)


def error(status: int, code: int, message: str) -> Response:
    return json_response({"code": code, "error": message}, status)


async def handle_api(req: Request) -> Response:
    path = req.path.rstrip("/") or "/"
    if path in ("/api", "/api/v1"):
        return json_response({"urls": {"versions": "the version of livesrv"}})
    if path == "/api/v1/versions":
        return json_response({"data": _version_parts()})
    return error(404, 404, f"no api at {path}")
