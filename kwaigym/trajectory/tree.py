"""The tree of an episode's model calls: which call each prompt continues, and where it branches.

An agent's main loop is a line: each prompt is the previous prompt, its answer and the tool
results. Three things make the record a tree instead:

- sub-agents: their prompts share at most the system prompt with the main loop (a new root when
  they share nothing);
- context compaction: a prompt that drops earlier history shares only its head (often just the
  system prompt) with what came before, so it branches there;
- retries and discarded answers: a prompt that repeats an earlier prompt without its answer
  branches where that answer began.

The builder inserts every call's messages (prompt, then answer) into a trie of normalised
messages, in the order the calls started. A call's parent is the call that put the deepest node
of its prompt there: the call whose own messages its prompt shares the longest. Messages compare
without what changes between resends (``cache_control`` and other wire extras, the spelling of
tool arguments, white space around text), and an assistant turn re-sent
without its reasoning still matches (agents and chat templates drop old reasoning); the node
counts how many turns its prompt re-sent that way. Where both sides know token ids, the node also
says how many tokens its prompt shares with the parent's prompt and answer.

Limits: matching is exact after normalisation, so an agent that rewrites old turns (edits tool
outputs, renumbers tool-call ids) branches where it rewrote; a call that failed (no answer) is
left out, since it holds no policy output and a retry repeats its prompt anyway.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from kwaigym.chat import sse
from kwaigym.chat.codec import codec_for
from kwaigym.chat.types import (
    ChatRequest,
    Completion,
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
)
from kwaigym.errors import ConfigError, KwaigymError


@attrs.frozen(kw_only=True)
class DecodedCall:
    """One answered model call, decoded from a stored record or taken from a live ``CallRecord``."""

    call_id: str
    kind: str
    """``main``, ``sub-agent`` or ``auxiliary``."""
    agent_id: str | None
    started_at: float
    request: ChatRequest
    completion: Completion
    prompt_token_ids: Sequence[int] | None = None
    token_ids: Sequence[int] | None = None
    logprobs: Sequence[float] | None = None
    """Rollout log-probabilities of ``token_ids``, when the responder had them."""

    @property
    def answer(self) -> Message:
        """The completion as the assistant message an agent would send back next time."""
        c = self.completion
        text = [TextPart(text=c.text)] if c.text else []
        return Message(role="assistant", content=[*c.reasoning, *text, *c.tool_calls])

    @property
    def messages(self) -> list[Message]:
        """Prompt and answer."""
        return [*self.request.messages, self.answer]


def decode_calls(record: Any) -> list[DecodedCall]:
    """The answered model calls of an episode (a stored dict or an ``EpisodeResult``), by start time.

    Calls that got no answer (errors, token counts, model listings) are left out.

    Raises:
        ConfigError: a stored call's request or answer does not decode (names the episode and call).
    """
    if isinstance(record, Mapping):
        episode_id, raw_calls = record.get("episode_id"), record.get("calls") or ()
        decode = _from_dict
    else:
        episode_id, raw_calls = record.episode_id, record.calls
        decode = _from_record
    calls = []
    for raw in raw_calls:
        try:
            call = decode(raw)
        except KwaigymError as exc:
            call_id = raw.get("call_id") if isinstance(raw, Mapping) else raw.call_id
            raise ConfigError(
                f"call {call_id}: cannot decode: {exc.message}", episode_id=episode_id
            ) from None
        if call is not None:
            calls.append(call)
    return sorted(calls, key=lambda c: c.started_at)


def _answered(fmt: Any, path: str, status: int, error: Any) -> bool:
    counting = path.split("?")[0].rstrip("/").endswith("/count_tokens")
    return fmt is not None and status == 200 and not error and not counting


def _from_dict(raw: Mapping[str, Any]) -> DecodedCall | None:
    if not _answered(raw.get("format"), raw.get("path") or "", raw.get("status"), raw.get("error")):
        return None
    codec = codec_for(raw["format"])
    answer = raw.get("response_raw")
    if isinstance(answer, Mapping):
        completion = codec.decode_response(answer)
    else:  # a stream: the text of the SSE events sent
        completion = codec.decode_stream(sse.parse([answer or ""]))
    return DecodedCall(
        call_id=raw["call_id"], kind=raw.get("kind") or "main", agent_id=raw.get("agent_id"),
        started_at=raw.get("started_at") or 0.0, request=codec.decode_request(raw["request_raw"]),
        completion=completion, prompt_token_ids=raw.get("prompt_token_ids"), token_ids=raw.get("token_ids"),
        logprobs=raw.get("logprobs"),
    )  # fmt: skip


def _from_record(call) -> DecodedCall | None:
    if call.request is None or call.completion is None:
        return None
    if not _answered(call.format, call.path, call.status, call.error):
        return None
    c = call.completion
    return DecodedCall(
        call_id=call.call_id, kind=call.kind, agent_id=call.agent_id, started_at=call.started_at,
        request=call.request, completion=c, prompt_token_ids=c.prompt_token_ids or None,
        token_ids=c.token_ids or None, logprobs=[t.logprob for t in c.logprobs] if c.logprobs else None,
    )  # fmt: skip


# --- comparing messages ---------------------------------------------------------------------------


def _arguments(text: str) -> str:
    """Tool arguments in one spelling (agents re-serialise them), or as given when not JSON."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


