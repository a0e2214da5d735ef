"""Exporters: episode records in the shapes trainers read, registered by name.

Each exporter takes episode records (dicts as :class:`~kwaigym.trajectory.EpisodeStore` holds
them, or :class:`~kwaigym.episode.EpisodeResult` objects) and yields JSON-able rows:

- ``calls``: one sample per model call: its prompt, its answer, the episode's reward, and the
  rollout token ids and log-probabilities when the responder had them.
- ``turns``: one sequence per path of the call tree: the messages of the path's last call and its
  answer, with a per-message loss mask (1 on assistant turns the policy produced on that path, 0
  on everything else) and the rollout log-probabilities of each such turn when known.
- ``tree``: one DFS-flattened token tree per episode, for tree training: every path's tokens once
  per distinct prefix, with parent indices (the tree attention mask), positions restored along
  each path, a loss mask, and per-token weights such that summing ``weight * mask * loss`` over
  the tree equals summing ``mask * loss`` over every path.
- ``sft``: chat data: for episodes scored at least ``min_reward``, the messages of each main-loop
  leaf call and its answer.

Messages are written in OpenAI chat form (``role``, ``content``, ``tool_calls``, ``tool_call_id``,
``reasoning_content``), whatever wire format the agent spoke, since that is what chat templates
read; Anthropic user messages holding tool results become ``tool`` messages. A package adds an
exporter under the entry point group ``kwaigym.exporters`` (``name = "package.module:function"``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol

from kwaigym.chat.codec import codec_for
from kwaigym.chat.types import ChatRequest, Message
from kwaigym.errors import ConfigError
from kwaigym.trajectory.tree import (
    DecodedCall,
    TrajectoryTree,
    build_tree,
    decode_calls,
    message_key,
    shared_prefix,
)

GROUP = "kwaigym.exporters"
RL_KINDS = ("main", "sub-agent")
"""The loops exporters take by default: the agent's own work, not its titles and summaries."""

Render = Callable[[list[dict[str, Any]]], list[tuple[str, bool]]]
Tokenize = Callable[[str], list[int]]


class Exporter(Protocol):
    def __call__(self, records: Iterable[Any], **options: Any) -> Iterator[dict[str, Any]]:
        """Rows for ``records`` (stored dicts or EpisodeResults)."""


# --- shared pieces ---------------------------------------------------------------------------------


def _header(record: Any) -> dict[str, Any]:
    get = record.get if isinstance(record, Mapping) else lambda k, d=None: getattr(record, k, d)
    metadata = get("metadata") or {}
    return {
        "episode_id": get("episode_id"),
        "task_id": get("task_id"),
        "scaffold": get("scaffold"),
        "sample": metadata.get("sample", 0),
        "reward": get("reward"),
        "reward_valid": get("reward_valid"),
    }


def decoded_episodes(records: Iterable[Any], kinds: Sequence[str]):
    """(row header, calls of ``kinds`` by id, their tree) per record."""
    for record in records:
        calls = [c for c in decode_calls(record) if c.kind in kinds]
        yield _header(record), {c.call_id: c for c in calls}, build_tree(calls)


def chat_messages(messages: Sequence[Message], request: ChatRequest) -> list[list[dict[str, Any]]]:
    """Each message in OpenAI chat form (one message may become several: tool results split)."""
    encode = codec_for("openai-chat").encode_request
    return [encode(ChatRequest(format=request.format, model="", messages=[m]))["messages"] for m in messages]


def chat_tools(request: ChatRequest) -> list[dict[str, Any]]:
    """The request's tools in OpenAI chat form."""
    body = codec_for("openai-chat").encode_request(
        ChatRequest(format=request.format, model="", messages=[], tools=request.tools)
    )
    return body.get("tools", [])


