"""SGLang servers as the rollout engine, behind the same interface as the local engine.

Attach to running servers, or launch them::

    engine = SGLangEngine(["http://10.0.0.5:30000", "http://10.0.0.6:30000"], model_path="/models/q")
    engine = SGLangEngine.launch("/models/q", gpus=[[0], [1]])   # python -m sglang.launch_server each
    kwaigym eval --policy sglang:http://10.0.0.5:30000 --scaffold mini

The chat layer (chat template, tools, Hermes tool calls) runs here, on the trainer's tokenizer: the
servers only see token ids, on SGLang's native ``POST /generate``, so a trajectory's tokens are exactly
what was sampled (no re-tokenisation).

Log-probs. SGLang computes output log-probs in its sampler, at the sampling temperature (top-p does
not change them; greedy is temperature 1); a server started with ``SGLANG_RETURN_ORIGINAL_LOGPROB=1``
reports them at temperature 1 instead (``raw_logprobs=True``; ``launch`` sets the variable). Prompt
(prefill) log-probs, ``logprob_start_len``, are always at temperature 1 in released SGLang. So every
``Sample`` says which temperature its log-probs are at, ``logprob_temperature`` is what the trainer
must compare with, and :meth:`SGLangEngine.aprefill_logprobs` refuses a temperature other than 1.

MCLA (several scoring passes averaged) is pointless if the passes are served from the radix prefix
cache: every pass would copy the first. Each pass therefore carries its own ``extra_key``, SGLang's
per-request cache namespace (requests with different keys never share cached prefixes), so each pass
recomputes the prefill; this is cheaper than ``/flush_cache`` (which would drop every trajectory's
cache and is refused while requests run). With ``--enable-deterministic-inference`` the passes are
identical by design.

Weights, after each optimizer step, always as pause -> update -> flush cache -> continue on every
server (``weights_version`` then moves on): from disk (the trainer writes a Hugging Face export, the
servers load it), from tensors (colocated: CUDA IPC handles, SGLang's serializer), or from a
distributed group (trainer rank 0 broadcasts to the servers' GPUs over NCCL;
:mod:`reference_trainer.engine.weight_group`). Colocated runs release the servers' memory around
training and resume it after; resumed weights are undefined until sent again, so this engine refuses
to generate until they are.

Several servers: a router inside the engine. A new session (one trajectory: the episode id) goes to
the server with the fewest requests in flight (ties: the fewest sessions), then sticks to it, so its
turns, which share their prefix, hit that server's cache; requests without a session go to the least
loaded. The session map is a bounded LRU.

Tested: ``tests/trainer/test_engine_interface.py`` runs the same tests on the local engine and on this
client attached to one or two of kwaigym's engine servers, which speak SGLang's protocol
(:mod:`reference_trainer.engine.sglang_routes`); ``tests/trainer/test_sglang.py`` runs against real
``sglang.launch_server`` processes where sglang and a GPU are present, and skips otherwise. Limits:
no streaming; no multi-node launch; from-tensor sync assumes one process per server (TP 1) unless
``tp_size`` is given; ``sync_from`` in disk mode exports from this process (under FSDP every rank
must call it, as ``export_hf`` needs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from kwaigym.errors import ConfigError
from kwaigym.policies import Policy
from kwaigym.proxy.responders import UpstreamError
from reference_trainer.engine.base import ChatEngine, EngineResponder, Sample, SampleParams
from reference_trainer.engine.servers import Servers

log = logging.getLogger(__name__)


class SGLangEngine(ChatEngine):
    """A client of one or more SGLang servers (``urls``); see the module docstring.

    Args:
        urls: the servers' roots, e.g. ``http://127.0.0.1:30000``.
        model_path: the model directory, for the tokenizer (default: asked of the first server).
        tokenizer: an already loaded tokenizer instead.
        max_new_tokens, temperature, top_p, request_sampling: the policy's sampling (as ``LocalEngine``).
        raw_logprobs: the servers report output log-probs at temperature 1
            (``SGLANG_RETURN_ORIGINAL_LOGPROB``).
        timeout_s: one request's limit; attempts: tries of a generation on a transient failure.
        pause_mode: ``pause_generation``'s mode (SGLang's default ``abort`` ends running requests).
        sync_mode, sync_dir: what ``sync_from`` uses: ``disk`` (exports to ``sync_dir``), ``tensor``,
            ``distributed`` (after ``init_weight_group``).
        tp_size: GPUs per server (ranks in a weight group, copies of serialized tensors).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        model_path: str | Path | None = None,
        tokenizer=None,
        name: str | None = None,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        request_sampling: bool = False,
        raw_logprobs: bool = False,
        timeout_s: float = 600.0,
        attempts: int = 3,
        pause_mode: str = "abort",
        sync_mode: str = "disk",
        sync_dir: str | Path | None = None,
        tp_size: int = 1,
        max_sessions: int = 10_000,
    ):
        self.urls = [u.rstrip("/") for u in ([urls] if isinstance(urls, str) else urls)]
        if not self.urls:
            raise ConfigError("SGLangEngine: give at least one server URL")
        if sync_mode not in ("disk", "tensor", "distributed"):
            raise ConfigError(
                f"SGLangEngine: sync_mode must be disk, tensor or distributed, got {sync_mode!r}"
            )
        self.timeout_s, self.attempts, self.pause_mode = timeout_s, attempts, pause_mode
        self.sync_mode, self.sync_dir, self.tp_size = sync_mode, sync_dir, tp_size
        self.raw_logprobs = raw_logprobs
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.request_sampling = request_sampling
        self.servers = Servers(self.urls, timeout_s=timeout_s, max_sessions=max_sessions)
        self.router = self.servers.router
        self.weights_version = 0
        self.weight_group = None
        self.processes: list = []
        self.released: set[str] = set()
        self.stale_weights = False
        if tokenizer is None:
            from transformers import AutoTokenizer

            model_path = model_path or self.servers.model_info(self.urls[0]).get("tokenizer_path")
            tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer, self.model_path = tokenizer, model_path
        self.name = name or (Path(model_path).name if model_path else "sglang")

    @classmethod
    def launch(
        cls,
        model_path: str | Path,
        *,
        gpus: Sequence[Sequence[int]] | None = None,
        host: str = "127.0.0.1",
        port: int = 30000,
        args: Sequence[str] = (),
        enable_memory_saver: bool = False,
        raw_logprobs: bool = False,
        ready_timeout_s: float = 900.0,
        log_dir: str | Path | None = None,
        module: str = "sglang.launch_server",
        **options: Any,
    ) -> SGLangEngine:
        """Start one server per GPU group (``[[0], [1]]``: two servers; ``[[0, 1]]``: one with TP 2; None:
        one server, devices as the environment says), wait until each generates, attach to them.
        ``close()`` stops them. ``module`` is the launcher (tests use kwaigym's own engine server)."""
        from reference_trainer.engine.launch import launch_all

        extra = [*args, *(["--enable-memory-saver"] if enable_memory_saver else [])]
        env = {"SGLANG_RETURN_ORIGINAL_LOGPROB": "1"} if raw_logprobs else {}
        servers = launch_all(
            model_path,
            gpus=gpus,
            host=host,
            port=port,
            args=extra,
            module=module,
            env=env,
            ready_timeout_s=ready_timeout_s,
            log_dir=log_dir,
        )
        try:
            tp = len(gpus[0]) if gpus else 1
            engine = cls(
                [s.url for s in servers],
                model_path=model_path,
                raw_logprobs=raw_logprobs,
                tp_size=tp,
                **options,
            )
        except BaseException:
            for server in servers:
                server.stop()
            raise
        engine.processes = servers
        return engine

    @property
    def logprob_temperature(self) -> float:
        """The temperature of rollout log-probs: 1 with ``raw_logprobs``, else the sampling one."""
        return 1.0 if self.raw_logprobs else self.temperature

    # --- generation ----------------------------------------------------------------------------

    def _check_ready(self) -> None:
        if self.released:
            raise ConfigError(
                f"SGLangEngine: memory is released ({', '.join(sorted(self.released))}); "
                "call resume_memory before generating"
            )
        if self.stale_weights:
            raise ConfigError(
                "SGLangEngine: weights were resumed after a release but not sent again; "
                "sync them (sync_from or update_weights_*) before generating"
            )

    async def agenerate(
        self, prompt_ids: Sequence[int], params: SampleParams, *, session: str | None = None
    ) -> Sample:
        """``POST /generate`` to the session's server; the answer's ids and log-probs as a ``Sample``."""
        self._check_ready()
        sampling = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": -1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "max_new_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            "skip_special_tokens": True,
        }
        body = {
            "input_ids": list(prompt_ids),
            "sampling_params": sampling,
            "return_logprob": True,
            "top_logprobs_num": params.top_logprobs,
            "rid": uuid.uuid4().hex,
        }
        index = self.router.pick(session)
        self.router.inflight[index] += 1
        try:
            answer = await self.servers.post(self.urls[index], "/generate", body, attempts=self.attempts)
        finally:
            self.router.inflight[index] -= 1
        return self._sample(self.urls[index], prompt_ids, params, answer)

    def _sample(self, url: str, prompt_ids: Sequence[int], params: SampleParams, answer: Any) -> Sample:
        try:
            meta, ids = answer["meta_info"], [int(t) for t in answer["output_ids"]]
            logprobs = [float(lp) for lp, *_ in meta["output_token_logprobs"]]
            reason = meta["finish_reason"]["type"]
            tops = tuple(
                tuple((int(t), float(v)) for v, t, *_ in top) for top in meta.get("output_top_logprobs") or ()
            )
            text = answer["text"]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(
                f"SGLang server {url}: unreadable /generate answer ({type(exc).__name__}: {exc}): "
                f"{json.dumps(answer)[:300]}"
            ) from None
        if reason == "abort":
            raise UpstreamError(
                f"SGLang server {url} aborted the request (a weight update paused it?); retry it"
            )
        if len(logprobs) != len(ids):
            raise UpstreamError(f"SGLang server {url}: {len(ids)} output ids but {len(logprobs)} log-probs")
        version = str(meta.get("weight_version", ""))
        return Sample(
            prompt_ids=tuple(prompt_ids),
            token_ids=tuple(ids),
            logprobs=tuple(logprobs),
            finish_reason="length" if reason == "length" else "stop",
            text=text,
            top_logprobs=tops if params.top_logprobs else (),
            weights_version=int(version) if version.isdigit() else self.weights_version,
            logprob_temperature=1.0 if self.raw_logprobs or not params.temperature else params.temperature,
        )

    async def aprefill_logprobs(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        passes: int = 1,
        temperature: float = 1.0,
        session: str | None = None,
    ) -> list[list[float]]:
        """Score ``sequences`` (``max_new_tokens=0``, ``logprob_start_len=0``): per sequence ``len - 1``
        log-probs at temperature 1, the mean (of log-probs) over ``passes`` passes, each pass in its own
        cache namespace (``extra_key``) so that none is served from another's cache."""
        if temperature != 1.0:
            raise ConfigError(
                f"prefill_logprobs at temperature {temperature}: SGLang scores prompts at temperature 1 "
                "only. Roll out at temperature 1, or launch with raw_logprobs=True and compare at 1"
            )
        if passes < 1 or not sequences or not all(sequences):
            raise ConfigError("prefill_logprobs: needs passes >= 1 and non-empty sequences")
        self._check_ready()
        body: dict[str, Any] = {
            "input_ids": [list(s) for s in sequences],
            "return_logprob": True,
            "logprob_start_len": 0,
            "sampling_params": {"max_new_tokens": 0},
        }
        runs = []
        for p in range(passes):
            url = self.urls[self.router.pick(session)]
            pass_body = body | ({"extra_key": f"mcla-{uuid.uuid4().hex}-{p}"} if passes > 1 else {})
            answer = await self.servers.post(url, "/generate", pass_body, attempts=self.attempts)
            runs.append(self._read_prefill(url, answer, sequences))
        return [
            [sum(run[i][t] for run in runs) / passes for t in range(len(s) - 1)]
            for i, s in enumerate(sequences)
        ]

    @staticmethod
    def _read_prefill(url: str, answer: Any, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        answers = answer if isinstance(answer, list) else [answer]
        try:
            scores = [[float(lp) for lp, *_ in a["meta_info"]["input_token_logprobs"][1:]] for a in answers]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"SGLang server {url}: unreadable prefill answer ({exc})") from None
        if [len(s) for s in scores] != [len(s) - 1 for s in sequences]:
            raise UpstreamError(f"SGLang server {url}: prefill log-probs do not match the sequences' lengths")
        return scores

    # --- weights and memory --------------------------------------------------------------------

    async def _update(
        self, path: str, body_or_bodies: dict[str, Any] | list[dict[str, Any]], during=None
    ) -> int:
        """pause -> ``path`` on every server (while ``during`` runs: a broadcast) -> flush -> continue."""
        version = self.weights_version + 1
        bodies = body_or_bodies if isinstance(body_or_bodies, list) else [body_or_bodies]
        await self.servers.each("/pause_generation", {"mode": self.pause_mode})
        try:
            for i, body in enumerate(bodies):
                body = body | {"flush_cache": True, "weight_version": str(version)}
                posts = asyncio.gather(*(self.servers.post(u, path, body, text_ok=True) for u in self.urls))
                if during is not None:  # the servers wait for what it sends while their requests are open
                    await asyncio.to_thread(during, i)
                for url, answer in zip(self.urls, await posts, strict=True):
                    if isinstance(answer, dict) and answer.get("success") is False:
                        raise UpstreamError(f"SGLang server {url}: {path} failed: {answer.get('message')}")
            await self.servers.each("/flush_cache")
        finally:
            await self.servers.each("/continue_generation")
        self.weights_version, self.stale_weights = version, False
        return version

    async def update_weights_from_disk(self, path: str | Path) -> int:
        """Every server loads the Hugging Face export at ``path`` (visible to it); the new version."""
        return await self._update(
            "/update_weights_from_disk", {"model_path": str(path), "abort_all_requests": False}
        )

    async def update_weights_from_tensor(self, named_tensors: Iterable[tuple[str, Any]]) -> int:
        """Colocated servers read the tensors through CUDA IPC handles (keep them alive till it returns)."""
        try:
            from sglang.srt.utils import MultiprocessingSerializer
        except ImportError:
            raise ConfigError(
                "update_weights_from_tensor needs sglang installed here (its serializer); "
                "use sync_mode='disk' otherwise"
            ) from None
        payload = MultiprocessingSerializer.serialize(list(named_tensors), output_str=True)
        return await self._update(
            "/update_weights_from_tensor", {"serialized_named_tensors": [payload] * self.tp_size}
        )

    async def init_weight_group(
        self,
        master_address: str,
        master_port: int,
        *,
        backend: str = "nccl",
        group_name: str = "weight_update_group",
    ):
        """Join trainer rank 0 (this process) and every server's GPUs in one group, for
        ``update_weights_from_distributed``."""
        from reference_trainer.engine.weight_group import WeightGroup

        world = 1 + self.tp_size * len(self.urls)
        common = {
            "master_address": master_address,
            "master_port": master_port,
            "world_size": world,
            "group_name": group_name,
            "backend": backend,
        }
        posts = asyncio.gather(
            *(
                self.servers.post(
                    u, "/init_weights_update_group", common | {"rank_offset": 1 + self.tp_size * i}
                )
                for i, u in enumerate(self.urls)
            )
        )
        joining = asyncio.to_thread(
            WeightGroup, master_address, master_port, 0, world, group_name=group_name, backend=backend
        )
        self.weight_group, _ = await asyncio.gather(joining, posts)
        return self.weight_group

    async def update_weights_from_distributed(
        self, named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int = 512 << 20
    ) -> int:
        """Broadcast the tensors from this process (rank 0) to every server, ``bucket_bytes`` at a time."""
        if self.weight_group is None:
            raise ConfigError("update_weights_from_distributed: call init_weight_group first")
        buckets, size = [[]], 0
        for name, tensor in named_tensors:
            if buckets[-1] and size + tensor.numel() * tensor.element_size() > bucket_bytes:
                buckets.append([])
                size = 0
            buckets[-1].append((name, tensor))
            size += tensor.numel() * tensor.element_size()
        buckets = [b for b in buckets if b]
        bodies = [
            {
                "names": [n for n, _ in b],
                "dtypes": [str(t.dtype).removeprefix("torch.") for _, t in b],
                "shapes": [list(t.shape) for _, t in b],
                "group_name": self.weight_group.group_name,
            }
            for b in buckets
        ]

        def send(i: int) -> None:
            for _, tensor in buckets[i]:
                self.weight_group.broadcast(tensor.contiguous(), src=0)

        return await self._update("/update_weights_from_distributed", bodies, during=send)

    async def destroy_weight_group(self) -> None:
        """Leave the weight group on both sides."""
        if self.weight_group is not None:
            await self.servers.each(
                "/destroy_weights_update_group", {"group_name": self.weight_group.group_name}
            )
            self.weight_group.close()
            self.weight_group = None

    async def release_memory(self, tags: Sequence[str] = ("kv_cache", "weights")) -> None:
        """Free the servers' GPU memory (colocated training): needs ``--enable-memory-saver`` and no
        running requests."""
        await self.servers.each("/release_memory_occupation", {"tags": list(tags)})
        self.released |= set(tags)

    async def resume_memory(self, tags: Sequence[str] = ("kv_cache", "weights")) -> None:
        """Take the memory back; resumed weights must be sent again before generating (enforced here)."""
        await self.servers.each("/resume_memory_occupation", {"tags": list(tags)})
        if "weights" in set(tags) & self.released:
            self.stale_weights = True
        self.released -= set(tags)

    async def sync_from(self, model, tokenizer=None, *, mode: str | None = None) -> int:
        """Send ``model``'s weights to every server by ``mode`` (default ``sync_mode``); the new version."""
        mode = mode or self.sync_mode
        if mode == "disk":
            import tempfile

            from reference_trainer.checkpoint import export_hf

            directory = Path(self.sync_dir or tempfile.gettempdir()) / f"rollout-weights-{id(self)}"
            await asyncio.to_thread(export_hf, directory, model, tokenizer or self.tokenizer)
            return await self.update_weights_from_disk(directory)
        named = [
            (n, t.full_tensor() if hasattr(t, "full_tensor") else t.detach())
            for n, t in model.state_dict().items()
        ]
        if mode == "tensor":
            return await self.update_weights_from_tensor(named)
        if mode == "distributed":
            return await self.update_weights_from_distributed(named)
        raise ConfigError(f"sync_from: mode must be disk, tensor or distributed, got {mode!r}")

    # --- lifetime --------------------------------------------------------------------------------

    def _run(self, coroutine):
        """For synchronous callers: the loop's connections are closed before the loop ends."""

        async def once():
            try:
                return await coroutine
            finally:
                await self.aclose_connections()

        return asyncio.run(once())

    async def aclose_connections(self) -> None:
        """Close the running loop's kept-alive connections (before that loop ends)."""
        await self.servers.aclose_connections()

    async def aclose(self) -> None:
        """Close this loop's connections and stop launched servers."""
        await self.aclose_connections()
        self.close()

    def close(self) -> None:
        """Stop the servers this engine launched (attached ones are left running)."""
        for server in self.processes:
            server.stop()
        self.processes = []

    def __enter__(self) -> SGLangEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SGLangEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@cache
def _engine(urls: str) -> SGLangEngine:
    return SGLangEngine([u for u in urls.split(",") if u])


def make_policy(urls: str):
    """The ``sglang:URL[,URL...]`` policy factory (entry point ``sglang`` in ``kwaigym.policies``)."""
    if not urls:
        raise ConfigError("policy sglang: needs server URLs, as sglang:http://127.0.0.1:30000[,http://...]")
    responder = EngineResponder(_engine(urls))
    return lambda task, scaffold: Policy(responder)
