"""Exporters: per-call samples, turn-segmented paths, the flattened token tree, SFT chat data."""

from __future__ import annotations

import json
import random
from importlib.metadata import EntryPoint

import attrs
import pytest

from kwaigym.chat import Message, ReasoningPart, TextPart, TokenLogprob
from kwaigym.errors import ConfigError
from kwaigym.trajectory import EXPORTERS, available_exporters, decode_calls, exporter
from kwaigym.trajectory import export as export_module
from kwaigym.trajectory.export import byte_tokens, chat_messages, render_chat
from tests.trajectory.episodes import Loop, act, done, episode, load


def branching_episode(**options) -> dict:
    """A main loop with a sub-agent sharing its system prompt, then a compaction."""
    main = Loop(**options)
    sub = Loop(task="Find the config file.", kind="sub-agent", agent_id="a1", **options)
    calls = [
        main.step(act(1)),
        sub.step(act(10)),
        main.step(act(2)),
        sub.step(done("found")),
        main.step(act(3)),
    ]
    main.messages[1:] = [Message(role="user", content=[TextPart(text="Summary: three steps ran.")])]
    calls += [main.step(act(4)), main.step(done())]
    return episode(calls)


def rendered(record: dict, call_id: str) -> tuple[list[int], list[int]]:
    """A path's tokens and loss mask, rendered on their own from its last call."""
    call = next(c for c in decode_calls(record) if c.call_id == call_id)
    messages = [m for group in chat_messages(call.messages, call.request) for m in group]
    ids, mask = [], []
    for text, policy in render_chat(messages):
        ids += byte_tokens(text)
        mask += [int(policy)] * len(byte_tokens(text))
    return ids, mask


def read_back(row: dict, end: int) -> list[int]:
    """Token indices from a root to ``end``, following parents."""
    out = []
    while end >= 0:
        out.append(end)
        end = row["parent"][end]
    return out[::-1]


# --- turns -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("record", [load("mini-oracle"), branching_episode()], ids=["mini", "branching"])
def test_turn_masks_are_one_exactly_on_assistant_turns(record):
    """Every assistant turn on a path was produced there; nothing else is trained."""
    rows = list(exporter("turns")([record]))
    assert rows
    for row in rows:
        assert row["loss_mask"] == [int(m["role"] == "assistant") for m in row["messages"]]
        assert row["messages"][-1]["role"] == "assistant"


def test_turns_do_not_train_a_turn_the_agent_rewrote():
    """Claude Code rewrote the oracle's command before re-sending it: that turn is context only."""
    first, second = exporter("turns")([load("claude-code-oracle")])
    assert first["loss_mask"][-1] == 1 and first["messages"][-1]["tool_calls"]
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["system", "user", "system", "assistant", "tool", "assistant"]
    assert second["loss_mask"] == [0, 0, 0, 0, 0, 1]


def test_turns_carry_rollout_logprobs_of_turns_re_sent_exactly():
    """Logprobs go with each produced turn, except one re-sent without its reasoning."""
    main = Loop(tokens=True)
    thought = (ReasoningPart(text="Look first."),)
    calls = [main.step(act(1)), main.step(act(2, reasoning=thought), keep_reasoning=False), main.step(done())]
    (row,) = exporter("turns")([episode(calls)])
    produced = [i for i, m in enumerate(row["loss_mask"]) if m]
    assert [row["logprobs"][i] for i in produced] == [calls[0]["logprobs"], None, calls[2]["logprobs"]]
    assert [row["token_ids"][i] for i in produced] == [calls[0]["token_ids"], None, calls[2]["token_ids"]]
    assert row["dropped_reasoning"] == 1
    assert all(row["logprobs"][i] is None for i, m in enumerate(row["loss_mask"]) if not m)


# --- calls and sft -----------------------------------------------------------------------------------


def test_calls_are_one_row_each_without_auxiliary_ones():
    """Per-call samples: the prompt, the answer as one assistant message, the call's place in the tree."""
    main = Loop()
    title = Loop(system="Write a title.", kind="auxiliary").step(done("Fix tests"))
    record = episode([main.step(act(1)), title, main.step(done())])
    rows = list(exporter("calls")([record]))
    assert [r["call_id"] for r in rows] == [record["calls"][0]["call_id"], record["calls"][2]["call_id"]]
    assert rows[1]["parent"] == rows[0]["call_id"]
    assert rows[1]["completion"] == {"role": "assistant", "content": "Done."}
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user", "assistant", "tool"]
    assert rows[0]["tools"][0]["function"]["name"] == "bash" and rows[0]["reward"] == 1.0
    assert len(list(exporter("calls")([record], kinds=("main", "sub-agent", "auxiliary")))) == 3


