"""The mitmproxy addon: which episode a call belongs to, and where it goes.

For every request the addon finds the episode's token: the agent's API key
(``x-api-key`` or ``Authorization: Bearer``), a ``/kw/<token>`` prefix of the path,
or, in regular-proxy mode, the ``Proxy-Authorization`` of the CONNECT. A model call
with a known token is sent on to ``ModelEndpoints`` with the episode id in a header
(its credentials are removed first); an unknown token gets a 401 saying so. Probes
agents make (``HEAD /``, ``GET /v1/models``) are answered here. In regular-proxy
mode, known LLM hosts are intercepted the same way, hosts on the episode's egress
allowlist pass, and every other host is refused with a 403 that names it.

mitmproxy swallows exceptions raised in hooks, so each hook answers the flow itself
on failure (a 500 saying what broke) rather than leaving the agent hanging.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from kwaigym.proxy.endpoints import EPISODE_HEADER, MAX_BODY, ModelEndpoints, error_body, note_answer, route

log = logging.getLogger(__name__)

#: Hosts whose model calls are intercepted in regular-proxy mode.
LLM_HOSTS = frozenset(
    {
        "api.anthropic.com",
        "api.openai.com",
        "chatgpt.com",
        "api.deepseek.com",
        "openrouter.ai",
        "api.moonshot.ai",
    }
)
_TOKEN_PREFIX = "/kw/"


def _token_from_path(path: str) -> tuple[str | None, str]:
    """(token, rest of the path) for ``/kw/<token>/...``; (None, path) otherwise."""
    if not path.startswith(_TOKEN_PREFIX):
        return None, path
    token, _, rest = path[len(_TOKEN_PREFIX) :].partition("/")
    return token, "/" + rest


def _token_from_headers(headers: http.Headers) -> str | None:
    if key := headers.get("x-api-key"):
        return key
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def _proxy_token(headers: http.Headers) -> str | None:
    """The token in ``Proxy-Authorization: Basic base64(user:token)`` of a CONNECT."""
    value = headers.get("proxy-authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(value[6:]).decode().partition(":")[2] or None
    except ValueError:
        return None


def _answer(flow: http.HTTPFlow, status: int, body: dict | str) -> None:
    data = json.dumps(body) if isinstance(body, dict) else body
    kind = "application/json" if isinstance(body, dict) else "text/plain"
    flow.response = http.Response.make(status, data, {"content-type": kind})


class _FlowAnswer:
    """Lets ``ModelEndpoints.handle`` answer a plain call on the mitmproxy flow itself."""

    def __init__(self, flow: http.HTTPFlow):
        self.flow = flow
        self.started = False

    async def json(self, record, status: int, body: dict) -> None:
        data = note_answer(record, status, body)
        self.flow.response = http.Response.make(status, data, {"content-type": "application/json"})
        self.started = True


class InterceptAddon:
    """Routes each flow to its episode (see the module docstring).

    Args:
        episode_of: token -> episode id, or None when unknown.
        allowed: (episode id, host) -> whether that episode may reach that host directly.
        endpoints: the ``ModelEndpoints`` (streams are forwarded to its port; plain calls use its
            ``handle`` directly).
        models: model names listed by ``GET /v1/models``.
    """

    def __init__(
        self,
        episode_of: Callable[[str], str | None],
        allowed: Callable[[str, str], bool],
        endpoints: ModelEndpoints,
        models: Callable[[], list[str]],
    ):
        self._episode_of = episode_of
        self._allowed = allowed
        self._endpoints = endpoints
        self._models = models
        self._tunnels: dict[str, str] = {}  # client connection id -> episode id (regular mode)

    # -- regular-proxy mode: the CONNECT names the episode and the host ----------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        try:
            episode = self._episode_of(_proxy_token(flow.request.headers) or "")
            host = flow.request.host
            if episode is None:
                _answer(flow, 407, "kwaigym proxy: unknown or missing episode token in Proxy-Authorization\n")
                flow.response.headers["proxy-authenticate"] = 'Basic realm="kwaigym"'
            elif host not in LLM_HOSTS and not self._allowed(episode, host):
                _answer(flow, 403, f"kwaigym proxy: {host} is not on episode {episode}'s egress allowlist\n")
            else:
                self._tunnels[flow.client_conn.id] = episode
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            log.exception("CONNECT handling failed")
            _answer(flow, 500, f"kwaigym proxy: internal error: {exc}\n")

    def tls_clienthello(self, data) -> None:
        """Allow-listed hosts keep their own TLS end to end: only LLM hosts are decrypted."""
        episode = self._tunnels.get(data.context.client.id)
        host = data.client_hello.sni or (data.context.server.address or ("",))[0]
        if episode and host not in LLM_HOSTS and self._allowed(episode, host):
            data.ignore_connection = True

    def client_disconnected(self, client) -> None:
        self._tunnels.pop(client.id, None)

    # -- every request -----------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        length = flow.request.headers.get("content-length", "0")
        if length.isdigit() and int(length) > MAX_BODY:
            _answer(
                flow, 413, error_body(route(flow.request.path), 413, f"request body over {MAX_BODY} bytes")
            )

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        try:
            episode = self._route(flow)
            if episode is not None:
                await self._answer_plain(flow, episode)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            log.exception("routing a model call failed")
            _answer(flow, 500, error_body(None, 500, f"kwaigym proxy: internal error: {exc}"))

    async def _answer_plain(self, flow: http.HTTPFlow, episode: str) -> None:
        """Answer a non-streaming call right here: one HTTP hop less than going through the
        endpoints server, which only streams need (they must send events while the policy thinks)."""
        raw = flow.request.get_content(strict=False) or b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            return  # the endpoints server answers it with a 400
        if isinstance(parsed, dict) and parsed.get("stream") is True:
            return
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        await self._endpoints.handle(_FlowAnswer(flow), episode, flow.request.path, raw, parsed, headers)

    def _route(self, flow: http.HTTPFlow) -> str | None:
        """Answer probes and refusals here; for a model call, point it at the endpoints server and
        return its episode."""
        req = flow.request
        episode = None
        if isinstance(flow.client_conn.proxy_mode, mode_specs.RegularMode):
            episode = self._tunnels.get(flow.client_conn.id) or self._episode_of(
                _proxy_token(req.headers) or ""
            )
            if episode is None:
                return _answer(
                    flow, 407, "kwaigym proxy: unknown or missing episode token in Proxy-Authorization\n"
                )
            if req.pretty_host not in LLM_HOSTS:
                if self._allowed(episode, req.pretty_host):
                    return  # an allow-listed host: pass through untouched
                return _answer(
                    flow, 403, f"kwaigym proxy: {req.pretty_host} is not on episode {episode}'s allowlist\n"
                )
        path_token, path = _token_from_path(req.path)
        if req.method in ("HEAD", "GET") and path.split("?")[0] in ("/", ""):
            return _answer(flow, 200, "" if req.method == "HEAD" else "ok")
        if req.method == "GET" and path.split("?")[0].rstrip("/") in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "type": "model", "display_name": m} for m in self._models()]
            listing = {"object": "list", "data": data, "has_more": False}
            if known := episode or self._episode_of(path_token or _token_from_headers(req.headers) or ""):
                self._endpoints.record_auxiliary(known, path, dict(req.headers.items()), listing)
            return _answer(flow, 200, listing)
        fmt = route(path)
        if fmt is None or req.method != "POST":
            return _answer(
                flow, 404, error_body(fmt, 404, f"kwaigym proxy: no model endpoint {req.method} {path}")
            )
        episode = episode or self._episode_of(path_token or _token_from_headers(req.headers) or "")
        if episode is None:
            msg = (
                "kwaigym proxy: unknown episode token; send the token of this episode's route as the API key"
            )
            return _answer(flow, 401, error_body(fmt, 401, msg))
        for name in ("x-api-key", "authorization", "proxy-authorization"):
            req.headers.pop(name, None)
        req.headers[EPISODE_HEADER] = episode
        req.path = path
        req.scheme, req.host, req.port = "http", "127.0.0.1", self._endpoints.port
        req.headers["host"] = f"127.0.0.1:{self._endpoints.port}"
        return episode

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response and "text/event-stream" in flow.response.headers.get("content-type", ""):
            flow.response.stream = True
