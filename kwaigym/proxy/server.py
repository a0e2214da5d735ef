"""One embedded mitmproxy per process: the interception layer of every episode.

``InterceptionProxy`` runs a programmatic mitmproxy ``Master`` (our own addon list,
none of DumpMaster's console output or file handling) inside the running asyncio
loop, on the host's loopback:

- a reverse-proxy port that agents use as their API base URL (sandboxes reach it as
  ``http://10.0.2.2:<port>`` under the ``proxy`` network policy);
- a regular-proxy port (``HTTPS_PROXY``) with kwaigym's own CA, for agents whose
  endpoint cannot be configured: their calls to known LLM hosts are intercepted.

Episodes register with a responder and get a token; the token routes their calls.

    async with InterceptionProxy() as proxy:
        route = proxy.register("ep-1", ScriptedResponder(["Hello!"]))
        # agent: ANTHROPIC_BASE_URL=route.base_url, ANTHROPIC_API_KEY=route.token
        ...
        calls = proxy.recorder.calls("ep-1")
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import attrs
import tenacity

from kwaigym.errors import ConfigError, InfraError
from kwaigym.proxy.endpoints import ModelEndpoints
from kwaigym.proxy.recorder import Recorder
from kwaigym.proxy.responders import Responder
from kwaigym.sandbox.base import PROXY_HOST, Mount, NetworkPolicy

#: Listen backlog of the proxy's sockets: room for a burst of connections (a batch of episodes).
BACKLOG = 4096
#: Where ``sandbox_mounts`` puts kwaigym's CA files inside a sandbox.
CA_DIR = "/etc/kwaigym/ca"
#: Environment variables through which common runtimes pick up an extra CA bundle.
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
)


@attrs.frozen(kw_only=True)
class EpisodeRoute:
    """How one episode's agent reaches the proxy."""

    episode_id: str
    token: str
    """Send as the API key (or in the base URL path); it routes every call to this episode."""
    port: int
    """Reverse-proxy port on the host's loopback."""
    proxy_port: int
    """Regular-proxy port (HTTPS_PROXY) on the host's loopback."""
    host: str = PROXY_HOST
    """The proxy's host as the agent sees it (10.0.2.2 from a sandbox; 127.0.0.1 on the host)."""

    @property
    def base_url(self) -> str:
        """API root for the agent, e.g. ``http://10.0.2.2:PORT`` (append ``/v1`` for OpenAI SDKs)."""
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        """API root carrying the token in its path, for agents that cannot set an API key."""
        return f"{self.base_url}/kw/{self.token}"

    @property
    def https_proxy(self) -> str:
        return f"http://kwaigym:{self.token}@{self.host}:{self.proxy_port}"


@attrs.define
class _Episode:
    responder: Responder
    allow_hosts: frozenset[str]