def _flat(nested: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [m for group in nested for m in group]


def produced_turns(path: Sequence[DecodedCall], tree: TrajectoryTree) -> dict[int, DecodedCall]:
    """Which messages of the last call's prompt and answer are answers of calls on ``path``.

    A call's answer sits at the index of its prompt's length, and is in the last call's messages
    when every later call on the path kept at least that many messages of its parent's.
    """
    out, reach = {}, len(path[-1].messages)
    for call in reversed(path):
        index = len(call.request.messages)
        if index < reach:
            out[index] = call
        reach = min(reach, tree[call.call_id].shared_messages)
    return out


# --- the exporters ---------------------------------------------------------------------------------


def export_calls(records: Iterable[Any], *, kinds: Sequence[str] = RL_KINDS) -> Iterator[dict[str, Any]]:
    """One row per call: ``messages`` (the prompt), ``tools``, ``completion`` (the answer as one
    assistant message), ``finish_reason``, and ``prompt_token_ids`` / ``token_ids`` / ``logprobs``
    (None when unknown), with the episode's header (ids, ``reward``, ``reward_valid``)."""
    for header, calls, tree in decoded_episodes(records, kinds):
        for node in tree.nodes:
            call = calls[node.call_id]
            *prompt, answer = chat_messages(call.messages, call.request)
            yield header | {
                "call_id": call.call_id,
                "kind": call.kind,
                "agent_id": call.agent_id,
                "parent": node.parent,
                "messages": _flat(prompt),
                "tools": chat_tools(call.request),
                "completion": answer[0],
                "finish_reason": call.completion.finish_reason,
                "prompt_token_ids": _list(call.prompt_token_ids),
                "token_ids": _list(call.token_ids),
                "logprobs": _list(call.logprobs),
            }


def export_turns(records: Iterable[Any], *, kinds: Sequence[str] = RL_KINDS) -> Iterator[dict[str, Any]]:
    """One row per path of each episode's call tree (see ``TrajectoryTree.paths``).

    ``messages``: the last call's prompt and answer; ``loss_mask``: per message, 1 on assistant
    turns that calls on the path produced, 0 elsewhere (tool results, instructions, and assistant
    turns the agent wrote or rewrote itself); ``logprobs`` / ``token_ids``: per message, the
    rollout values of a produced turn when known and the turn was re-sent exactly as answered
    (None otherwise: an agent that dropped the turn's reasoning changed its tokens);
    ``dropped_reasoning``: how many produced turns were re-sent without their reasoning.
    """
    for header, calls, tree in decoded_episodes(records, kinds):
        for call_ids in tree.paths():
            path = [calls[c] for c in call_ids]
            last = path[-1]
            produced = produced_turns(path, tree)
            messages, mask, logprobs, token_ids, dropped = [], [], [], [], 0
            for index, group in enumerate(chat_messages(last.messages, last.request)):
                by = produced.get(index)
                exact = by is not None and message_key(last.messages[index]) == message_key(by.answer)
                dropped += by is not None and not exact
                for message in group:
                    messages.append(message)
                    mask.append(int(by is not None))
                    logprobs.append(_list(by.logprobs) if exact else None)
                    token_ids.append(_list(by.token_ids) if exact else None)
            yield header | {
                "path": list(call_ids),
                "kind": last.kind,
                "agent_id": last.agent_id,
                "messages": messages,
                "tools": chat_tools(last.request),
                "loss_mask": mask,
                "logprobs": logprobs,
                "token_ids": token_ids,
                "dropped_reasoning": dropped,
            }


def export_sft(
    records: Iterable[Any], *, min_reward: float = 1.0, kinds: Sequence[str] = ("main",)
) -> Iterator[dict[str, Any]]:
    """Chat rows ``{"messages", "tools", ...header}``: each leaf call of ``kinds`` with its answer,
    for episodes whose reward is valid and at least ``min_reward`` (all assistant turns are targets,
    as SFT trainers take them)."""
    records = (r for r in records if _good(_header(r), min_reward))
    for header, calls, tree in decoded_episodes(records, kinds):
        for leaf in tree.leaves:
            last = calls[leaf]
            yield header | {
                "path": list(tree.path_to(leaf)),
                "messages": _flat(chat_messages(last.messages, last.request)),
                "tools": chat_tools(last.request),
            }


def export_tree(
    records: Iterable[Any],
    *,
    tokenize: Tokenize | None = None,
    render: Render | None = None,
    kinds: Sequence[str] = RL_KINDS,
    engine_tokens: bool = True,
) -> Iterator[dict[str, Any]]:
    """One DFS-flattened token tree per episode (episodes without calls yield nothing).

    Each path of the call tree is one token sequence. When every call knows the engine's token
    ids (and ``engine_tokens``), a path is its last call's ``prompt_token_ids + token_ids``, with
    the answer tokens of the calls on the path (as far as the prompt repeats them verbatim) as
    policy output, carrying their rollout log-probabilities. Otherwise the last call's chat
    messages (as in ``turns``) go through ``render`` (default :func:`render_chat`), which returns
    ``(text, is_policy_output)`` segments, and each segment through ``tokenize`` (default
    :func:`byte_tokens`, for tests; pass your tokenizer's ``encode`` without special tokens).
    ``render`` sees the messages only, not the tool definitions: a template that prints them
    must add them itself. The sequences are merged into a prefix tree (:func:`flatten`).

    Row fields, one entry per tree token: ``input_ids``; ``parent`` (index of the previous token
    on its paths, -1 at a root); ``position_ids`` (its position along those paths);
    ``loss_mask``; ``weight`` (how many paths hold the token: summing ``weight * loss_mask *
    loss`` over the tree equals summing ``loss_mask * loss`` over every path, i.e. training every
    root-to-leaf path); ``subtree_end`` (token ``j`` attends to token ``i`` iff ``i <= j <
    subtree_end[i]``: the tree attention mask); ``logprobs`` (rollout log-probabilities, None
    where unknown, or None throughout). Per path: ``paths`` (call ids), ``path_ends`` (index of
    its last token; follow ``parent`` from there to read it back); ``path_tokens`` (tokens
    summed over paths, against ``len(input_ids)``).
    """
    tokenize, render = tokenize or byte_tokens, render or render_chat
    for header, calls, tree in decoded_episodes(records, kinds):
        paths = [[calls[c] for c in p] for p in tree.paths()]
        engine = engine_tokens and all(
            c.prompt_token_ids is not None and c.token_ids is not None for c in calls.values()
        )
        sequences = [
            _engine_sequence(p) if engine else _rendered_sequence(p, tokenize, render) for p in paths
        ]
        if not sequences:
            continue
        yield (
            header
            | flatten(sequences)
            | {
                "paths": [[c.call_id for c in p] for p in paths],
                "path_tokens": sum(len(s[0]) for s in sequences),
            }
        )


def _good(header: dict[str, Any], min_reward: float) -> bool:
    return bool(header["reward_valid"]) and (header["reward"] or 0.0) >= min_reward


def _list(values: Sequence | None) -> list | None:
    return None if values is None else list(values)


# --- token sequences and the flattened tree -------------------------------------------------------

TokenPath = tuple[list[int], list[int], list[float | None]]
"""(token ids, loss mask, rollout log-probabilities or None)."""


def _engine_sequence(path: Sequence[DecodedCall]) -> TokenPath:
    last = path[-1]
    ids = [*last.prompt_token_ids, *last.token_ids]
    mask = [0] * len(ids)
    logprobs: list[float | None] = [None] * len(ids)
    for call in path:  # the last call's own answer too: its prompt plus answer is ``ids``
        start = len(call.prompt_token_ids)
        own = [*call.prompt_token_ids, *call.token_ids]
        end = next(
            (i for i, (a, b) in enumerate(zip(ids, own, strict=False)) if a != b), min(len(ids), len(own))
        )
        for i in range(start, end):
            mask[i] = 1
            if call.logprobs is not None and i - start < len(call.logprobs):
                logprobs[i] = call.logprobs[i - start]
    return ids, mask, logprobs


def _rendered_sequence(path: Sequence[DecodedCall], tokenize: Tokenize, render: Render) -> TokenPath:
    last = path[-1]
    ids, mask = [], []
    for text, policy in render(_flat(chat_messages(last.messages, last.request))):
        tokens = list(tokenize(text))
        ids += tokens
        mask += [int(policy)] * len(tokens)
    return ids, mask, [None] * len(ids)


def flatten(sequences: Sequence[TokenPath]) -> dict[str, Any]:
    """Merge token sequences into a prefix tree, flattened in DFS pre-order (fields as in
    :func:`export_tree`). Tokens merge where their prefixes, ids and loss masks are equal.

    Sorting the sequences by token ids puts those sharing a prefix next to each other, so each
    one only needs its common prefix with the one before it (compared in C, not token by token:
    paths of real episodes run to 10^5 tokens) and adds the rest; a token's weight is how many
    consecutive sequences kept it. A merged token keeps the log-probability of the first sequence
    (in that order) that has it. Where equal ids carry different masks (rare: a turn trained on
    one path is context on another) the sequences part there, even if a later one could have
    shared more with an earlier one: the tree is then a little larger, never wrong.
    """
    order = sorted(range(len(sequences)), key=lambda s: sequences[s][0])
    tokens, parent, position, loss_mask, logprob = [], [], [], [], []
    opened, closed, subtree_end, ends = [], [], [], [-1] * len(sequences)
    stack: list[int] = []  # the tokens of the current sequence, by position
    previous: TokenPath = ([], [], [])
    for rank, s in enumerate(order):
        ids, mask, logprobs = sequences[s]
        shared = min(shared_prefix(previous[0], ids), shared_prefix(previous[1], mask))
        for node in stack[shared:]:  # the tokens this sequence leaves: their subtrees are complete
            closed[node], subtree_end[node] = rank, len(tokens)
        del stack[shared:]
        for i in range(shared, len(ids)):
            parent.append(stack[-1] if stack else -1)
            stack.append(len(tokens))
            tokens.append(ids[i]), position.append(i), loss_mask.append(mask[i]), logprob.append(logprobs[i])
            opened.append(rank), closed.append(len(sequences)), subtree_end.append(-1)
        ends[s] = stack[-1] if stack else -1
        previous = sequences[s]
    for node in stack:
        subtree_end[node] = len(tokens)
    return {
        "input_ids": tokens,
        "parent": parent,
        "position_ids": position,
        "loss_mask": loss_mask,
        "weight": [c - o for o, c in zip(opened, closed, strict=True)],
        "subtree_end": subtree_end,
        "logprobs": logprob if any(lp is not None for lp in logprob) else None,
        "path_ends": ends,
    }


def byte_tokens(text: str) -> list[int]:
    """A tokenizer for tests: the UTF-8 bytes of ``text``."""
    return list(text.encode())


def render_chat(messages: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """A minimal chat template: ``<|role|>\\n{body}<|end|>\\n`` per message, where an assistant's
    body is its ``<think>`` reasoning, text and tool calls (one JSON line each) and, with its end
    marker, is policy output."""
    out = []
    for m in messages:
        role = m.get("role", "user")
        body = _text(m.get("content"))
        if role == "assistant":
            if m.get("reasoning_content"):
                body = f"<think>{m['reasoning_content']}</think>" + body
            for call in m.get("tool_calls") or ():
                f = call.get("function", {})
                body += f'\n{{"name": "{f.get("name")}", "arguments": {f.get("arguments")}}}'
        out.append((f"<|{role}|>\n", False))
        out.append((body + "<|end|>\n", role == "assistant"))
    return out


def _text(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    return "".join(b.get("text", "") if b.get("type") == "text" else f"<{b.get('type')}>" for b in content)


# --- the registry ----------------------------------------------------------------------------------

EXPORTERS: dict[str, Exporter] = {
    "calls": export_calls,
    "turns": export_turns,
    "tree": export_tree,
    "sft": export_sft,
}
"""The built-in exporters by name."""


def available_exporters() -> list[str]:
    """Names :func:`exporter` accepts: the built-ins and those registered by entry point, sorted."""
    return sorted({*EXPORTERS, *(e.name for e in entry_points(group=GROUP))})


def exporter(name: str) -> Exporter:
    """The exporter called ``name`` (a package's registration overrides a built-in of that name)."""
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            return entry.load()
    if name in EXPORTERS:
        return EXPORTERS[name]
    close = difflib.get_close_matches(name, available_exporters(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"no exporter named {name!r}; available: {', '.join(available_exporters())}.{hint}")
