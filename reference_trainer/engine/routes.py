"""The engine server's JSON plumbing: a request handler base whose failures are JSON errors, never hangs."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import tornado.iostream
import tornado.web

from kwaigym.chat.codec import BadRequest
from kwaigym.chat.fields import kind_of
from kwaigym.errors import ConfigError

log = logging.getLogger("reference_trainer.engine.server")


class Refused(Exception):
    """A request the server will not run: answered with ``status`` and ``message``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def error_body(message: str, status: int) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class JsonRoute(tornado.web.RequestHandler):
    """JSON in, JSON out; every failure is a JSON error, never a hang or an HTML page."""

    def initialize(self, server) -> None:
        self.server, self.engine = server, server.engine
        server.hits[self.request.path] += 1

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(error_body(self._reason, status_code))

    def body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"")
        except ValueError as exc:
            raise Refused(f"request body is not JSON: {exc}") from None
        if not isinstance(body, Mapping):
            raise Refused(f"request body: expected a JSON object, got {kind_of(body)}")
        return body

    async def guarded(self, handle) -> None:
        try:
            await handle()
        except (Refused, BadRequest, ConfigError) as exc:
            status, message = getattr(exc, "status", 400), exc.message
            self.fail(status, message)
        except tornado.iostream.StreamClosedError:
            pass  # the client left
        except Exception as exc:
            log.exception("engine server: %s %s failed", self.request.method, self.request.path)
            self.fail(500, f"the engine failed: {type(exc).__name__}: {exc}")

    def fail(self, status: int, message: str) -> None:
        if self._finished:
            return
        if self._headers_written:  # a stream already under way: end it with an error event
            self.write(b"data: " + json.dumps(error_body(message, status)).encode() + b"\n\n")
            self.finish()
            return
        self.clear()
        self.set_status(status)
        self.finish(error_body(message, status))