def _raw(raw: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in raw.items() if k != "cache_control"}, sort_keys=True, default=str)


def _parts(parts: Iterable[Any], reasoning: bool) -> tuple:
    """Comparable form of message parts: runs of text joined and stripped, wire extras ignored."""
    out: list[tuple] = []
    text: list[str] = []
    for p in parts:
        if isinstance(p, TextPart):
            text.append(p.text)
            continue
        if text:
            out.append(("text", "".join(text).strip()))
            text = []
        if isinstance(p, ReasoningPart):
            if reasoning:
                out.append(("reasoning", p.text, p.redacted))
        elif isinstance(p, ToolCall):
            out.append(("call", p.id, p.name, _arguments(p.arguments)))
        elif isinstance(p, ToolResult):
            out.append(("result", p.call_id, p.is_error, _parts(p.content, reasoning)))
        elif isinstance(p, ImagePart):
            out.append(("block", _raw(p.raw)))
    if text:
        out.append(("text", "".join(text).strip()))
    return tuple(p for p in out if p != ("text", ""))


def message_key(message: Message, *, reasoning: bool = True) -> tuple:
    """What two messages must share to count as the same turn (``reasoning=False``: ignoring it)."""
    return (message.role, _parts(message.content, reasoning))


def shared_prefix(a: Sequence[int] | None, b: Sequence[int] | None) -> int | None:
    """Length of the common prefix of two token sequences (None when either is unknown).

    Bisects with slice comparisons, which run in C: episodes re-send prompts of 10^5 tokens.
    """
    if a is None or b is None:
        return None
    a, b = (x if isinstance(x, list) else list(x) for x in (a, b))
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


# --- the tree -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TreeNode:
    """One call in the tree."""

    call_id: str
    parent: str | None
    """The call whose messages this prompt shares the longest; None for a root (shares nothing)."""
    shared_messages: int
    """Messages of the prompt shared with the parent's prompt and answer (0 for a root)."""
    shared_tokens: int | None
    """Tokens of the prompt shared with the parent's prompt and answer, when both know token ids."""
    n_messages: int
    """Messages of this call: its prompt, plus one for its answer."""
    continues: bool
    """The prompt holds the parent's whole prompt and answer: the loop went on (else it branched)."""
    kind: str
    agent_id: str | None
    dropped_reasoning: int = 0
    """Earlier assistant turns this prompt re-sent without the reasoning they were answered with."""


