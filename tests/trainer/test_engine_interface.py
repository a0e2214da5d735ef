"""One engine interface, two engines: the local engine, and the SGLang client attached over real HTTP to
kwaigym's engine servers speaking SGLang's protocol. Then what only the client does: routing, weight
sync, memory release, MCLA scoring, launching, and its errors."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time

import pytest

from kwaigym.chat.types import ChatRequest, Message, TextPart, Tool
from kwaigym.errors import ConfigError, InfraError
from kwaigym.proxy.responders import CallContext
from tests.trainer.ranks import free_port
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
from reference_trainer.engine.base import EngineResponder, SampleParams  # noqa: E402
from reference_trainer.engine.local import LocalEngine  # noqa: E402
from reference_trainer.engine.server import EngineServer  # noqa: E402
from reference_trainer.engine.sglang import SGLangEngine, make_policy  # noqa: E402

GREEDY = SampleParams(temperature=0, max_new_tokens=8)
SYNC_ORDER = ["pause_generation", "update_weights_from_disk", "flush_cache", "continue_generation"]


def _request(text: str = "fix the bug", tools: bool = False) -> ChatRequest:
    return ChatRequest(
        format="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart(text=text)])],
        tools=[Tool(name="bash", parameters={"type": "object"})] if tools else [],
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)  # the same random weights every run
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another tiny model of the same shape (new weights to sync)."""
    torch.manual_seed(1)
    return build_tiny_model(tmp_path_factory.mktemp("other-model"))


@pytest.fixture(scope="module")
def reference(tiny):
    return LocalEngine(tiny, max_new_tokens=16)


@contextlib.contextmanager
def _two_servers(model):
    with (
        EngineServer(LocalEngine(model, max_new_tokens=16)) as a,
        EngineServer(LocalEngine(model, max_new_tokens=16)) as b,
    ):
        yield [a, b]


@pytest.fixture(scope="module")
def servers(tiny):
    with _two_servers(tiny) as both:
        yield both


@pytest.fixture
def fresh(tiny):
    """Two servers of their own, for tests that change weights or memory."""
    with _two_servers(tiny) as both:
        yield both


@pytest.fixture
async def clients(tiny):
    """Makes SGLang clients of given servers (one attempt, short timeouts); closes them after the test."""
    made = []

    def make(servers, **options) -> SGLangEngine:
        options = {"model_path": tiny, "max_new_tokens": 16, "attempts": 1, "timeout_s": 60} | options
        made.append(SGLangEngine([s if isinstance(s, str) else s.url for s in servers], **options))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture(params=["local", "sglang"])
def engine(request, tiny, servers, clients):
    if request.param == "local":
        return LocalEngine(tiny, max_new_tokens=16)
    return clients(servers)


# --- the shared interface ------------------------------------------------------------------------


async def test_greedy_completion_is_the_local_models(engine, reference):
    """A greedy sample of a rendered chat prompt is token for token the local model's."""
    prompt = engine.render(_request())
    sample = await engine.agenerate(prompt, GREEDY, session="s")
    (expected,) = reference.sample([prompt], GREEDY)
    assert sample.token_ids == expected.token_ids and sample.text == expected.text
    assert sample.logprobs == pytest.approx(expected.logprobs, abs=1e-5) and sample.logprob_temperature == 1.0


async def test_decode_logprobs_equal_prefill_scoring(engine):
    """Log-probs reported while sampling at T=1 equal a prefill scoring of prompt + completion."""
    prompt = engine.render(_request("write a test"))
    sample = await engine.agenerate(prompt, SampleParams(temperature=1.0, max_new_tokens=10))
    (scored,) = await engine.aprefill_logprobs([list(prompt) + list(sample.token_ids)])
    assert len(scored) == len(prompt) + len(sample.token_ids) - 1
    assert scored[len(prompt) - 1 :] == pytest.approx(list(sample.logprobs), abs=1e-4)


def test_synchronous_calls_work_outside_an_event_loop(engine, reference):
    """``prefill_logprobs`` and ``complete`` serve synchronous callers with the same numbers."""
    sequence = reference.render(_request())
    assert engine.prefill_logprobs([sequence])[0] == pytest.approx(reference.score([sequence])[0], abs=1e-5)
    assert engine.complete(_request()).token_ids


