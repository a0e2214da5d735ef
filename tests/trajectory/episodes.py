"""Synthetic episode records, stored exactly as the proxy and the store write them.

A :class:`Loop` plays an agent's loop: each step records a call of its current history (encoded
in its wire format with the real codecs, the answer as JSON or as the SSE text sent) and then
appends the answer and the tool result, as an agent does. ``fixtures/`` holds one episode of each
of two real runs (mini and Claude Code under the oracle policy), with long texts, tool
descriptions and headers cut short to keep them small (the same cut in every call, so what two
calls share stays shared).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from kwaigym.chat import (
    ChatRequest,
    Completion,
    Message,
    SamplingParams,
    TextPart,
    Tool,
    ToolCall,
    ToolResult,
)
from kwaigym.chat.codec import codec_for
from kwaigym.trajectory.export import byte_tokens, chat_messages, render_chat

TOOLS = [Tool(name="bash", description="Run a command.", parameters={"type": "object"})]
PATHS = {
    "anthropic": "/v1/messages",
    "openai-chat": "/v1/chat/completions",
    "openai-responses": "/v1/responses",
}
FIXTURES = Path(__file__).parent / "fixtures"
_numbers = itertools.count(1)


def load(name: str) -> dict:
    """The stored record in ``fixtures/<name>.jsonl``."""
    return json.loads((FIXTURES / f"{name}.jsonl").read_text())


def act(step: int, reasoning=()) -> Completion:
    """An answer that runs one command."""
    call = ToolCall(id=f"tool-{step}", name="bash", arguments=json.dumps({"command": f"step {step}"}))
    return Completion(tool_calls=[call], reasoning=reasoning)


def done(text: str = "Done.") -> Completion:
    return Completion(text=text)


def answer_message(c: Completion) -> Message:
    text = [TextPart(text=c.text)] if c.text else []
    return Message(role="assistant", content=[*c.reasoning, *text, *c.tool_calls])


def engine_ids(messages, completion: Completion) -> dict:
    """Token ids an engine would report: the prompt rendered by the test template (with the
    assistant header that starts generation), and the answer's body."""
    request = ChatRequest(format="openai-chat", model="m", messages=messages)
    prompt = "".join(t for t, _ in render_chat([m for g in chat_messages(messages, request) for m in g]))
    ((body, _),) = [s for s in render_chat(chat_messages([answer_message(completion)], request)[0]) if s[1]]
    ids = byte_tokens(body)
    return {
        "prompt_token_ids": byte_tokens(prompt + "<|assistant|>\n"),
        "token_ids": ids,
        "logprobs": [-0.01 * (i % 7 + 1) for i in range(len(ids))],
    }


def stored_call(
    messages,
    completion: Completion,
    *,
    fmt="openai-chat",
    kind="main",
    agent_id=None,
    stream=False,
    tokens=False,
) -> dict:
    """One call as ``call_to_dict`` stores it."""
    n = next(_numbers)
    codec = codec_for(fmt)
    request = ChatRequest(
        format=fmt,
        model="policy",
        messages=list(messages),
        tools=TOOLS,
        stream=stream,
        params=SamplingParams(max_tokens=256),
    )
    if stream:
        events = codec.sse_prelude(request, response_id="r") + codec.sse_completion(
            completion, request, response_id="r"
        )
        response = events.decode()
    else:
        response = codec.encode_response(completion, request, response_id="r")
    record = {
        "call_id": f"call-{n:04d}",
        "path": PATHS[fmt],
        "format": fmt,
        "kind": kind,
        "agent_id": agent_id,
        "status": 200,
        "stream": stream,
        "started_at": 1000.0 + n,
        "error": None,
        "headers": {},
        "request_raw": codec.encode_request(request),
        "response_raw": response,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    ids = engine_ids(messages, completion) if tokens else {}
    return record | {"prompt_token_ids": None, "token_ids": None, "logprobs": None} | ids


def episode(calls, *, reward=1.0, episode_id="ep-1") -> dict:
    return {
        "episode_id": episode_id,
        "task_id": "task",
        "scaffold": "test",
        "status": "ok",
        "reward": reward,
        "reward_valid": True,
        "metadata": {"sample": 0},
        "calls": list(calls),
    }


class Loop:
    """An agent loop: a system prompt, a task, then calls, answers and tool results."""

    def __init__(self, system="You are a coding agent.", task="Fix the failing test.", **options):
        self.options = options
        self.messages = [
            Message(role="system", content=[TextPart(text=system)]),
            Message(role="user", content=[TextPart(text=task)]),
        ]

    def step(self, completion: Completion, output: str = "ok", *, keep_reasoning=True) -> dict:
        """Record a call of the history so far, then append its answer and the tool results."""
        record = stored_call(self.messages, completion, **self.options)
        answer = answer_message(completion)
        if not keep_reasoning:
            answer = Message(role="assistant", content=[*answer.content[len(completion.reasoning) :]])
        self.messages.append(answer)
        for call in completion.tool_calls:
            result = ToolResult(call_id=call.id, content=[TextPart(text=f"{output} ({call.id})")])
            role = "user" if self.options.get("fmt") == "anthropic" else "tool"
            self.messages.append(Message(role=role, content=[result]))
        return record
