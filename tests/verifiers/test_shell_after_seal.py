"""The sandbox's persistent shell survives the verifier's seal: the next call starts a new shell
(its cwd and variables reset) instead of failing on the dead one."""

from __future__ import annotations

import pytest

from kwaigym.verifiers import seal

pytestmark = pytest.mark.podman


async def test_shell_restarts_after_seal(backend, spec):
    async with backend.sandbox(spec()) as sb:
        assert (await sb.shell("cd /tmp && export X=1 && echo one")).stdout == "one\n"
        await seal(sb)  # kills every process outside PID 1's session: the shell too
        after = await sb.shell('pwd; echo "x=${X:-unset}"')
        assert after.ok and after.stdout == "/workspace\nx=unset\n", after
        assert (await sb.shell("echo again")).stdout == "again\n"


async def test_shell_killed_while_idle_is_replaced(backend, spec):
    """Killed from outside while our end of its stream still looks open: the next command notices
    the shell never read it, and runs it in a new shell (exactly once)."""
    async with backend.sandbox(spec()) as sb:
        await sb.shell("echo warm")
        session = sb._session  # the test reaches in to kill just the shell, as a seal would
        await sb.kill_marked(session._token)
        result = await sb.shell("echo ran >> /tmp/count; wc -l < /tmp/count")
        assert result.ok and result.stdout.strip() == "1", result