@attrs.frozen
class TrajectoryTree:
    """The calls of one episode as a forest (see the module docstring)."""

    nodes: tuple[TreeNode, ...]
    """In the order the calls started; a parent always comes before its children."""

    @functools.cached_property
    def _index(self) -> dict[str, TreeNode]:
        return {n.call_id: n for n in self.nodes}

    def __getitem__(self, call_id: str) -> TreeNode:
        return self._index[call_id]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def roots(self) -> list[str]:
        return [n.call_id for n in self.nodes if n.parent is None]

    @property
    def leaves(self) -> list[str]:
        """Calls no later call hangs under."""
        parents = {n.parent for n in self.nodes}
        return [n.call_id for n in self.nodes if n.call_id not in parents]

    def children(self, call_id: str) -> list[str]:
        return [n.call_id for n in self.nodes if n.parent == call_id]

    def path_to(self, call_id: str) -> tuple[str, ...]:
        """The calls from a root down to ``call_id``."""
        path = []
        at: str | None = call_id
        while at is not None:
            path.append(at)
            at = self._index[at].parent
        return tuple(reversed(path))

    def paths(self) -> list[tuple[str, ...]]:
        """Call sequences from a root to every call whose answer no later call carried on.

        That is every leaf, and also every inner call that only has branches (its answer was
        discarded and asked for again, or re-sent rewritten): each answer lies on some path, and a
        linear loop is one path.
        """
        carried = {n.parent for n in self.nodes if n.continues}
        return [self.path_to(n.call_id) for n in self.nodes if n.call_id not in carried]


@attrs.define
class _Trie:
    """Message trie: per node its children by key without reasoning, the call that made it, and
    its key with reasoning (to notice reasoning dropped on a resend)."""

    children: list[dict[tuple, int]] = attrs.Factory(lambda: [{}])
    owner: list[str | None] = attrs.Factory(lambda: [None])
    full: list[tuple | None] = attrs.Factory(lambda: [None])

    def walk(self, messages: Sequence[Message]) -> tuple[int, int, int]:
        """(deepest node, its depth, turns matched only without reasoning) along ``messages``."""
        at = depth = dropped = 0
        for message in messages:
            nxt = self.children[at].get(message_key(message, reasoning=False))
            if nxt is None:
                break
            full = self.full[nxt]
            if full != message_key(message) and any(p[0] == "reasoning" for p in full[1]):
                dropped += 1
            at, depth = nxt, depth + 1
        return at, depth, dropped

    def extend(self, at: int, messages: Sequence[Message], owner: str) -> None:
        """Add ``messages`` below node ``at``, as ``owner``'s (an identical answer re-sampled takes
        over the node, so that what continues it hangs under the latest call)."""
        for message in messages:
            bare = message_key(message, reasoning=False)
            nxt = self.children[at].get(bare)
            if nxt is None:
                nxt = len(self.owner)
                self.children.append({})
                self.owner.append(owner)
                self.full.append(message_key(message))
                self.children[at][bare] = nxt
            else:
                self.owner[nxt], self.full[nxt] = owner, message_key(message)
            at = nxt


def build_tree(calls: Iterable[DecodedCall]) -> TrajectoryTree:
    """The tree of ``calls`` (any order; they are taken in the order they started)."""
    calls = sorted(calls, key=lambda c: c.started_at)
    by_id = {c.call_id: c for c in calls}
    trie, nodes = _Trie(), []
    for call in calls:
        messages = call.messages
        at, depth, dropped = trie.walk(messages[:-1])
        parent = trie.owner[at]
        trie.extend(at, messages[depth:], call.call_id)
        shared_tokens, parent_messages = None, 0
        if parent is not None:
            p = by_id[parent]
            parent_messages = len(p.messages)
            if p.prompt_token_ids is not None and p.token_ids is not None:
                shared_tokens = shared_prefix(call.prompt_token_ids, [*p.prompt_token_ids, *p.token_ids])
        nodes.append(TreeNode(
            call_id=call.call_id, parent=parent, shared_messages=depth, shared_tokens=shared_tokens,
            n_messages=len(messages), continues=parent is not None and depth == parent_messages,
            kind=call.kind, agent_id=call.agent_id, dropped_reasoning=dropped,
        ))  # fmt: skip
    return TrajectoryTree(tuple(nodes))
