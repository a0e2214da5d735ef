"""The ``kilocode`` adapter: Kilo Code's CLI (``kilo``, a fork of OpenCode), black box.

The bundle is the platform package ``@kilocode/cli-linux-x64`` alone, named directly: it holds
a self-contained Bun-compiled binary (needing only glibc), and the ``@kilocode/cli`` wrapper
adds nothing but a postinstall that copies it (for 7.8.1 that postinstall fails: its platform
packages were never published; 7.7.9 is the newest platform package on npm).

Headless: ``kilo run --format json --auto``. ``kilo run`` wraps every argv word that contains a
space in double quotes (escaping inner quotes), so the instruction goes through stdin instead,
which it reads verbatim: ``sh -c`` pipes its first argument, a separate argv element never
interpolated into the script. The config (an ``@ai-sdk/openai-compatible`` provider pointed at
the proxy, the only provider enabled, so nothing asks api.kilo.ai for its model list) travels
inline in ``KILO_CONFIG_CONTENT``. The title agent is disabled: it would name the session at the
end of the turn, in a call that ``kilo run``'s exit usually cuts off. Compaction stays (a call
without tools, tagged auxiliary); sub-agents (the ``task`` tool) send ``x-parent-session-id``.
Its ``bash`` tool runs shell commands. Everything but the names, the config extras and the
environment is OpenCode's (the adapter extends it).
"""

from __future__ import annotations

import json

from kwaigym.proxy.server import EpisodeRoute
from scaffolds.base import MOUNT_ROOT
from scaffolds.opencode import OpenCodeScaffold

VERSION = "7.7.9"


class KiloCodeScaffold(OpenCodeScaffold):
    """Kilo Code, speaking the OpenAI Chat Completions API through a custom provider."""

    name = "kilocode"
    target = f"{MOUNT_ROOT}/kilocode"
    package = platform_package = "@kilocode/cli-linux-x64"
    binary = "bin/kilo"

    def __init__(self, version: str = VERSION):
        super().__init__(version)

    def config(self, route: EpisodeRoute) -> dict:
        """OpenCode's config, with the proxy as the only provider enabled and no title agent."""
        config = super().config(route)
        del config["$schema"]
        provider = next(iter(config["provider"]))
        return config | {"enabled_providers": [provider], "agent": {"title": {"disable": True}}}

    def env(self, route: EpisodeRoute) -> dict[str, str]:
        return {
            "KILO_CONFIG_CONTENT": json.dumps(self.config(route)),
            "KILO_TELEMETRY_LEVEL": "off",  # PostHog; anything but "all" turns it off
            "KILO_DISABLE_AUTOUPDATE": "1",
            "KILO_DISABLE_MODELS_FETCH": "1",
            "KILO_DISABLE_LSP_DOWNLOAD": "1",
            "KILO_DISABLE_SHARE": "1",
            "KILO_DISABLE_SESSION_INGEST": "1",
            "KILO_DISABLE_DEFAULT_PLUGINS": "1",
            "KILO_NO_DAEMON": "1",
            "HOME": "/root",
        }
