"""Each adapter runs its real agent in a real sandbox, driven by a scripted policy through the proxy."""

from __future__ import annotations

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.errors import ConfigError
from scaffolds import registry
from scaffolds.check import CHECK_TEXT, check
from tests.conftest import episode


def test_registry_names_and_suggestions():
    """Built-ins are registered; an unknown name lists what exists and suggests the closest."""
    assert {"mini", "claude-code"} <= set(registry.available())
    assert registry.get().name == "mini"
    with pytest.raises(ConfigError, match="Did you mean 'claude-code'"):
        registry.get("claude-cod")


@pytest.mark.podman
@pytest.mark.parametrize("name", ["mini", "claude-code"])
async def test_agent_writes_file_with_its_own_tool(name, backend, base_image):
    """The agent runs the scripted shell command with its own tool, then finishes; calls are recorded."""
    scaffold = registry.get(name)
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode(name))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message
    main = [c for c in report.calls if c.kind == "main"]
    assert main and all(c.request.tools for c in main), [(c.kind, c.path) for c in report.calls]
    assert all(c.kind == "auxiliary" for c in report.calls if not (c.request and c.request.tools))
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    assert main[0].completion.tool_calls[0].name == scaffold.shell_call("x", "y").tool_calls[0].name
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == scaffold.wire_format for c in report.calls)


@pytest.mark.podman
def test_cli_list_and_check():
    """`kwaigym scaffolds list` names the adapters; `check mini` runs it and prints PASS and its calls."""
    import subprocess
    import sys

    cli = [sys.executable, "-m", "kwaigym.cli", "scaffolds"]
    listed = subprocess.run([*cli, "list"], capture_output=True, text=True, check=True).stdout
    checked = subprocess.run([*cli, "check", "mini"], capture_output=True, text=True, timeout=300)
    unknown = subprocess.run([*cli, "check", "minii"], capture_output=True, text=True)
    assert "mini" in listed and "claude-code" in listed
    assert (
        checked.returncode == 0
        and "mini: PASS" in checked.stdout
        and "/v1/chat/completions" in checked.stdout
    )
    assert unknown.returncode == 1 and "Did you mean 'mini'" in unknown.stderr