class InterceptionProxy:
    """The embedded mitmproxy (see the module docstring).

    Args:
        host: loopback address to listen on.
        confdir: where mitmproxy keeps kwaigym's CA (created on first start).
        keepalive_s: seconds between keep-alive events on streams while the policy thinks.
        models: names listed at ``GET /v1/models``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        confdir: str | os.PathLike | None = None,
        keepalive_s: float = 5.0,
        models: Iterable[str] = ("kwaigym-policy",),
    ):
        self.host = host
        self.confdir = Path(confdir or Path.home() / ".cache" / "kwaigym" / "mitmproxy")
        self.recorder = Recorder()
        self.models = list(models)
        self._episodes: dict[str, _Episode] = {}
        self._tokens: dict[str, str] = {}
        self._endpoints = ModelEndpoints(self._responder_of, self.recorder, keepalive_s=keepalive_s)
        self._master = None
        self._task: asyncio.Task | None = None
        self.port = 0
        self.proxy_port = 0

    # -- episodes ----------------------------------------------------------------------------------

    def register(
        self,
        episode_id: str,
        responder: Responder,
        *,
        allow_hosts: Iterable[str] = (),
        host: str = PROXY_HOST,
    ) -> EpisodeRoute:
        """Route calls carrying a new token to ``responder``; ``allow_hosts`` may be reached directly."""
        if episode_id in self._episodes:
            raise ConfigError(f"episode {episode_id!r} is already registered with the proxy")
        if not self.port:
            raise ConfigError("the proxy is not started; use `async with InterceptionProxy() as proxy`")
        token = f"kw-{secrets.token_urlsafe(24)}"
        self._episodes[episode_id] = _Episode(responder, frozenset(allow_hosts))
        self._tokens[token] = episode_id
        return EpisodeRoute(
            episode_id=episode_id, token=token, port=self.port, proxy_port=self.proxy_port, host=host
        )

    def unregister(self, episode_id: str) -> None:
        """Forget an episode: its token stops working (calls get 401)."""
        self._episodes.pop(episode_id, None)
        self._endpoints.tagger.forget(episode_id)
        for token in [t for t, e in self._tokens.items() if e == episode_id]:
            del self._tokens[token]

    def _responder_of(self, episode_id: str) -> Responder | None:
        episode = self._episodes.get(episode_id)
        return episode.responder if episode else None

    def _allowed(self, episode_id: str, host: str) -> bool:
        episode = self._episodes.get(episode_id)
        return bool(episode and host in episode.allow_hosts)

    @property
    def ca_cert(self) -> Path:
        """kwaigym's CA certificate (PEM), to install in sandboxes for regular-proxy mode."""
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def ca_bundle(self) -> Path:
        """This host's trusted CAs plus kwaigym's: for SSL_CERT_FILE-style variables, which replace
        a runtime's default trust (allow-listed hosts keep their real certificates)."""
        return self.confdir / "sandbox-ca" / "bundle.pem"

    def network_policy(self) -> NetworkPolicy:
        """The sandbox network policy that reaches this proxy's two ports and nothing else."""
        return NetworkPolicy(mode="proxy", proxy_port=self.port, extra_ports=(self.proxy_port,))

    def sandbox_mounts(self, target: str = CA_DIR) -> list[Mount]:
        """Read-only mount of the CA files into a sandbox (see ``sandbox_env``)."""
        return [Mount(source=str(self.confdir / "sandbox-ca"), target=target)]

    def sandbox_env(
        self, route: EpisodeRoute, *, regular: bool = True, ca_dir: str = CA_DIR
    ) -> dict[str, str]:
        """Environment that sends a sandboxed agent's HTTPS through the regular-proxy port and makes
        common runtimes (OpenSSL, Python requests, Node, curl, git) trust kwaigym's CA."""
        if not regular:
            return {}
        env = {var: f"{ca_dir}/bundle.pem" for var in CA_ENV_VARS}
        env["NODE_EXTRA_CA_CERTS"] = f"{ca_dir}/kwaigym-ca.pem"  # Node adds it to its own list
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env[var] = route.https_proxy
        env["NO_PROXY"] = env["no_proxy"] = f"localhost,127.0.0.1,{route.host}"
        return env

    def _write_ca_files(self) -> None:
        import shutil
        import ssl

        system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
        mount_dir = self.ca_bundle.parent  # public certificates only: never the CA's key
        mount_dir.mkdir(exist_ok=True)
        shutil.copy(self.ca_cert, mount_dir / "kwaigym-ca.pem")
        system_text = system.read_text() if system.is_file() else ""
        self.ca_bundle.write_text(system_text + "\n" + self.ca_cert.read_text())

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> InterceptionProxy:
        from mitmproxy import options
        from mitmproxy.addons import core, disable_h2c, next_layer, proxyserver, tlsconfig
        from mitmproxy.master import Master

        from kwaigym.proxy.addon import InterceptAddon

        await self._endpoints.start()
        self.port, self.proxy_port = _free_port(self.host), _free_port(self.host)
        self.confdir.mkdir(parents=True, exist_ok=True)
        opts = options.Options()
        master = Master(opts, event_loop=asyncio.get_running_loop(), with_termlog=False)
        addon = InterceptAddon(self._tokens.get, self._allowed, self._endpoints, lambda: self.models)
        master.addons.add(
            core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
            disable_h2c.DisableH2C(), addon,
        )  # fmt: skip
        opts.update(
            mode=[
                f"reverse:http://127.0.0.1:{self._endpoints.port}@{self.host}:{self.port}",
                f"regular@{self.host}:{self.proxy_port}",
            ],  # fmt: skip
            confdir=str(self.confdir),
            connection_strategy="lazy",
            http2=False,
        )
        self._master = master
        self._task = asyncio.create_task(master.run(), name="kwaigym-mitmproxy")
        await self._wait_listening()
        self._deepen_backlogs()
        await asyncio.to_thread(self._write_ca_files)
        return self

    def _deepen_backlogs(self) -> None:
        """mitmproxy listens with asyncio's default backlog of 100: a burst of agents connecting at
        once (a rollout batch starting) overflows it and calls fail. It has no option for this, so
        the listening sockets get a deeper backlog (listen() again on Linux just updates it)."""
        import socket

        for instance in self._master.addons.get("proxyserver").servers:
            for server in getattr(instance, "_servers", ()):
                for sock in getattr(server, "sockets", ()):
                    with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                        dup.listen(BACKLOG)

    async def _wait_listening(self) -> None:
        """Until both ports accept connections (mitmproxy binds them after `run` starts)."""
        waiting = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(OSError), wait=tenacity.wait_fixed(0.02),
            stop=tenacity.stop_after_delay(10), reraise=True,
        )  # fmt: skip
        try:
            async for attempt in waiting:
                with attempt:
                    if self._task.done():
                        raise InfraError(f"mitmproxy stopped while starting: {self._task.exception()!r}")
                    for port in (self.port, self.proxy_port):
                        _, writer = await asyncio.open_connection(self.host, port)
                        writer.close()
        except OSError as exc:
            raise InfraError(f"mitmproxy did not listen on {self.host}:{self.port}: {exc}") from exc

    async def close(self) -> None:
        """Stop mitmproxy (its listening sockets too: its own shutdown leaves them open) and the endpoints."""
        if self._master is not None:
            self._master.shutdown()
            try:
                await asyncio.wait_for(self._task, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            await self._master.addons.get("proxyserver").servers.update([])
            self._master = None
        await self._endpoints.close()

    async def __aenter__(self) -> InterceptionProxy:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
