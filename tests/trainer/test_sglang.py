"""The SGLang client against real ``sglang.launch_server`` processes on a tiny model.

Runs where ``sglang`` is importable and a CUDA GPU is present (two GPUs for the two-server test);
skips otherwise, saying so. Elsewhere the same client code is exercised against kwaigym's own engine
servers speaking SGLang's protocol (``test_engine_interface.py``)."""

from __future__ import annotations

import pytest

from tests.trainer.ranks import free_port
from tests.trainer.tiny_model import build_tiny_model

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip(
    "sglang", reason="sglang is not installed (pip install kwaigym[sglang]); needs a CUDA GPU"
)
if not torch.cuda.is_available():
    pytest.skip("sglang is installed but no CUDA GPU is visible", allow_module_level=True)

from reference_trainer.engine.base import SampleParams  # noqa: E402
from reference_trainer.engine.local import LocalEngine  # noqa: E402
from reference_trainer.engine.sglang import SGLangEngine  # noqa: E402

GREEDY = SampleParams(temperature=0, max_new_tokens=8)
# a tiny model in float32, no CUDA graphs (quick to start), a small static memory share (tests share a GPU)
ARGS = ["--dtype", "float32", "--disable-cuda-graph", "--mem-fraction-static", "0.2", "--skip-server-warmup"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    torch.manual_seed(1)
    return build_tiny_model(tmp_path_factory.mktemp("other-model"))


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    engine = SGLangEngine.launch(
        tiny,
        gpus=[[0]],
        port=free_port(),
        args=ARGS,
        enable_memory_saver=False,
        log_dir=tmp_path_factory.mktemp("sglang-logs"),
        ready_timeout_s=600,
        max_new_tokens=16,
    )
    yield engine
    engine.close()


async def test_generate_with_logprobs(server, tiny):
    """A greedy sample carries ids and log-probs; its tokens are the local model's (float32, tiny)."""
    prompt = server.tokenizer.encode("def f(x):")
    sample = await server.agenerate(prompt, GREEDY, session="a")
    (expected,) = LocalEngine(tiny).sample([prompt], GREEDY)
    assert sample.token_ids == expected.token_ids and len(sample.logprobs) == len(sample.token_ids)
    assert sample.logprobs == pytest.approx(expected.logprobs, abs=1e-3)
    await server.aclose_connections()


async def test_prefill_logprobs_match_decode_at_temperature_1(server):
    """Prefill scoring of prompt + completion gives the completion's decode log-probs at T=1."""
    prompt = server.tokenizer.encode("Run the tests")
    sample = await server.agenerate(prompt, SampleParams(temperature=1.0, max_new_tokens=8))
    (scored,) = await server.aprefill_logprobs([prompt + list(sample.token_ids)], passes=2)
    assert scored[len(prompt) - 1 :] == pytest.approx(list(sample.logprobs), abs=1e-3)
    await server.aclose_connections()


async def test_update_weights_from_disk_with_pause_and_continue(server, tiny, other):
    """Loading another model from disk (pause, update, flush, continue) changes greedy output."""
    prompt = server.tokenizer.encode("def f(x):")
    (expected,) = LocalEngine(other).sample([prompt], GREEDY)
    version = await server.update_weights_from_disk(other)
    sample = await server.agenerate(prompt, GREEDY)
    assert sample.token_ids == expected.token_ids and version == server.weights_version
    await server.update_weights_from_disk(tiny)
    await server.aclose_connections()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two servers need two GPUs")
async def test_two_servers_keep_sessions_sticky(tiny, tmp_path):
    """Two real servers: each session's requests go to one of them, and the two sessions to different ones."""
    engine = SGLangEngine.launch(
        tiny,
        gpus=[[0], [1]],
        port=free_port(),
        args=ARGS,
        log_dir=tmp_path,
        ready_timeout_s=600,
        max_new_tokens=4,
    )
    try:
        prompt = engine.tokenizer.encode("hello")
        for _ in range(2):
            for session in ("a", "b"):
                await engine.agenerate(prompt, GREEDY, session=session)
        assert engine.router.pick("a") != engine.router.pick("b") and sorted(engine.router.sessions) == [1, 1]
    finally:
        await engine.aclose()
