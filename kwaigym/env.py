"""The Gymnasium face: ``gym.make("kwaigym/Agentic-v0", dataset=..., scaffold=...)``.

One episode is a real agent on a real task. ``reset`` starts it and returns the agent's first
model request as the observation; ``step(action)`` answers that request with the action (the
policy's completion) and returns the agent's next request; the episode terminates with the
verifier's reward when the agent finishes, and truncates on a limit. Concurrent calls of one
episode (sub-agents) are separate steps; each observation says which branch it belongs to.

    import gymnasium as gym
    import kwaigym.env  # registers the environment

    env = gym.make("kwaigym/Agentic-v0", dataset="examples", scaffold="mini")
    obs, info = env.reset(seed=0)
    while True:
        obs, reward, terminated, truncated, info = env.step(my_policy(obs))
        if terminated or truncated:
            break
    env.close()

Observations are dicts of text: ``request`` (the normalised request as JSON: messages, tools,
sampling parameters), ``call_id`` (its number in the episode), ``branch`` (``main``,
``sub-agent:ID`` or ``auxiliary``) and ``task_id``. With ``stage_solution=True`` the task's
reference solution is put in the sandbox first (``kwaigym.task_sandbox.solution_command(task)``
applies it), for oracle runs through the gym loop. An action is text (the answer), a
``kwaigym.Completion`` (text and tool calls), or a dict ``{"text": ..., "tool_calls": [{"id",
"name", "arguments"}]}``. ``info`` carries the episode's record when it ends (``status``,
``reward_valid``: mask rewards of episodes the policy did not cause to fail).

All environments of a process share one runtime: an asyncio loop in a background thread,
one interception proxy and one podman backend, so a vector env of N of them runs N episodes
over a shared proxy and sandbox machinery.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import attrs
import gymnasium as gym
from gymnasium import spaces

from kwaigym.chat.types import Completion, ToolCall
from kwaigym.episode import NO_LIMITS, EpisodeResult, Limits, run_episode
from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import GymResponder, PendingCall
from kwaigym.task_sandbox import stage_solution

MAX_TEXT = 4_000_000
ENV_ID = "kwaigym/Agentic-v0"


class Utf8Text(spaces.Space):
    """Any string up to ``max_length`` characters (Gymnasium's ``Text`` only takes a fixed charset,
    while model requests and answers are arbitrary Unicode)."""

    def __init__(self, max_length: int = MAX_TEXT, seed=None):
        self.max_length = max_length
        super().__init__(dtype=str, seed=seed)

    def sample(self, mask=None, probability=None) -> str:
        length = int(self.np_random.integers(1, 40))
        return "".join(chr(c) for c in self.np_random.integers(32, 127, size=length))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return isinstance(other, Utf8Text) and other.max_length == self.max_length

    def __repr__(self) -> str:
        return f"Utf8Text({self.max_length})"


class ActionSpace(Utf8Text):
    """Text, or a ``Completion``, or a ``{"text", "tool_calls"}`` dict (see the module docstring)."""

    def contains(self, x: Any) -> bool:
        return super().contains(x) or isinstance(x, Completion | dict)


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def to_completion(action: Any) -> Completion:
    """The completion an action stands for; anything else is a ConfigError saying what is accepted."""
    if isinstance(action, Completion):
        return action
    if isinstance(action, str):
        return Completion(text=action)
    if isinstance(action, dict):
        calls = [
            ToolCall(id=c["id"], name=c["name"], arguments=_arguments(c["arguments"]))
            for c in action.get("tool_calls") or []
        ]
        return Completion(text=action.get("text") or "", tool_calls=calls)
    raise ConfigError(
        f"an action is text, a Completion or a dict with text/tool_calls; got {type(action).__name__}"
    )


class _Runtime:
    """One event loop thread with the proxy and the backend, shared by the process's envs."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kwaigym-env", daemon=True)
        self.thread.start()
        self.proxy = self.backend = self.images = None
        self.users = 0
        self.call(self._start())

    async def _start(self):
        from kwaigym.proxy.server import InterceptionProxy
        from kwaigym.sandbox.backend import PodmanBackend
        from kwaigym.sandbox.images import ImageStore

        self.backend = await PodmanBackend(reap=False).__aenter__()
        self.proxy = await InterceptionProxy().__aenter__()
        self.images = ImageStore(self.backend.service)

    def call(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro) -> asyncio.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self):
        if not self.loop.is_running():
            return

        async def stop():
            await self.proxy.__aexit__(None, None, None)
            await self.backend.__aexit__(None, None, None)

        try:
            self.call(stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> _Runtime:
    """The process's shared runtime, started on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _Runtime()
        return _runtime


def _acquire() -> _Runtime:
    rt = runtime()
    with _runtime_lock:
        rt.users += 1
    return rt


def _release() -> None:
    """One env fewer; the last one closes the runtime (proxy, backend, loop)."""
    global _runtime
    with _runtime_lock:
        rt = _runtime
        if rt is None:
            return
        rt.users -= 1
        if rt.users > 0:
            return
        _runtime = None
    rt.close()


_EMPTY = {"request": "{}", "call_id": "", "branch": "", "task_id": ""}


class AgenticEnv(gym.Env):
    """A real coding agent on a real task, its model calls as steps (see the module docstring)."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, dataset: str = "examples", scaffold: str = "mini", task_id: str | None = None,
                 limits: Limits = NO_LIMITS, step_timeout_s: float = 3600.0, render_mode: str | None = None,
                 stage_solution: bool = False, **verifier_deps):  # fmt: skip
        from kwaigym.datasets import load_dataset
        from scaffolds import registry

        self.dataset = load_dataset(dataset) if isinstance(dataset, str) else dataset
        self.tasks = list(self.dataset)
        if task_id is not None:
            self.dataset.get(task_id)  # an unknown id fails here, naming the closest ones
        self.scaffold = registry.get(scaffold)
        self.task_id, self.limits, self.step_timeout_s = task_id, limits, step_timeout_s
        self.render_mode, self.verifier_deps = render_mode, verifier_deps
        self.stage_solution = stage_solution
        text = Utf8Text()
        self.observation_space = spaces.Dict(
            {"request": text, "call_id": text, "branch": text, "task_id": text}
        )
        self.action_space = ActionSpace()
        self._episode: asyncio.Task | None = None
        self._responder: GymResponder | None = None
        self._call: PendingCall | None = None
        self._numbers: dict[str, int] = {}
        self._task = None
        self._holds_runtime = False
        self.result: EpisodeResult | None = None

    # -- gymnasium API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._abandon()
        task_id = (options or {}).get("task_id") or self.task_id
        self._task = (
            self.dataset.get(task_id)
            if task_id
            else self.tasks[int(self.np_random.integers(len(self.tasks)))]
        )
        if not self._holds_runtime:
            _acquire()
            self._holds_runtime = True
        rt = runtime()
        self._responder, self._numbers, self.result = GymResponder(), {}, None

        task = self._task

        async def before_agent(sandbox):  # for oracle checks: the reference solution at /solution
            if self.stage_solution:
                await stage_solution(sandbox, task)

        async def start() -> asyncio.Task:
            return asyncio.ensure_future(run_episode(
                self._task, self.scaffold, self._responder, proxy=rt.proxy, backend=rt.backend,
                images=rt.images, limits=self.limits, before_agent=before_agent, **self.verifier_deps,
            ))  # fmt: skip

        self._episode = rt.call(start())
        observation, done = self._advance()
        info = {"task_id": self._task.id}
        if done:  # the episode ended before the agent asked anything (e.g. the sandbox failed)
            info |= self._final_info()
        return observation, info

    def step(self, action):
        if self._call is None:
            raise ConfigError("step() needs a pending call: reset() first, and again after the episode ends")
        completion = to_completion(action)
        call, self._call = self._call, None
        rt = runtime()
        rt.loop.call_soon_threadsafe(self._responder.answer, call.ctx.call_id, completion)
        observation, done = self._advance()
        if not done:
            return observation, 0.0, False, False, {"task_id": self._task.id}
        result = self.result
        return observation, float(result.reward), not result.truncated, result.truncated, self._final_info()

    def render(self):
        if self.render_mode == "ansi" and self._call is not None:
            return json.dumps(self._observation(self._call), indent=1)[:10_000]
        return None

    def close(self):
        """End the running episode (its sandbox is removed); the last env closes the shared runtime."""
        if self._holds_runtime:
            self._abandon()
            self._holds_runtime = False
            _release()
        super().close()

    # -- internals ---------------------------------------------------------------------------------

    def _advance(self) -> tuple[dict, bool]:
        """Wait for the agent's next request or the episode's end."""

        async def next_or_end():
            waiter = asyncio.ensure_future(self._responder.next_call())
            await asyncio.wait({waiter, self._episode}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return waiter.result()
            waiter.cancel()
            return None

        call = runtime().call(next_or_end(), timeout=self.step_timeout_s)
        if call is not None:
            self._call = call
            return self._observation(call), False
        self.result = self._episode.result()
        runtime().loop.call_soon_threadsafe(self._responder.close)
        return dict(_EMPTY, task_id=self._task.id), True

    def _observation(self, call: PendingCall) -> dict[str, str]:
        number = self._numbers.setdefault(call.ctx.call_id, len(self._numbers) + 1)
        branch = call.ctx.kind + (f":{call.ctx.agent_id}" if call.ctx.agent_id else "")
        request = json.dumps(attrs.asdict(call.request), default=str)
        return {"request": request, "call_id": str(number), "branch": branch, "task_id": self._task.id}

    def _final_info(self) -> dict[str, Any]:
        r = self.result
        return {"task_id": r.task_id, "status": r.status, "reward_valid": r.reward_valid, "error": r.error,
                "turns": r.turns, "episode_id": r.episode_id, "record": r}  # fmt: skip

    def _abandon(self) -> None:
        """End a running episode (its agent is stopped, its sandbox removed)."""
        episode = self._episode
        if episode is not None and not episode.done():

            async def cancel_and_wait():
                episode.cancel()
                await asyncio.gather(episode, return_exceptions=True)
                self._responder.close()

            runtime().call(cancel_and_wait(), timeout=120)
        self._episode, self._call = None, None


gym.register(id=ENV_ID, entry_point=AgenticEnv, nondeterministic=True, disable_env_checker=False)
