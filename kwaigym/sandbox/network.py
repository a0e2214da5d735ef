"""Network policies of a sandbox, as podman network settings plus firewall rules.

``none``: no network namespace links at all (loopback only).
``open``: user-mode networking (slirp4netns) without access to the host's loopback.
``proxy``: user-mode networking with the host's loopback reachable at 10.0.2.2,
then a firewall inside the sandbox's own network namespace that accepts exactly
the proxy's ports on ``10.0.2.2`` over TCP, and rejects everything else
at once (so a blocked connection fails instead of hanging). The rules live in the
sandbox's namespace and vanish with it; the host's firewall is never touched.
Processes in the sandbox lack CAP_NET_ADMIN and cannot change the rules.

Limits: the rules are applied from the host with ``nsenter``, so ``proxy`` needs
the podman service on this machine and root; a remote podman host supports
``none`` and ``open``.
"""

from __future__ import annotations

import asyncio
import shutil

from kwaigym.errors import ConfigError, HostSetupError, SandboxError
from kwaigym.sandbox.base import PROXY_HOST, NetworkPolicy


def podman_netns(policy: NetworkPolicy) -> dict:
    """The SpecGenerator fields that select the sandbox's network."""
    if policy.mode == "none":
        return {"netns": {"nsmode": "none"}}
    loopback = "true" if policy.mode == "proxy" else "false"
    return {
        "netns": {"nsmode": "slirp4netns"},
        "network_options": {"slirp4netns": [f"allow_host_loopback={loopback}"]},
    }


def proxy_rules(ports: tuple[int, ...]) -> tuple[str, str]:
    """iptables-restore input (IPv4, IPv6) allowing only the proxy's ports on the host."""
    v4 = "\n".join(
        [
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT DROP [0:0]",
            "-A OUTPUT -o lo -j ACCEPT",
            *(f"-A OUTPUT -d {PROXY_HOST}/32 -p tcp --dport {port} -j ACCEPT" for port in ports),
            "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
            "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
            "COMMIT",
            "",
        ]
    )
    v6 = "\n".join(
        [
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT DROP [0:0]",
            "-A OUTPUT -o lo -j ACCEPT",
            "-A OUTPUT -p tcp -j REJECT --reject-with tcp-reset",
            "-A OUTPUT -j REJECT",
            "COMMIT",
            "",
        ]
    )
    return v4, v6


async def _restore(pid: int, tool: str, rules: str) -> None:
    binary = shutil.which(tool) or f"/usr/sbin/{tool}"
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(pid),
        "-n",
        binary,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(rules.encode())
    if proc.returncode != 0:
        raise SandboxError(
            f"could not apply the network policy ({tool} in netns of pid {pid}): {err.decode()}"
        )


async def apply_policy(policy: NetworkPolicy, pid: int, *, local: bool) -> None:
    """Install the firewall of ``proxy`` mode in the namespace of the container's process ``pid``."""
    if policy.mode != "proxy":
        return
    if not local:
        raise ConfigError(
            "network mode 'proxy' needs the podman service on this machine (its rules are applied "
            "with nsenter); on a remote podman host use mode 'none' or 'open'"
        )
    if shutil.which("nsenter") is None or shutil.which("iptables-restore") is None:
        raise HostSetupError("network mode 'proxy' needs nsenter and iptables-restore; run `kwaigym setup`")
    v4, v6 = proxy_rules(policy.ports)
    await asyncio.gather(_restore(pid, "iptables-restore", v4), _restore(pid, "ip6tables-restore", v6))
