"""The engine server: OpenAI chat completions (the ``openai`` client, kwaigym's ``UpstreamResponder``),
the token route, health, and JSON errors for bad input."""

from __future__ import annotations

import httpx
import pytest

from kwaigym.chat.types import ChatRequest, Message, SamplingParams, TextPart, Tool, ToolCall, ToolResult
from kwaigym.proxy.responders import CallContext, UpstreamResponder
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
openai = pytest.importorskip("openai")
from reference_trainer.engine.local import LocalEngine, SampleParams  # noqa: E402
from reference_trainer.engine.server import EngineServer, serve  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
]
MESSAGES = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "fix the bug"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(0)  # the same random weights every run
    path = build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    return LocalEngine(path, max_new_tokens=16, request_sampling=True)


@pytest.fixture(scope="module")
def server(engine):
    with EngineServer(engine) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def test_openai_client_gets_token_ids_and_logprobs_with_tools(engine, client):
    """A chat completion with tools carries prompt and completion token ids and the engine's log-probs."""
    answer = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        tools=TOOLS,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = answer.choices[0]
    token_ids, prompt_ids = choice.model_extra["token_ids"], answer.model_extra["prompt_token_ids"]
    prompt = engine.tokenizer.decode(prompt_ids)
    assert prompt.startswith("<|tools|>") and '"bash"' in prompt and "<|user|>\nfix the bug" in prompt
    (expected,) = engine.sample([prompt_ids], SampleParams(temperature=0, max_new_tokens=8))
    assert token_ids == list(expected.token_ids) and answer.usage.completion_tokens == len(token_ids)
    logprobs = choice.logprobs.content
    assert [lp.logprob for lp in logprobs] == pytest.approx(list(expected.logprobs), abs=1e-5)
    assert all(len(lp.top_logprobs) == 2 for lp in logprobs) and choice.finish_reason == "length"


def test_logprobs_are_left_out_unless_asked(client):
    """Without ``logprobs`` the answer has none, but still its token ids."""
    answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    assert answer.choices[0].logprobs is None and len(answer.choices[0].model_extra["token_ids"]) == 4


def test_streaming_gives_the_same_answer(client):
    """A streamed answer has the non-streamed text, token ids on its finish chunk, and usage when asked."""
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content and finish[0].finish_reason == "length"
    assert finish[0].model_extra["token_ids"] == whole.choices[0].model_extra["token_ids"]
    assert chunks[-1].usage.completion_tokens == 8


def test_generate_route_speaks_sglang(engine, server):
    """``/generate`` takes SGLang's request (a batch or one flat prompt) and answers in SGLang's shape."""
    prompts = [engine.tokenizer.encode("def f(x):"), engine.tokenizer.encode("Run the tests")]
    body = {
        "input_ids": prompts,
        "sampling_params": {"temperature": 0, "max_new_tokens": 6},
        "return_logprob": True,
    }
    many = httpx.post(f"{server.url}/generate", json=body).json()
    expected = engine.sample(prompts, SampleParams(temperature=0, max_new_tokens=6))
    assert [o["output_ids"] for o in many] == [list(s.token_ids) for s in expected]
    meta = many[0]["meta_info"]
    assert [lp for lp, _, _ in meta["output_token_logprobs"]] == pytest.approx(
        list(expected[0].logprobs), abs=1e-5
    )
    assert [t for _, t, _ in meta["output_token_logprobs"]] == many[0]["output_ids"]
    assert meta["finish_reason"] == {"type": "length", "length": 6} and meta["completion_tokens"] == 6
    assert meta["prompt_tokens"] == len(prompts[0]) and meta["weight_version"] == str(engine.weights_version)
    one = httpx.post(f"{server.url}/generate", json=body | {"input_ids": prompts[0]}).json()
    assert one["output_ids"] == many[0]["output_ids"] and one["text"] == many[0]["text"]