def test_sft_takes_main_leaves_of_good_episodes():
    """SFT rows: each main-loop leaf with its answer, only from episodes scored high enough."""
    good, bad = branching_episode(), episode(load("mini-oracle")["calls"], reward=0.0)
    rows = list(exporter("sft")([good, bad]))
    assert len(rows) == 2  # before and after the compaction; the sub-agent is not main-loop work
    assert all(r["episode_id"] == "ep-1" and r["messages"][-1]["role"] == "assistant" for r in rows)
    assert rows[-1]["messages"][-1]["content"] == "Done."
    assert len(list(exporter("sft")([bad], min_reward=0.0))) == 1


# --- tree --------------------------------------------------------------------------------------------


def test_tree_shares_prefixes_and_reads_back_every_path():
    """The flattened tree is smaller than its paths, and each path is read back through parents."""
    record = branching_episode()
    (row,) = exporter("tree")([record])
    assert len(row["paths"]) == 3
    assert len(row["input_ids"]) < row["path_tokens"]
    for path, end in zip(row["paths"], row["path_ends"], strict=True):
        ids, mask = rendered(record, path[-1])
        back = read_back(row, end)
        assert [row["input_ids"][i] for i in back] == ids
        assert [row["loss_mask"][i] for i in back] == mask
        assert [row["position_ids"][i] for i in back] == list(range(len(ids)))
    assert row["path_tokens"] == sum(len(read_back(row, e)) for e in row["path_ends"])


def test_tree_positions_parents_and_attention_spans_agree():
    """Positions restart at each root and follow parents; ``subtree_end`` spans exactly descendants."""
    (row,) = exporter("tree")([branching_episode()])
    parent, position, end = row["parent"], row["position_ids"], row["subtree_end"]
    for i, p in enumerate(parent):
        assert p < i and position[i] == (0 if p < 0 else position[p] + 1)
    branch_points = [i for i in range(len(parent)) if sum(1 for p in parent if p == i) > 1]
    assert branch_points  # the sub-agent and the compaction branch
    for j in range(0, len(parent), 7):
        ancestors = set(read_back(row, j))
        assert {i for i in range(len(parent)) if i <= j < end[i]} == ancestors


def test_tree_weights_make_tree_loss_equal_the_sum_of_path_losses():
    """For any per-token loss that depends on the token's prefix (as a causal model's does), the
    weighted tree loss equals the loss summed over every path trained on its own."""
    record = branching_episode()
    (row,) = exporter("tree")([record])

    def losses(ids, mask):  # a random loss per distinct prefix, the same wherever that prefix occurs
        out, h = [], 0
        for t, m in zip(ids, mask, strict=True):
            h = hash((h, t, m))
            out.append(random.Random(h).random())
        return out

    paths = 0.0
    for path in row["paths"]:
        ids, mask = rendered(record, path[-1])
        paths += sum(m * x for m, x in zip(mask, losses(ids, mask), strict=True))
    prefix_loss = {}
    for end in row["path_ends"]:
        back = read_back(row, end)
        ids, mask = [row["input_ids"][i] for i in back], [row["loss_mask"][i] for i in back]
        prefix_loss |= dict(zip(back, losses(ids, mask), strict=True))
    tree = sum(row["weight"][i] * row["loss_mask"][i] * prefix_loss[i] for i in range(len(row["input_ids"])))
    assert paths > 0 and tree == pytest.approx(paths, rel=1e-12)
    assert max(row["weight"]) == 3 and min(row["weight"]) == 1


def test_tree_from_engine_tokens_matches_the_rendered_tree_and_carries_logprobs():
    """With engine token ids the tree is built from them, and policy tokens carry rollout logprobs."""
    record = branching_episode(tokens=True)
    (engine,) = exporter("tree")([record])
    (text,) = exporter("tree")([record], engine_tokens=False)
    for field in ("input_ids", "parent", "loss_mask", "weight", "position_ids"):
        assert engine[field] == text[field], field
    assert text["logprobs"] is None
    known = [lp is not None for lp in engine["logprobs"]]
    assert known == [bool(m) for m in engine["loss_mask"]]