async def test_a_chat_request_with_tools_completes_with_token_data(engine, reference):
    """A request with tools is rendered with them and answered with token ids and log-probs."""
    completion = await engine.acomplete(_request(tools=True), session="e1")
    assert engine.tokenizer.decode(completion.prompt_token_ids).startswith("<|tools|>")
    assert completion.prompt_token_ids == reference.render(_request(tools=True))
    assert [lp.token_id for lp in completion.logprobs] == completion.token_ids and completion.token_ids


async def test_the_responder_passes_the_episode_as_session(engine, monkeypatch):
    """``EngineResponder`` asks the engine with the call's episode id as its session."""
    seen = []
    real = engine.agenerate

    async def spy(prompt, params, *, session=None):
        seen.append(session)
        return await real(prompt, params, session=session)

    monkeypatch.setattr(engine, "agenerate", spy)
    await EngineResponder(engine).respond(_request(), CallContext(episode_id="ep-7", call_id="c1"))
    assert seen == ["ep-7"]


# --- the SGLang client: routing ------------------------------------------------------------------


async def test_a_session_sticks_to_one_server_and_new_ones_spread(servers, tiny, clients):
    """Three turns each of two sessions: each session on one server, the two sessions on different ones."""
    engine = clients(servers)
    before = [s.hits["/generate"] for s in servers]
    prompt = engine.render(_request())
    for _ in range(3):
        await asyncio.gather(*(engine.agenerate(prompt, GREEDY, session=s) for s in ("a", "b")))
    assert sorted(s.hits["/generate"] - b for s, b in zip(servers, before, strict=True)) == [3, 3]
    assert engine.router.pick("a") != engine.router.pick("b")


def test_a_new_session_goes_to_the_least_loaded_server():
    """With requests in flight on server 0, a new session goes to server 1; the map stays bounded."""
    from reference_trainer.engine.servers import Router

    router = Router(2, max_sessions=2)
    router.inflight[0] = 3
    assert router.pick("x") == 1 and router.pick("x") == 1
    router.pick("y"), router.pick("z")
    assert "x" not in router._home and sum(router.sessions) == 2


# --- weights -------------------------------------------------------------------------------------


async def test_weight_sync_from_disk_changes_output_in_protocol_order(fresh, tiny, other, clients):
    """Syncing from disk makes every server sample the new model, via pause, update, flush, continue."""
    engine, prompt = clients(fresh), LocalEngine(tiny).render(_request())
    new = LocalEngine(other, max_new_tokens=16)
    (expected,) = new.sample([prompt], GREEDY)
    assert (await engine.agenerate(prompt, GREEDY, session="a")).token_ids != expected.token_ids
    assert await engine.update_weights_from_disk(other) == 1 and engine.weights_version == 1
    for session in ("a", "b"):
        sample = await engine.agenerate(prompt, GREEDY, session=session)
        assert sample.token_ids == expected.token_ids and sample.weights_version == 1
    assert all(s.events == SYNC_ORDER for s in fresh) and all(s.engine.weights_version == 1 for s in fresh)


async def test_sync_from_a_trainers_model(fresh, tiny, other, tmp_path, clients):
    """``sync_from`` (disk mode) exports the trainer's model and the servers then sample from it."""
    from transformers import AutoModelForCausalLM

    engine = clients(fresh, sync_dir=tmp_path)
    model = AutoModelForCausalLM.from_pretrained(other)
    prompt = engine.render(_request())
    (expected,) = LocalEngine(other).sample([prompt], GREEDY)
    assert await engine.sync_from(model) == 1
    assert (await engine.agenerate(prompt, GREEDY)).token_ids == expected.token_ids


async def test_weight_sync_from_a_distributed_group(fresh, tiny, other, clients):
    """Rank 0 (here) broadcasts the new tensors over a Gloo group; both servers take them."""
    from safetensors.torch import load_file

    engine = clients(fresh)
    await engine.init_weight_group("127.0.0.1", free_port(), backend="gloo")
    state = load_file(next(other.glob("*.safetensors")))
    assert await engine.update_weights_from_distributed(state.items(), bucket_bytes=1 << 14) == 1
    await engine.destroy_weight_group()
    prompt = engine.render(_request())
    (expected,) = LocalEngine(other).sample([prompt], GREEDY)
    assert (await engine.agenerate(prompt, GREEDY, session="a")).token_ids == expected.token_ids
    assert fresh[0].events.count("update_weights_from_distributed") > 1  # several buckets
    assert fresh[0].events[-1] == "destroy_weights_update_group" and not fresh[0].groups