def test_zero_new_tokens_is_a_prefill_scoring(engine, server):
    """``max_new_tokens: 0`` with ``logprob_start_len: 0`` scores the prompt at T=1, the first entry null."""
    prompt = engine.tokenizer.encode("def f(x):")
    body = {
        "input_ids": prompt,
        "sampling_params": {"max_new_tokens": 0},
        "return_logprob": True,
        "logprob_start_len": 0,
    }
    answer = httpx.post(f"{server.url}/generate", json=body).json()
    scored = answer["meta_info"]["input_token_logprobs"]
    assert answer["output_ids"] == [] and [t for _, t, _ in scored] == prompt and scored[0][0] is None
    assert [lp for lp, _, _ in scored[1:]] == pytest.approx(engine.score([prompt])[0], abs=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/generate", b"{not json", "request body is not JSON"),
        ("/generate", b"[1, 2]", "request body: expected a JSON object, got list"),
        ("/generate", b"{}", "input_ids: expected a non-empty list"),
        ("/generate", b'{"input_ids": [[1, 2], []]}', "input_ids[1]: expected a non-empty list of token ids"),
        ("/generate", b'{"input_ids": [1, 99999]}', "input_ids[1]: expected a token id in [0, "),
        (
            "/generate",
            b'{"input_ids": [1], "sampling_params": {"temprature": 1}}',
            "sampling_params.temprature",
        ),
        ("/generate", b'{"input_ids": [1], "sampling_params": {"top_p": 0}}', "top_p must be in (0.0, 1.0]"),
        ("/generate", b'{"input_ids": [1], "return_logprob": 1}', "return_logprob: expected a boolean"),
        (
            "/generate",
            b'{"input_ids": [1], "sampling_params": {"top_k": 20}}',
            "sampling_params.top_k: only -1",
        ),
        ("/generate", b'{"input_ids": [1], "text": "hi"}', "text: unknown field"),
        ("/update_weights_from_disk", b"{}", "model_path: expected a string"),
        (
            "/generate",
            b'{"input_ids": [1], "sampling_params": {"temperature": "hot"}}',
            "temperature: expected a number",
        ),
        ("/v1/chat/completions", b'{"model": "tiny"}', "messages: expected a list, got no such field"),
        (
            "/v1/chat/completions",
            b'{"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}',
            "role",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
            "temperature",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(server, path, body, message):
    """Malformed bodies are answered at once with an OpenAI-style error that says what is wrong."""
    response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error"
    assert message in error["message"], error["message"]


def test_unknown_routes_and_methods_answer_json(server):
    """A wrong path is a JSON 404 listing the routes; a wrong method a JSON 405."""
    missing = httpx.get(f"{server.url}/v1/completions")
    assert missing.status_code == 404 and "/v1/chat/completions" in missing.json()["error"]["message"]
    assert httpx.get(f"{server.url}/generate").status_code == 405


def test_an_engine_failure_is_a_500(engine, server, monkeypatch):
    """An error inside the engine is answered with 500 and its message, not a hang."""

    def broken(prompts, params):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(engine.batcher, "run", broken)
    response = httpx.post(f"{server.url}/generate", json={"input_ids": [1, 2, 3]}, timeout=30)
    assert response.status_code == 500 and "the model fell over" in response.json()["error"]["message"]


def test_health_and_models_report_the_engine(engine, server, client):
    """``/health`` reports the weights version (bumped by an in-process update); ``/v1/models`` the name."""
    version = httpx.get(f"{server.url}/health").json()["weights_version"]
    engine.update_weights()
    assert httpx.get(f"{server.url}/health").json() == {
        "status": "ok",
        "model": engine.name,
        "weights_version": version + 1,
    }
    assert [m.id for m in client.models.list()] == [engine.name]


async def test_upstream_responder_gets_a_completion_with_token_ids(server):
    """kwaigym's ``UpstreamResponder`` pointed at the server answers with token ids and log-probs."""
    call = ToolCall(id="call_1", name="bash", arguments='{"command": "ls"}')
    request = ChatRequest(
        format="openai-chat",
        model="tiny",
        params=SamplingParams(max_tokens=6),
        tools=[Tool(name="bash", parameters={"type": "object"})],
        messages=[
            Message(role="user", content=[TextPart(text="fix the bug")]),
            Message(role="assistant", content=[call]),
            Message(role="tool", content=[ToolResult(call_id="call_1", content=[TextPart(text="a.py")])]),
        ],
    )
    responder = UpstreamResponder(f"{server.url}/v1", attempts=1, timeout=60)
    try:
        completion = await responder.respond(request, CallContext(episode_id="e1", call_id="c1"))
    finally:
        await responder.aclose()
    assert len(completion.token_ids) == 6 and completion.prompt_token_ids and len(completion.logprobs) == 6
    assert [lp.token_id for lp in completion.logprobs] == list(completion.token_ids)


async def test_serve_runs_in_the_current_loop(engine):
    """``serve`` listens in the running event loop for the ``async with`` block, then stops."""
    async with serve(engine) as server, httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/health")).json()["status"] == "ok"
        body = {"input_ids": [1, 2, 3], "sampling_params": {"max_new_tokens": 3, "stop": "never"}}
        answer = (await http.post(f"{server.url}/generate", json=body)).json()
        assert len(answer["output_ids"]) == 3 and answer["meta_info"]["finish_reason"]["type"] == "length"
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{server.url}/health")


@pytest.mark.podman
async def test_a_real_episode_through_the_served_engine(engine, backend):
    """mini in a sandbox, its calls answered through the proxy by the served engine (``openai:URL``):
    the recorded calls carry the engine's token ids and log-probs."""
    from kwaigym.datasets import load_dataset
    from kwaigym.rollout import policy_factory, rollout

    task = load_dataset("examples").get("swe-semver")
    async with serve(engine) as server:
        (result,) = await rollout([task], ["mini"], policy_factory(f"openai:{server.url}/v1"),
                                  backend=backend, show_progress=False)  # fmt: skip
    assert result.status in ("ok", "agent_error") and result.reward_valid and result.reward == 0.0
    first = result.calls[0].completion
    assert first.prompt_token_ids and first.token_ids
    assert [lp.token_id for lp in first.logprobs] == list(first.token_ids)
