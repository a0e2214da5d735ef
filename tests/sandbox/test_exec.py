"""exec and the persistent shell against real containers: output, stdin, timeouts, caps, state."""

from __future__ import annotations

import time

import pytest

from kwaigym.errors import ConfigError, SandboxTimeout

pytestmark = pytest.mark.podman


async def test_exec_separates_streams_and_keeps_exit_code(backend, spec):
    """stdout and stderr come back apart, with the command's exit code."""
    async with backend.sandbox(spec()) as sb:
        result = await sb.exec("echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.ok and not result.truncated


async def test_exit_codes_come_from_the_stream_and_stderr_is_untouched(backend, spec):
    """Exit status, signals and a missing program; stderr keeps exactly what the command wrote."""
    async with backend.sandbox(spec()) as sb:
        plain = await sb.exec(["sh", "-c", "printf 'no newline' >&2; exit 3"])
        killed = await sb.exec(["sh", "-c", "kill -9 $$"])
        missing = await sb.exec(["no-such-program", "x"])
        quiet = await sb.exec(["true"])
    assert (plain.exit_code, plain.stderr) == (3, "no newline")
    assert killed.exit_code == 137 and missing.exit_code == 127 and "no-such-program" in missing.stderr
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert not any("KWAIGYM_EXIT" in r.stderr for r in (plain, killed, missing, quiet))


async def test_exec_argv_cwd_env_and_stdin(backend, spec):
    """An argv list runs without a shell; cwd, env and binary stdin reach the process."""
    payload = bytes(range(256)) * 64
    async with backend.sandbox(spec(env={"FROM_SPEC": "a"})) as sb:
        argv = await sb.exec(["printf", "%s|", "$HOME", "two words"])
        where = await sb.exec("pwd; echo $FROM_SPEC $FROM_CALL", cwd="/tmp", env={"FROM_CALL": "b"})
        echoed = await sb.exec("od -An -tx1 | tr -d ' \\n' | wc -c", stdin=payload)
    assert argv.stdout == "$HOME|two words|"
    assert where.stdout == "/tmp\na b\n"
    assert echoed.stdout.strip() == str(len(payload) * 2)


async def test_exec_timeout_kills_the_whole_process_tree(backend, spec):
    """A timed-out command's children (also ones in a new session) are killed, and the call returns fast."""
    async with backend.sandbox(spec()) as sb:
        started = time.monotonic()
        with pytest.raises(SandboxTimeout) as info:
            await sb.exec("echo started; sleep 101 & setsid sleep 102 & sleep 103; wait", timeout=1)
        assert time.monotonic() - started < 5
        assert info.value.result.stdout == "started\n"
        assert info.value.episode_id == sb.episode_id
        survivors = await sb.exec("ps -eo args | grep -c '^sleep 10[123]' || true")
        assert survivors.stdout.strip() == "0"


async def test_endless_loop_times_out(backend, spec):
    """A busy loop in the shell itself is stopped by the timeout."""
    async with backend.sandbox(spec()) as sb:
        with pytest.raises(SandboxTimeout):
            await sb.exec("while :; do :; done", timeout=1)
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_huge_output_is_capped_with_marker(backend, spec):
    """Output past the cap keeps head and tail, says how much was dropped, and memory stays bounded."""
    async with backend.sandbox(spec()) as sb:
        result = await sb.exec(
            "echo FIRST; head -c 20000000 /dev/zero | tr '\\0' x; echo; echo LAST", max_output=4096
        )
    assert result.truncated and result.exit_code == 0
    assert result.stdout.startswith("FIRST\n") and result.stdout.endswith("LAST\n")
    assert "bytes of output truncated" in result.stdout
    assert len(result.stdout) < 4096 + 200


async def test_endless_output_is_bounded_by_timeout(backend, spec):
    """`yes` forever: the call ends at its timeout with capped partial output."""
    async with backend.sandbox(spec()) as sb:
        with pytest.raises(SandboxTimeout) as info:
            await sb.exec("yes", timeout=1.5, max_output=1000)
    assert info.value.result.truncated and len(info.value.result.stdout) < 1200


async def test_empty_argv_is_a_config_error(backend, spec):
    """An empty argv is refused with a ConfigError naming the episode."""
    async with backend.sandbox(spec()) as sb:
        with pytest.raises(ConfigError, match=sb.episode_id):
            await sb.exec([])


async def test_session_keeps_cwd_and_exported_variables(backend, spec):
    """State set by one shell call is seen by the next."""
    async with backend.sandbox(spec()) as sb:
        await sb.shell("mkdir -p /tmp/w && cd /tmp/w && export GREETING=hello")
        result = await sb.shell("pwd; echo $GREETING")
    assert result.stdout == "/tmp/w\nhello\n"


async def test_session_results_match_exec(backend, spec):
    """Exit code, separate stderr, output without a trailing newline, quotes, and no stdin stealing."""
    async with backend.sandbox(spec()) as sb:
        result = await sb.shell("printf 'no newline'; echo \"it's\" >&2; false")
        quoted = await sb.shell("echo 'single' \"double\" $((1+2))")
        cat = await sb.shell("cat; echo after-cat")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "no newline", "it's\n")
    assert quoted.stdout == "single double 3\n"
    assert cat.stdout == "after-cat\n"


async def test_session_survives_syntax_errors_and_restarts_after_exit(backend, spec):
    """A syntax error fails the call only; `exit 3` returns 3 and the next call gets a fresh shell."""
    async with backend.sandbox(spec()) as sb:
        bad = await sb.shell("if then fi (")
        await sb.shell("export KEEP=1")
        assert (await sb.shell("echo $KEEP")).stdout == "1\n"
        assert bad.exit_code != 0 and bad.stderr
        exited = await sb.shell("exit 3")
        after = await sb.shell("echo ${KEEP:-reset}")
    assert exited.exit_code == 3
    assert after.stdout == "reset\n"


async def test_session_timeout_resets_state(backend, spec):
    """A timed-out shell call kills the shell's processes; the session restarts clean and works."""
    async with backend.sandbox(spec()) as sb:
        await sb.shell("cd /tmp && export X=1")
        with pytest.raises(SandboxTimeout, match="restarted"):
            await sb.shell("sleep 100 & sleep 100", timeout=1)
        result = await sb.shell("pwd; echo ${X:-unset}; ps -eo args | grep -c '^sleep 100' || true")
    assert result.stdout.split() == ["/workspace", "unset", "0"]


async def test_session_call_is_fast(backend, spec):
    """A persistent-shell call costs milliseconds (target p50 <= 20 ms)."""
    async with backend.sandbox(spec()) as sb:
        await sb.shell("true")
        times = []
        for _ in range(20):
            started = time.perf_counter()
            await sb.shell("true")
            times.append(time.perf_counter() - started)
    assert sorted(times)[10] < 0.02