async def test_release_and_resume_require_new_weights(fresh, tiny, clients):
    """Released memory refuses generation; resumed weights refuse it until weights are sent again."""
    engine, prompt = clients(fresh), [1, 2, 3]
    await engine.release_memory()
    with pytest.raises(ConfigError, match="resume_memory"):
        await engine.agenerate(prompt, GREEDY)
    await engine.resume_memory(["kv_cache"])
    await engine.resume_memory(["weights"])
    with pytest.raises(ConfigError, match="sync them"):
        await engine.agenerate(prompt, GREEDY)
    engine.stale_weights = False  # the servers enforce the contract too
    with pytest.raises(ConfigError, match="weights were resumed"):
        await engine.agenerate(prompt, GREEDY)
    await engine.update_weights_from_disk(tiny)
    assert (await engine.agenerate(prompt, GREEDY)).token_ids


# --- log-probs -----------------------------------------------------------------------------------


async def test_mcla_passes_each_bypass_the_prefix_cache(servers, tiny, reference, clients):
    """Each MCLA pass sends its own ``extra_key`` (cache namespace); the mean equals one local scoring."""
    engine, sequence = clients(servers), reference.render(_request())
    before = sum(len(s.extra_keys) for s in servers)
    (scored,) = await engine.aprefill_logprobs([sequence], passes=3)
    keys = [k for s in servers for k in s.extra_keys][before:]
    assert len(keys) == len(set(keys)) == 3
    assert scored == pytest.approx(reference.score([sequence])[0], abs=1e-5)


async def test_prefill_at_another_temperature_is_refused(servers, tiny, clients):
    """SGLang scores prompts at T=1 only: asking for another temperature says what to do instead."""
    with pytest.raises(ConfigError, match="Roll out at temperature 1"):
        await clients(servers).aprefill_logprobs([[1, 2, 3]], temperature=0.7)


async def test_samples_say_the_temperature_of_their_logprobs(servers, tiny, clients):
    """Output log-probs are at the sampling temperature, or at 1 with raw log-probs."""
    params = SampleParams(temperature=0.5, max_new_tokens=2)
    assert (await clients(servers).agenerate([1, 2], params)).logprob_temperature == 0.5
    raw = clients(servers, raw_logprobs=True)
    assert (await raw.agenerate([1, 2], params)).logprob_temperature == 1.0 and raw.logprob_temperature == 1.0


# --- errors --------------------------------------------------------------------------------------


async def test_an_unreachable_server_is_a_quick_infra_error(clients):
    """Nothing listening: an ``InfraError`` naming the URL, in well under a second per attempt."""
    url = f"http://127.0.0.1:{free_port()}"
    engine = clients([url], attempts=2, timeout_s=5)
    started = time.monotonic()
    with pytest.raises(InfraError, match=f"{url}.*unreachable"):
        await engine.agenerate([1, 2], GREEDY)
    assert time.monotonic() - started < 3


async def test_a_server_failure_is_an_infra_error(fresh, tiny, monkeypatch, clients):
    """A 500 from the server becomes an ``InfraError`` with its status and message."""

    def broken(prompts, params):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(fresh[0].engine.batcher, "run", broken)
    with pytest.raises(InfraError, match="HTTP 500.*the model fell over"):
        await clients(fresh[:1]).agenerate([1, 2], GREEDY)


async def test_a_bad_request_is_a_config_error(servers, tiny, clients):
    """A 4xx (a token id outside the vocabulary) is a ``ConfigError`` carrying the server's reason."""
    with pytest.raises(ConfigError, match="refused /generate: HTTP 400.*token id in"):
        await clients(servers).agenerate([10**6], GREEDY)


@pytest.mark.parametrize(
    ("body", "message"), [(b"<html>oops</html>", "not JSON"), (b'{"text": "x"}', "unreadable")]
)
async def test_a_malformed_answer_is_an_infra_error(clients, body, message):
    """A server answering non-JSON, or JSON without SGLang's fields, fails clearly instead of hanging."""
    with _answering(body) as url:
        with pytest.raises(InfraError, match=message):
            await clients([url]).agenerate([1, 2], GREEDY)


async def test_a_hermes_tool_call_in_the_answer_is_a_tool_call(clients):
    """A tool call in a server's text becomes a tool call (a stub server: a random tiny model writes none)."""
    text = '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>'
    answer = {
        "text": text,
        "output_ids": [5, 6],
        "meta_info": {
            "finish_reason": {"type": "stop", "matched": 6},
            "output_token_logprobs": [[-0.5, 5, None], [-0.25, 6, None]],
            "weight_version": "3",
        },
    }
    with _answering(json.dumps(answer).encode()) as url:
        completion = await clients([url]).acomplete(_request(tools=True), session="e1")
    (call,) = completion.tool_calls
    assert call.name == "bash" and json.loads(call.arguments) == {"command": "ls"} and completion.text == ""
    assert completion.token_ids == [5, 6] and [lp.logprob for lp in completion.logprobs] == [-0.5, -0.25]


