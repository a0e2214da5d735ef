"""The call tree: which call each prompt continues, and where sub-agents, compaction, retries and
rewritten turns make it branch."""

from __future__ import annotations

import json

import pytest

from kwaigym.chat import Message, ReasoningPart, TextPart
from kwaigym.errors import ConfigError
from kwaigym.trajectory import build_tree, decode_calls
from tests.trajectory.episodes import Loop, act, done, episode, load, stored_call


def tree_of(record):
    return build_tree(decode_calls(record))


def test_mini_episode_is_one_path():
    """A real mini-agent episode: each prompt extends the previous prompt and answer."""
    tree = tree_of(load("mini-oracle"))
    first, second = tree.nodes
    assert tree.roots == [first.call_id]
    assert second.parent == first.call_id and second.continues
    assert second.shared_messages == first.n_messages == 3
    assert tree.paths() == [(first.call_id, second.call_id)]


def test_claude_code_rewritten_turn_branches():
    """Claude Code re-sends the oracle's command without its ``cd /workspace &&``: the second call
    shares the first prompt but not its answer, so the first answer ends a path of its own."""
    tree = tree_of(load("claude-code-oracle"))
    first, second = tree.nodes
    assert second.parent == first.call_id and not second.continues
    assert second.shared_messages == first.n_messages - 1
    assert tree.paths() == [(first.call_id,), (first.call_id, second.call_id)]
    assert tree.leaves == [second.call_id]


def test_cache_control_and_argument_spelling_do_not_matter():
    """Claude Code moves ``cache_control`` between calls and re-serialises tool input; both match."""
    main = Loop(fmt="anthropic")
    one = main.step(act(1))
    two = main.step(done())
    two["request_raw"]["messages"][0]["content"] = [
        {"type": "text", "text": "Fix the failing test.", "cache_control": {"type": "ephemeral"}}
    ]
    tool_use = two["request_raw"]["messages"][1]["content"][0]
    tool_use["input"] = json.loads(json.dumps(tool_use["input"], indent=4))
    tree = tree_of(episode([one, two]))
    assert tree.paths() == [(one["call_id"], two["call_id"])]


def test_sub_agent_with_the_same_system_prompt_branches_at_it():
    """A sub-agent whose prompt shares only the system prompt hangs under the first main call."""
    main, sub = Loop(), Loop(task="Find the config file.", kind="sub-agent", agent_id="a1")
    m1 = main.step(act(1))
    s1 = sub.step(act(10))
    m2 = main.step(act(2))
    s2 = sub.step(done("found it"))
    m3 = main.step(done())
    tree = tree_of(episode([m1, s1, m2, s2, m3]))
    ids = [c["call_id"] for c in (m1, s1, m2, s2, m3)]
    assert tree[ids[1]].parent == ids[0] and tree[ids[1]].shared_messages == 1
    assert not tree[ids[1]].continues and tree[ids[1]].kind == "sub-agent"
    assert tree[ids[3]].parent == ids[1] and tree[ids[3]].continues
    assert tree.children(ids[0]) == [ids[1], ids[2]]
    assert sorted(tree.paths()) == sorted([(ids[0], ids[2], ids[4]), (ids[0], ids[1], ids[3])])


def test_sub_agent_with_its_own_system_prompt_is_a_root():
    """A sub-agent that shares nothing with the main loop starts a tree of its own."""
    main, sub = Loop(), Loop(system="You are a search agent.", task="Find it.", kind="sub-agent")
    m1, s1, m2 = main.step(act(1)), sub.step(done()), main.step(done())
    tree = tree_of(episode([m1, s1, m2]))
    assert tree.roots == [m1["call_id"], s1["call_id"]]
    assert tree.paths() == [(s1["call_id"],), (m1["call_id"], m2["call_id"])]  # by when they end


