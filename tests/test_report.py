"""``kwaigym report``: the numbers in the HTML, its self-containedness, and the page in a real browser.

The fixture ``tests/fixtures/report/episodes.jsonl`` holds five real oracle episodes (three of
``mini``, two of ``claude-code``; the Claude Code tool schemas cut to name, short description and
an empty object schema to keep the file small). The tests add what a clean oracle run lacks: a
failed, an invalid and a hostile episode (markup in the agent's output, sub-agent and auxiliary
calls), built from copies of the real ones.

The browser test drives Debian's ``chromium`` headless over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: fds 3 and 4, NUL-terminated JSON), so no port is opened; it fails on
any console error, uncaught exception or request for anything but the report file itself.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import select
import shutil
import signal
import time
from pathlib import Path

import pytest

from kwaigym.errors import ConfigError
from kwaigym.report import write_report

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "episodes.jsonl"
HOSTILE = '<script>window.__pwned=1</script><img src="x" onerror="window.__pwned=2">'
EVIL_TASK = "evil-<b>task</b>"


def _records() -> list[dict]:
    """The fixture's episodes plus a failed, an invalid and a hostile one (see the module docstring)."""
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    mini = next(r for r in records if r["scaffold"] == "mini")
    sample1 = {"metadata": {"sample": 1, "attempt": 1}}
    failed = copy.deepcopy(mini) | sample1 | {"episode_id": "failed-1", "status": "agent_error", "turns": 5}
    failed["reward"] = 0.0
    invalid = copy.deepcopy(mini) | sample1 | {"episode_id": "invalid-1", "status": "infra_error", "turns": 0}
    invalid |= {"reward_valid": False, "calls": [], "error": "the sandbox died"}
    evil = copy.deepcopy(mini) | {"episode_id": "evil-1", "task_id": EVIL_TASK}
    evil["final_message"] = HOSTILE + "\nline" * 40
    for call in evil["calls"]:
        call["request_raw"]["messages"][1]["content"] = HOSTILE
    main = evil["calls"][0]
    sub = copy.deepcopy(main) | {"call_id": "call-sub", "kind": "sub-agent", "agent_id": "explorer-1"}
    aux = {"call_id": "call-aux", "path": "/v1/models", "format": None, "kind": "auxiliary", "agent_id": None,
           "status": 200, "started_at": main["started_at"], "ttfb_s": 0.0, "total_s": 0.0,
           "request_raw": None, "response_raw": {"data": [{"id": HOSTILE}]}}  # fmt: skip
    evil["calls"] = [main, sub, aux, *evil["calls"][1:]]
    return [*records, failed, invalid, evil]