@contextlib.contextmanager
def _answering(body: bytes):
    """A stub HTTP server answering every POST with ``body``; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# --- launching and the policy --------------------------------------------------------------------


def test_launch_starts_waits_and_stops_a_server(tiny, tmp_path):
    """``launch`` starts a server process, waits until it generates, and ``close`` stops it."""
    engine = SGLangEngine.launch(
        tiny,
        port=free_port(),
        module="reference_trainer.engine.server",
        log_dir=tmp_path,
        ready_timeout_s=120,
        max_new_tokens=4,
    )
    (process,) = [s.process for s in engine.processes]
    try:
        assert len(engine.complete(_request()).token_ids) == 4
    finally:
        engine.close()
    assert process.poll() is not None


def test_a_failed_launch_says_why(tmp_path):
    """A server that exits before it is ready fails the launch with the end of its log."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ConfigError, match="exited with code .* its log"):
        SGLangEngine.launch(
            tmp_path / "model",
            port=free_port(),
            module="reference_trainer.engine.server",
            log_dir=tmp_path / "logs",
            ready_timeout_s=120,
        )


def test_the_sglang_policy_answers_through_the_servers(servers):
    """``sglang:URL,URL`` makes a policy whose responder is a client of those servers."""
    policy = make_policy(",".join(s.url for s in servers))(None, "mini")
    engine = policy.responder.engine
    assert isinstance(engine, SGLangEngine) and engine.urls == [s.url for s in servers]


@pytest.mark.podman
async def test_a_real_episode_through_sglang_protocol(servers, tiny, backend, clients):
    """mini in a sandbox, every call answered by the SGLang client through kwaigym's engine servers:
    the recorded calls carry the servers' token ids and log-probs, and the episode stays on one server."""
    from kwaigym.datasets import load_dataset
    from kwaigym.policies import Policy
    from kwaigym.rollout import rollout

    task = load_dataset("examples").get("swe-semver")
    responder = EngineResponder(clients(servers))
    before = [s.hits["/generate"] for s in servers]
    (result,) = await rollout(
        [task], ["mini"], lambda task, scaffold: Policy(responder), backend=backend, show_progress=False
    )
    assert result.status in ("ok", "agent_error") and result.reward_valid and result.reward == 0.0
    first = result.calls[0].completion
    assert first.prompt_token_ids and [lp.token_id for lp in first.logprobs] == list(first.token_ids)
    assert sorted(s.hits["/generate"] - b for s, b in zip(servers, before, strict=True))[0] == 0


@pytest.mark.podman
async def test_one_rl_step_with_the_sglang_client(fresh, tiny, clients, backend, tmp_path):
    """``rl_step`` rolls out through the client, trains a model of its own, then syncs the servers from it:
    the servers' log-probs are the trainer's (IcePop masks nothing) and their weights end equal to it."""
    from transformers import AutoModelForCausalLM

    from kwaigym.datasets import load_dataset
    from reference_trainer.rl import RLConfig, rl_step

    for server in fresh:  # printable capitals and EOS only: random bytes are not valid UTF-8 (see test_rl.py)
        tok, model = server.engine.tokenizer, server.engine.model
        allowed = {tok.convert_tokens_to_ids(c) for c in "QZJKVWXY"} | {tok.eos_token_id}
        model.generation_config.suppress_tokens = [t for t in range(len(tok)) if t not in allowed]
    engine = clients(fresh, sync_dir=tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    config = RLConfig(group_size=2, max_new_tokens=16, lr=1e-3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    task = load_dataset("examples").get("swe-semver")
    metrics = await rl_step(engine, [task], config, backend=backend, optimizer=optimizer, model=model)
    assert (
        metrics["episodes"] == 2 and metrics["known_logprob_tokens"] > 0 and metrics["weights_version"] == 1
    )
    assert metrics["icepop_masked_frac"] == 0.0 and metrics["logprob_abs_diff_mean"] < 1e-3, metrics
    trained = model.state_dict()
    for server in fresh:
        assert server.events[-4:] == SYNC_ORDER
        served = server.engine.model.state_dict()
        assert all(torch.equal(served[name], trained[name]) for name in trained)