def test_tree_takes_a_tokenizer_and_a_template():
    """Any ``tokenize(text)`` and ``render(messages)`` work; here one token per character."""
    record = load("mini-oracle")
    seen = []

    def render(messages):
        seen.append(len(messages))
        return [(json.dumps(m), m["role"] == "assistant") for m in messages]

    (row,) = exporter("tree")([record], tokenize=lambda text: [ord(c) for c in text], render=render)
    assert seen == [5]
    assert "".join(map(chr, row["input_ids"])).startswith('{"role": "system"')


# --- all exporters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPORTERS))
@pytest.mark.parametrize("fixture", ["mini-oracle", "claude-code-oracle"])
def test_real_records_export_to_json(name, fixture):
    """Every exporter reads the stored records of real runs and writes JSON-able rows."""
    rows = list(exporter(name)([load(fixture)]))
    assert rows
    for row in rows:
        assert json.loads(json.dumps(row)) == row
        assert row["task_id"] and row["reward"] == 1.0


def test_episode_results_export_like_their_stored_records():
    """An EpisodeResult in memory and its stored dict give the same rows."""
    from kwaigym.episode import EpisodeResult
    from kwaigym.proxy.recorder import CallRecord
    from kwaigym.trajectory import episode_to_dict

    record = branching_episode(tokens=True)
    decoded = {c.call_id: c for c in decode_calls(record)}
    calls = []
    for raw in record["calls"]:
        c = decoded[raw["call_id"]]
        logprobs = [TokenLogprob(token="", logprob=lp) for lp in raw["logprobs"]]
        completion = attrs.evolve(
            c.completion,
            prompt_token_ids=raw["prompt_token_ids"],
            token_ids=raw["token_ids"],
            logprobs=logprobs,
        )
        calls.append(
            CallRecord(
                call_id=c.call_id,
                episode_id="ep-1",
                format=raw["format"],
                path=raw["path"],
                started_at=c.started_at,
                request_raw=raw["request_raw"],
                request=c.request,
                completion=completion,
                response_raw=raw["response_raw"],
                status=200,
                kind=c.kind,
                agent_id=c.agent_id,
            )
        )
    result = EpisodeResult(
        episode_id="ep-1",
        task_id="task",
        scaffold="test",
        status="ok",
        reward=1.0,
        reward_valid=True,
        calls=tuple(calls),
        metadata={"sample": 0},
    )
    stored = json.loads(json.dumps(episode_to_dict(result)))
    for name in ("calls", "turns", "sft"):
        assert list(exporter(name)([result])) == list(exporter(name)([stored])), name
    assert (
        list(exporter("tree")([result]))[0]["input_ids"] == list(exporter("tree")([stored]))[0]["input_ids"]
    )


# --- the registry ------------------------------------------------------------------------------------


def test_unknown_exporter_names_the_closest():
    """A misspelt name lists what exists and suggests the nearest."""
    with pytest.raises(ConfigError, match=r"no exporter named 'turn'.*Did you mean 'turns'"):
        exporter("turn")


def test_entry_points_add_exporters(monkeypatch):
    """A package registers an exporter under ``kwaigym.exporters``."""
    entry = EntryPoint(name="jsonish", value="json:dumps", group=export_module.GROUP)
    monkeypatch.setattr(export_module, "entry_points", lambda group: [entry] if group == entry.group else [])
    assert exporter("jsonish") is json.dumps
    assert available_exporters() == ["calls", "jsonish", "sft", "tree", "turns"]


def test_cli_exports_a_run_as_jsonl(tmp_path):
    """`kwaigym export NAME RUN_DIR -o FILE` writes one JSON row per exported item; a wrong name says
    which exist."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "report" / "episodes.jsonl", run / "episodes.jsonl")
    out = tmp_path / "turns.jsonl"
    cli = [sys.executable, "-m", "kwaigym.cli", "export"]
    done = subprocess.run([*cli, "turns", str(run), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["loss_mask"]) == len(r["messages"]) for r in rows)
    wrong = subprocess.run([*cli, "nope", str(run)], capture_output=True, text=True)
    assert wrong.returncode == 1 and "available: calls" in wrong.stderr