@pytest.fixture
def report(tmp_path) -> tuple[Path, list[dict]]:
    run = tmp_path / "run"
    run.mkdir()
    records = _records()
    (run / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return write_report(run), records


def test_summary_numbers(report):
    path, records = report
    assert path.name == "report.html" and path.is_file()
    html = path.read_text()
    assert "<b>8</b><span>episodes</span>" in html
    # 7 valid rewards, 6 of them 1.0: the failed one scored 0, the infra_error one is not counted
    assert "<b>85.7% (6/7)</b><span>pass rate (valid rewards)</span>" in html
    assert "<b>0.857</b><span>mean reward (valid only)</span>" in html
    mean_turns = sum(r["turns"] for r in records) / len(records)
    assert f"<b>{mean_turns:.2f}</b><span>mean turns</span>" in html
    assert "<td>agent_error</td><td>1</td>" in html and "<td>infra_error</td><td>1</td>" in html
    assert ">0.50 (1/2) +1 invalid</td>" in html  # organize-inbox x mini: passed, failed, infra_error
    assert "<td>mini</td><td>6</td><td>80.0% (4/5)</td>" in html
    assert html.count("<svg") == 4


def test_self_contained_and_escaped(report):
    html = report[0].read_text()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(", html)
    assert "default-src 'none'" in html  # the CSP forbids fetches even if something slipped through
    assert HOSTILE not in html and "<b>task</b>" not in html
    assert "evil-&lt;b&gt;task&lt;/b&gt;" in html
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1]
    assert "<" not in data
    episodes = json.loads(data)["episodes"]
    assert len(episodes) == 8
    evil = next(e for e in episodes if e["task"] == EVIL_TASK)
    assert [c["kind"] for c in evil["calls"]] == ["main", "sub-agent", "auxiliary", "main"]


def test_big_texts_clipped_and_bad_bodies_shown_raw(tmp_path):
    record = _records()[0]
    record["calls"][0]["request_raw"]["messages"][1]["content"] = "x" * 50_000
    record["calls"][1]["response_raw"] = "not an answer"
    (tmp_path / "episodes.jsonl").write_text(json.dumps(record) + "\n")
    html = write_report(tmp_path, tmp_path / "out" / "r.html").read_text()
    assert "x" * 20_000 + "\\n… [truncated: 30000 more characters]" in html
    assert "answer not decoded" in html and "not an answer" in html


def test_missing_run(tmp_path):
    with pytest.raises(ConfigError, match="episodes.jsonl does not exist"):
        write_report(tmp_path)


# --- the page in headless Chromium ----------------------------------------------------------------


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe``: the smallest CDP client that works.

    Events are kept in ``events``; ``send`` answers a command's result (or raises its error).
    """

    def __init__(self, binary: str, profile: Path):
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        # The browser reads fd 3 and writes fd 4. posix_spawn runs no Python in the child (safe with
        # threads); copies of the pipe ends above 10 cannot be clobbered by its dup2s.
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, replies_w)]
        os.close(commands_r)
        os.close(replies_w)
        flags = [
            "--headless=new", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--no-proxy-server",
            "--proxy-bypass-list=*", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
            "--disable-extensions", "--disable-sync", "--disable-domain-reliability", "--no-first-run",
            "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
            *(["--no-sandbox"] if os.geteuid() == 0 else []), "about:blank",
        ]  # fmt: skip
        self.log = profile / "chromium.log"
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
            (os.POSIX_SPAWN_DUP2, child[0], 3),
            (os.POSIX_SPAWN_DUP2, child[1], 4),
        ]  # fmt: skip
        try:  # its own process group, so that closing kills its renderers and helpers too
            self.pid = os.posix_spawn(binary, [binary, *flags], os.environ, file_actions=actions, setsid=True)
        finally:
            for fd in child:
                os.close(fd)
        self.events: list[dict] = []
        self._buffer = b""
        self._next_id = 0

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"no answer from chromium; its log:\n{self.log.read_text()[-3000:]}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe; its log:\n{self.log.read_text()[-3000:]}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=30.0):
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_event(self, method: str, since: int = 0, timeout=30.0) -> dict:
        """The first event ``method`` from ``events[since]`` on, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events[since:]):
            self.events.append(self._read(deadline))
        return next(e for e in self.events[since:] if e.get("method") == method)

    def close(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # a headless browser holds nothing worth a graceful exit
            os.waitpid(self.pid, 0)
        finally:
            os.close(self._commands)
            os.close(self._replies)


def _problems(events: list[dict]) -> list[str]:
    """Uncaught exceptions, console errors and logged errors (CSP violations, failed loads), in short."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            found.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry']['text']}")
    return found


@pytest.fixture
def browser(tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH: `apt-get install chromium` (make test's host setup does)")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    b = Browser(binary, profile)
    try:
        yield b
    finally:
        b.close()


def test_page_in_chromium(report, browser):
    path, records = report
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable", session=session)

    def js(expression: str):
        answer = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    url = path.as_uri()
    browser.send("Page.navigate", {"url": url}, session=session)
    deadline = time.monotonic() + 30
    while js("document.readyState === 'complete' && location.href") != url:  # loaded (not about:blank)
        assert time.monotonic() < deadline, "the report did not load in 30 s"
        time.sleep(0.05)

    rows = "document.querySelectorAll('#episodes tbody tr')"
    assert js(f"{rows}.length") == len(records)
    assert js("document.getElementById('episode-count').textContent") == f"{len(records)} of 8 episodes"
    js("const s = document.getElementById('filter-scaffold'); s.value = 'mini';"
       "s.dispatchEvent(new Event('change'))")  # fmt: skip
    assert js(f"{rows}.length") == sum(r["scaffold"] == "mini" for r in records)

    # the hostile episode: its calls as a tree, its markup shown as text and never run
    js(f"[...{rows}].find(r => r.cells[0].textContent === {json.dumps(EVIL_TASK)}).click()")
    assert js("document.querySelector('#detail h3').textContent").startswith(EVIL_TASK)
    kinds = "[...document.querySelectorAll('#calls .call')].map(c => c.className)"
    assert js(kinds) == ["call kind-main", "call kind-sub-agent", "call kind-auxiliary", "call kind-main"]
    js("document.querySelectorAll('#calls .call-head').forEach(h => h.click())")
    texts = js("[...document.querySelectorAll('#calls .call-body pre')].map(p => p.textContent)")
    assert HOSTILE in texts  # the user message, as text
    assert any("<script>window.__pwned=1</script>" in t for t in texts if t.startswith("{"))  # raw answer
    assert js("[...document.querySelectorAll('#calls .msg')].map(m => m.className)")[:3] == [
        "msg role-system ", "msg role-user ", "msg role-assistant answer"]  # fmt: skip
    assert "earlier message(s)" in js("document.querySelectorAll('#calls .call')[3].textContent")
    assert js("document.querySelectorAll('#detail script, #detail img, #detail b').length") == 0
    assert js("window.__pwned === undefined")

    # a long text is clipped, and its toggle shows all of it
    clipped = "document.querySelectorAll('#detail pre.clipped').length"
    before = js(clipped)
    assert before > 0
    js("document.querySelector('#detail .long button').click()")
    assert js(clipped) == before - 1

    # the selected episode is in the URL: reloading shows it again
    assert js("location.hash") == "#episode=evil-1"
    since = len(browser.events)
    browser.send("Page.reload", session=session)
    browser.wait_event("Page.loadEventFired", since)
    assert js("document.querySelector('#detail h3').textContent").startswith(EVIL_TASK)

    # nothing went wrong, and nothing but the file itself was requested
    time.sleep(0.2)
    js("0")  # drains the events sent meanwhile
    assert not _problems(browser.events), _problems(browser.events)
    requested = {e["params"]["request"]["url"].split("#")[0] for e in browser.events
                 if e.get("method") == "Network.requestWillBeSent"}  # fmt: skip
    assert requested == {url}