def test_compaction_branches_where_the_history_was_replaced():
    """After compaction the prompt keeps the system prompt and a summary: a branch at message 1."""
    main = Loop()
    before = [main.step(act(i)) for i in range(3)]
    main.messages[1:] = [Message(role="user", content=[TextPart(text="Summary: steps 0-2 ran.")])]
    after = [main.step(act(3)), main.step(done())]
    tree = tree_of(episode(before + after))
    ids = [c["call_id"] for c in before + after]
    assert tree[ids[3]].parent == ids[0] and tree[ids[3]].shared_messages == 1
    assert tree[ids[4]].parent == ids[3] and tree[ids[4]].continues
    assert tree.paths() == [tuple(ids[:3]), (ids[0], ids[3], ids[4])]


def test_retry_of_the_same_prompt_branches_at_the_answer():
    """An answer the agent discarded and asked again for ends a path; the retry continues."""
    main = Loop()
    first = stored_call(main.messages, act(1))
    retry = main.step(act(2))
    last = main.step(done())
    tree = tree_of(episode([first, retry, last]))
    assert tree[retry["call_id"]].parent == first["call_id"]
    assert tree[retry["call_id"]].shared_messages == 2 and not tree[retry["call_id"]].continues
    assert tree.paths() == [(first["call_id"],), (first["call_id"], retry["call_id"], last["call_id"])]


def test_dropped_reasoning_stays_on_the_path_and_is_counted():
    """An assistant turn re-sent without its thinking block still continues the loop."""
    main = Loop(fmt="anthropic")
    thought = (ReasoningPart(text="Run the tests first.", signature="sig"),)
    one = main.step(act(1, reasoning=thought), keep_reasoning=False)
    two = main.step(act(2, reasoning=thought))
    three = main.step(done())
    tree = tree_of(episode([one, two, three]))
    assert tree[two["call_id"]].continues and tree[two["call_id"]].dropped_reasoning == 1
    assert tree[three["call_id"]].continues and tree[three["call_id"]].dropped_reasoning == 1
    assert len(tree.paths()) == 1


def test_shared_tokens_when_token_ids_are_known():
    """With engine token ids, a continuing call shares its parent's whole prompt and answer."""
    main = Loop(tokens=True)
    one, two = main.step(act(1)), main.step(done())
    tree = tree_of(episode([one, two]))
    assert tree[two["call_id"]].shared_tokens == len(one["prompt_token_ids"]) + len(one["token_ids"])
    assert tree[one["call_id"]].shared_tokens is None


@pytest.mark.parametrize("fmt", ["anthropic", "openai-chat", "openai-responses"])
def test_streamed_answers_decode(fmt):
    """A streamed answer is stored as the SSE text sent; it decodes back into the completion."""
    call = stored_call(Loop().messages, act(7), fmt=fmt, stream=True)
    (decoded,) = decode_calls(episode([call]))
    assert isinstance(call["response_raw"], str)
    assert [(c.name, json.loads(c.arguments)) for c in decoded.completion.tool_calls] == [
        ("bash", {"command": "step 7"})
    ]


def test_failed_and_counting_calls_are_left_out():
    """Calls without an answer (errors, token counts, model listings) are not in the tree."""
    good = stored_call(Loop().messages, done())
    failed = stored_call(Loop().messages, done()) | {"status": 502, "error": "policy failed"}
    counting = stored_call(Loop().messages, done()) | {"path": "/v1/messages/count_tokens"}
    listing = {"call_id": "call-x", "path": "/v1/models", "format": None, "status": 200, "error": None}
    assert [c.call_id for c in decode_calls(episode([good, failed, counting, listing]))] == [good["call_id"]]


def test_undecodable_call_names_the_episode_and_call():
    """A stored request that no longer decodes is a ConfigError saying which call."""
    bad = stored_call(Loop().messages, done()) | {"request_raw": {"messages": "nope"}}
    with pytest.raises(ConfigError, match=bad["call_id"]) as info:
        decode_calls(episode([bad], episode_id="ep-bad"))
    assert info.value.episode_id == "ep-bad"
